"""Part 1: does the app's streaming keep up with the engine underneath it?

The same greedy generations four ways: llama-cpp-python's own streamed chat completion
(raw), the app's OpenAI-compatible API over loopback (server-sent events), and the page's
streaming endpoint, both as the browser reads it (Gradio's queue protocol: join, then the
event stream) and through gradio_client. Each way gets a warm-up, then `runs` prompts.
gradio_client adds its own delay, so the floor it sets is measured too: a Gradio generator
that yields at once, read both ways.
"""
from __future__ import annotations

import uuid

import httpx

from backends.amx_probe import choose_buffers
from backends.cores import physical_cores
from backends.kv_probe import choose_kv_cache
from backends.llamacpp import reference_llama
from bench.common import (
    MODEL,
    PROMPTS,
    AppProcess,
    Timing,
    TimingClock,
    api_stream,
    free_port,
    median,
    smollm2_gguf,
    summarize,
)

CONTEXT = 2048  # the shipped entry's context_length


def raw_stream(llm, prompt: str, max_tokens: int) -> Timing:
    clock = TimingClock()
    tokens = 0
    for chunk in llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], stream=True, temperature=0.0,
            top_k=40, top_p=0.9, repeat_penalty=1.0, max_tokens=max_tokens):
        if chunk["choices"][0]["delta"].get("content"):
            clock.text()
            tokens += 1
    return clock.timing(tokens)


def page_stream(client, prompt: str, max_tokens: int, api_name: str = "/send",
                plain: bool = False) -> Timing:
    """The page's /send endpoint through gradio_client: the chat's last message grows."""
    clock = TimingClock()
    args = [prompt] if plain else send_args(prompt, max_tokens)
    job = client.submit(*args, api_name=api_name)
    seen = 0
    for output in job:
        if plain:
            clock.text()
            continue
        chat = output[0]
        if not chat or chat[-1]["role"] != "assistant":
            continue
        content = chat[-1]["content"]
        text = content if isinstance(content, str) else "".join(
            part.get("text", "") for part in content)
        body = text.split("\n\n<sub>")[0]
        if body and body != "…" and len(body) > seen:
            seen = len(body)
            clock.text()
    job.result()
    return clock.timing(max_tokens)  # greedy long stories always run to the limit


def send_args(prompt: str, max_tokens: int) -> list:
    """The page's /send inputs: message, model, system prompt, then every sampling control
    as the page shows it (greedy, `max_tokens` long)."""
    from backends.sampling import SamplingSettings
    from chatui.sampling_controls import SettingsControls

    greedy = SamplingSettings(temperature=0.0, max_new_tokens=max_tokens)
    return [prompt, MODEL, "", *SettingsControls.shown(greedy)]


def protocol_stream(http: httpx.Client, url: str, fn_index: int, data: list,
                    tokens: int) -> Timing:
    """An endpoint read the way the page's own JavaScript client reads it."""
    clock = TimingClock()
    session = uuid.uuid4().hex
    http.post(f"{url}gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session,
        "event_data": None, "trigger_id": None}).raise_for_status()
    with http.stream("GET", f"{url}gradio_api/queue/data",
                     params={"session_hash": session}) as events:
        updates = 0
        for line in events.iter_lines():
            if '"process_generating"' in line:
                # The first update may be the placeholder alone; every later one is text.
                updates += 1
                if updates > 1 or ("\u2026" not in line and "…" not in line):
                    clock.text()
            elif '"process_completed"' in line:
                break
    return clock.timing(tokens)


def gradio_floor(runs: int) -> dict:
    """What Gradio costs on its own: a generator that yields at once, read both ways."""
    import gradio as gr
    from gradio_client import Client

    def instantly(text: str):
        yield text

    with gr.Blocks(analytics_enabled=False) as blocks:
        box = gr.Textbox()
        box.submit(instantly, box, box, api_name="instantly")
    blocks.queue()
    port = free_port()
    blocks.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        client = Client(url, verbose=False)
        via_client = [page_stream(client, "x", 1, api_name="/instantly", plain=True)
                      for _ in range(runs + 1)][1:]
        with httpx.Client() as http:
            via_protocol = [protocol_stream(http, url, 0, ["x"], 1)
                            for _ in range(runs + 1)][1:]
    finally:
        blocks.close()
    return {"gradio_client_s": median([t.time_to_first_token for t in via_client]),
            "protocol_s": median([t.time_to_first_token for t in via_protocol])}


def run(app: AppProcess, runs: int, max_tokens: int) -> dict:
    from gradio_client import Client

    buffers = choose_buffers(probe_model=smollm2_gguf())  # the app's weight buffers
    kv = choose_kv_cache(probe_model=smollm2_gguf(), extra_buffers=buffers.extra_buffers)
    llm = reference_llama(smollm2_gguf(), buffers, n_ctx=CONTEXT, kv_cache=kv.kv_cache)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(runs + 1)]
    raw = [raw_stream(llm, p, max_tokens) for p in prompts]
    llm.close()
    with httpx.Client() as http:
        api = [api_stream(http, app.url, p, max_tokens) for p in prompts]
    client = Client(app.url, verbose=False)
    send = next(e.fn_index for e in client.endpoints.values() if e.api_name == "/send")
    with httpx.Client() as http:
        # The raw protocol carries every input, the session states (conversation id,
        # editing, pending attachments) included; the server keeps their values, so they go
        # as null.
        page = [protocol_stream(http, app.url, send,
                                [p, None, None, *send_args(p, max_tokens)[1:], None],
                                max_tokens)
                for p in prompts]
    page_client = [page_stream(client, p, max_tokens) for p in prompts]
    results = {name: summarize(timings[1:])  # the first of each is the warm-up
               for name, timings in (("raw", raw), ("api", api), ("page", page),
                                     ("page_client", page_client))}
    results["gradio_floor"] = gradio_floor(runs)
    for name in ("api", "page", "page_client"):
        ratio = _ratio(results[name]["tokens_per_second"], results["raw"]["tokens_per_second"])
        extra = _difference(results[name]["time_to_first_token_s"],
                            results["raw"]["time_to_first_token_s"])
        results[name]["tokens_per_second_vs_raw"] = ratio
        results[name]["extra_time_to_first_token_ms"] = None if extra is None else extra * 1000
        results[name]["meets_targets"] = ratio is not None and ratio >= 0.97 and \
            extra is not None and extra * 1000 <= 25
    results["settings"] = {"runs": runs, "max_tokens": max_tokens, "threads": physical_cores(),
                           "context": CONTEXT, "buffers": buffers.describe()}
    return results


def _ratio(a, b):
    return None if a is None or not b else a / b


def _difference(a, b):
    return None if a is None or b is None else a - b
