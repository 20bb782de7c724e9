"""The batching targets, checked against one run's numbers (reported, never asserted).

Each check says what it compares, its value, the target and whether it was met; a check
whose inputs were not measured in this run (no llama-server, AMX not allowed) is marked
not checked, with the reason.
"""
from __future__ import annotations

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
    four = level(c, 4, 4)
    one = level(c, 4, 1)
    alone_turns = level(c, 1, 1)
    anchor = results.get("llama_server") or {"run": False, "why": "not in this run"}
    rates = [r for r in (four or {}).get("per_client_decode_tokens_per_second", []) if r]
    firsts = [t for t in (four or {}).get("time_to_first_token_s", []) if t is not None]
    out = [
        _check("aggregate_4_vs_1", "4 clients with parallel 4: aggregate tokens/s over one "
               "client's", _ratio(_aggregate(four), _aggregate(one)), 1.5),
        _check("vs_llama_server", "4 clients with parallel 4: aggregate over llama-server's "
               "on the same workload", _ratio(_aggregate(four), _aggregate(level(anchor, None, 4)))
               if anchor["run"] else None, 0.95,
               why="" if anchor["run"] else "llama-server was not run: see the anchor line "
                                            "under Concurrency"),
        _check("first_token", "4 clients with parallel 4: slowest first token (s)",
               max(firsts) if firsts and len(firsts) == len(four["time_to_first_token_s"])
               else None, 0.3, higher=False),
        _check("fairness", "4 clients with parallel 4: slowest client's decode rate over the "
               "fastest's", min(rates) / max(rates) if rates else None, 0.8),
        _check("parallel_4_alone", "1 client: parallel 4 over parallel 1 (aggregate tokens/s)",
               _ratio(_aggregate(one), _aggregate(alone_turns)), 0.95),
    ]
    amx = results.get("buffers") or {"run": False, "why": "not in this run"}
    out.append(_check("amx_vs_plain", "decode on AMX buffers over plain buffers",
                      amx.get("amx_vs_plain") if amx["run"] else None, 1.4,
                      why="" if amx["run"] else f"not run: {amx['why']}"))
    return out
