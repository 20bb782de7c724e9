"""Continuous batching in the llama.cpp backend, with the real SmolLM2: several replies of one
model decode together, each exactly as it would alone, and each ends on its own."""
from __future__ import annotations

import threading

import pytest

from backends.base import Chunk, GenParams, Message
from backends.sampling import SamplingSettings
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.generation.replies import Waiting
from chatcore.conversations.store import Store
from chatcore.i18n import english
from chatui.exports import ExportFiles
from chatui.compare_handlers import CompareHandlers
from tests.conftest import CAPITAL_PROMPT, SAFETY_S, SHIPPED_MODELS
from tests.test_compare import BOB, STORY_PROMPT, pane_texts
from tests.helpers import greedy

pytestmark = pytest.mark.slow

# Different prompts and lengths: one that ends on its own early, three that run to their cap.
PROMPTS = [CAPITAL_PROMPT, STORY_PROMPT, "Tell me something about the sea.",
           "Write a long story about a lighthouse keeper and a storm."]
LENGTHS = [48, 40, 24, 32]
# A hang guard for whole replies of up to 120 tokens, never a timing: on a busy machine a
# step of four can take a few hundred milliseconds.
REPLY_GUARD_S = 10 * SAFETY_S


@pytest.fixture(scope="module")
def batching(smollm2_path):
    """A manager whose SmolLM2 entry batches four replies, as shipped CPU entries do."""
    entry = ModelEntry(id="smol", name="SmolLM2", backend="llamacpp", path=str(smollm2_path))
    assert entry.parallel == 4, "CPU entries batch four replies unless they say otherwise"
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                           make_backend)
    manager.load("smol")
    yield manager
    manager.unload_all()


def ask(manager, prompt: str, params: GenParams, cancel: threading.Event | None = None,
        on_event=None) -> tuple[str, Chunk]:
    """One reply through the manager: its text and last chunk; `on_event` sees each event."""
    text, last = "", None
    with manager.start([("smol", [Message("user", prompt)], params)],
                       cancel or threading.Event()) as replies:
        for _, event in replies:
            if isinstance(event, Exception):
                raise event
            if on_event is not None:
                on_event(event)
            if isinstance(event, Chunk):
                text += event.text
                last = event
    return text, last


def at_once(targets) -> list:
    results = [None] * len(targets)

    def run(index, target):
        results[index] = target()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REPLY_GUARD_S)
    assert not any(t.is_alive() for t in threads), "a batched reply never finished"
    return results


def test_four_concurrent_greedy_replies_are_each_what_they_are_alone(batching):
    params = [greedy(n) for n in LENGTHS]
    alone = [ask(batching, p, q) for p, q in zip(PROMPTS, params)]
    decoder = batching.load("smol")._decoder
    decoder.widest = 0
    together = at_once([lambda p=p, q=q: ask(batching, p, q) for p, q in zip(PROMPTS, params)])
    assert decoder.widest == 4, "the four replies never decoded in one step"
    assert [text for text, _ in together] == [text for text, _ in alone]
    assert [last.usage.completion_tokens for _, last in together] == \
        [last.usage.completion_tokens for _, last in alone]
    assert [last.finish_reason for _, last in together] == ["stop", "length", "length", "length"]


def test_a_fifth_request_waits_with_its_place_and_takes_the_slot_a_stopped_reply_frees(
        batching):
    """Four replies fill the slots; the fifth request is told it is next in line; when one
    of the four is stopped, the fifth takes its slot while the other three still decode."""
    long = greedy(120)
    streaming = [threading.Event() for _ in range(4)]
    stop_first = threading.Event()
    waits: list[int] = []
    done: list[str] = []

    def occupant(index: int):
        def on_event(event):
            if isinstance(event, Chunk) and event.text:
                streaming[index].set()
        result = ask(batching, PROMPTS[index], long,
                     stop_first if index == 0 else None, on_event)
        done.append(f"occupant {index}")
        return result

    def fifth():
        def on_event(event):
            if isinstance(event, Waiting):
                waits.append(event.ahead)
                stop_first.set()  # a person presses Stop on the first reply
        assert all(event.wait(SAFETY_S) for event in streaming)
        result = ask(batching, CAPITAL_PROMPT, greedy(12),
                     on_event=on_event)
        done.append("fifth")
        return result

    results = at_once([lambda i=i: occupant(i) for i in range(4)] + [fifth])
    assert waits[:1] == [1], f"the fifth request was not told it is next: {waits}"
    assert results[0][1].finish_reason == "cancelled"
    assert results[4][0].startswith("The capital of France is Paris")
    assert done.index("fifth") < min(done.index(f"occupant {i}") for i in (1, 2, 3)), \
        f"the fifth waited for a long reply rather than the freed slot: {done}"
    assert [r[1].finish_reason for r in results[1:4]] == ["length"] * 3


