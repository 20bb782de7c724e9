"""Models without a chat template, against the real SmolLM2 GGUF with its template removed:
refused with a guessed fallback named, chatting through that fallback, and completion mode
(`chat_template: none`) on llama.cpp and transformers."""
from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import BackendError, GenParams, Message
from backends.sampling import SamplingSettings
from backends.chat_template import guess_fallback
from backends.hf import HFSettings, TransformersBackend
from backends.llamacpp import LlamaCppBackend
from chatcore.generation.context import fit_context
from tests.conftest import CAPITAL_PROMPT
from tests.helpers import backend_reply, greedy

GREEDY = greedy()
# Measured robust: greedy SmolLM2 continues this with " Paris." on llama.cpp and transformers.
OPENING = "The capital of France is"


@pytest.fixture(scope="module")
def completion_llamacpp(untemplated_gguf: Path):
    backend = LlamaCppBackend(untemplated_gguf, context_length=256, chat_template="none")
    backend.load()
    yield backend
    backend.unload()


def reply(backend, messages, params=GREEDY):
    return backend_reply(backend, messages, params)


@pytest.mark.slow
def test_the_copy_lost_only_its_chat_template(smollm2_path, untemplated_gguf):
    import gguf

    original = gguf.GGUFReader(smollm2_path).fields
    copy = gguf.GGUFReader(untemplated_gguf).fields
    assert "tokenizer.chat_template" in original
    assert set(original) - set(copy) == {"tokenizer.chat_template"}


@pytest.mark.slow
def test_a_gguf_without_template_or_override_is_refused_naming_the_guess(untemplated_gguf):
    with pytest.raises(BackendError) as refused:
        LlamaCppBackend(untemplated_gguf).load()
    message = str(refused.value)
    assert "has no chat template" in message
    assert f"set chat_template to a named fallback (e.g. {guess_fallback('llama')}) or none " \
           "for completion mode" in message
    assert guess_fallback("llama") == "llama3"


@pytest.mark.slow
def test_the_guessed_fallback_loads_and_replies(untemplated_gguf):
    """SmolLM2 was not tuned on Llama 3's markers, so only the plumbing is asserted."""
    backend = LlamaCppBackend(untemplated_gguf, chat_template=guess_fallback("llama"))
    backend.load()
    try:
        assert backend.template_warnings() == [
            "no chat template in this model: using the llama3 fallback"]
        messages = [Message("user", CAPITAL_PROMPT)]
        report = backend.prompt_report(messages, GREEDY)
        assert report.template == "named fallback llama3 (models.yaml)"
        assert report.prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
        assert "<|eot_id|>" in report.stop_strings
        text, last = reply(backend, messages)
        assert text.strip()
        assert last.finish_reason in ("stop", "length")
    finally:
        backend.unload()


@pytest.mark.slow
def test_completion_mode_continues_the_text(completion_llamacpp):
    messages = [Message("user", OPENING)]
    text, last = reply(completion_llamacpp, messages)
    assert "Paris" in text
    assert last.finish_reason in ("stop", "length")
    assert completion_llamacpp.template_warnings() == []

    report = completion_llamacpp.prompt_report(messages, GREEDY)
    assert report.prompt == OPENING
    assert report.template == "none: completion mode (models.yaml)"
    assert report.stop_strings == ()  # only the model's end-of-sequence tokens end it
    assert report.eos_ids
    plain = completion_llamacpp._model.tokenize(OPENING.encode(), add_bos=False, special=True)
    assert report.prompt_tokens == len(plain) == completion_llamacpp.count_tokens(messages)
    assert last.usage.prompt_tokens == len(plain)


@pytest.mark.slow
def test_completion_mode_joins_system_and_turns_and_only_request_stops_apply(
        completion_llamacpp):
    messages = [Message("system", "Geography facts."), Message("user", "Germany: Berlin."),
                Message("assistant", "Italy: Rome."), Message("user", OPENING)]
    report = completion_llamacpp.prompt_report(messages, GREEDY)
    assert report.prompt == f"Geography facts.\n\nGermany: Berlin.\n\nItaly: Rome.\n\n{OPENING}"
    text, last = reply(completion_llamacpp, messages,
                       GenParams(SamplingSettings(temperature=0.0, max_new_tokens=24), stop=("\n",)))
    assert "\n" not in text and last.finish_reason == "stop"


@pytest.mark.slow
def test_completion_mode_fits_the_context_by_dropping_old_turns(completion_llamacpp):
    history = []
    for n in range(12):
        history += [Message("user", f"Fact {n}: water boils at one hundred degrees."),
                    Message("assistant", "It does, at sea level.")]
    messages = [Message("system", "Facts."), *history, Message("user", OPENING)]
    fitted, dropped = fit_context(messages, completion_llamacpp.count_tokens,
                                  completion_llamacpp.context_length, GREEDY.sampling.max_new_tokens)
    assert dropped > 0 and fitted[0] == messages[0] and fitted[-1] == messages[-1]
    limit = completion_llamacpp.context_length - GREEDY.sampling.max_new_tokens
    assert completion_llamacpp.count_tokens(fitted) <= limit
    report = completion_llamacpp.prompt_report(fitted, GREEDY)
    assert report.prompt == "\n\n".join(m.content for m in fitted)
    text, last = reply(completion_llamacpp, fitted)
    assert text and last.usage.prompt_tokens == report.prompt_tokens


@pytest.mark.slow
def test_completion_mode_on_transformers_continues_the_text(untemplated_gguf):
    backend = TransformersBackend(untemplated_gguf, HFSettings(device="cpu"),
                                  chat_template="none")
    backend.load()
    try:
        messages = [Message("user", OPENING)]
        text, last = reply(backend, messages)
        assert "Paris" in text
        assert last.finish_reason in ("stop", "length")
        assert backend.template_warnings() == []
        report = backend.prompt_report(messages, GREEDY)
        assert report.prompt == OPENING
        assert report.template == "none: completion mode (models.yaml)"
        assert report.stop_strings == ()
        plain = backend._tokenizer(OPENING)["input_ids"]  # with what the tokenizer adds
        assert report.prompt_tokens == len(plain) == backend.count_tokens(messages)
    finally:
        backend.unload()
