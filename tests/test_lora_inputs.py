"""LoRA adapters without loading a model: the registry's `adapters` field and its bounds,
mismatched adapters refused before any weights load (naming both), a missing or cut
adapter shown as unreadable like a model, and discovery naming an adapter's base and
offering "base + adapter" as one entry."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from backends.base import BackendError
from backends.hf import HFSettings, TransformersBackend
from backends.llamacpp import LlamaCppBackend
from backends.lora import Adapter, AdapterError
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager, ModelUnavailable
from chatcore.generation.memory import MemoryBudget
from chatcore.generation.registry import ModelEntry, ModelRegistry, load_registry
from chatcore.generation.slots import ModelState
from chatcore.library.discovery import scan
from chatcore.library.found_adapters import peft_adapter_model
from chatcore.library.model_files import suggest_entry
from tests.fakes import ScriptedBackend
from tests.lora_files import lora_gguf

MB = 10**6


def registry(tmp_path: Path, body: str):
    path = tmp_path / "models.yaml"
    path.write_text(body)
    return load_registry(path)


def smol_line(smollm2_path: Path, extra: str) -> str:
    return (f"models:\n  - {{id: keep, backend: llamacpp, path: {smollm2_path}}}\n"
            f"  - {{id: tuned, backend: llamacpp, path: {smollm2_path}, {extra}}}\n")


def test_adapters_are_read_with_relative_paths_resolved_against_the_file(tmp_path,
                                                                         smollm2_path):
    found = registry(tmp_path, smol_line(
        smollm2_path, "adapters: [{path: loras/a.gguf, scale: 0.5}, {path: /x/b.gguf}]"))
    adapters = found.get("tuned").adapters
    assert [(a.path, a.scale) for a in adapters] == [
        (str((tmp_path / "loras/a.gguf").resolve()), 0.5), ("/x/b.gguf", 1.0)]
    backend = make_backend(found.get("tuned"))
    assert backend.adapters == (Adapter(tmp_path.resolve() / "loras/a.gguf", 0.5),
                                Adapter(Path("/x/b.gguf"), 1.0))


@pytest.mark.parametrize("extra, words", [
    ("adapters: [{path: a.gguf, scale: 5}]",
     "field 'adapters.0.scale': Input should be less than or equal to 4"),
    ("adapters: [{path: a.gguf, scale: -4.5}]",
     "field 'adapters.0.scale': Input should be greater than or equal to -4"),
    ("adapters: [{path: ''}]", "field 'adapters.0.path'"),
    ("adapters: [{path: a.gguf, weight: 1}]",
     "field 'adapters.0.weight': unknown field"),
    ("adapters: [" + ", ".join(["{path: a.gguf}"] * 9) + "]",
     "field 'adapters': List should have at most 8 items"),
    ("adapters: a.gguf", "field 'adapters': Input should be a valid list"),
])
def test_a_bad_adapter_field_breaks_only_its_entry_naming_id_and_field(tmp_path, smollm2_path,
                                                                       extra, words):
    found = registry(tmp_path, smol_line(smollm2_path, extra))
    assert found.ids == ["keep"]
    reason = found.broken_entry("tuned").reason
    assert "(id 'tuned')" in reason and words in reason, reason


def test_a_remote_entry_cannot_take_adapters(tmp_path, smollm2_path):
    found = registry(tmp_path, f"models:\n  - {{id: keep, backend: llamacpp, path: "
                     f"{smollm2_path}}}\n  - {{id: far, backend: openai, base_url: "
                     "'http://127.0.0.1:9/v1', adapters: [{path: a.gguf}]}\n")
    assert "'adapters' applies to local models" in found.broken_entry("far").reason


@pytest.mark.parametrize("shape, words", [
    (dict(hidden=512), "hidden size 512 vs 576"),
    (dict(n_layers=40), "40 layers vs 30"),
    (dict(architecture="qwen2"), "architecture qwen2 vs llama"),
])
def test_a_mismatched_gguf_adapter_is_refused_before_loading_naming_both(
        tmp_path, smollm2_path, shape, words):
    """In this tier llama.cpp's model loader fails the test if reached: the refusal comes
    from the headers alone."""
    bad = lora_gguf(tmp_path / "other.gguf", n_layers=shape.get("n_layers", 2),
                    hidden=shape.get("hidden", 576),
                    architecture=shape.get("architecture", "llama"), base_name="Other-1B")
    backend = LlamaCppBackend(smollm2_path, adapters=(Adapter(bad),))
    with pytest.raises(AdapterError) as refused:
        backend.load()
    message = str(refused.value)
    assert "other.gguf for Other-1B" in message and smollm2_path.name in message
    assert words in message


def test_a_peft_folder_on_a_llamacpp_entry_says_which_format_it_takes(tmp_path, smollm2_path):
    folder = tmp_path / "peft"
    folder.mkdir()
    with pytest.raises(BackendError, match="a llamacpp entry takes a LoRA GGUF"):
        LlamaCppBackend(smollm2_path, adapters=(Adapter(folder),)).load()


def test_a_missing_or_cut_adapter_is_unreadable_in_the_list_like_a_model(tmp_path,
                                                                         smollm2_path):
    good = lora_gguf(tmp_path / "good.gguf", n_layers=2)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-5000])
    found = registry(tmp_path, (
        f"models:\n  - {{id: gone, backend: llamacpp, path: {smollm2_path}, "
        "adapters: [{path: missing.gguf}]}\n"
        f"  - {{id: cut, backend: llamacpp, path: {smollm2_path}, adapters: [{{path: {cut}}}]}}\n"
        f"  - {{id: fine, backend: llamacpp, path: {smollm2_path}, "
        f"adapters: [{{path: {good}}}]}}\n"))
    manager = ModelManager(found, make_backend)
    gone, short, fine = (manager.status(m) for m in ("gone", "cut", "fine"))
    assert gone.state == ModelState.UNREADABLE
    assert gone.reason == f"adapter {tmp_path.resolve() / 'missing.gguf'}: not found"
    assert short.state == ModelState.UNREADABLE
    assert short.reason == f"adapter {cut}: the file is cut short (5,000 bytes of tensor data missing)"
    assert fine.state == ModelState.AVAILABLE


def place(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, target) if source.stat().st_dev == target.parent.stat().st_dev \
        else target.write_bytes(source.read_bytes())
    return target


def peft_folder(folder: Path, base: str, hidden: int = 128) -> Path:
    """A PEFT LoRA folder as peft writes it: adapter_config.json and the safetensors."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": base, "r": 2, "lora_alpha": 4,
        "target_modules": ["q_proj"]}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
               np.ones((2, hidden), np.float32),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":
               np.ones((hidden, 2), np.float32)}, folder / "adapter_model.safetensors")
    return folder


