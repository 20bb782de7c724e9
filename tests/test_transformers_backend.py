"""The transformers backend: SmolLM2 from its GGUF at fp32, 8-bit and 4-bit, and tiny
Llama, Mistral and Falcon checkpoints generated here with random weights."""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from chatcore.i18n import english
from backends.base import BackendError, GenParams, Message
from backends.sampling import SamplingSettings
from backends.hf import HFSettings, TransformersBackend
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.generation.manager import ModelManager
from chatcore.conversations.store import Store
from chatui.chat_handlers import ChatHandlers
from chatui.chat_tab import model_choices
from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS
from tests.helpers import greedy

GREEDY = greedy(30)
CAPITAL = [Message("user", CAPITAL_PROMPT)]
QUANTIZATIONS = {"none": None, "8bit": 8, "4bit": 4}


def text_of(chunks) -> str:
    return "".join(c.text for c in chunks)


def hf_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hf-generate"]


@pytest.mark.slow
def test_smollm2_from_gguf_answers_paris(smollm2_fp32):
    chunks = list(smollm2_fp32.stream_chat(CAPITAL, GREEDY, threading.Event()))
    assert "Paris" in text_of(chunks)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == 7  # as llama.cpp counts: no end token
    assert smollm2_fp32.placement == "cpu"
    assert hf_threads() == []


@pytest.mark.slow
def test_greedy_streamed_text_equals_non_streamed_text(smollm2_fp32):
    import torch

    story = [Message("user", "Write a long story about a dragon who learns to cook.")]
    params = greedy(40)
    streamed = list(smollm2_fp32.stream_chat(story, params, threading.Event()))
    assert len([c for c in streamed if c.text]) > 5
    inputs = smollm2_fp32._encode(smollm2_fp32.render_prompt(story))
    with torch.inference_mode():
        output = smollm2_fp32._model.generate(**inputs, max_new_tokens=40, do_sample=False)
    whole = smollm2_fp32._tokenizer.decode(output[0][inputs["input_ids"].shape[1]:],
                                           skip_special_tokens=True)
    assert text_of(streamed) == whole
    assert streamed[-1].usage.completion_tokens == 40


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.slow
def test_smollm2_quantized_from_the_cached_safetensors_answers_paris(
        smollm2_path, smollm2_fp32, dequantized_cache, bits):
    backend = TransformersBackend(smollm2_path, HFSettings(quant_bits=bits, device="cpu"),
                                  cache_dir=dequantized_cache)
    backend.load()
    try:
        assert "Paris" in text_of(backend.stream_chat(CAPITAL, GREEDY, threading.Event()))
        assert backend.memory_footprint() < smollm2_fp32.memory_footprint()
    finally:
        backend.unload()
    assert len(list(dequantized_cache.iterdir())) == 1, "the GGUF was converted more than once"


