"""Saved llama.cpp KV caches of recent conversations, found again by their token prefix.

A slot's KV cache is emptied when its reply ends, so when conversations take turns on one
model each would re-read its whole history. After every reply the slot's sequence is copied
out here (KV cache only, no logits: a few MB for a small model); when a reply joins a slot,
the saved state sharing the longest prefix with its prompt is copied into that slot if it
saves more than re-reading. The least recently used states go first when the capacity is
reached.

States are kept per owner (`GenParams.owner`, the signed-in user): a reply starts only from
its own owner's states. Shared, they would let one user learn another's text by timing: a
guessed prefix that someone else sent is read in a fraction of the time unrelated text is.
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
    """Not thread-safe: the batch decoder's thread is its only user."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        # Each state, keyed by (owner, tokens), is a ctypes buffer handed back to llama.cpp
        # as it is: no extra copies.
        self._states: OrderedDict[tuple[str, tuple[int, ...]], ctypes.Array] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return sum(len(data) for data in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def save(self, ctx, slot: int, tokens: Sequence[int], owner: str = "") -> None:
        """Keep `slot`'s sequence (which holds `tokens`) for `owner`, replacing that owner's
        states it extends."""
        import llama_cpp

        tokens = tuple(tokens)
        if not tokens:
            return
        size = llama_cpp.llama_state_seq_get_size(ctx, slot)
        if size > self.capacity_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, buffer, size, slot) != size:
            return
        for key in [k for k in self._states
                    if k[0] == owner and shared_prefix(k[1], tokens) == len(k[1])]:
            del self._states[key]  # an earlier turn of the same conversation
        self._states[(owner, tokens)] = buffer
        while self.size_bytes > self.capacity_bytes:
            self._states.popitem(last=False)

    def best(self, prompt: Sequence[int], owner: str = "") -> int:
        """How many tokens of `prompt` the best state of `owner`'s holds (0: none worth
        restoring)."""
        return self._best(prompt, owner)[1]

    def restore_best(self, ctx, slot: int, prompt: Sequence[int], owner: str = "") -> int:
        """Copy `owner`'s saved state that shares most of `prompt` into the empty `slot`,
        when it saves re-reading at least MIN_GAIN_TOKENS. Returns how many tokens of
        `prompt` the slot then holds; the state may run past them, and the caller trims it
        there."""
        import llama_cpp

        key, shared = self._best(prompt, owner)
        if key is None:
            return 0
        data = self._states[key]
        self._states.move_to_end(key)
        if llama_cpp.llama_state_seq_set_data(ctx, data, len(data), slot) == 0:
            log.warning("could not restore a saved state; the prompt is read in full")
            return 0
        return shared

    def _best(self, prompt: Sequence[int],
              owner: str) -> tuple[tuple[str, tuple[int, ...]] | None, int]:
        best_key, best = None, MIN_GAIN_TOKENS - 1
        for key in self._states:
            if key[0] == owner and (shared := shared_prefix(key[1], prompt)) > best:
                best_key, best = key, shared
        return best_key, best if best_key is not None else 0
