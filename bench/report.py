"""The benchmark's three outputs: results.json, results.md (tables) and results.png."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from bench import concurrency, served_report


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
           "", f"Weight buffers: {results['buffer_path']}.",
           *([f"{results['kv_path']}."] if results.get("kv_path") else []),
           *startup_lines(results["startup"]),
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
    out += concurrency_lines(results["concurrency"], results["llama_server"])
    if "served" in results:
        out += served_report.lines(results["served"])
    out += compare_lines(results["compare"])
    out += buffers_lines(results["buffers"])
    out += kv_cache_lines(results["kv_cache"])
    out += target_lines(results["targets"])
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


def startup_lines(u: dict) -> list[str]:
    met = "n/a" if u["serving_s"] is None else ("yes" if u["serving_s"] <= u["target_s"]
                                                 else "no")
    return ["", f"**Start-up** (median of {u['runs']} start{'s' if u['runs'] > 1 else ''}): "
            f"launch to \"Chat page:\" printed {_f(u['serving_s'], 1, 1, ' s')} (target at most "
            f"{u['target_s']:g} s: {met}); resident memory then, before any model is loaded, "
            f"{_f(u['rss_before_model_mb'], 0, 1, ' MB')}."]


def _list(values, digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    return ", ".join(_f(v, digits, scale, unit) for v in values)


def _level_row(label: str, level: dict) -> str:
    return (f"| {label} | {level['clients']} | {_f(level['aggregate_tokens_per_second'])} | "
            f"{_list(level['per_client_tokens_per_second'])} | "
            f"{_list(level['per_client_decode_tokens_per_second'])} | "
            f"{_list(level['time_to_first_token_s'], 2, 1, ' s')} | "
            f"{_f(level['wall_s'], 1, 1, ' s')} |")


def concurrency_lines(c: dict, anchor: dict) -> list[str]:
    out = ["", f"**Concurrency** (clients streaming at once through the API, "
           f"{c['max_tokens']} tokens each, one model)", "",
           "| server | clients | aggregate tokens/s | per client (whole request) | "
           "decode per client | first token (each) | wall |", "|---|---|---|---|---|---|---|"]
    for run in c["runs"]:
        for level in run["levels"]:
            out.append(_level_row(f"app, parallel {run['parallel']}", level))
    for level in anchor["levels"] if anchor["run"] else []:
        out.append(_level_row(f"llama-server, -np {anchor['slots']}", level))
    out += ["", f"Every client answered in full: {'yes' if c['every_client_answered'] else 'no'}."]
    if not anchor["run"]:
        return out + [f"Anchor: llama-server was not run: {anchor['why']}."]
    ratios, batched = [], max(concurrency.PARALLEL)
    for theirs in anchor["levels"]:
        ours = concurrency.level(c, batched, theirs["clients"])
        if ours and theirs["aggregate_tokens_per_second"]:
            ratios.append(f"{theirs['clients']} client{'s' if theirs['clients'] > 1 else ''} "
                          + _f(ours["aggregate_tokens_per_second"]
                               / theirs["aggregate_tokens_per_second"], 2) + "×")
    return out + [f"Anchor: `{anchor['command']}` ({anchor['version']}), same run, same "
                  f"prompts. App with parallel {batched} over llama-server, aggregate "
                  f"tokens/s: {', '.join(ratios)}."]


def compare_lines(b: dict) -> list[str]:
    out = ["", f"**Compare: two panes on one entry** ({b['max_tokens']} tokens each, "
           "in-process through the model manager)", "",
           "| panes | round wall | first token (each) | decode tokens/s (each) | "
           "widest step |", "|---|---|---|---|---|"]
    for r in b["rounds"]:
        label = "batched (parallel 4)" if r["parallel"] > 1 else "taking turns (parallel 1)"
        panes = r["panes"]
        out.append(f"| {label} | {_f(r['wall_s'], 2, 1, ' s')} | "
                   f"{_list([p['time_to_first_token_s'] for p in panes], 2, 1, ' s')} | "
                   f"{_list([p['tokens_per_second'] for p in panes])} | "
                   f"{r['widest_step'] if r['widest_step'] is not None else 'n/a'} |")
    out += ["", f"Taking turns takes {_f(b['turns_vs_batched_wall'], 2)}× the batched round's "
            "wall time."]
    return out


def buffers_lines(a: dict) -> list[str]:
    out = ["", "**AMX buffers against plain buffers** (llama.cpp decode, one client)", ""]
    if not a["run"]:
        return out + [f"Not run: {a['why']}. The comparison runs only where the AMX probe "
                      "passed: where it fails, AMX buffers crash the process."]
    out += ["| buffers | decode tokens/s |", "|---|---|"]
    for key in ("amx", "plain"):
        out.append(f"| {a[key]['buffers']} | {_f(a[key]['tokens_per_second'])} |")
    return out + ["", f"AMX over plain: {_f(a['amx_vs_plain'], 2)}× (median of {a['runs']} "
                  f"repl{'y' if a['runs'] == 1 else 'ies'} of {a['max_tokens']} tokens)."]


def kv_cache_lines(k: dict) -> list[str]:
    out = ["", f"**KV cache** (one slot, {k['context']}-token context, a long prompt, then "
           f"{k['max_tokens']} tokens)", "",
           "| KV cache | prompt tokens | first token | decode tokens/s | RSS growth | "
           "planned KV cache |", "|---|---|---|---|---|---|"]
    for r in k["rows"]:
        out.append(f"| {r['kv_cache']} | {r['prompt_tokens']} | "
                   f"{_f(r['time_to_first_token_s'], 2, 1, ' s')} | "
                   f"{_f(r['tokens_per_second'])} | {_f(r['rss_growth_mb'], 0, 1, ' MB')} | "
                   f"{_f(r['planned_kv_cache_mb'], 1, 1, ' MB')} |")
    return out + ["", f"q8_0 over f16: decode {_f(k['q8_0_vs_f16_tokens_per_second'], 2)}×, "
                  f"planned KV cache {_f(k['q8_0_vs_f16_planned_kv'], 2)}×. RSS growth "
                  "includes the weights and the reply's saved prompt state."]


def target_lines(checks: list[dict]) -> list[str]:
    out = ["", "**Targets** (this run's numbers)", ""]
    for c in checks:
        bound = f"{'≥' if c['higher_is_better'] else '≤'} {c['target']:g}"
        if c["met"] is None:
            reason = c["why"] or "not measured in this run"
            out.append(f"- ➖ {c['text']}: not checked ({reason}); target {bound}")
        else:
            out.append(f"- {'✅' if c['met'] else '❌'} {c['text']}: {_f(c['value'], 2)} "
                       f"(target {bound})")
    return out


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
    _plot_concurrency(axes[1][0], results["concurrency"], results["llama_server"])
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


def _plot_concurrency(ax, c: dict, anchor: dict) -> None:
    """Aggregate tokens/s by clients, one bar per slot count (and llama-server at 4)."""
    counts = c["clients"]
    width = 0.8 / (len(c["runs"]) + (1 if anchor["run"] else 0))
    for i, run in enumerate(c["runs"]):
        xs = [counts.index(level["clients"]) + i * width for level in run["levels"]]
        ax.bar(xs, [level["aggregate_tokens_per_second"] for level in run["levels"]], width,
               label=f"app, parallel {run['parallel']}")
    bars = len(c["runs"])
    if anchor["run"]:
        levels = [level for level in anchor["levels"] if level["clients"] in counts]
        ax.bar([counts.index(level["clients"]) + bars * width for level in levels],
               [level["aggregate_tokens_per_second"] for level in levels], width,
               label="llama-server")
        bars += 1
    ax.set_xticks([i + width * (bars - 1) / 2 for i in range(len(counts))],
                  [str(n) for n in counts])
    ax.set_title("Concurrency: aggregate tokens/s through the API")
    ax.set_xlabel("clients")
    ax.legend()


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "results.png"]
    paths[0].write_text(json.dumps(results, indent=2), encoding="utf-8")
    paths[1].write_text(markdown(results), encoding="utf-8")
    plot(results, paths[2])
    return paths