# -- tiny real-architecture checkpoints --------------------------------------------------
ARCHITECTURES = ["llama", "mistral", "falcon"]
TEMPLATE_FOR = {"llama": None, "mistral": "mistral", "falcon": "falcon"}


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory, smollm2_path) -> dict[str, Path]:
    """Random-weight models from transformers' config classes, with a real tokenizer."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, FalconConfig, LlamaConfig,
                              MistralConfig)

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)
    common = dict(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2,
                  num_attention_heads=4, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    configs = {
        "llama": LlamaConfig(intermediate_size=256, num_key_value_heads=2, **common),
        "mistral": MistralConfig(intermediate_size=256, num_key_value_heads=2, **common),
        "falcon": FalconConfig(new_decoder_architecture=False, multi_query=True, **common),
    }
    root = tmp_path_factory.mktemp("tiny")
    paths = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        path = root / name
        model.save_pretrained(path)
        if TEMPLATE_FOR[name]:
            tokenizer.chat_template = None  # like the real Falcon: no template shipped
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def tiny_footprints() -> dict:
    return {}


@pytest.mark.parametrize("quantization", list(QUANTIZATIONS))
@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.slow
def test_tiny_checkpoint_loads_streams_and_stops(tiny_checkpoints, tiny_footprints, arch,
                                                 quantization):
    backend = TransformersBackend(
        tiny_checkpoints[arch], HFSettings(quant_bits=QUANTIZATIONS[quantization], device="cpu"),
        chat_template=TEMPLATE_FOR[arch])
    backend.load()
    try:
        hello = [Message("system", "Be brief."), Message("user", "Hello there")]
        chunks = list(backend.stream_chat(hello, greedy(12),
                                          threading.Event()))
        assert chunks[-1].finish_reason == "length"
        assert chunks[-1].usage.completion_tokens == 12

        cancel = threading.Event()
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        stopped = list(backend.stream_chat(hello, greedy(4000),
                                           cancel))
        timer.cancel()
        assert stopped[-1].finish_reason == "cancelled"
        assert stopped[-1].usage.completion_tokens < 4000
        assert hf_threads() == []

        tiny_footprints[(arch, quantization)] = backend.memory_footprint()
        if quantization != "none" and (arch, "none") in tiny_footprints:
            assert tiny_footprints[(arch, quantization)] < tiny_footprints[(arch, "none")]
    finally:
        backend.unload()


@pytest.mark.slow
def test_every_quantization_was_smaller(tiny_footprints):
    """Runs after the matrix above (pytest keeps file order)."""
    assert len(tiny_footprints) == len(ARCHITECTURES) * len(QUANTIZATIONS)
    for arch in ARCHITECTURES:
        assert tiny_footprints[(arch, "4bit")] < tiny_footprints[(arch, "8bit")] \
            < tiny_footprints[(arch, "none")]


@pytest.mark.slow
def test_model_without_template_and_no_fallback_is_refused(tiny_checkpoints):
    backend = TransformersBackend(tiny_checkpoints["falcon"], HFSettings(device="cpu"))
    with pytest.raises(BackendError, match=r"has no chat template: set chat_template to a named "
                                           r"fallback \(e\.g\. falcon\) or none for completion"):
        backend.load()


@pytest.mark.slow
def test_error_inside_generate_reaches_the_chat_and_the_next_request_works(tiny_checkpoints,
                                                                            tmp_path):
    backend = TransformersBackend(tiny_checkpoints["llama"], HFSettings(device="cpu"))
    registry = ModelRegistry(path=SHIPPED_MODELS, broken=(), entries=(
        ModelEntry(id="tiny", name="Tiny Llama", backend="transformers",
                   path=str(tiny_checkpoints["llama"]), quantization="4bit", device="cpu"),))
    manager = ModelManager(registry, lambda entry: backend)
    store = Store(tmp_path)
    handlers = ChatHandlers(manager, store, texts=english())
    request = SimpleNamespace(session_hash="tab", username=None)
    params = ("", SamplingSettings(temperature=0.0, max_new_tokens=6))
    backend.load()
    real_generate = backend._model.generate
    calls = []

    def failing_generate(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real_generate(**kwargs)

    backend._model.generate = failing_generate
    chat, _, conversation_id, _ = list(handlers.send("hi", None, False, "tiny", *params,
                                                     request=request))[-1]
    assert "⚠️ generation failed: RuntimeError: CUDA error: device-side assert triggered" \
        in chat[-1]["content"]
    assert hf_threads() == []
    chat, _, _, _ = list(handlers.send("again", conversation_id, False, "tiny", *params,
                                       request=request))[-1]
    assert "⚠️" not in chat[-1]["content"] and "6 tokens" in chat[-1]["content"]
    assert dict((v, k) for k, v in model_choices(manager, texts=english()))["tiny"] == \
        "Tiny Llama [transformers · 4bit nf4 · cpu]"
    backend.unload()
    store.close()


@pytest.mark.slow
def test_unavailable_cuda_device_is_a_clear_error(tiny_checkpoints):
    import torch

    if torch.cuda.is_available():
        pytest.fail("this test expects a machine without CUDA; run the GPU script instead")
    backend = TransformersBackend(tiny_checkpoints["llama"], HFSettings(device="cuda:0"))
    with pytest.raises(BackendError, match="device 'cuda:0' asked for, but no CUDA GPU"):
        backend.load()


@pytest.mark.slow
def test_a_stop_string_halts_generate_and_joins_the_worker(smollm2_fp32):
    """The shared base closes the engine's decoding on a stop string: by the last chunk
    generate has ended and its worker thread is joined, long before max_new_tokens."""
    story = [Message("user", "Write a long story about a dragon who learns to cook.")]
    chunks = []
    for chunk in smollm2_fp32.stream_chat(
            story, GenParams(SamplingSettings(temperature=0.0, max_new_tokens=400), stop=("dragon",)),
            threading.Event()):
        if chunk.finish_reason is not None:
            assert hf_threads() == [], "generate was still running"
        chunks.append(chunk)
    assert text_of(chunks) == "Once upon a time, in a land far away, there lived a "
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens < 30  # the worker runs a token or two ahead


@pytest.mark.slow
def test_continue_extends_a_cut_reply(smollm2_fp32):
    cut = [Message("user", CAPITAL_PROMPT), Message("assistant", "The capital of France is")]
    chunks = list(smollm2_fp32.stream_chat(
        cut, GenParams(SamplingSettings(temperature=0.0, max_new_tokens=8), continue_final=True),
        threading.Event()))
    assert text_of(chunks).startswith(" Paris")
    assert chunks[-1].finish_reason == "stop"
    assert hf_threads() == []


@pytest.mark.slow
def test_capabilities(smollm2_fp32, smollm2_path):
    assert TransformersBackend.can_continue and TransformersBackend.shows_prompt
    assert TransformersBackend.exact_token_counts
    assert smollm2_fp32.placement == "cpu"
    assert TransformersBackend(smollm2_path, HFSettings(device="cpu")).placement == ""
    assert smollm2_fp32.unhonoured(GenParams(SamplingSettings(top_k=40, repetition_penalty=1.3, seed=1))) == []
