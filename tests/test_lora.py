"""Fine-tuned variants, for real: a LoRA GGUF for SmolLM2 written with the `gguf` package
on llama.cpp, and a PEFT LoRA made with `peft` for a tiny generated Llama on transformers.
Base and base + adapter answer differently, scale 0 answers as the base, two entries on one
base hold one copy of its weights (and the planner counts it once), and an adapter made for
another model is refused by name."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backends.base import Chunk, Message
from backends.hf import HFSettings, TransformersBackend
from backends.lora import Adapter, AdapterError
from backends.shared_weights import SharedWeights
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.generation.registry import load_registry
from tests.conftest import CAPITAL_PROMPT, ROOT
from tests.helpers import backend_reply, greedy, reply_text
from tests.lora_files import lora_gguf, peft_adapter

CAPITAL = [Message("user", CAPITAL_PROMPT)]
MB = 2**20


# -- llama.cpp ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_setup(smollm2_path, tmp_path_factory):
    """Three entries on SmolLM2 through one shared pool, as the app makes them; the
    adapter paths are relative to the models file."""
    folder = tmp_path_factory.mktemp("lora")
    lora_gguf(folder / "smol-lora.gguf")
    common = f"backend: llamacpp, path: {smollm2_path}, context_length: 512, parallel: 1"
    (folder / "models.yaml").write_text(
        "models:\n"
        f"  - {{id: smol, {common}}}\n"
        f"  - {{id: smol-lora, {common}, adapters: [{{path: smol-lora.gguf}}]}}\n"
        f"  - {{id: smol-zero, {common}, adapters: [{{path: smol-lora.gguf, scale: 0}}]}}\n")
    shared = SharedWeights()
    manager = ModelManager(load_registry(folder / "models.yaml"),
                           lambda entry: make_backend(entry, shared=shared))
    yield manager, shared
    manager.unload_all()


@pytest.mark.slow
def test_llamacpp_adapter_changes_greedy_text_scale_zero_does_not_and_the_model_is_shared(
        lora_setup):
    """Also: base and base + adapter reply at once, side by side."""
    manager, shared = lora_setup
    base = reply_text(manager, "smol", CAPITAL, greedy(16))
    tuned = reply_text(manager, "smol-lora", CAPITAL, greedy(16))
    zero = reply_text(manager, "smol-zero", CAPITAL, greedy(16))
    assert "Paris" in base
    assert tuned != base
    assert zero == base
    # Side by side, as Compare's panes and Evaluate's candidates run (manager.start):
    # each answers as it does alone, though both contexts share one model.
    texts = ["", ""]
    with manager.start([("smol", CAPITAL, greedy(16)), ("smol-lora", CAPITAL, greedy(16))],
                       threading.Event()) as replies:
        for index, event in replies:
            if isinstance(event, Chunk):
                texts[index] += event.text
    assert texts == [base, tuned]
    backends = [manager.load(m) for m in ("smol", "smol-lora", "smol-zero")]
    assert backends[0]._model is backends[1]._model is backends[2]._model  # one llama_model
    assert len({id(b._ctx) for b in backends}) == 3  # each entry its own context
    key = backends[0]._shared_key
    assert shared.users(key) == 3
    # The planner: three estimates, the base's weights once.
    room = manager.room("cpu")
    estimates = [b.memory_breakdown() for b in backends]
    weights = backends[0].shared_weights()[1]
    assert room.limit - room.free == sum(e.total for e in estimates) - 2 * weights
    manager.unload("smol-zero")
    manager.unload("smol")
    assert shared.users(key) == 1  # the adapter's entry still holds the model
    assert reply_text(manager, "smol-lora", CAPITAL, greedy(16)) == tuned
    manager.unload("smol-lora")
    assert shared.users(key) == 0


@pytest.mark.slow
def test_two_entries_on_one_base_grow_rss_as_the_planner_reserves(smollm2_path, tmp_path):
    """A fresh process loads base and base + adapter and replies with both to a prompt
    that fills their contexts: RSS grows by what the planner reserved (within 30%), which
    is one copy of the weights; two copies would be far outside."""
    adapter = lora_gguf(tmp_path / "lora.gguf")
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "lora_probe.py"),
                             str(smollm2_path), str(adapter), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    growth, planned = numbers["growth"], numbers["planned"]
    both = sum(numbers["estimates"].values())
    print(f"planned {planned / MB:.0f} MB, RSS grew {growth / MB:.0f} MB, "
          f"two copies would be {both / MB:.0f} MB")
    assert numbers["chunks"] > 2
    assert abs(planned - growth) <= 0.3 * growth
    assert abs(both - growth) > 0.3 * growth


# -- transformers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llamas(tmp_path_factory, smollm2_path) -> dict[str, Path]:
    """Two random-weight Llamas (hidden 128 and 64) with a real tokenizer, and a PEFT
    LoRA for the first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)
    root = tmp_path_factory.mktemp("tiny-lora")
    paths = {}
    for name, hidden in (("llama", 128), ("narrow", 64)):
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                             num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=2 * hidden, num_key_value_heads=2,
                             bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    paths["lora"] = peft_adapter(paths["llama"], root / "llama-lora")
    return paths


@pytest.mark.slow
def test_peft_adapter_changes_greedy_text_scale_zero_does_not_on_one_shared_base(tiny_llamas):
    shared = SharedWeights()
    settings = HFSettings(device="cpu")
    lora = tiny_llamas["lora"]
    base, tuned, zero = (TransformersBackend(tiny_llamas["llama"], settings, shared=shared,
                                             adapters=adapters)
                         for adapters in ((), (Adapter(lora, 1.0),), (Adapter(lora, 0.0),)))
    for backend in (base, tuned, zero):
        backend.load()
    try:
        hello = [Message("user", "Hello there")]
        first = backend_reply(base, hello, greedy(12))[0]
        assert backend_reply(tuned, hello, greedy(12))[0] != first
        assert backend_reply(zero, hello, greedy(12))[0] == first
        assert backend_reply(base, hello, greedy(12))[0] == first  # switched back off
        assert base._model is tuned._model is zero._model  # one copy of the weights
        assert shared.users(base._weights_key()) == 3
        assert base.shared_weights() == tuned.shared_weights()
    finally:
        for backend in (base, tuned, zero):
            backend.unload()
    assert shared.users(base._weights_key()) == 0


@pytest.mark.slow
def test_a_peft_adapter_for_another_model_is_refused_by_name(tiny_llamas):
    backend = TransformersBackend(tiny_llamas["narrow"], HFSettings(device="cpu"),
                                  adapters=(Adapter(tiny_llamas["lora"]),))
    with pytest.raises(AdapterError) as refused:
        backend.load()
    message = str(refused.value)
    assert f"adapter llama-lora for {tiny_llamas['llama']}" in message
    assert "does not fit base model narrow" in message and "hidden size 128 vs 64" in message