def test_discovery_names_an_adapters_base_and_adds_it_as_base_plus_adapter(tmp_path,
                                                                         smollm2_path):
    folder = tmp_path / "models"
    place(smollm2_path, folder / smollm2_path.name)
    lora_gguf(folder / "french-lora.gguf", n_layers=2, base_name="SmolLM2-135M-Instruct")
    lora_gguf(folder / "orphan-lora.gguf", n_layers=2, base_name="Llama-3-8B")
    peft_folder(folder / "peft-lora", "HuggingFaceTB/SmolLM2-135M")
    result = scan(roots=[], extra_dirs=[folder])
    by_name = {m.name: m for m in result.models}
    assert set(by_name) == {smollm2_path.name, "french-lora.gguf", "orphan-lora.gguf",
                            "peft-lora"}
    model, lora = by_name[smollm2_path.name], by_name["french-lora.gguf"]
    assert model.adapter_for == "" and model.problem is None
    assert lora.adapter_for == "SmolLM2-135M-Instruct" and lora.problem is None
    assert lora.base_path == model.path
    entry, notes = suggest_entry(lora, "smol-french")
    assert entry["path"] == str(model.path) and entry["backend"] == "llamacpp"
    assert entry["adapters"] == [{"path": str(lora.path), "scale": 1.0}]
    assert [n.kind for n in notes] == ["adapter"]
    orphan = by_name["orphan-lora.gguf"]
    assert orphan.base_path is None and "adapter for Llama-3-8B: that base model is not " \
        "among the scanned models" in orphan.problem
    peft = by_name["peft-lora"]  # its base is a checkpoint, and none was scanned
    assert peft.adapter_for == "HuggingFaceTB/SmolLM2-135M" and "not among" in peft.problem


