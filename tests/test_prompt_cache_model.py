"""The prompt cache with the real engine (SmolLM2 through the shipped registry and the real
planner): a long document survives other conversations, the budget bounds the bytes held,
a second owner starts cold, and a regenerate, an Evaluate system prompt and a Compare round
are read from the cache. What a reply took from the cache is its usage's cached_tokens."""
from __future__ import annotations

import threading

import pytest

from backends.base import Chunk, Message, Usage
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import MemoryBudget
from chatcore.generation.registry import load_registry
from chatcore.generation.replies import ReplyRequest
from tests.conftest import SHIPPED_MODELS
from tests.helpers import greedy

MODEL = "smollm2-135m"
MB = 10**6
QUESTION = "How many crates of salt are there?"


def document(sentences: int) -> str:
    return " ".join(
        f"Item {i}: the warehouse in district {i % 17} stores {i * 37 % 1000} crates of "
        f"{['apples', 'copper', 'linen', 'salt', 'timber'][i % 5]}." for i in range(sentences))


def ask(manager: ModelManager, messages: list[Message], user: str = "",
        max_new: int = 8) -> tuple[str, Usage]:
    text, usage = "", None
    with manager.start([ReplyRequest(MODEL, messages, greedy(max_new), user=user)],
                       threading.Event()) as replies:
        for _, event in replies:
            if isinstance(event, Exception):
                raise event
            if isinstance(event, Chunk):
                text += event.text
                usage = event.usage or usage
    assert usage is not None
    return text, usage


def make_manager(limit: int) -> ModelManager:
    return ModelManager(load_registry(SHIPPED_MODELS), lambda e: make_backend(e, cache_dir=None),
                        budget=MemoryBudget({"cpu": limit}))


@pytest.fixture(scope="module")
def manager():
    made = make_manager(8 * 10**9)
    yield made
    made.unload_all()


def cache_of(manager: ModelManager):
    return manager.load(MODEL)._decoder.states


@pytest.mark.slow
def test_a_long_document_survives_other_conversations(manager):
    doc = document(75)
    backend = manager.load(MODEL)
    doc_tokens = backend.count_tokens([Message("user", doc)])
    assert doc_tokens >= 1500
    ask(manager, [Message("user", f"{doc}\n\nWhat does district 3 store?")], "reader")
    for topic in ("dragons", "the sea", "bread", "rivers", "mountains", "stars"):
        ask(manager, [Message("user", f"Write a story about {topic}.")], "reader", max_new=64)
    _, usage = ask(manager, [Message("user", f"{doc}\n\n{QUESTION}")], "reader")
    assert usage.cached_tokens >= doc_tokens - 8, (usage, doc_tokens)
    use = cache_of(manager).use()
    assert use.count >= 7 and use.used <= use.capacity
    # More than the former cache of one slot's KV could hold: it would have dropped the
    # document's state for the stories'.
    assert use.used > backend.memory_breakdown().saved_states
    assert any("prompt cache" in note for note in manager.runtime_notes(MODEL))


@pytest.mark.slow
def test_a_second_owner_does_not_get_the_first_owners_cache(manager):
    memo = f"{document(20)}\n\n{QUESTION}"
    ask(manager, [Message("user", memo)], "alice")
    _, bob = ask(manager, [Message("user", memo)], "bob")
    _, alice = ask(manager, [Message("user", memo)], "alice")
    assert bob.cached_tokens == 0, bob
    assert alice.cached_tokens >= alice.prompt_tokens - 1, alice


@pytest.mark.slow
def test_a_regenerate_an_evaluate_system_prompt_and_a_compare_round_read_the_cache(manager):
    user = "reuse"
    question = [Message("user", f"{document(12)}\n\nWhat does district 5 store?")]
    _, first = ask(manager, question, user)
    _, again = ask(manager, question, user)  # Regenerate: the same prompt once more
    assert again.cached_tokens == again.prompt_tokens - 1, again

    system = Message("system", "You are a careful assistant. " + document(6))
    _, one = ask(manager, [system, Message("user", "Name the capital of France.")], user)
    _, two = ask(manager, [system, Message("user", "Name a large river.")], user)
    shared = manager.load(MODEL).count_tokens([system])
    assert two.cached_tokens >= shared - 4, (two, shared)  # an Evaluate run's prompts

    answer, _ = ask(manager, question, user)  # a Compare round, then the next round
    _, next_round = ask(manager, question + [Message("assistant", answer),
                                             Message("user", "And district 6?")], user)
    assert next_round.cached_tokens >= first.prompt_tokens - 1, next_round


@pytest.mark.slow
def test_a_tiny_budget_holds_fewer_states_and_never_more_bytes():
    probe = make_manager(8 * 10**9)
    estimate = make_backend(probe.entry(MODEL), cache_dir=None).memory_breakdown()
    limit = estimate.total + 20 * MB  # room for a 10 MB loan: 57 MB of states in all
    manager = make_manager(limit)
    try:
        for n in range(6):
            ask(manager, [Message("user", f"{n} {document(20)}")], "tiny")
            states = cache_of(manager)
            use = states.use()
            assert use.used <= use.capacity == estimate.saved_states + 10 * MB
        assert 1 <= use.count < 6
        with manager._residency.lock:
            slot = manager._residency.peek(MODEL)
            assert slot.estimate + slot.cache_loan <= limit
    finally:
        manager.unload_all()
