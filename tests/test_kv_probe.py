"""kv_cache: auto: the rule over measurements (given, never timed here), the child's answer
remembered per machine, the settings that skip it, the planner's charge, and one real
measurement on SmolLM2."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest

from backends import kv_probe
from backends.amx_probe import BufferPath
from backends.base import BackendError, Message
from backends.kv_probe import (
    CANDIDATES,
    ENV,
    KvChoice,
    KvSettingError,
    choose_kv_cache,
    decide,
    planned_kv_cache,
    remembered,
)
from backends.llamacpp import LlamaCppBackend, reference_llama
from backends.llamacpp_memory import llamacpp_estimate
from chatcore.generation.registry import ModelEntry
from chatcore.i18n import load_texts
from tests.conftest import SAFETY_S
from tests.helpers import greedy

EN, FIL = load_texts("en"), load_texts("fil")


@pytest.fixture(autouse=True)
def measured_here(monkeypatch) -> None:
    """conftest settles auto through the variable for the rest of the suite; not here."""
    monkeypatch.delenv(ENV, raising=False)


def child(rates: dict) -> list[str]:
    """A stand-in for backends.kv_measure that prints the given measurements."""
    return [sys.executable, "-c", f"print({json.dumps(json.dumps(rates))})"]


def marker_command(marker: Path) -> list[str]:
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close(); print('{{}}')"]


def probe(cache: Path, command: list[str], **kwargs) -> KvChoice:
    return choose_kv_cache(cache_file=cache, setting="auto", probe_command=command, **kwargs)


def test_q8_0_is_taken_when_it_decodes_clearly_faster():
    choice = decide({"f16": 10.0, "q8_0": 21.0}, 1000)
    assert choice.kv_cache == "q8_0"
    assert choice.describe() == ("KV cache q8_0, flash attention on: 2.1x faster than f16 at "
                                 "1,000 tokens on this CPU (measured)")
    assert FIL.say(choice.describe()) == ("KV cache q8_0, naka-on ang flash attention: 2.1x na "
                                          "mas mabilis kaysa f16 sa 1,000 token sa CPU na ito "
                                          "(sinukat)")


@pytest.mark.parametrize("q8", [8.0, 10.0, 10.9])
def test_f16_stays_unless_q8_0_beats_it_by_the_margin(q8):
    choice = decide({"f16": 10.0, "q8_0": q8}, 1000)
    assert choice.kv_cache == "f16"
    assert choice.reason == (f"q8_0 was not faster at 1,000 tokens on this CPU "
                             f"({q8 / 10:.2f}x f16, measured)")


def test_q4_0_must_beat_the_q8_0_it_would_replace():
    assert decide({"f16": 10.0, "q8_0": 20.0, "q4_0": 21.0}).kv_cache == "q8_0"
    assert decide({"f16": 10.0, "q8_0": 20.0, "q4_0": 23.0}).kv_cache == "q4_0"
    assert decide({"f16": 10.0, "q8_0": 10.5, "q4_0": 12.0}).kv_cache == "q4_0"


@pytest.mark.parametrize("rates", [{}, {"q8_0": 20.0}, {"f16": 0, "q8_0": 5.0},
                                   {"f16": "fast", "q8_0": 5.0}])
def test_without_a_measurement_of_f16_the_answer_is_f16(rates):
    assert decide(rates) == KvChoice("f16", "the KV probe measured nothing")


def test_the_auto_candidates_are_the_exact_and_the_half_sized_cache():
    assert CANDIDATES == ("f16", "q8_0")


def test_the_childs_answer_is_remembered_and_not_measured_again(tmp_path):
    cache = tmp_path / "nested" / "kv-probe.json"
    first = probe(cache, child({"f16": 10.0, "q8_0": 15.0}))
    assert first.kv_cache == "q8_0" and first.reason.key == "models.kv.faster"

    marker = tmp_path / "measured"
    second = probe(cache, marker_command(marker))
    assert not marker.exists(), "a remembered answer must not measure again"
    assert second.kv_cache == "q8_0"
    assert second.reason.endswith("(remembered)") and "1.5x faster than f16" in second.reason
    assert FIL.say(second.describe()).endswith("(naaalala)")
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["kv_cache"] == "q8_0" and entry["probed"] in second.reason
    assert planned_kv_cache(cache_file=cache) == "q8_0"
    assert remembered(cache) == second


def test_another_cpu_or_llama_cpp_version_measures_again(tmp_path, monkeypatch):
    cache = tmp_path / "kv.json"
    probe(cache, child({"f16": 10.0, "q8_0": 15.0}))
    monkeypatch.setattr(kv_probe, "llama_cpp_version", lambda: "9.9.9")
    assert remembered(cache) is None
    assert planned_kv_cache(cache_file=cache) == "f16"
    assert probe(cache, child({"f16": 10.0, "q8_0": 9.0})).kv_cache == "f16"
    assert len(json.loads(cache.read_text())) == 2


def test_a_failing_or_hanging_child_means_f16(tmp_path):
    failed = probe(tmp_path / "a.json", [sys.executable, "-c",
                                         "import sys; sys.exit('KV probe: decode returned 1')"])
    assert failed == KvChoice("f16", "the KV probe failed (exit 1): KV probe: decode returned 1")
    hung = probe(tmp_path / "b.json", [sys.executable, "-c", "import time; time.sleep(30)"],
                 timeout_s=0.5)
    assert hung == KvChoice("f16", "the KV probe did not finish within 0.5 s")
    garbled = probe(tmp_path / "c.json", [sys.executable, "-c", "print('not json')"])
    assert garbled.kv_cache == "f16" and garbled.reason.key == "models.kv.nothing"


def test_a_child_that_cannot_start_is_not_remembered(tmp_path):
    cache = tmp_path / "kv.json"
    assert probe(cache, [str(tmp_path / "no-such-program")]).reason.key == \
        "models.kv.not_started"
    assert not cache.exists()


@pytest.mark.parametrize("flash,on_cpu,expected", [
    ("off", True, "KV cache f16, flash attention off: flash attention is off, and a quantized "
                  "cache needs it"),
    ("auto", False, "KV cache f16, flash attention on: measured only for decoding on the CPU"),
])
def test_paths_with_nothing_to_choose_do_not_measure(tmp_path, flash, on_cpu, expected):
    marker = tmp_path / "measured"
    choice = probe(tmp_path / "kv.json", marker_command(marker), flash_attention=flash,
                   on_cpu=on_cpu)
    assert choice.describe() == expected and not marker.exists()
    assert FIL.say(choice.describe()) != expected


@pytest.mark.parametrize("value", ["f16", "q8_0", "Q4_0 "])
def test_the_variable_settles_auto_without_measuring(tmp_path, monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    marker = tmp_path / "measured"
    choice = choose_kv_cache(cache_file=tmp_path / "kv.json",
                             probe_command=marker_command(marker))
    kv = value.strip().lower()
    assert choice.describe() == f"KV cache {kv}, flash attention on: {ENV}={kv}"
    assert not marker.exists()
    assert planned_kv_cache() == kv


def test_a_bad_variable_names_itself_and_the_values(monkeypatch, smollm2_path):
    monkeypatch.setenv(ENV, "q2")
    with pytest.raises(KvSettingError) as raised:
        choose_kv_cache()
    assert str(raised.value) == (f"{ENV}='q2' is not a valid setting: use auto (measure once "
                                 "per machine) or one of f16, q8_0, q4_0")
    assert planned_kv_cache() == "f16"  # the planner does not fail; the load says why
    with pytest.raises(BackendError, match="LOCAL_CHAT_KV_CACHE='q2'"):
        LlamaCppBackend(smollm2_path, buffers=BufferPath(False, "a test")).load()


def test_the_planner_charges_the_settled_type_else_f16(monkeypatch, smollm2_path):
    def charged(**kwargs) -> int:
        return LlamaCppBackend(smollm2_path, context_length=1024, parallel=2,
                               **kwargs).memory_breakdown().kv_cache

    def kv(kv_cache: str) -> int:
        return llamacpp_estimate(smollm2_path, 1024, 2, kv_cache).kv_cache

    monkeypatch.setenv(ENV, "q8_0")
    assert charged() == kv("q8_0") < kv("f16")
    assert charged(kv_cache="f16") == kv("f16"), "the entry's own type wins"
    assert charged(flash_attention="off") == kv("f16")
    monkeypatch.setenv(ENV, "auto")  # nothing remembered in this cache file
    monkeypatch.setattr(kv_probe, "default_cache_file", lambda: Path("/nonexistent/kv.json"))
    assert charged() == kv("f16"), "unknown: the upper bound"


def test_entries_default_to_auto_and_accept_it_without_flash_attention():
    entry = ModelEntry(id="m", backend="llamacpp", path="x.gguf")
    assert entry.kv_cache == "auto"
    assert "KV auto" in entry.settings_label
    assert ModelEntry(id="m", backend="llamacpp", path="x.gguf", kv_cache="auto",
                      flash_attention="off").kv_cache == "auto"


@pytest.mark.slow
def test_the_real_probe_measures_smollm2_and_is_remembered(tmp_path):
    cache = tmp_path / "kv-probe.json"
    # A hang guard, not a timing: 2,000 prompt tokens on two busy cores.
    # Plain weight buffers: safe on every CPU, AMX or not (backends/amx_probe.py).
    choice = choose_kv_cache(cache_file=cache, setting="auto", extra_buffers=False,
                             timeout_s=600)
    assert choice.kv_cache in CANDIDATES
    assert choice.reason.key in ("models.kv.faster", "models.kv.not_faster"), choice.reason
    again = choose_kv_cache(cache_file=cache, setting="auto",
                            probe_command=[sys.executable, "-c", "raise SystemExit(3)"])
    assert again.kv_cache == choice.kv_cache
    (entry,) = json.loads(cache.read_text()).values()
    assert again.reason == f"{choice.reason} on {entry['probed']} (remembered)"


@pytest.mark.slow
def test_a_q8_0_cache_keeps_batched_greedy_replies_equal_to_lone_ones_and_to_llama(
        smollm2_path):
    """What auto may choose keeps the promise f16 keeps: with flash attention on, a greedy
    reply is the same in a batch, alone, and in llama-cpp-python's own `Llama` given the
    same cache type."""
    backend = LlamaCppBackend(smollm2_path, context_length=1024, parallel=2, kv_cache="q8_0")
    backend.load()
    prompts = [[Message("user", "Write a long story about a dragon who learns to cook.")],
               [Message("user", "Tell me something about the sea.")]]
    try:
        assert backend.kv_type == "q8_0" and backend.kv_choice is None

        def reply(messages) -> str:
            chunks = backend.stream_chat(messages, greedy(40), threading.Event())
            return "".join(chunk.text for chunk in chunks)

        alone = [reply(messages) for messages in prompts]
        backend._decoder.widest = 0
        together: list[str | None] = [None, None]
        threads = [threading.Thread(target=lambda i=i: together.__setitem__(
            i, reply(prompts[i]))) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10 * SAFETY_S)
        assert backend._decoder.widest == 2, "the two replies never decoded in one step"
        assert together == alone
        llm = reference_llama(smollm2_path, backend.buffers, kv_cache=backend.kv_type)
        try:
            raw = llm.create_completion(backend.render_prompt(prompts[0]), temperature=0.0,
                                        max_tokens=40)
        finally:
            llm.close()
        assert raw["choices"][0]["text"] == alone[0]
    finally:
        backend.unload()
