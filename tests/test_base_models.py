"""A base model (no chat template, no instruct or chat in its names) is told from a chat
model by its header alone, added in completion mode with the reason in the page's
language, and switched to chat mode (and back) in one step; a guessed template is marked
in the model picker before any load. Tiny header-only GGUFs: nothing is loaded."""
from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest
import yaml

from chatcore.i18n import english, load_texts
from chatcore.library.errors import NotAllowed
from chatcore.library.discovery import ScanRoot, inspect_path, scan
from chatcore.library.model_files import EntryNote, suggest_entry
from chatui.chat_tab import model_choices
from chatui.library_handlers import LibraryHandlers
from tests.test_discovery import ollama_store
from tests.test_library import make_library

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def tiny_gguf(path: Path, metadata: dict[str, str | list[str]],
              template: str | None = None) -> Path:
    """A llama-architecture GGUF header with one small tensor: enough for a scan."""
    writer = gguf.GGUFWriter(path, arch="llama")
    for key, value in metadata.items():
        if isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_string(key, value)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("file, metadata, template, base", [
    # LM Studio's Gemma 3 270M: "Gemma 3 270m", no template, nothing says instruct.
    ("gemma-3-270m-Q8_0.gguf", {"general.name": "Gemma 3 270m"}, None, True),
    ("gemma-3-270m-it-Q8_0.gguf", {"general.name": "Gemma 3 270m It"}, None, False),
    ("model-Q8_0.gguf", {"general.name": "Gemma 3 270m", "general.finetune": "it"}, None,
     False),
    ("Llama-2-7b-chat.Q4_0.gguf", {}, None, False),
    ("Qwen2.5-0.5B-Instruct-q4_0.gguf", {"general.name": "Qwen2.5 0.5B"}, None, False),
    ("smollm2-135m-base.gguf", {"general.name": "SmolLM2 135M"}, TEMPLATE, False),
    ("wit-and-chatter-7b.gguf", {"general.name": "Witty 7B"}, None, True),
    # Hugging Face's tags, kept in general.tags by llama.cpp's converter.
    ("tuned.gguf", {"general.tags": ["text-generation", "conversational"]}, None, False),
    ("plain.gguf", {"general.tags": ["text-generation", "base_model:quantized:x/y"]}, None,
     True),
    ("many-tags.gguf", {"general.tags": ["tag"] * 100 + ["conversational"]}, None, True),
])
def test_a_base_model_is_told_from_a_chat_one_by_its_header(tmp_path, file, metadata,
                                                            template, base):
    found = inspect_path(tiny_gguf(tmp_path / file, metadata, template))
    assert found.problem is None and found.base is base


def test_a_base_model_is_suggested_in_completion_mode_and_says_why_in_each_language(
        tmp_path):
    found = inspect_path(tiny_gguf(tmp_path / "gemma-3-270m-Q8_0.gguf",
                                   {"general.name": "Gemma 3 270m"}))
    entry, notes = suggest_entry(found, "gemma-3-270m-q8_0")
    assert entry["chat_template"] == "none"
    assert notes == [EntryNote("base", {"name": "gemma-3-270m-Q8_0.gguf"})]
    english_note = english()("library.note.base", **notes[0].params)
    filipino_note = load_texts("fil")("library.note.base", **notes[0].params)
    assert "base model" in english_note and "completion mode" in english_note
    assert "Mukhang base model" in filipino_note and filipino_note != english_note


def test_one_click_switches_a_base_model_to_chat_mode_and_back(tmp_path):
    (tmp_path / "models").mkdir()
    model = tiny_gguf(tmp_path / "models" / "gemma-3-270m-Q8_0.gguf",
                      {"general.name": "Gemma 3 270m"})
    library = make_library(tmp_path)
    handlers = LibraryHandlers(library, texts=english())
    said, _ = handlers.add(str(model), "", None)
    assert "looks like a base model" in said and "completion mode" in said
    personal = tmp_path / "data" / "models.yaml"

    def written() -> str | None:
        entries = yaml.safe_load(personal.read_text())["models"]
        return next(e for e in entries if e["id"] == "gemma-3-270m-q8_0").get("chat_template")

    def label() -> str:
        return dict((v, k) for k, v in model_choices(library.manager,
                                                     texts=english()))["gemma-3-270m-q8_0"]

    assert written() == "none" and label().endswith("· completion mode")
    assert handlers.mode_button("gemma-3-270m-q8_0")["value"] == "Switch to chat mode"
    said, _ = handlers.switch_mode("gemma-3-270m-q8_0")
    assert "chat mode now, with the llama3 chat template guessed" in said
    assert written() == "llama3"
    # The guessed template is marked from the entry, before any load.
    assert label().endswith("⚠ template")
    assert library.manager.template_warnings("gemma-3-270m-q8_0") == [
        "no chat template in this model: using the llama3 fallback"]
    assert handlers.mode_button("gemma-3-270m-q8_0")["value"] == "Switch to completion mode"
    said, _ = handlers.switch_mode("gemma-3-270m-q8_0")
    assert "completion mode now" in said and written() == "none"
    assert library.manager.template_warnings("gemma-3-270m-q8_0") == []


def test_a_chat_model_with_its_own_template_switches_back_to_it(tmp_path):
    (tmp_path / "models").mkdir()
    model = tiny_gguf(tmp_path / "models" / "tiny-chat.gguf", {}, TEMPLATE)
    library = make_library(tmp_path, admins=["alice"])
    entry, notes = library.add(str(model), user="alice")
    assert entry.chat_template is None and notes == []
    with pytest.raises(NotAllowed):
        library.switch_mode(entry.id, user="bob")
    assert library.switch_mode(entry.id, user="alice").chat_template == "none"
    # Back to its own template, not a guess.
    assert library.switch_mode(entry.id, user="alice").chat_template is None
    assert library.manager.template_warnings(entry.id) == []


def test_an_ollama_model_with_a_template_layer_chats_though_its_gguf_has_none(tmp_path):
    blob = tiny_gguf(tmp_path / "gemma3-base.gguf", {"general.name": "Gemma 3 270m"})
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    models = tmp_path / "ollama"
    bare = {"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}]}
    ollama_store(models, blob, digest, manifests=None)  # its manifest has a template layer
    ollama_store(models, blob, digest,
                 {("registry.ollama.ai", "library", "gemma3", "270m"): bare})
    found = {m.name: m for m in scan([ScanRoot("ollama", models)]).models}
    assert found["smollm2:135m"].base is False  # Ollama's template layer is its template
    assert found["gemma3:270m"].base is True
