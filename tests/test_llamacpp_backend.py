"""The llama.cpp backend against the real SmolLM2 GGUF."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backends.base import BackendError, GenParams, Message
from backends.sampling import SamplingSettings
from backends.llamacpp import LlamaCppBackend, reference_llama
from tests.conftest import CAPITAL_PROMPT
from tests.helpers import greedy

GREEDY = greedy(48)
STORY = [Message("user", "Write a long story about a dragon who learns to cook.")]


def collect(backend, messages, params=GREEDY, cancel=None):
    return list(backend.stream_chat(messages, params, cancel or threading.Event()))


@pytest.mark.slow
def test_greedy_answer_names_paris(smollm2):
    chunks = collect(smollm2, [Message("user", CAPITAL_PROMPT)])
    assert "Paris" in "".join(c.text for c in chunks)
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.slow
def test_greedy_streamed_text_equals_non_streamed_text(smollm2, smollm2_path):
    """Our batched token loop must give what llama-cpp-python's own completion gives."""
    messages = STORY
    streamed = collect(smollm2, messages, greedy(60))
    assert len([c for c in streamed if c.text]) > 10, "the reply arrived in one piece"
    llm = reference_llama(smollm2_path, smollm2.buffers, kv_cache=smollm2.kv_type)
    try:
        raw = llm.create_completion(smollm2.render_prompt(messages), temperature=0.0,
                                    max_tokens=60)
    finally:
        llm.close()
    assert "".join(c.text for c in streamed) == raw["choices"][0]["text"]


@pytest.mark.slow
def test_usage_counts_prompt_and_completion_tokens(smollm2):
    messages = STORY
    chunks = collect(smollm2, messages, greedy(25))
    usage = chunks[-1].usage
    assert chunks[-1].finish_reason == "length"
    assert usage.completion_tokens == 25
    model = smollm2._model
    expected_prompt = len(model.tokenize(smollm2.render_prompt(messages).encode(),
                                         add_bos=False, special=True))
    assert usage.prompt_tokens == expected_prompt == smollm2.count_tokens(messages)
    text = "".join(c.text for c in chunks)
    assert len(model.tokenize(text.encode(), add_bos=False, special=False)) == \
        pytest.approx(25, abs=2)


@pytest.mark.slow
def test_chat_template_comes_from_gguf_metadata(smollm2):
    prompt = smollm2.render_prompt([Message("system", "Be brief."), Message("user", "Hi")])
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    default = smollm2.render_prompt([Message("user", "Hi")])
    assert "You are a helpful AI assistant named SmolLM" in default


@pytest.mark.slow
def test_system_prompt_changes_the_answer(smollm2):
    question = Message("user", CAPITAL_PROMPT)
    plain = "".join(c.text for c in collect(smollm2, [question]))
    french = "".join(c.text for c in collect(
        smollm2, [Message("system", "Answer in French only."), question]))
    assert "The capital of France is Paris" in plain
    assert french != plain


@pytest.mark.slow
def test_stop_after_first_tokens_ends_generation(smollm2):
    cancel = threading.Event()
    stream = smollm2.stream_chat(STORY, greedy(400), cancel)
    seen = [next(stream) for _ in range(3)]
    cancel.set()
    rest = list(stream)
    assert [c.text for c in rest[:-1]] == [], "text arrived after Stop"
    assert rest[-1].finish_reason == "cancelled"
    # The token being decoded when Stop came may finish; no further one is computed.
    assert rest[-1].usage.completion_tokens <= len(seen) + 1


@pytest.mark.slow
def test_stop_strings_end_the_reply_and_are_not_shown(smollm2):
    chunks = collect(smollm2, [Message("user", CAPITAL_PROMPT)],
                     GenParams(SamplingSettings(temperature=0.0, max_new_tokens=48), stop=("Paris",)))
    assert "".join(c.text for c in chunks) == "The capital of France is "
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.slow
def test_seeded_sampling_repeats(smollm2):
    params = GenParams(SamplingSettings(temperature=1.0, top_p=0.95, max_new_tokens=30, seed=1234))
    first = "".join(c.text for c in collect(smollm2, STORY, params))
    second = "".join(c.text for c in collect(smollm2, STORY, params))
    assert first == second


@pytest.mark.slow
def test_prompt_longer_than_context_is_a_clear_error(smollm2_path):
    backend = LlamaCppBackend(smollm2_path, context_length=128)
    backend.load()
    try:
        with pytest.raises(BackendError, match=r"the prompt takes \d+ tokens but the model's "
                                               r"context holds 128"):
            collect(backend, [Message("user", "word " * 400)])
    finally:
        backend.unload()


@pytest.mark.parametrize("content,reason", [
    (b"", "is not a GGUF file"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "is not a GGUF file"),
])
def test_a_file_that_is_not_gguf_is_refused(tmp_path, content, reason):
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(BackendError, match=reason):
        LlamaCppBackend(path).load()


@pytest.mark.slow
def test_a_truncated_gguf_is_refused(tmp_path, smollm2_path: Path):
    path = tmp_path / "truncated.gguf"
    path.write_bytes(smollm2_path.read_bytes()[:4096])
    with pytest.raises(BackendError, match="llama.cpp could not load"):
        LlamaCppBackend(path).load()


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(BackendError, match="model file not found"):
        LlamaCppBackend(tmp_path / "absent.gguf").load()


