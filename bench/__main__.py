"""python -m bench: the app measured against the engines underneath it, in one run.

    python -m bench                  # about eight minutes on 2 cores; writes docs/benchmarks/
    python -m bench --quick --out /tmp/b   # one short run of each part (what CI runs)
    LLAMA_SERVER=path/to/llama-server python -m bench   # with llama.cpp's server as anchor

Numbers are reported, never asserted: the targets are checked in the report.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from backends.amx_probe import choose_buffers
from bench import (
    backends,
    batching,
    buffers,
    concurrency,
    kv_cache,
    llama_server,
    report,
    served,
    sessions,
    startup,
    streaming,
    targets,
)
from bench.common import ROOT, AppProcess, smollm2_gguf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short run of each part, to check the command works")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks",
                        help="where results.json, results.md and results.png go")
    parser.add_argument("--runs", type=int, default=7, help="runs per streaming path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    runs = 1 if args.quick else max(5, args.runs)
    tokens = 16 if args.quick else 128
    started = time.perf_counter()
    buffer_path = choose_buffers(probe_model=smollm2_gguf())
    print("settling the KV cache type (measured once per machine)", flush=True)
    results: dict = {"machine": report.machine(), "quick": args.quick,
                     "buffer_path": buffer_path.describe(),
                     "kv_path": kv_cache.settle(buffer_path).describe()}
    step = _progress(started)
    step("start-up: launch to serving, and memory before any model")
    results["startup"] = startup.run(1 if args.quick else 5)
    with AppProcess() as app:
        step("streaming: raw llama-cpp-python, the API, the page")
        results["streaming"] = streaming.run(app, runs, tokens)
    clients = concurrency.QUICK_LEVELS if args.quick else concurrency.LEVELS
    step(f"concurrency: {', '.join(map(str, clients))} clients with parallel 1 and 4")
    results["concurrency"] = concurrency.run(args.quick, 16 if args.quick else 96)
    step("anchor: the same clients on llama-server")
    results["llama_server"] = llama_server.run(clients, 16 if args.quick else 96)
    step("what users see: paired rounds, a document, long contexts, turns, prompt lookup")
    results["served"] = served.run(args.quick)
    step("Compare: two panes on one entry, batched and taking turns")
    results["compare"] = batching.run(16 if args.quick else 64)
    step("AMX buffers against plain buffers")
    results["buffers"] = buffers.run(16 if args.quick else 128, 1 if args.quick else 3)
    step("KV cache f16 against q8_0")
    results["kv_cache"] = kv_cache.run(300 if args.quick else 1500, 16 if args.quick else 64)
    results["targets"] = targets.checks(results)
    step("engines and quantization")
    results["backends"] = backends.run(args.quick, 16 if args.quick else 64)
    step("threads")
    results["threads"] = backends.threads(16 if args.quick else 64, 1 if args.quick else 3)
    step("model switching")
    results["switching"] = sessions.switching(1 if args.quick else 5)
    step("long conversations")
    results["conversations"] = sessions.conversations(3 if args.quick else 10,
                                                      8 if args.quick else 48)
    results["seconds"] = time.perf_counter() - started
    for path in report.write(results, args.out):
        print(f"wrote {path}")
    print(report.markdown(results))
    return 0


def _progress(started: float):
    def step(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {what}", flush=True)
    return step


if __name__ == "__main__":
    raise SystemExit(main())
