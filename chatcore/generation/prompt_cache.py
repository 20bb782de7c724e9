"""How much host RAM a model's prompt cache may take beyond what its estimate already charges.

An engine that keeps the KV states of earlier prompts (llama.cpp: backends/llamacpp_states.py)
is planned with one slot's worth of them (`MemoryEstimate.saved_states`), so fit badges and
loads are what they were without a larger cache. On top of that the planner lends it part of
the room the budget still has once the model is placed, like llama-server's `--cache-ram`
(8 GiB by default): a long document asked again in a new request then starts from its saved
state instead of being read again.

The extra is a loan: it is charged to the CPU budget while held (so two models are never
promised the same bytes), and it is taken back, states dropped least recently used first,
before another load would have to evict a model for room. So the grant never makes a model
"won't fit" that fit without it.
"""
from __future__ import annotations

CACHE_CAP_BYTES = 8 * 2**30  # llama-server's --cache-ram default
CACHE_SHARE = 0.5  # of the room left after the model, at most: other models load beside it


def prompt_cache_extra(minimum: int, room_left: int, *, cap: int = CACHE_CAP_BYTES,
                       share: float = CACHE_SHARE) -> int:
    """Bytes to lend a cache already planned at `minimum`, out of `room_left` free bytes
    of the budget after the model and every other loan: its whole capacity is at most `cap`
    (or `minimum`, when that is larger) and the loan at most `share` of the room."""
    if room_left <= 0:
        return 0
    return max(0, min(cap - minimum, int(room_left * share)))
