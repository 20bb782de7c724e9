"""The benchmark's three outputs: results.json, results.md (tables) and results.png."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import llama_cpp
    import torch
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_gb, 1),
            "python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
            "torch": torch.__version__, "transformers": transformers.__version__}


STREAMING_PATHS = (("raw", "llama-cpp-python, raw"), ("api", "app: HTTP API (SSE)"),
                   ("page", "app: page, as the browser reads it"),
                   ("page_client", "app: page through gradio_client"))


def _f(value, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}{unit}"


def markdown(results: dict) -> str:
    m = results["machine"]
    s = results["streaming"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python "
           f"{m['python']}, llama-cpp-python {m['llama_cpp_python']}, torch {m['torch']}, "
           f"transformers {m['transformers']}. Greedy decoding, SmolLM2-135M-Instruct.",
           "", f"**Streaming** (medians of {s['settings']['runs']} runs, "
           f"{s['settings']['max_tokens']} tokens each)", "",
           "| path | tokens/s | vs raw | first token | over raw | targets met |",
           "|---|---|---|---|---|---|"]
    for name, label in STREAMING_PATHS:
        row = s[name]
        out.append(f"| {label} | {_f(row['tokens_per_second'])} | "
                   f"{_f(row.get('tokens_per_second_vs_raw'), 3)} | "
                   f"{_f(row['time_to_first_token_s'], 0, 1000, ' ms')} | "
                   f"{_f(row.get('extra_time_to_first_token_ms'), 1, 1, ' ms')} | "
                   f"{'' if name == 'raw' else ('yes' if row['meets_targets'] else 'no')} |")
    floor = s["gradio_floor"]
    out += ["", "Targets: tokens/s at least 0.97 of raw; first token at most 25 ms over raw. "
            "Gradio's own floor: a generator that yields at once is seen after "
            f"{_f(floor['protocol_s'], 0, 1000, ' ms')} through the page's protocol and "
            f"{_f(floor['gradio_client_s'], 0, 1000, ' ms')} through gradio_client.",
            "", "**Engines and quantization**", "",
            "| engine | tokens/s | first token | load | RSS growth | weights |",
            "|---|---|---|---|---|---|"]
    for row in results["backends"]:
        out.append(f"| {row['engine']} | {_f(row['tokens_per_second'])} | "
                   f"{_f(row['time_to_first_token_s'], 0, 1000, ' ms')} | "
                   f"{_f(row['load_s'], 1, 1, ' s')} | {_f(row['rss_growth_mb'], 0, 1, ' MB')} | "
                   f"{_f(row['weights_mb'], 0, 1, ' MB')} |")
    c = results["concurrency"]
    out += ["", "**Concurrency** (clients streaming at once through the API, one model)", "",
            "| clients | aggregate tokens/s | per client (whole request) | decode per client |"
            " first token (each) |", "|---|---|---|---|---|"]
    for level in c["levels"]:
        out.append(f"| {level['clients']} | {_f(level['aggregate_tokens_per_second'])} | "
                   + ", ".join(_f(v) for v in level["per_client_tokens_per_second"]) + " | "
                   + ", ".join(_f(v) for v in level["per_client_decode_tokens_per_second"])
                   + " | " + ", ".join(_f(v, 2, 1, " s") for v in level["time_to_first_token_s"])
                   + " |")
    out += ["", f"Aggregate at 4 clients vs 1: {_f(c['aggregate_at_4_vs_1'], 2)} (target "
            f"0.9); every client answered in full: {'yes' if c['every_client_answered'] else 'no'}."]
    w = results["switching"]
    cold = ", ".join(f"{k} {_f(v, 2, 1, ' s')}" for k, v in w["cold_time_to_first_token_s"].items())
    out += ["", "**Model switching**", "",
            f"First token after switching from {w['from']} to the resident {w['to']}: "
            f"{_f(w['to_resident_time_to_first_token_s'], 0, 1000, ' ms')}; after a cold load "
            f"(load included): {cold}.",
            "", "**Threads** (llama.cpp decode)", "",
            ", ".join(f"{t['threads']} thread{'s' if t['threads'] > 1 else ''}: "
                      f"{_f(t['tokens_per_second'])} tokens/s" for t in results["threads"]) + "."]
    v = results["conversations"]
    marks = sorted({0, v["turns"] // 2 - 1 if v["turns"] >= 4 else 0, v["turns"] - 1})
    head = " | ".join(f"turn {i + 1}" for i in marks)
    out += ["", f"**Long conversations** (first token; {v['prompt_tokens_at_last_turn']} "
            f"prompt tokens by turn {v['turns']})", "",
            f"| conversation | {head} | last vs first |", "|---|" + "---|" * (len(marks) + 1)]
    for key, label, ratio in (("single", "one conversation", v["single_last_vs_first"]),
                              ("alternating_a", "two taking turns: A", None),
                              ("alternating_b", "two taking turns: B", None)):
        values = v[key]
        ratio = ratio if ratio is not None else values[-1] / values[0]
        out.append(f"| {label} | " + " | ".join(_f(values[i], 0, 1000, " ms") for i in marks)
                   + f" | {_f(ratio, 2)} |")
    out += ["", "Target: the last turn at most 1.5 times the first, in both cases."]
    return "\n".join(out) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    s = results["streaming"]
    names = [name for name, _ in STREAMING_PATHS]
    labels = ["raw", "API", "page", "page\n(gradio_client)"]
    axes[0][0].bar(labels, [s[n]["tokens_per_second"] or 0 for n in names], color="#4c72b0")
    axes[0][0].set_title("Streaming: tokens/s (median)")
    axes[0][1].bar(labels, [(s[n]["time_to_first_token_s"] or 0) * 1000 for n in names],
                   color="#dd8452")
    axes[0][1].set_title("Streaming: first token (ms, median)")
    c = results["concurrency"]["levels"]
    counts = [str(level["clients"]) for level in c]
    axes[1][0].bar(counts, [level["aggregate_tokens_per_second"] for level in c],
                   color="#55a868", label="aggregate")
    axes[1][0].plot(counts, [min(level["per_client_tokens_per_second"]) for level in c],
                    "o-", color="#c44e52", label="slowest client")
    axes[1][0].set_title("Concurrency: tokens/s through the API")
    axes[1][0].set_xlabel("clients")
    axes[1][0].legend()
    v = results["conversations"]
    turns = range(1, v["turns"] + 1)
    for key, label in (("single", "one conversation"), ("alternating_a", "alternating A"),
                       ("alternating_b", "alternating B")):
        axes[1][1].plot(turns, [t * 1000 for t in v[key]], "o-", label=label)
    axes[1][1].set_title("Long conversations: first token (ms) by turn")
    axes[1][1].set_xlabel("turn")
    axes[1][1].set_ylim(bottom=0)
    axes[1][1].legend()
    fig.suptitle(f"Local Chat benchmark: {results['machine']['cpu']}, "
                 f"{results['machine']['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "results.png"]
    paths[0].write_text(json.dumps(results, indent=2), encoding="utf-8")
    paths[1].write_text(markdown(results), encoding="utf-8")
    plot(results, paths[2])
    return paths
