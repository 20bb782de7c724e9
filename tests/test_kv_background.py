"""kv_cache: auto never makes a load wait: f16 for now, the measurement in a background
thread at low priority, one at a time per machine, its answer used from the next load.
Stand-in children only (the real measurement: tests/test_kv_probe.py); nothing is timed."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from backends import kv_probe
from backends.amx_probe import BufferPath
from backends.kv_background import (
    STALE_MARGIN_S,
    KvProbe,
    MeasurementLock,
    kv_for_load,
    lock_path,
    pending,
)
from backends.kv_probe import ENV, KvChoice, measure_and_remember, remembered
from backends.llamacpp import LlamaCppBackend
from chatcore.i18n import load_texts
from tests.conftest import SAFETY_S

EN, FIL = load_texts("en"), load_texts("fil")
FOR_NOW = ("KV cache f16 for now: measuring f16 against q8_0 in the background; the answer "
           "applies from the next load")


@pytest.fixture(autouse=True)
def measured_here(monkeypatch) -> None:
    """conftest settles auto through the variable for the rest of the suite; not here."""
    monkeypatch.delenv(ENV, raising=False)


def gated_child(gate: Path, runs: Path, rates: dict) -> list[str]:
    """A stand-in for backends.kv_measure: notes its run and its niceness in `runs`, waits
    until `gate` exists (the test decides when the measurement ends), prints `rates`."""
    code = (f"import os, time, pathlib\n"
            f"with open({str(runs)!r}, 'a') as f: f.write(str(os.nice(0)) + '\\n')\n"
            f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
            f"print({json.dumps(json.dumps(rates))})")
    return [sys.executable, "-c", code]


def test_the_pending_note_in_english_and_filipino():
    note = pending().describe()
    assert note == FOR_NOW and EN.say(note) == FOR_NOW
    assert FIL.say(note) == ("KV cache f16 muna: sinusukat ang f16 laban sa q8_0 sa "
                             "background; magagamit ang sagot mula sa susunod na pag-load")


def test_nothing_remembered_means_f16_now_and_the_answer_from_the_next_load(tmp_path):
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    probe = KvProbe(tmp_path / "kv-probe.json", gated_child(gate, runs, {"f16": 10.0,
                                                                        "q8_0": 15.0}))
    choice, thread = kv_for_load(probe, "auto", True)
    assert choice == pending() and choice.describe() == FOR_NOW
    assert thread is not None and thread.daemon and thread is not threading.current_thread()
    assert lock_path(probe.answers).exists(), "the measurement holds the lock"
    again, second = kv_for_load(probe, "auto", True)
    assert again.pending and second is None, "one measurement at a time"
    gate.touch()
    thread.join(SAFETY_S)
    assert not thread.is_alive() and not lock_path(probe.answers).exists()
    assert runs.read_text().split() == ["19"], "the child runs once, at nice 19"
    after, none = kv_for_load(probe, "auto", True)
    assert none is None and after.kv_cache == "q8_0" and not after.pending
    assert after.describe().startswith("KV cache q8_0, flash attention on: 1.5x faster")
    assert after == remembered(probe.answers)


def test_racing_loads_start_one_measurement(tmp_path):
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    probe = KvProbe(tmp_path / "kv-probe.json", gated_child(gate, runs, {"f16": 10.0,
                                                                        "q8_0": 9.0}))
    start = threading.Barrier(4)
    results: list[tuple[KvChoice, threading.Thread | None]] = []

    def load() -> None:
        start.wait(SAFETY_S)
        results.append(kv_for_load(probe, "auto", True))

    loaders = [threading.Thread(target=load) for _ in range(4)]
    for loader in loaders:
        loader.start()
    for loader in loaders:
        loader.join(SAFETY_S)
    started = [thread for _, thread in results if thread is not None]
    assert len(results) == 4 and all(choice.pending for choice, _ in results)
    assert len(started) == 1
    gate.touch()
    started[0].join(SAFETY_S)
    assert runs.read_text().count("\n") == 1
    assert remembered(probe.answers).kv_cache == "f16"


def test_a_live_lock_is_respected_and_a_stale_one_taken_over(tmp_path):
    path = lock_path(tmp_path / "kv-probe.json")
    held = MeasurementLock.take(path, 60)
    assert held is not None and MeasurementLock.take(path, 60) is None
    old = time.time() - 60 - STALE_MARGIN_S
    os.utime(path, (old, old))
    taken = MeasurementLock.take(path, 60)
    assert taken is not None and path.read_text().strip() == str(os.getpid())
    taken.release()
    assert not path.exists()


def test_settled_and_remembered_answers_start_nothing(tmp_path):
    runs = tmp_path / "runs"
    probe = KvProbe(tmp_path / "kv-probe.json", gated_child(tmp_path / "gate", runs, {}))
    assert kv_for_load(probe, "off", True) == (kv_for_load(probe, "off", False)[0], None)
    assert kv_for_load(probe, "auto", False)[1] is None
    assert kv_for_load(KvProbe(probe.cache_file, probe.command, setting="q8_0"), "auto",
                       True) == (KvChoice("q8_0", "LOCAL_CHAT_KV_CACHE=q8_0"), None)
    assert not runs.exists() and not lock_path(probe.answers).exists()


@pytest.mark.parametrize("cpu_s,kept", [(0.0, False), (None, False), (100.0, True)])
def test_a_timeout_is_remembered_only_when_the_child_had_the_cpu(tmp_path, monkeypatch,
                                                                 cpu_s, kept):
    """A child starved by other work says nothing about this machine: measure again later.
    One that had the CPU and still ran out of time: this machine is too slow; f16 stays."""
    monkeypatch.setattr(kv_probe, "_cpu_seconds", lambda pid: cpu_s)
    cache = tmp_path / "kv-probe.json"
    choice = measure_and_remember([sys.executable, "-c", "import time; time.sleep(30)"],
                                  cache, timeout_s=0.5)
    assert choice == KvChoice("f16", "the KV probe did not finish within 0.5 s")
    assert (remembered(cache) is not None) == kept


def test_a_child_that_cannot_start_leaves_no_lock_and_no_answer(tmp_path):
    probe = KvProbe(tmp_path / "kv-probe.json", [str(tmp_path / "no-such-program")])
    choice, thread = kv_for_load(probe, "auto", True)
    thread.join(SAFETY_S)
    assert choice.pending and remembered(probe.answers) is None
    assert not lock_path(probe.answers).exists()


@pytest.mark.slow  # loads SmolLM2
def test_a_load_does_not_wait_for_the_measurement(tmp_path, smollm2_path):
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    probe = KvProbe(tmp_path / "kv-probe.json", gated_child(gate, runs, {"f16": 10.0,
                                                                        "q8_0": 15.0}))
    backend = LlamaCppBackend(smollm2_path, buffers=BufferPath(False, "a test"),
                              kv_probe=probe)
    backend.load()
    try:
        assert backend.kv_type == "f16" and backend.kv_measurement.is_alive()
        assert FOR_NOW in backend.runtime_notes
    finally:
        backend.unload()
    gate.touch()
    backend.kv_measurement.join(SAFETY_S)
    backend.load()
    try:
        assert backend.kv_type == "q8_0" and backend.kv_choice == remembered(probe.answers)
        assert backend.runtime_notes[1].startswith("KV cache q8_0, flash attention on: ")
    finally:
        backend.unload()
    assert runs.read_text().split() == ["19"]


def test_the_bench_settles_auto_up_front_and_pins_an_answer_it_could_not_keep(tmp_path):
    from bench.kv_cache import settle

    buffers, environ = BufferPath(False, "a test"), {}
    cache = tmp_path / "kv-probe.json"
    choice = settle(buffers, cache, [str(tmp_path / "no-such-program")], environ)
    assert choice.kv_cache == "f16" and environ == {ENV: "f16"}, "no app may measure"
    kept: dict[str, str] = {}
    measured = settle(buffers, cache, [sys.executable, "-c",
                                       "print('{\"f16\": 10.0, \"q8_0\": 20.0}')"], kept)
    assert measured.kv_cache == "q8_0" and kept == {}, "remembered: the apps read it"
    assert settle(buffers, cache, [str(tmp_path / "no-such-program")], kept) == \
        remembered(cache)
