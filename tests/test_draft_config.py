"""The `draft:` field of models.yaml: a llamacpp entry names another llamacpp entry of the
registry as its draft model. Checked at config load (file, entry and field named), linked
across a personal registry laid over the shipped one, charged in the memory estimate, and
a draft whose weights are not installed leaves prompt lookup on, saying so. Headers only:
nothing is loaded."""
from __future__ import annotations

from pathlib import Path

import pytest

from chatcore.generation.factory import draft_spec, make_backend
from chatcore.generation.registry import load_layered_registry, load_registry
from chatcore.i18n import load_texts


def write(path: Path, entries: str) -> Path:
    path.write_text("models:\n" + entries, encoding="utf-8")
    return path


def gguf_entry(model_id: str, path: Path, extra: str = "") -> str:
    return f"  - {{id: {model_id}, backend: llamacpp, path: '{path}'{extra}}}\n"


def test_a_draft_links_the_entry_it_names(tmp_path, smollm2_path):
    registry = load_registry(write(tmp_path / "models.yaml",
                                   gguf_entry("big", smollm2_path, ", draft: small")
                                   + gguf_entry("small", smollm2_path)))
    assert registry.broken == ()
    big, small = registry.get("big"), registry.get("small")
    assert big.draft_entry == small and small.draft_entry is None
    spec = draft_spec(big)
    assert (spec.path, spec.draft_id, spec.target_id) == (smollm2_path, "small", "big")


@pytest.mark.parametrize("extra, found", [
    (", draft: nowhere", "field 'draft': 'nowhere' is not a llamacpp entry of the registry "
                         "(no entry has that id)"),
    (", draft: hf", "field 'draft': 'hf' is not a llamacpp entry of the registry (it is a "
                    "transformers entry)"),
    (", draft: big", "field 'draft': 'big' cannot draft for itself"),
    (", draft: small, speculative: off", "field 'draft': needs speculative decoding on"),
    (", draft: 'no such id!'", "field 'draft': String should match pattern"),
])
def test_a_bad_draft_breaks_its_entry_naming_file_entry_and_field(tmp_path, smollm2_path,
                                                                  extra, found):
    models = write(tmp_path / "models.yaml",
                   gguf_entry("big", smollm2_path, extra) + gguf_entry("small", smollm2_path)
                   + f"  - {{id: hf, backend: transformers, path: '{tmp_path}'}}\n")
    registry = load_registry(models)
    assert registry.get("big") is None and registry.get("small") is not None
    [broken] = registry.broken
    assert broken.id == "big" and str(models) in broken.reason and "'big'" in broken.reason
    assert found in broken.reason, broken.reason


def test_draft_is_a_llamacpp_field(tmp_path, smollm2_path):
    models = write(tmp_path / "models.yaml", gguf_entry("small", smollm2_path)
                   + f"  - {{id: hf, backend: transformers, path: '{tmp_path}', draft: small}}\n")
    [broken] = load_registry(models).broken
    assert broken.id == "hf" and "'draft' applies to backend llamacpp only" in broken.reason


def test_a_personal_entry_may_draft_from_a_shipped_one(tmp_path, smollm2_path):
    shipped = write(tmp_path / "models.yaml", gguf_entry("small", smollm2_path))
    personal = write(tmp_path / "mine.yaml", gguf_entry("big", smollm2_path, ", draft: small")
                     + gguf_entry("lost", smollm2_path, ", draft: gone"))
    registry = load_layered_registry(shipped, personal)
    assert registry.get("big").draft_entry == registry.get("small")
    [broken] = registry.broken
    assert broken.id == "lost" and broken.reason.startswith(f"{personal}: entry 'lost'")


def test_the_draft_model_is_charged_in_the_memory_estimate(tmp_path, smollm2_path):
    registry = load_registry(write(tmp_path / "models.yaml",
                                   gguf_entry("big", smollm2_path, ", draft: small")
                                   + gguf_entry("small", smollm2_path)))
    alone = make_backend(registry.get("small")).memory_breakdown()
    both = make_backend(registry.get("big")).memory_breakdown()
    assert both.weights == 2 * alone.weights
    assert both.kv_cache == alone.kv_cache + alone.kv_cache // alone_slots(registry)
    assert both.working > alone.working and both.saved_states == alone.saved_states


def alone_slots(registry) -> int:
    return registry.get("small").parallel  # the draft holds one slot of the same context


def test_a_draft_not_installed_leaves_prompt_lookup_and_says_so(tmp_path, smollm2_path):
    registry = load_registry(write(tmp_path / "models.yaml",
                                   gguf_entry("big", smollm2_path, ", draft: small")
                                   + gguf_entry("small", tmp_path / "absent.gguf")))
    backend = make_backend(registry.get("big"))
    assert backend.draft.path is None
    assert backend.memory_breakdown() == make_backend(registry.get("small").model_copy(
        update={"path": str(smollm2_path)})).memory_breakdown()
    note = backend.drafting
    assert note == "prompt lookup drafts: the draft model small is not installed"
    filipino = load_texts("fil")(note.key, **note.params)
    assert "hindi naka-install" in filipino and "small" in filipino
    plain = make_backend(registry.get("small").model_copy(update={"path": str(smollm2_path)}))
    assert plain.drafting == "prompt lookup drafts"


def test_a_draft_naming_a_broken_entry_says_that_entry_is_broken(tmp_path, smollm2_path):
    models = write(tmp_path / "models.yaml", gguf_entry("big", smollm2_path, ", draft: small")
                   + gguf_entry("small", smollm2_path, ", parallel: 99")
                   + gguf_entry("fine", smollm2_path))
    reasons = {b.id: b.reason for b in load_registry(models).broken}
    assert "field 'parallel'" in reasons["small"]
    assert reasons["big"].endswith("'small' is not a llamacpp entry of the registry (that "
                                   "entry is broken)"), reasons["big"]
