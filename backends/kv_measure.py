"""Decode speed per KV cache type after a long prompt: the measurement behind `kv_cache: auto`.

At long contexts decoding on the CPU is bound by the bytes it reads per token, and the KV
cache is a growing part of them: a smaller cache type can decode faster (the project's bench
measured q8_0 2.28x faster than f16 after 1,490 tokens), or not, depending on the CPU's
kernels. Only measuring tells. This runs in a child process (`backends/kv_probe.py` starts
it), so a crash or a hang costs the child, never the app.

`python -m backends.kv_measure MODEL.gguf [--types f16,q8_0] [--prompt 1000] [--decode 16]
[--flash on|off] [--plain] [--threads N] [--rounds N]` prints one JSON object: tokens/s
per type; run by hand it measures any model and prompt length.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

WARM_UP = 2  # decoded tokens not timed: the first steps pay for buffer allocation
ROUNDS = 4  # turns each type takes (see measure)
BATCH = 512
TEXT = ("The river runs past the old mill, where the miller keeps his ledgers of grain and "
        "flour, and the children count the boats that carry wool down to the sea. ")


def _types(lib) -> dict[str, int]:
    return {"f16": lib.GGML_TYPE_F16, "q8_0": lib.GGML_TYPE_Q8_0, "q4_0": lib.GGML_TYPE_Q4_0}


def measure(model_path: str, types: Sequence[str], prompt_tokens: int, decode_tokens: int,
            flash: bool = True, extra_buffers: bool = True, threads: int = 2,
            rounds: int = ROUNDS) -> dict[str, float]:
    """Decode tokens/s after a `prompt_tokens` prompt, one context per type on one model.

    The types take turns, `rounds` times, each decoding its share of `decode_tokens`, and
    each keeps its best round: on a machine shared with other work a slow spell then lands
    on every type alike or on none, instead of on whichever type it happened to meet."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel
    from llama_cpp._logger import set_verbose

    set_verbose(False)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = extra_buffers
    model = LlamaModel(path_model=model_path, params=params, verbose=False)
    contexts: dict[str, _Context] = {}
    try:
        tokens = _prompt(model, prompt_tokens)
        per_round = max(1, decode_tokens // rounds)
        for kv in types:
            contexts[kv] = _Context(llama_cpp, model, _types(llama_cpp)[kv], flash, threads,
                                    len(tokens) + WARM_UP + per_round * rounds + 8)
            contexts[kv].read(tokens)
            contexts[kv].step(WARM_UP)
        best = {kv: 0.0 for kv in types}
        for _ in range(rounds):
            for kv in types:
                best[kv] = max(best[kv], contexts[kv].step(per_round))
        return best
    finally:
        for context in contexts.values():
            context.close()
        model.close()


def _prompt(model, length: int) -> list[int]:
    text = TEXT
    tokens = model.tokenize(text.encode(), add_bos=True, special=False)
    while len(tokens) < length:
        text += TEXT
        tokens = model.tokenize(text.encode(), add_bos=True, special=False)
    return tokens[:length]


class _Context:
    """One llama.cpp context with one KV cache type, decoding one sequence."""

    def __init__(self, lib, model, ggml_type: int, flash: bool, threads: int,
                 n_ctx: int) -> None:
        from llama_cpp._internals import LlamaContext

        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = BATCH
        params.n_threads = params.n_threads_batch = threads
        params.type_k = params.type_v = ggml_type
        params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash
                                  else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.no_perf = True
        self._lib = lib
        self._ctx = LlamaContext(model=model, params=params, verbose=False)
        self._batch = lib.llama_batch_init(BATCH, 0, 1)
        self._position, self._last = 0, 0

    def _decode(self, chunk: list[int]) -> None:
        batch = self._batch
        batch.n_tokens = len(chunk)
        for i, token in enumerate(chunk):
            batch.token[i], batch.pos[i] = token, self._position + i
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, 0
            batch.logits[i] = i == len(chunk) - 1
        if (rc := self._lib.llama_decode(self._ctx.ctx, batch)) != 0:
            raise RuntimeError(f"llama_decode of {len(chunk)} tokens returned {rc}")
        self._position += len(chunk)
        self._last = chunk[-1]

    def read(self, tokens: list[int]) -> None:
        for start in range(0, len(tokens), BATCH):
            self._decode(tokens[start:start + BATCH])

    def step(self, count: int) -> float:
        """Decode `count` tokens one at a time; tokens/s."""
        began = time.perf_counter()
        for _ in range(count):
            self._decode([self._last])
        return count / (time.perf_counter() - began)

    def close(self) -> None:
        self._lib.llama_batch_free(self._batch)
        self._ctx.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The child: print {"f16": tokens/s, ...}; exit 1 with the reason on stderr."""
    parser = argparse.ArgumentParser(prog="python -m backends.kv_measure",
                                     description="decode tokens/s per KV cache type")
    parser.add_argument("model")
    parser.add_argument("--types", default="f16,q8_0")
    parser.add_argument("--prompt", type=int, default=1000)
    parser.add_argument("--decode", type=int, default=16)
    parser.add_argument("--flash", choices=("on", "off"), default="on")
    parser.add_argument("--plain", action="store_true", help="plain weight buffers (no AMX)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv)
    types = [t for t in args.types.split(",") if t]
    if not types or any(t not in ("f16", "q8_0", "q4_0") for t in types):
        print(f"KV probe: --types {args.types!r}: use f16, q8_0 and q4_0", file=sys.stderr)
        return 2
    try:
        rates = measure(args.model, types, max(args.prompt, 1), max(args.decode, 1),
                        args.flash == "on", not args.plain, max(args.threads, 1),
                        max(args.rounds, 1))
    except Exception as error:  # any failure: the parent keeps f16
        print(f"KV probe: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(rates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
