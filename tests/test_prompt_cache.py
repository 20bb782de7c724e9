"""The prompt cache in host RAM (issue 30): its sizing rule, the planner's loan and its
return, the cache's LRU by bytes and owners, and its line in the Models tab. Fast: the
llama.cpp state calls are replaced by a fake context (tests/test_prompt_cache_model.py runs
the real engine)."""
from __future__ import annotations

import pytest

from backends.base import Message
from backends.llamacpp_states import (MAX_COMPARED, CacheUse, SavedStates, prompt_cache_note,
                                      shared_prefix)
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import MemoryBudget
from chatcore.generation.prompt_cache import CACHE_CAP_BYTES, prompt_cache_extra
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.i18n import english, load_texts
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend
from tests.helpers import greedy, reply_text

MB = 10**6
GB = 10**9


# -- the sizing rule --------------------------------------------------------------------------
def test_the_loan_is_half_the_room_left_up_to_8_gib_in_all():
    assert prompt_cache_extra(50 * MB, 10 * GB) == 5 * GB
    assert prompt_cache_extra(50 * MB, 100 * GB) == CACHE_CAP_BYTES - 50 * MB
    assert prompt_cache_extra(50 * MB, 200 * MB) == 100 * MB


def test_no_room_left_lends_nothing_and_the_minimum_stays():
    assert prompt_cache_extra(50 * MB, 0) == 0
    assert prompt_cache_extra(50 * MB, -5 * GB) == 0  # fits only after evicting others
    assert prompt_cache_extra(10 * GB, 100 * GB) == 0  # one slot is larger than the cap


# -- the planner's loan ------------------------------------------------------------------------
class CachingBackend(ScriptedBackend):
    """A scripted engine that takes a prompt cache loan and records it."""

    def __init__(self, memory: int) -> None:
        super().__init__(memory=memory)
        self.loan = 0
        self.loans: list[int] = []

    def grant_prompt_cache(self, extra_bytes: int) -> int:
        self.loan = extra_bytes
        self.loans.append(extra_bytes)
        return extra_bytes


def caching_manager(sizes_mb: dict[str, int], budget_mb: int, plain: set[str] = frozenset()):
    backends = {i: ScriptedBackend(memory=s * MB) if i in plain else CachingBackend(s * MB)
                for i, s in sizes_mb.items()}
    entries = tuple(ModelEntry(id=i, backend="llamacpp", path=__file__) for i in sizes_mb)
    registry = ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=())
    manager = ModelManager(registry, lambda entry: backends[entry.id],
                           budget=MemoryBudget({"cpu": budget_mb * MB}))
    return manager, backends


def held(manager: ModelManager) -> int:
    """Estimates and loans of the resident models: what the plan says is taken."""
    residency = manager._residency
    with residency.lock:
        return sum((s.estimate or 0) + s.cache_loan for s in residency._slots.values()
                   if s.resident)


def test_a_loaded_model_is_lent_half_the_room_left_and_the_plan_counts_it():
    manager, backends = caching_manager({"a": 200}, budget_mb=1000)
    reply_text(manager, "a", [Message("user", "hi")], greedy())
    assert backends["a"].loan == 400 * MB
    assert held(manager) == 600 * MB <= 1000 * MB


def test_a_second_load_takes_the_loan_back_before_evicting_anything():
    manager, backends = caching_manager({"a": 200, "b": 700}, budget_mb=1000)
    reply_text(manager, "a", [Message("user", "hi")], greedy())
    assert backends["a"].loan == 400 * MB
    reply_text(manager, "b", [Message("user", "hi")], greedy())
    statuses = {s.id: s.state.value for s in manager.statuses()}
    assert statuses["a"] in ("resident", "generating"), "a was evicted for its cache"
    assert backends["a"].loan == 100 * MB  # b's 700 took 300 of a's 400
    assert held(manager) <= 1000 * MB
    assert backends["b"].loan == 0  # nothing was left to lend


def test_fit_badges_ignore_the_loan():
    """A model that fit before the loan still fits: the room it sees counts loans as free."""
    manager, _ = caching_manager({"a": 200, "b": 700}, budget_mb=1000)
    reply_text(manager, "a", [Message("user", "hi")], greedy())
    assert manager._residency.room("cpu").free == 800 * MB


def test_an_engine_without_a_cache_gets_no_loan():
    manager, _ = caching_manager({"a": 200}, budget_mb=1000, plain={"a"})
    reply_text(manager, "a", [Message("user", "hi")], greedy())
    assert held(manager) == 200 * MB