@pytest.mark.slow
def test_alternating_conversations_reuse_their_saved_state_and_answer_the_same(smollm2):
    """Two conversations taking turns: each turn reads only its new tokens (a saved state is
    copied into the joining slot), and the reply is the one a full re-read gives."""
    params = greedy(24)

    def reply(messages):
        return "".join(c.text for c in smollm2.stream_chat(messages, params, threading.Event()))

    dragons = [Message("user", "Tell me something about dragons.")]
    sea = [Message("user", "Tell me something about the sea.")]
    dragons.append(Message("assistant", reply(dragons)))
    sea.append(Message("assistant", reply(sea)))
    dragons.append(Message("user", "And what do they eat?"))

    states = smollm2._decoder.states
    prompt = smollm2._tokenize(smollm2.render_prompt(dragons))
    shared = states.best(prompt)
    assert len(prompt) - shared < 20, f"only {shared} of {len(prompt)} tokens reused"
    from_saved = reply(dragons)

    smollm2._decoder.states = None  # the whole prompt is read again
    try:
        assert reply(dragons) == from_saved
    finally:
        smollm2._decoder.states = states


@pytest.mark.slow
def test_a_stop_string_ends_the_engines_decoding_at_the_match(smollm2, monkeypatch):
    """The shared base closes the reply's decoding when a stop string matches: by the last
    chunk its slot is handed back, and at most LOOKAHEAD tokens past the matching one were
    computed (the batch decodes that far ahead of a sequence's reader, no further)."""
    from backends.llamacpp_batch import LOOKAHEAD

    decoder = smollm2._decoder
    sequences = []
    real_submit = decoder.submit

    def recording_submit(*args, **kwargs):
        sequences.append(real_submit(*args, **kwargs))
        return sequences[-1]

    monkeypatch.setattr(decoder, "submit", recording_submit)
    chunks, evaluated = [], None
    for chunk in smollm2.stream_chat(
            STORY, GenParams(SamplingSettings(temperature=0.0, max_new_tokens=400), stop=("dragon",)),
            threading.Event()):
        if chunk.finish_reason is not None:
            assert sequences[0].finished.is_set(), "llama.cpp was still decoding"
            evaluated = len(sequences[0].in_cache)
        chunks.append(chunk)
    assert "".join(c.text for c in chunks) == "Once upon a time, in the land of Eldrador, there lived a magnificent "
    usage = chunks[-1].usage
    assert chunks[-1].finish_reason == "stop" and usage.completion_tokens < 20
    assert 0 <= evaluated - (usage.prompt_tokens + usage.completion_tokens - 1) <= LOOKAHEAD


@pytest.mark.slow
def test_continue_extends_a_cut_reply(smollm2):
    cut = [Message("user", CAPITAL_PROMPT), Message("assistant", "The capital of France is")]
    chunks = collect(smollm2, cut, GenParams(SamplingSettings(temperature=0.0, max_new_tokens=8), continue_final=True))
    assert "".join(c.text for c in chunks).startswith(" Paris")
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.slow
def test_capabilities_and_placement(smollm2, smollm2_path):
    assert LlamaCppBackend.can_continue and LlamaCppBackend.shows_prompt
    assert LlamaCppBackend.exact_token_counts
    assert smollm2.placement == "cpu"  # no GPU layers asked for
    # What the load settled, which drafts a lone reply makes, then what changes.
    buffers, kv, drafts, cache = smollm2.runtime_notes
    assert buffers == smollm2.buffers.describe()
    assert kv == smollm2.kv_choice.describe()
    assert drafts == "prompt lookup drafts"  # no draft model named
    assert cache.startswith("prompt cache "), cache
    assert LlamaCppBackend(smollm2_path).placement == ""  # not loaded
    assert smollm2.unhonoured(GenParams(SamplingSettings(top_k=40, repetition_penalty=1.3, seed=1))) == []


@pytest.mark.slow
def test_a_q8_0_kv_cache_answers_and_is_charged_less(smollm2_path):
    backend = LlamaCppBackend(smollm2_path, context_length=1024, parallel=2, kv_cache="q8_0")
    backend.load()
    try:
        chunks = collect(backend, [Message("user", CAPITAL_PROMPT)])
        assert "Paris" in "".join(c.text for c in chunks)
        # An explicit cache type is the entry's setting: no note of how it was settled.
        buffers, drafts, cache = backend.runtime_notes
        assert buffers == backend.buffers.describe() and cache.startswith("prompt cache ")
        assert drafts == "prompt lookup drafts"
    finally:
        backend.unload()
    f16 = LlamaCppBackend(smollm2_path, context_length=1024, parallel=2).memory_breakdown()
    q8 = backend.memory_breakdown()
    assert q8.kv_cache == pytest.approx(f16.kv_cache * 17 / 32, rel=0.01)
    assert q8.kv_note == "2 slots × 1024 tokens, q8_0"


@pytest.mark.parametrize("kv_cache", ["q8_0", "q4_0"])
def test_a_quantized_kv_cache_without_flash_attention_is_refused_with_its_reason(
        smollm2_path, kv_cache):
    with pytest.raises(BackendError) as refused:
        LlamaCppBackend(smollm2_path, kv_cache=kv_cache, flash_attention="off").load()
    reason = str(refused.value)
    assert "\n" not in reason
    assert reason == (f"kv_cache {kv_cache} quantizes the V cache, which llama.cpp can do only "
                      "with flash attention: set flash_attention to auto or on, or kv_cache "
                      "to f16")
