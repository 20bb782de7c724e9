"""Model lifecycle: the memory budget, LRU eviction, the line per model, failure isolation."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from backends.base import Chunk, GenParams, Message
from chatcore.generation.registry import ModelEntry, ModelRegistry, load_registry
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelBusy, ModelManager, ModelState, ModelUnavailable
from chatcore.generation.replies import Loading, Waiting
from chatcore.generation.memory import MemoryBudget, parse_size
from chatcore.i18n import english
from tests.conftest import (
    CAPITAL_PROMPT,
    ROOT,
    SAFETY_S,
    SHIPPED_MODELS,
    generation_threads,
    until,
)
from tests.fakes import ScriptedBackend, reply_chunks, reply_events
from tests.helpers import greedy, reply_text

MB = 10**6
HELLO = [Message("user", "hello")]
GREEDY = greedy()


def scripted_manager(sizes_mb: dict[str, int], budget_mb: int, **backend_args) -> tuple:
    backends = {i: ScriptedBackend(memory=size * MB, **backend_args.get(i, {}))
                for i, size in sizes_mb.items()}
    entries = tuple(ModelEntry(id=i, backend="llamacpp", path=__file__) for i in sizes_mb)
    registry = ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=())
    budget = MemoryBudget({"cpu": budget_mb * MB})
    return ModelManager(registry, lambda entry: backends[entry.id], budget=budget), backends


def resident(manager: ModelManager) -> set[str]:
    return {s.id for s in manager.statuses()
            if s.state in (ModelState.RESIDENT, ModelState.GENERATING)}


def reply(manager: ModelManager, model_id: str, params: GenParams = GREEDY,
          messages=HELLO) -> str:
    return reply_text(manager, model_id, messages, params)


# -- scripted backends that declare their sizes ----------------------------------------------
def test_eviction_is_least_recently_used_first():
    manager, _ = scripted_manager({"a": 40, "b": 40, "c": 40}, budget_mb=100)
    reply(manager, "a")
    reply(manager, "b")  # no pause between replies: use order is a counter, not a clock
    reply(manager, "a")  # a is now the most recently used
    reply(manager, "c")
    assert resident(manager) == {"a", "c"}


def test_a_generating_model_is_never_evicted_and_a_refusal_gives_the_numbers():
    manager, backends = scripted_manager(
        {"busy": 40, "idle": 40, "c": 50, "huge": 70}, budget_mb=100,
        busy={"reply": "w " * 200, "delay": 0.01})
    reply(manager, "idle")
    cancel = threading.Event()
    stream = reply_chunks(manager, "busy", HELLO, GREEDY, cancel)
    next(stream)  # busy is generating now
    assert manager.status("busy").state == ModelState.GENERATING
    reply(manager, "c")  # room comes from the idle model only
    assert resident(manager) == {"busy", "c"}
    with pytest.raises(ModelUnavailable) as refused:
        manager.load("huge")
    assert "needs 70 MB, 10 MB free of a 100 MB budget on cpu" in str(refused.value)
    assert resident(manager) == {"busy", "c"}, "a refused load touched the resident models"
    assert backends["c"].loaded and backends["busy"].loaded
    with pytest.raises(ModelBusy):
        manager.unload("busy")
    cancel.set()
    list(stream)
    assert manager.unload("busy") is True


def test_a_model_larger_than_the_budget_is_refused_without_evicting():
    manager, _ = scripted_manager({"small": 10, "big": 500}, budget_mb=100)
    reply(manager, "small")
    with pytest.raises(ModelUnavailable, match="needs 500 MB, 90 MB free of a 100 MB budget"
                                               " on cpu; raise --max-memory"):
        manager.load("big")
    assert resident(manager) == {"small"}
    assert manager.status("big").state == ModelState.FAILED


def test_the_line_for_one_model_is_served_in_arrival_order():
    """Four clients join the line one after the other (each once the one before is in it);
    the backend records whom it serves, and each reply holds the model until the last
    client has seen its place move up, so every step of the line is observed."""
    manager, backends = scripted_manager({"m": 10}, budget_mb=100, m={"reply": "a b c d"})
    backend = backends["m"]
    original = backend.stream_chat
    served: list[str] = []
    positions: dict[int, list[int]] = {}
    moved = threading.Condition()

    def recording(messages, params, cancel):
        served.append(messages[-1].content)
        turn = len(served) - 1
        if turn < 3:  # hold the model until client 3 has seen itself 3 - turn places back
            with moved:
                moved.wait_for(lambda: 3 - turn in positions.get(3, []), SAFETY_S)
        yield from original(messages, params, cancel)
    backend.stream_chat = recording
    replies: dict[int, str] = {}

    def client(number: int) -> None:
        chunks = []
        for event in reply_events(manager, "m", [Message("user", f"client {number}")],
                                           GREEDY, threading.Event()):
            if isinstance(event, Waiting):
                with moved:
                    positions.setdefault(number, []).append(event.ahead)
                    moved.notify_all()
            elif isinstance(event, Chunk):
                chunks.append(event.text)
        replies[number] = "".join(chunks)

    threads = []
    for number in range(4):
        threads.append(threading.Thread(target=client, args=(number,)))
        threads[-1].start()
        assert until(lambda: manager.status("m").queued == number + 1), \
            f"client {number} never joined the line"
    for thread in threads:
        thread.join()
    assert served == [f"client {n}" for n in range(4)]
    assert positions[3] == [3, 2, 1]
    assert 0 not in positions
    assert replies == {n: "a b c d" for n in range(4)}


def test_a_request_that_gives_up_while_waiting_leaves_the_line():
    manager, _ = scripted_manager({"m": 10}, budget_mb=100,
                                  m={"reply": "x " * 40, "delay": 0.01})
    first = reply_chunks(manager, "m", HELLO, GREEDY, threading.Event())
    next(first)
    cancel = threading.Event()
    waiting = reply_events(manager, "m", HELLO, GREEDY, cancel)
    assert isinstance(next(waiting), Waiting)
    cancel.set()
    assert [e.finish_reason for e in waiting] == ["cancelled"]
    list(first)
    assert reply(manager, "m").startswith("x")
    assert generation_threads() == []


def test_budget_parsing():
    assert MemoryBudget.parse("cpu=12GB,cuda:0=20GiB").limits == {"cpu": 12 * 10**9,
                                                                   "cuda:0": 20 * 2**30}
    assert MemoryBudget.parse("512MiB").limit("cpu") == 512 * 2**20
    assert parse_size("1.5GB") == 1_500_000_000
    for bad, message in [("lots", "not a size"), ("tpu=1GB", "unknown device 'tpu'")]:
        with pytest.raises(ValueError, match=message):
            MemoryBudget.parse(bad)


# -- real models -------------------------------------------------------------------------------
@pytest.fixture()
def shipped(dequantized_cache):
    """A manager over the shipped models.yaml with a budget of `limit` bytes."""
    made = []

    def make(limit: int | None = None) -> ModelManager:
        budget = MemoryBudget({"cpu": limit}) if limit else MemoryBudget({"cpu": 8 * 10**9})
        manager = ModelManager(load_registry(SHIPPED_MODELS),
                               lambda e: make_backend(e, cache_dir=dequantized_cache),
                               budget=budget)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.unload_all()


LLAMACPP, TRANSFORMERS = "smollm2-135m", "smollm2-135m-4bit"


@pytest.mark.slow
def test_llamacpp_and_transformers_resident_together_and_switching_does_not_reload(shipped):
    manager = shipped()
    assert "Paris" in reply(manager, LLAMACPP, messages=[Message("user", CAPITAL_PROMPT)])
    assert "Paris" in reply(manager, TRANSFORMERS, messages=[Message("user", CAPITAL_PROMPT)])
    assert resident(manager) == {LLAMACPP, TRANSFORMERS}
    first_backend = manager.load(LLAMACPP)
    for model_id in (LLAMACPP, TRANSFORMERS, LLAMACPP):
        events = list(reply_events(manager, model_id, HELLO, GREEDY, threading.Event()))
        assert not any(isinstance(e, Loading) for e in events), f"{model_id} was reloaded"
    assert manager.load(LLAMACPP) is first_backend
    assert manager.status(LLAMACPP).load_seconds is not None


@pytest.mark.slow
def test_a_budget_for_one_model_makes_the_second_load_evict_the_first(shipped):
    probe = shipped()
    sizes = [make_backend(probe.entry(i), cache_dir=None).memory_estimate()
             for i in (LLAMACPP, TRANSFORMERS)]
    manager = shipped(limit=max(sizes) + 10 * MB)
    reply(manager, LLAMACPP)
    assert resident(manager) == {LLAMACPP}
    reply(manager, TRANSFORMERS)
    assert resident(manager) == {TRANSFORMERS}
    assert manager.status(LLAMACPP).state == ModelState.AVAILABLE


@pytest.mark.slow
def test_different_models_stream_at_the_same_time(shipped):
    """Each engine's first token waits until the other engine has computed one too: were
    the models served one at a time, that token would never come and the log shows it."""
    manager = shipped()
    story = [Message("user", "Write a long story about a dragon who learns to cook.")]
    log: list[str] = []  # which model computed each token, in order
    lock = threading.Lock()
    firsts = {m: threading.Event() for m in (LLAMACPP, TRANSFORMERS)}
    for model_id, other in ((LLAMACPP, TRANSFORMERS), (TRANSFORMERS, LLAMACPP)):
        backend = manager.load(model_id)
        original = backend.stream_chat

        def recording(messages, params, cancel, model_id=model_id, other=other,
                      original=original):
            for chunk in original(messages, params, cancel):
                if chunk.text:
                    with lock:
                        log.append(model_id)
                    if not firsts[model_id].is_set():
                        firsts[model_id].set()
                        firsts[other].wait(SAFETY_S)  # a hang guard only
                yield chunk
        backend.stream_chat = recording

    def client(model_id: str) -> None:
        list(reply_chunks(manager, model_id, story, greedy(60),
                                 threading.Event()))

    threads = [threading.Thread(target=client, args=(m,)) for m in (TRANSFORMERS, LLAMACPP)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(event.is_set() for event in firsts.values())
    # Both had computed a token before either computed its second: they ran together.
    assert set(log[:2]) == {LLAMACPP, TRANSFORMERS}, log[:10]
    assert log.count(LLAMACPP) > 1 and log.count(TRANSFORMERS) > 1


@pytest.mark.slow
def test_a_truncated_gguf_fails_with_a_reason_and_the_default_model_still_answers(
        tmp_path, smollm2_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2_path.read_bytes()[: 2 * 10**6])
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - {{id: smol, backend: llamacpp, path: '{smollm2_path}'}}\n"
        f"  - {{id: cut, backend: llamacpp, path: '{truncated}'}}\n")
    manager = ModelManager(load_registry(models), make_backend)
    with pytest.raises(ModelUnavailable) as failed:
        reply(manager, "cut")
    status = manager.status("cut")
    assert status.state == ModelState.FAILED
    assert str(truncated) in status.reason and "Traceback" not in status.reason
    assert str(failed.value).startswith("cut: ")
    assert "Paris" in reply(manager, "smol", messages=[Message("user", CAPITAL_PROMPT)])
    with pytest.raises(ModelUnavailable):  # a retry tries again and fails the same way
        manager.load("cut")
    manager.unload_all()


@pytest.mark.parametrize("model_id, changes", [
    (LLAMACPP, {}),  # four slots of f16 KV cache, as shipped
    (LLAMACPP, {"kv_cache": "q8_0"}),
    (TRANSFORMERS, {})])
@pytest.mark.slow
def test_the_planner_estimate_is_within_30_percent_of_the_measured_growth(
        model_id, changes, dequantized_cache):
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "memory_probe.py"),
                             model_id, str(dequantized_cache), json.dumps(changes)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    estimate, growth = numbers["estimate"], numbers["growth"]
    print(f"{model_id} {changes}: estimated {estimate / MB:.0f} MB, measured RSS growth "
          f"{growth / MB:.0f} MB after a {numbers['prompt_tokens']}-token prompt")
    assert abs(estimate - growth) <= 0.3 * growth


@pytest.mark.slow
def test_the_gguf_header_reader_agrees_with_the_gguf_package(smollm2_path, tmp_path):
    import gguf

    from backends.footprint import PlannerError
    from backends.gguf import gguf_shape, read_gguf_header

    metadata, tensors = read_gguf_header(smollm2_path)
    reference = gguf.GGUFReader(str(smollm2_path))
    assert [(t.name, int(t.n_elements)) for t in reference.tensors] == tensors
    assert metadata["llama.block_count"] == reference.fields["llama.block_count"].contents()
    assert metadata["tokenizer.ggml.tokens"] == len(reference.fields["tokenizer.ggml.tokens"].data)
    assert metadata["tokenizer.chat_template"].startswith("{% for message in messages %}")
    shape = gguf_shape(smollm2_path)
    assert (shape.n_layers, shape.n_kv_heads, shape.head_dim, shape.vocab_size) == (30, 3, 64, 49152)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_path.read_bytes()[:100_000])
    with pytest.raises(PlannerError, match="cannot read the GGUF header of"):
        gguf_shape(cut)


def test_a_gpu_budget_without_a_limit_counts_resident_models_once():
    """A fake device: what the models loaded on it take is gone from its free memory, as
    on a real GPU. 10 GB device, two 4 GB models: both fit (90% of 10 GB is 9 GB)."""
    device = {"used": 0}

    class OnTheGpu(ScriptedBackend):
        def memory_device(self) -> str:
            return "cuda:0"

        def load(self, progress=None) -> None:
            super().load(progress)
            device["used"] += self.memory

        def unload(self) -> None:
            super().unload()
            device["used"] -= self.memory

    backends = {i: OnTheGpu(memory=4000 * MB) for i in ("a", "b")}
    registry = ModelRegistry(path=SHIPPED_MODELS, entries=tuple(
        ModelEntry(id=i, backend="llamacpp", path=__file__) for i in backends), broken=())
    budget = MemoryBudget({"cpu": 1000 * MB}, gpu_free=lambda d: 10_000 * MB - device["used"])
    manager = ModelManager(registry, lambda entry: backends[entry.id], budget=budget)
    reply(manager, "a")
    assert manager.room("cuda:0").limit == 9000 * MB  # 6 GB free now + 4 GB held, 90%
    reply(manager, "b")
    assert resident(manager) == {"a", "b"}  # counted twice, "a" would have been evicted
    assert manager.memory_summary(english()) == "cpu: 0 MB of a 1.0 GB budget · " \
        "cuda:0: 8.0 GB of a 9.0 GB budget"