# -- the cache itself, on a fake llama.cpp context ----------------------------------------------
class FakeContext:
    """Slot -> the bytes its sequence would save as; records restores."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.restored: list[int] = []


@pytest.fixture
def fake_llama(monkeypatch):
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_state_seq_get_size", lambda ctx, slot: ctx.sizes[slot])
    monkeypatch.setattr(llama_cpp, "llama_state_seq_get_data",
                        lambda ctx, buffer, size, slot: size)

    def set_data(ctx, data, size, slot):
        ctx.restored.append(size)
        return size
    monkeypatch.setattr(llama_cpp, "llama_state_seq_set_data", set_data)
    return FakeContext()


def save(states: SavedStates, ctx: FakeContext, tokens, size: int, owner: str = "") -> None:
    ctx.sizes[0] = size
    states.save(ctx, 0, tokens, owner)


def test_states_are_evicted_least_recently_used_by_bytes(fake_llama):
    states = SavedStates(100 * MB)
    for i in range(6):
        save(states, fake_llama, [i] * 40, 30 * MB)
        assert states.size_bytes <= 100 * MB
    assert len(states) == 3
    assert states.best([0] * 40 + [9]) == 0  # the oldest went first
    assert states.best([5] * 40 + [9]) == 40


def test_a_smaller_capacity_drops_states_at_once(fake_llama):
    states = SavedStates(100 * MB)
    for i in range(3):
        save(states, fake_llama, [i] * 40, 30 * MB)
    states.resize(40 * MB)
    assert states.use() == CacheUse(30 * MB, 40 * MB, 1)
    assert states.best([2] * 40 + [9]) == 40  # the most recent stays


def test_a_state_larger_than_the_cache_is_not_kept(fake_llama):
    states = SavedStates(10 * MB)
    save(states, fake_llama, [1] * 40, 11 * MB)
    assert len(states) == 0 and states.size_bytes == 0


def test_an_owner_restores_only_its_own_states(fake_llama):
    states = SavedStates(100 * MB)
    save(states, fake_llama, list(range(100)), 10 * MB, owner="alice")
    assert states.restore_best(fake_llama, 1, list(range(100)) + [7], owner="bob") == 0
    assert states.restore_best(fake_llama, 1, list(range(100)) + [7], owner="alice") == 100
    assert fake_llama.restored == [10 * MB]


def test_a_later_turn_replaces_the_earlier_one(fake_llama):
    states = SavedStates(100 * MB)
    save(states, fake_llama, list(range(50)), 5 * MB)
    save(states, fake_llama, list(range(80)), 8 * MB)
    assert states.use() == CacheUse(8 * MB, 100 * MB, 1)


def test_finding_the_best_state_compares_a_bounded_number(fake_llama, monkeypatch):
    """Thousands of one owner's states: a prompt is compared with the newest MAX_COMPARED
    only."""
    import backends.llamacpp_states as module

    states = SavedStates(10 * GB)
    for i in range(MAX_COMPARED + 500):
        save(states, fake_llama, [1, 2, i + 10] + [3] * 20, 1000)
    calls = []
    real = module.shared_prefix
    monkeypatch.setattr(module, "shared_prefix", lambda a, b: calls.append(1) or real(a, b))
    states.best([1, 2, 5] + [3] * 2000)
    assert len(calls) == MAX_COMPARED


def test_shared_prefix_counts_equal_leading_tokens():
    assert shared_prefix([1, 2, 3, 4], [1, 2, 3, 9, 9]) == 3
    assert shared_prefix([1, 2], [1, 2, 3]) == 2
    assert shared_prefix([], [1]) == 0
    assert shared_prefix([5] * 1000 + [1], [5] * 1000 + [2]) == 1000


# -- the Models tab's line --------------------------------------------------------------------
def test_the_models_tab_says_the_cache_in_english_and_filipino():
    note = prompt_cache_note(CacheUse(1_234 * MB, 4_300 * MB, 14))
    assert note == "prompt cache 1.2 GB of 4.3 GB, 14 prompts"
    assert english().say(note) == note
    assert load_texts("fil").say(note) == "prompt cache 1.2 GB sa 4.3 GB, mga prompt: 14"
    one = prompt_cache_note(CacheUse(39 * MB, 47 * MB, 1))
    assert english().say(one) == one == "prompt cache 39 MB of 47 MB, 1 prompt"


# -- documents come before the question ---------------------------------------------------------
def test_a_whole_document_goes_before_the_question_so_questions_share_its_prefix():
    from chatcore.conversations.attachments import Grounding
    from chatcore.documents.document import Passage

    passages = tuple(Passage("memo.txt", None, i, f"part {i} of the memo") for i in range(3))
    grounding = Grounding(((1, passages),), ((1, 0), (1, 1), (1, 2)))

    def count(messages):
        return sum(len(m.content.split()) for m in messages)

    asked = [grounding.fit([Message("user", q)], 1000, count)[0][-1].content
             for q in ("Who wrote it?", "When is it due?")]
    assert all(a.startswith('<document name="memo.txt">') for a in asked)
    assert asked[0].endswith("Who wrote it?") and asked[1].endswith("When is it due?")
    assert shared_prefix(asked[0], asked[1]) >= asked[0].index("</document>")


def test_the_models_tab_row_of_a_loaded_model_shows_its_cache_in_the_pages_language():
    from chatui.models_tab import COLUMNS, status_rows

    class Cached(CachingBackend):
        placement = "cpu"

        @property
        def runtime_notes(self) -> list[str]:
            return [prompt_cache_note(CacheUse(39 * MB, 400 * MB, 2))]

    backend = Cached(100 * MB)
    entries = (ModelEntry(id="a", backend="llamacpp", path=__file__),)
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=()),
                           lambda entry: backend, budget=MemoryBudget({"cpu": GB}))
    reply_text(manager, "a", [Message("user", "hi")], greedy())
    for texts, line in ((english(), "prompt cache 39 MB of 400 MB, 2 prompts"),
                        (load_texts("fil"), "prompt cache 39 MB sa 400 MB, mga prompt: 2")):
        details = dict(zip(COLUMNS, status_rows(manager, texts=texts)[0]))["Details"]
        assert line in details, details
