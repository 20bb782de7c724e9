"""The benchmark command, in its one-short-run form, so it cannot rot. Its numbers are
reported, never asserted: only the parts and their shape are checked (and, on made-up
numbers, how the targets and the llama-server anchor are reported)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import llama_server, report, served_report, targets
from tests.conftest import ROOT

TARGETS = {"fairness", "parallel_4_alone", "streaming_vs_raw", "amx_vs_plain"}
SERVED_TARGETS = {"vs_llama_server", "aggregate_4_vs_1", "first_token", "document_again",
                  "document_after_chats", "second_user_cache", "long_decode_vs_short",
                  "long_decode_vs_server", "conversation_turns", "speculative_speedup"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_SERVER"}  # the anchor is opt-in
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text(), out


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_the_quick_benchmark_writes_json_markdown_and_a_plot(quick_run):
    results, markdown, out = quick_run
    for part in ("startup", "streaming", "backends", "concurrency", "llama_server", "compare", "buffers",
                 "kv_cache", "targets", "switching", "threads", "conversations", "machine",
                 "buffer_path", "kv_path", "served"):
        assert part in results, f"the report has no {part} part"
    for path in ("raw", "api", "page", "page_client"):
        assert results["streaming"][path]["runs"] == 1
        # Every path was measured: a refused call leaves no figure (an "n/a" row).
        assert results["streaming"][path]["tokens_per_second"], path
    assert "| app: HTTP API (SSE) |" in markdown and "Long conversations" in markdown
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_what_users_see_is_measured_over_http_with_two_users(quick_run):
    results, markdown, _ = quick_run
    served = results["served"]
    assert served["anchor"]["run"] is False and "What users see" in markdown
    document = served["app"]["document"]
    # The same document asked again reuses its prompt; the second user gets none of it.
    assert document["again"]["cached_tokens"] >= served["document_tokens"], document["again"]
    assert document["second_user"]["cached_tokens"] == 0, document["second_user"]
    spec = served["speculative"]
    assert spec["same_text"], "prompt lookup changed the greedy text"
    assert spec["drafted"] > 0, spec


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_concurrency_runs_each_level_with_one_and_four_slots(quick_run):
    results, markdown, _ = quick_run
    c = results["concurrency"]
    assert [run["parallel"] for run in c["runs"]] == [1, 4]
    for run in c["runs"]:
        assert [level["clients"] for level in run["levels"]] == [1, 4]
        for level in run["levels"]:
            assert len(level["time_to_first_token_s"]) == level["clients"]
            assert len(level["per_client_decode_tokens_per_second"]) == level["clients"]
    assert "| app, parallel 1 | 4 |" in markdown and "| app, parallel 4 | 4 |" in markdown


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_without_llama_server_the_report_says_the_anchor_was_not_run(quick_run):
    results, markdown, _ = quick_run
    assert results["llama_server"]["run"] is False
    assert "LLAMA_SERVER" in results["llama_server"]["why"]
    assert "Anchor: llama-server was not run" in markdown


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_compare_panes_batched_and_taking_turns(quick_run):
    results, markdown, _ = quick_run
    rounds = results["compare"]["rounds"]
    assert [r["parallel"] for r in rounds] == [4, 1]
    assert all(len(r["panes"]) == 2 for r in rounds)
    assert "two panes on one entry" in markdown and "taking turns (parallel 1)" in markdown


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_buffer_path_amx_comparison_and_kv_cache_are_reported(quick_run):
    results, markdown, _ = quick_run
    assert f"Weight buffers: {results['buffer_path']}" in markdown
    # Settled up front (here by the variable conftest pins), so no app measured meanwhile.
    assert results["kv_path"] == "KV cache f16, flash attention on: LOCAL_CHAT_KV_CACHE=f16"
    assert f"{results['kv_path']}." in markdown
    buffers = results["buffers"]
    assert buffers["run"] or buffers["why"]  # where the probe fails, the reason is given
    assert "AMX buffers against plain buffers" in markdown
    assert [row["kv_cache"] for row in results["kv_cache"]["rows"]] == ["f16", "q8_0"]
    assert "| q8_0 |" in markdown


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_every_target_is_checked_or_says_why_not(quick_run):
    results, markdown, _ = quick_run
    assert {check["name"] for check in results["targets"]} == TARGETS | SERVED_TARGETS
    for check in results["targets"]:
        if check["met"] is None:  # not checked: a reason, or nothing was measured
            assert check["why"] or check["value"] is None
    assert "**Targets** (this run's numbers)" in markdown
    assert any(mark in markdown for mark in ("✅", "❌"))


@pytest.mark.slow  # runs the quick benchmark on the real model (minutes)
def test_start_to_serving_and_memory_before_any_model_are_reported(quick_run):
    results, markdown, _ = quick_run
    startup = results["startup"]
    assert startup["runs"] == 1 and len(startup["each"]) == 1
    assert startup["serving_s"] > 0 and startup["rss_before_model_mb"] > 0
    assert "**Start-up** (median of 1 start): launch to \"Chat page:\" printed" in markdown
    assert "resident memory then, before any model is loaded," in markdown


# -- made-up numbers: fast ----------------------------------------------------------------

def test_the_start_up_line_names_both_figures_and_the_target():
    line = "\n".join(report.startup_lines({"runs": 5, "target_s": 4.0, "serving_s": 4.26,
                                           "rss_before_model_mb": 164.4, "each": []}))
    assert ("launch to \"Chat page:\" printed 4.3 s (target at most 4 s: no); resident "
            "memory then, before any model is loaded, 164 MB.") in line
    assert "(median of 5 starts)" in line

def _level(clients: int, aggregate: float, decode: list[float], firsts: list[float]) -> dict:
    return {"clients": clients, "aggregate_tokens_per_second": aggregate,
            "per_client_tokens_per_second": decode, "per_client_decode_tokens_per_second": decode,
            "time_to_first_token_s": firsts, "tokens": [16] * clients, "wall_s": 1.0}


def _concurrency() -> dict:
    return {"max_tokens": 16, "clients": [1, 4], "every_client_answered": True, "runs": [
        {"parallel": 1, "levels": [_level(1, 50, [50], [0.1]),
                                   _level(4, 50, [50] * 4, [0.1, 0.4, 0.7, 1.0])]},
        {"parallel": 4, "levels": [_level(1, 49, [49], [0.1]),
                                   _level(4, 100, [25, 25, 25, 20], [0.1, 0.2, 0.2, 0.4])]}]}


def test_targets_compare_the_right_levels():
    anchor = {"run": True, "levels": [_level(4, 80, [20] * 4, [0.1] * 4)]}
    checks = {c["name"]: c for c in targets.checks(
        {"concurrency": _concurrency(), "llama_server": anchor,
         "streaming": {"api": {"tokens_per_second_vs_raw": 0.96}},
         "buffers": {"run": False, "why": "plain buffers (the AMX probe died with SIGILL)"}})}
    assert checks.keys() == TARGETS
    assert checks["streaming_vs_raw"]["met"] is False
    assert checks["fairness"]["value"] == pytest.approx(0.8) and checks["fairness"]["met"]
    assert checks["parallel_4_alone"]["value"] == pytest.approx(49 / 50)
    assert checks["amx_vs_plain"]["met"] is None and "SIGILL" in checks["amx_vs_plain"]["why"]
    lines = "\n".join(report.target_lines(list(checks.values())))
    assert "❌" in lines and "✅" in lines and "➖" in lines and "SIGILL" in lines


def test_the_anchor_row_and_ratio_are_reported_when_llama_server_ran():
    anchor = {"run": True, "slots": 4, "command": "llama-server -np 4 --no-repack",
              "version": "llama-server 1", "levels": [_level(4, 80, [20] * 4, [0.1] * 4)]}
    lines = "\n".join(report.concurrency_lines(_concurrency(), anchor))
    assert "| llama-server, -np 4 | 4 |" in lines and "4 clients 1.25×" in lines
    lines = "\n".join(report.concurrency_lines(_concurrency(), {"run": False, "why": "no"}))
    assert "Anchor: llama-server was not run: no." in lines


def test_a_llama_server_that_is_missing_or_exits_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.delenv("LLAMA_SERVER", raising=False)
    assert "LLAMA_SERVER is not set" in llama_server.run([4], 4)["why"]
    monkeypatch.setenv("LLAMA_SERVER", str(tmp_path / "missing"))
    assert "not an executable file" in llama_server.run([4], 4)["why"]
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho 'error: invalid argument: --no-repack' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("LLAMA_SERVER", str(fake))
    result = llama_server.run([4], 4)
    assert result["run"] is False and "invalid argument: --no-repack" in result["why"]


def _reply(first: float, rate: float, cached: int | None) -> dict:
    return {"time_to_first_token_s": first, "tokens_per_second": rate, "tokens": 16,
            "prompt_tokens": 1700, "cached_tokens": cached}


def _served(anchor: bool) -> dict:
    side = lambda rate: {  # noqa: E731
        "short_decode_tokens_per_second": 60.0,
        "document": {"first": _reply(10.0, rate, 0), "again": _reply(0.2, rate, 1690),
                     "after_other_chats": _reply(0.25, rate, 1690),
                     "second_user": _reply(10.0, rate, 0)},
        "conversation_first_token_s": [0.1, 0.12, 0.2]}
    rounds = [{"first": "app", "app": {"four": _level(4, 100, [25] * 4, [0.1, 0.2, 0.2, 0.25]),
                                        "one": _level(1, 50, [50], [0.1])},
               "llama-server": {"four": _level(4, 80 + 40 * i, [20] * 4, [0.1] * 4),
                                "one": _level(1, 60, [60], [0.1])}} for i in range(2)]
    served = {"anchor": {"run": anchor, "command": "llama-server -np 4", "why": "not set"},
              "max_tokens": 16, "document_tokens": 1700, "rounds": rounds, "app": side(36.0),
              "speculative": {"runs": 1, "max_tokens": 64, "tokens": [64],
                              "lookup_tokens_per_second": 90.0,
                              "plain_tokens_per_second": 60.0, "speedup": 1.5,
                              "same_text": True, "accepted": 40, "drafted": 50,
                              "acceptance": 0.8}}
    if anchor:
        served["llama-server"] = side(18.0)
    return served


def test_what_users_see_is_checked_per_round_and_within_the_run():
    checks = {c["name"]: c for c in targets.served_checks(_served(anchor=True))}
    assert checks.keys() == SERVED_TARGETS
    # The worst round counts: 100/80 and 100/120.
    assert checks["vs_llama_server"]["value"] == pytest.approx(100 / 120)
    assert checks["vs_llama_server"]["met"] is False
    assert checks["aggregate_4_vs_1"]["value"] == pytest.approx(2.0)
    assert checks["first_token"]["value"] == 0.25 and checks["first_token"]["met"]
    assert checks["document_again"]["met"] and checks["second_user_cache"]["met"]
    assert checks["long_decode_vs_short"]["value"] == pytest.approx(0.6)
    assert checks["long_decode_vs_server"]["value"] == pytest.approx(2.0)
    assert checks["conversation_turns"]["value"] == pytest.approx(2.0)
    assert checks["speculative_speedup"]["met"]
    lines = "\n".join(served_report.lines(_served(anchor=True)))
    assert "| 2 | app | 100.0 | 50.0 | 120.0 | 60.0 | 0.83 |" in lines
    assert "40 of 50 drafted tokens accepted (80%); greedy text identical" in lines


def test_what_users_see_without_the_anchor_says_so():
    served = _served(anchor=False)
    served["speculative"]["same_text"] = False
    checks = {c["name"]: c for c in targets.served_checks(served)}
    assert checks["vs_llama_server"]["met"] is None
    assert "llama-server was not run" in checks["vs_llama_server"]["why"]
    assert checks["speculative_speedup"]["met"] is False
    assert "TEXT DIFFERED" in checks["speculative_speedup"]["text"]
    lines = "\n".join(served_report.lines(served))
    assert "Anchor not run: not set." in lines and "DIFFERENT" in lines