def test_a_peft_folder_naming_a_local_base_is_matched_and_a_cut_one_is_unreadable(tmp_path):
    base = tmp_path / "tiny-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 128}))
    from safetensors.numpy import save_file

    save_file({"model.embed_tokens.weight": np.zeros((4, 128), np.float32)},
              base / "model.safetensors")
    adapter = peft_folder(tmp_path / "scan" / "lora", str(base))
    found = scan(roots=[], extra_dirs=[tmp_path / "scan"]).models
    assert [(f.name, f.base_path, f.problem) for f in found] == [("lora", base, None)]
    entry, _ = suggest_entry(found[0], "tiny-lora")
    assert entry["backend"] == "transformers" and entry["path"] == str(base)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    cut = peft_adapter_model("folder", "lora", adapter)
    assert cut.problem == f"unreadable: {weights}: truncated (100 bytes of tensor data missing)"


class SharingBackend(ScriptedBackend):
    """Scheduling logic only: a scripted backend that says it shares base weights."""

    def __init__(self, memory: int, shared: tuple[object, int] | None) -> None:
        super().__init__(memory=memory)
        self.shared = shared

    def shared_weights(self) -> tuple[object, int] | None:
        return self.shared


def test_the_planner_counts_a_shared_base_once_and_keeps_the_entry_holding_it():
    """Base 100 MB (80 of them weights), base + adapter 102 MB on the same weights, a
    150 MB budget: the second fits beside the first without evicting it (22 MB more), and
    the base's weights stay charged while either holds them."""
    key = ("llamacpp", "/models/base.gguf", 0)
    backends = {"base": SharingBackend(100 * MB, (key, 80 * MB)),
                "tuned": SharingBackend(102 * MB, (key, 80 * MB)),
                "other": SharingBackend(60 * MB, None)}
    entries = tuple(ModelEntry(id=i, backend="llamacpp", path=__file__) for i in backends)
    manager = ModelManager(ModelRegistry(path=Path(__file__), entries=entries, broken=()),
                           lambda entry: backends[entry.id],
                           budget=MemoryBudget({"cpu": 150 * MB}))
    used = lambda: (lambda room: room.limit - room.free)(manager.room("cpu"))  # noqa: E731
    manager.load("base")
    manager.load("tuned")
    assert backends["base"].loaded and backends["tuned"].loaded
    assert used() == 122 * MB
    manager.unload("base")
    assert used() == 102 * MB  # the weights stay charged to the entry still holding them
    manager.load("other")  # 60 MB more does not fit beside 102: the idle entry goes
    assert not backends["tuned"].loaded and used() == 60 * MB


def test_an_entry_is_not_evicted_for_one_that_counts_on_its_shared_base():
    """Evicting the base would free the weights the adapter's entry was charged nothing
    for: the load is refused with the numbers instead."""
    key = ("llamacpp", "/models/base.gguf", 0)
    backends = {"base": SharingBackend(100 * MB, (key, 80 * MB)),
                "tuned": SharingBackend(102 * MB, (key, 80 * MB))}
    entries = tuple(ModelEntry(id=i, backend="llamacpp", path=__file__) for i in backends)
    manager = ModelManager(ModelRegistry(path=Path(__file__), entries=entries, broken=()),
                           lambda entry: backends[entry.id],
                           budget=MemoryBudget({"cpu": 110 * MB}))
    manager.load("base")
    with pytest.raises(ModelUnavailable, match="tuned: needs 22 MB, 10 MB free of a 110 MB budget"):
        manager.load("tuned")
    assert backends["base"].loaded and not backends["tuned"].loaded


def test_evaluate_puts_base_and_base_plus_adapter_in_one_wave_counting_the_base_once():
    from chatcore.evaluate.runner import plan_waves
    from chatcore.evaluate.store import Candidate

    key = ("llamacpp", "/models/base.gguf", 0)
    run = [Candidate("base", "Base", {}, 300 * MB), Candidate("tuned", "Tuned", {}, 310 * MB),
           Candidate("other", "Other", {}, 300 * MB)]
    shared = {"base": (key, 250 * MB), "tuned": (key, 250 * MB)}
    assert plan_waves(run, {"cpu": 400 * MB}, shared) == [[0, 1], [2]]
    assert plan_waves(run, {"cpu": 400 * MB}) == [[0], [1], [2]]  # two copies: apart
    # A wave that breaks between them charges the second its own copy again.
    assert plan_waves([run[0], run[2], run[1]], {"cpu": 400 * MB}, shared) == [[0], [1], [2]]


