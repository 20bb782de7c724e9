"""Saved llama.cpp KV caches of recent conversations, found again by their token prefix.

llama.cpp keeps only the last prompt it evaluated, so when two conversations take turns on
one model each would re-read its whole history. After every reply the context's sequence is
copied out here (KV cache only, no logits: a few MB for a small model); before a reply, the
saved state sharing the longest prefix with the new prompt is copied back if it saves more
than re-reading. The least recently used states go first when the capacity is reached.
"""
from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from collections.abc import Sequence

log = logging.getLogger(__name__)

MIN_GAIN_TOKENS = 16  # restoring costs a copy; below this, re-reading is as quick


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


class SavedStates:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        # Each state is a ctypes buffer handed back to llama.cpp as it is: no extra copies.
        self._states: OrderedDict[tuple[int, ...], ctypes.Array] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return sum(len(data) for data in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def save(self, llm) -> None:
        """Keep the context's current sequence, replacing states it extends."""
        import llama_cpp

        tokens = tuple(llm._input_ids.tolist())
        if not tokens:
            return
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        if size > self.capacity_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0) != size:
            return
        for key in [k for k in self._states if shared_prefix(k, tokens) == len(k)]:
            del self._states[key]  # an earlier turn of the same conversation
        self._states[tokens] = buffer
        while self.size_bytes > self.capacity_bytes:
            self._states.popitem(last=False)

    def restore_best(self, llm, prompt: Sequence[int]) -> int:
        """Load the saved state that shares most of `prompt`, when that beats what the
        context already holds. Returns the tokens the context now shares with `prompt`."""
        import llama_cpp

        current = shared_prefix(llm._input_ids.tolist(), prompt)
        best_key, best = None, current + MIN_GAIN_TOKENS - 1
        for key in self._states:
            shared = shared_prefix(key, prompt)
            if shared > best:
                best_key, best = key, shared
        if best_key is None:
            return current
        data = self._states[best_key]
        self._states.move_to_end(best_key)
        llm._ctx.kv_cache_clear()
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, data, len(data), 0) == 0:
            log.warning("could not restore a saved state; the prompt is read in full")
            llm.n_tokens = 0
            return 0
        llm.input_ids[:len(best_key)] = best_key
        llm.n_tokens = len(best_key)
        llm._requires_eval = True  # the logits were not saved
        return best

    def clear(self) -> None:
        self._states.clear()
