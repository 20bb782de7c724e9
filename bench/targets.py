"""The batching targets, checked against one run's numbers (reported, never asserted).

Each check says what it compares, its value, the target and whether it was met; a check
whose inputs were not measured in this run (no llama-server, AMX not allowed) is marked
not checked, with the reason.
"""
from __future__ import annotations

from bench import served_report as sr
from bench.concurrency import level


def _check(name: str, text: str, value: float | None, target: float, higher: bool = True,
           why: str = "") -> dict:
    met = None if value is None else (value >= target if higher else value <= target)
    return {"name": name, "text": text, "value": value, "target": target,
            "higher_is_better": higher, "met": met, "why": why}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _aggregate(lv: dict | None) -> float | None:
    return lv["aggregate_tokens_per_second"] if lv else None


def checks(results: dict) -> list[dict]:
    c = results["concurrency"]
    one = level(c, 4, 1)
    alone_turns = level(c, 1, 1)
    four = level(c, 4, 4)
    rates = [r for r in (four or {}).get("per_client_decode_tokens_per_second", []) if r]
    out = [
        _check("fairness", "4 clients with parallel 4: slowest client's decode rate over the "
               "fastest's", min(rates) / max(rates) if rates else None, 0.8),
        _check("parallel_4_alone", "1 client: parallel 4 over parallel 1 (aggregate tokens/s)",
               _ratio(_aggregate(one), _aggregate(alone_turns)), 0.95),
        _check("streaming_vs_raw", "the streaming API's tokens/s over raw llama-cpp-python's",
               results["streaming"]["api"].get("tokens_per_second_vs_raw"), 0.97),
    ]
    out += served_checks(results.get("served"))
    amx = results.get("buffers") or {"run": False, "why": "not in this run"}
    out.append(_check("amx_vs_plain", "decode on AMX buffers over plain buffers",
                      amx.get("amx_vs_plain") if amx["run"] else None, 1.4,
                      why="" if amx["run"] else f"not run: {amx['why']}"))
    return out


def served_checks(served: dict | None) -> list[dict]:
    """The issue's targets for what users see (bench/served.py)."""
    if served is None:
        return []
    no_anchor = "" if served["anchor"]["run"] else "llama-server was not run"
    ratios = sr.round_ratios(served)
    document = served["app"]["document"]
    spec = served["speculative"]
    second = document.get("second_user") or {}
    return [
        _check("vs_llama_server", "4 clients: aggregate over llama-server's, the worst of "
               f"{len(served['rounds'])} paired rounds", min(ratios) if ratios else None, 1.0,
               why=no_anchor),
        _check("aggregate_4_vs_1", "4 clients over 1 client, aggregate tokens/s (median of "
               "rounds)", sr.four_over_one(served), 1.5),
        _check("first_token", "4 clients: slowest first token of every round (s)",
               sr.slowest_first_token(served), 0.3, higher=False),
        _check("document_again", "the same document in a new request: first token (s)",
               document["again"]["time_to_first_token_s"], 0.3, higher=False),
        _check("document_after_chats", "the same document after 3 other chats: first token "
               "(s)", document["after_other_chats"]["time_to_first_token_s"], 0.3,
               higher=False),
        _check("second_user_cache", "a second signed-in user's cached tokens of the first "
               "user's document", second.get("cached_tokens"), 0, higher=False),
        _check("long_decode_vs_short", "decode after the document over after a short prompt",
               sr.long_over_short(served), 0.55),
        _check("long_decode_vs_server", "decode after the document over llama-server's",
               sr.long_over_server(served), 1.5, why=no_anchor),
        _check("conversation_turns", "the last turn's first token over the first's, through "
               "the API", sr.last_turn_over_first(served), 1.5, higher=False),
        _check("speculative_speedup", "prompt lookup on a quoting task: decode tokens/s over "
               "without (greedy text identical)" if spec["same_text"] else
               "prompt lookup on a quoting task: decode tokens/s over without (TEXT DIFFERED)",
               spec["speedup"] if spec["same_text"] else 0.0, 1.5),
    ]