def test_entries_on_one_gguf_name_the_same_shared_base_for_the_planner(tmp_path, smollm2_path):
    adapter = lora_gguf(tmp_path / "a.gguf", n_layers=2)
    found = registry(tmp_path, smol_line(smollm2_path, f"adapters: [{{path: {adapter}}}]"))
    manager = ModelManager(found, make_backend)
    base, tuned = manager.shared_weights("keep"), manager.shared_weights("tuned")
    assert base == tuned == (("llamacpp", str(smollm2_path), 0), smollm2_path.stat().st_size)
    # Its estimate is the base's plus the adapter file.
    assert manager.plan("tuned")[0] == manager.plan("keep")[0] + adapter.stat().st_size


def test_the_models_tab_shows_an_entrys_adapters_in_the_pages_language(tmp_path, smollm2_path):
    from chatcore.i18n import load_texts

    entry = registry(tmp_path, smol_line(
        smollm2_path, "adapters: [{path: fr.gguf, scale: 0.5}]")).get("tuned")
    assert entry.source_text == f"{smollm2_path} + LoRA fr.gguf ×0.5"
    assert load_texts("fil").say(entry.source_text) == f"{smollm2_path} + LoRA fr.gguf ×0.5"


@pytest.mark.parametrize("model_type, hidden, weight, words", [
    ("llama", 64, "model.layers.0.self_attn.q_proj.weight", "hidden size 128 vs 64"),
    ("falcon", 128, "transformer.h.0.self_attention.query_key_value.weight",
     "the base has no q_proj projections"),
])
def test_a_peft_adapter_for_another_checkpoint_is_refused_before_loading_naming_both(
        tmp_path, model_type, hidden, weight, words):
    from safetensors.numpy import save_file

    base = tmp_path / "other-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": model_type,
                                                  "hidden_size": hidden,
                                                  "num_hidden_layers": 2}))
    save_file({weight: np.zeros((hidden, hidden), np.float32)}, base / "model.safetensors")
    adapter = peft_folder(tmp_path / "lora", "org/tiny-llama")
    backend = TransformersBackend(base, HFSettings(device="cpu"), adapters=(Adapter(adapter),))
    with pytest.raises(AdapterError) as refused:
        backend.load()  # transformers' loader fails this tier if reached
    assert str(refused.value).startswith(
        "adapter lora for org/tiny-llama (1 layer, hidden size 128) does not fit base "
        "model other-base: ")
    assert words in str(refused.value)


def test_the_manager_names_the_entry_that_has_a_mismatched_adapter(tmp_path, smollm2_path):
    bad = lora_gguf(tmp_path / "wide.gguf", n_layers=2, hidden=1024, base_name="Other-1B")
    found = registry(tmp_path, smol_line(smollm2_path, f"adapters: [{{path: {bad}}}]"))
    manager = ModelManager(found, make_backend)
    with pytest.raises(ModelUnavailable) as refused:
        manager.load("tuned")
    assert str(refused.value) == (
        f"tuned: adapter wide.gguf for Other-1B (llama, 2 layers, hidden size 1024) does not "
        f"fit base model {smollm2_path.name}: hidden size 1024 vs 576")
    status = manager.status("tuned")
    assert status.state == ModelState.FAILED and "Traceback" not in status.reason


def test_adding_a_scanned_adapter_makes_a_base_plus_adapter_entry(tmp_path, smollm2_path):
    from chatcore.generation.registry import load_layered_registry
    from chatcore.library.fit import WeightsCheck
    from chatcore.library.model_library import ModelLibrary
    from tests.conftest import SHIPPED_MODELS

    folder = tmp_path / "models"
    place(smollm2_path, folder / smollm2_path.name)
    lora = lora_gguf(folder / "french-lora.gguf", n_layers=2)
    personal = tmp_path / "data" / "models.yaml"
    manager = ModelManager(load_layered_registry(SHIPPED_MODELS, personal), make_backend,
                           budget=MemoryBudget({"cpu": 8 * 10**9}),
                           weights_check=WeightsCheck())
    library = ModelLibrary(manager, SHIPPED_MODELS, personal, scan_dirs=[folder], env={},
                           home=tmp_path / "home")
    found = next(m for m in library.scan().models if m.adapter_for)
    entry, notes = library.add(found.scan_id)
    assert entry.path == str(folder / smollm2_path.name)
    assert [(a.path, a.scale) for a in entry.adapters] == [(str(lora), 1.0)]
    assert [n.kind for n in notes] == ["adapter"]
    assert manager.status(entry.id).state == ModelState.AVAILABLE
    assert manager.shared_weights(entry.id)[0] == ("llamacpp", entry.path, 0)