def test_stop_on_one_reply_leaves_the_other_three_streaming_to_the_end(batching):
    params = greedy(40)
    alone = [ask(batching, p, params)[0] for p in PROMPTS[1:]]
    streaming = [threading.Event() for _ in PROMPTS[1:]]
    stop = threading.Event()

    def stopped():
        def on_event(event):
            if isinstance(event, Chunk) and event.text and all(e.is_set() for e in streaming):
                stop.set()  # Stop once all four show words
        return ask(batching, STORY_PROMPT, greedy(400),
                   stop, on_event)

    def other(index, prompt):
        def on_event(event):
            if isinstance(event, Chunk) and event.text:
                streaming[index].set()
        return ask(batching, prompt, params, on_event=on_event)

    results = at_once([stopped] + [lambda i=i, p=p: other(i, p)
                                   for i, p in enumerate(PROMPTS[1:])])
    assert stop.is_set() and results[0][1].finish_reason == "cancelled"
    assert results[0][1].usage.completion_tokens < 400
    assert [r[0] for r in results[1:]] == alone
    assert [r[1].finish_reason for r in results[1:]] == ["length"] * 3


def test_seeded_sampling_in_a_batch_repeats(batching):
    params = [GenParams(SamplingSettings(temperature=1.0, top_p=0.95, top_k=40, repetition_penalty=1.1, max_new_tokens=24, seed=seed)) for seed in (1, 2, 3, 4)]
    prompts = [STORY_PROMPT] * 4  # the same prompt: only the seeds differ

    def round_():
        return [r[0] for r in at_once([lambda q=q, p=p: ask(batching, p, q)
                                       for p, q in zip(prompts, params)])]

    first, second = round_(), round_()
    assert first == second
    assert len(set(first)) > 1, "four seeds gave one text: the seeds were not applied"
    assert first[0] == ask(batching, STORY_PROMPT, params[0])[0]


def test_two_compare_panes_on_one_entry_stream_at_the_same_time(batching, tmp_path):
    store = Store(tmp_path)
    compare = CompareHandlers(batching, store, ExportFiles(tmp_path / "exports"),
                              texts=english())
    settings = [SamplingSettings(temperature=0.0, max_new_tokens=48)] * 4
    updates = list(compare.send(STORY_PROMPT, None, False, "2", "", ["smol"] * 4, settings,
                                request=BOB))
    final = pane_texts(updates[-1])[:2]
    growing = [pane_texts(u)[:2] for u in updates[:-1]]
    assert any(all(t not in ("", "…") and t != f for t, f in zip(texts, final))
               for texts in growing), "both panes never had text before either finished"
    assert final[0] == final[1]  # greedy, one model: the same reply in both panes
    assert "waiting" not in str(updates).lower()
    store.close()


def test_the_models_tab_shows_the_slots_the_cache_type_and_the_weight_buffers(batching):
    from chatcore.i18n import english
    from chatui.models_tab import COLUMNS, status_rows

    row = dict(zip(COLUMNS, status_rows(batching, texts=english())[0]))
    backend = batching.load("smol")
    assert row["Engine"] == "llamacpp · 4 parallel · KV auto · flash attention auto"
    assert row["Details"].startswith(f"on cpu · {backend.buffers.describe()} · "
                                     f"{backend.kv_choice.describe()} · prompt lookup drafts · "
                                     "prompt cache "), \
        row["Details"]
    # conftest settles kv_cache: auto through the variable, so no test measures by chance
    assert backend.kv_choice.describe() == \
        "KV cache f16, flash attention on: LOCAL_CHAT_KV_CACHE=f16"
    assert backend.buffers.describe().split(" (")[0] in ("plain buffers", "AMX buffers",
                                                        "default buffers")


def test_a_stalled_reader_never_holds_back_the_other_three(batching):
    """One reader stops reading: the other three are decoded at every step to their end,
    and the stalled one is decoded LOOKAHEAD tokens past its reader, no further."""
    from backends.llamacpp_batch import LOOKAHEAD

    backend = batching.load("smol")
    decoder = backend._decoder
    prompts = [backend._tokenize(backend.render_prompt([Message("user", p)]))
               for p in PROMPTS[1:] + [STORY_PROMPT]]
    resume, stalled_at = threading.Event(), threading.Event()
    decoder.history.clear()
    sequences = [decoder.submit(p, 40, greedy(40), threading.Event()) for p in prompts]

    def read(index: int):
        for taken, _ in enumerate(decoder.tokens(sequences[index]), 1):
            if index == 3 and taken == 2:
                stalled_at.set()
                resume.wait(REPLY_GUARD_S)
        decoder.leave(sequences[index])

    readers = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for reader in readers:
        reader.start()
    assert stalled_at.wait(REPLY_GUARD_S)
    start = len(decoder.history)
    for reader in readers[:3]:
        reader.join(REPLY_GUARD_S)
    assert not any(reader.is_alive() for reader in readers[:3]), "the three never finished"
    behind = sequences[3]
    assert behind.generated - behind.taken == LOOKAHEAD, "it was not decoded ahead"
    steps = list(decoder.history)[start:]
    resume.set()
    readers[3].join(REPLY_GUARD_S)
    assert [s.generated for s in sequences] == [40] * 4
    for other in sequences[:3]:
        last = max(i for i, step in enumerate(steps) if other.slot in step)
        assert all(other.slot in step for step in steps[:last + 1]), \
            f"a step left out slot {other.slot} while the fourth reader stalled: {steps}"
    assert sum(behind.slot in step for step in steps) <= LOOKAHEAD
