"""Speculative decoding by prompt lookup, with the real SmolLM2: the same text as decoding
one token at a time, greedy and seeded, with drafts accepted where a reply quotes."""
from __future__ import annotations

import logging
import threading

import pytest

from backends.base import GenParams, Message
from backends.llamacpp import LlamaCppBackend
from backends.sampling import SamplingSettings
from tests.conftest import CAPITAL_PROMPT, SAFETY_S
from tests.helpers import greedy

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

QUOTES = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun all day long.",
    "To be or not to be, that is the question.",
    "All happy families are alike; each unhappy family is unhappy in its own way.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Four score and seven years ago our fathers brought forth on this continent a new nation.",
    "The rain in Spain stays mainly in the plain, and the wind in the west blows hard.",
]
QUOTING = [f"Repeat this text exactly: {quote}" for quote in QUOTES]
OTHERS = [CAPITAL_PROMPT, "Write a long story about a dragon who learns to cook.",
          "Tell me something about the sea.", "List three colours.",
          "Write a long story about a lighthouse keeper and a storm.",
          "What is two plus two?", "Describe a forest at night.", "Write a haiku about rain.",
          "Explain what a computer is.", "Give me a recipe for pancakes.",
          "Say hello in French.", "What do cats eat?", "Write a poem about the moon.",
          "Why is the sky blue?"]
PROMPTS = QUOTING + OTHERS  # 20


@pytest.fixture(scope="module")
def plain(smollm2_path):
    backend = LlamaCppBackend(smollm2_path, context_length=2048, parallel=4, speculative=False)
    backend.load()
    yield backend
    backend.unload()


def replies(backend, prompts, params: GenParams) -> list[tuple[str, object]]:
    """Each prompt's text and usage, one reply at a time: drafts are made only for a reply
    decoding alone (several replies already share a step's pass over the weights)."""
    results = []
    for prompt in prompts:
        chunks = list(backend.stream_chat([Message("user", prompt)], params, threading.Event()))
        results.append(("".join(c.text for c in chunks), chunks[-1].usage))
    return results


def test_replies_decoding_together_make_no_drafts(smollm2):
    """Four quotes at once: the step is shared, so none of them drafts."""
    results: list = [None] * 4

    def one(index: int) -> None:
        chunks = list(smollm2.stream_chat([Message("user", QUOTING[index])], greedy(24),
                                          threading.Event()))
        results[index] = chunks[-1].usage

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10 * SAFETY_S)
    assert None not in results, "a reply never finished"
    assert smollm2._decoder.widest >= 2, "the replies never shared a step"
    drafted = [u.accepted_prediction_tokens + u.rejected_prediction_tokens for u in results]
    # Only a reply left alone at the end (the others done) may draft.
    assert drafted.count(0) >= 1, drafted


def test_greedy_speculative_text_is_plain_text_and_quotes_take_drafts(smollm2, plain):
    assert smollm2.speculative
    params = greedy(48)
    drafted = replies(smollm2, PROMPTS, params)
    assert [text for text, _ in drafted] == [text for text, _ in replies(plain, PROMPTS, params)]
    accepted = [usage.accepted_prediction_tokens for _, usage in drafted]
    rejected = [usage.rejected_prediction_tokens for _, usage in drafted]
    log.warning("accepted %s, rejected %s (quoting first)", accepted, rejected)
    assert all(accepted[:len(QUOTING)]), f"a quote was decoded without accepted drafts: {accepted}"
    total = sum(accepted) + sum(rejected)
    assert sum(accepted[:len(QUOTING)]) > sum(rejected[:len(QUOTING)]), \
        f"quotes rejected more drafts than they accepted: {accepted} / {rejected} of {total}"


def test_seeded_sampling_gives_the_same_text_with_and_without_drafts(smollm2, plain):
    prompts = QUOTING[:2] + OTHERS[1:3]
    params = GenParams(SamplingSettings(temperature=0.8, top_p=0.95, top_k=40,
                                        repetition_penalty=1.1, max_new_tokens=48, seed=11))
    drafted = replies(smollm2, prompts, params)
    assert [t for t, _ in drafted] == [t for t, _ in replies(plain, prompts, params)]
    assert sum(usage.accepted_prediction_tokens for _, usage in drafted) > 0, \
        "no draft was accepted: the comparison proved nothing"
