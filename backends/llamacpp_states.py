"""The prompt cache: saved llama.cpp KV states of recent prompts, in host RAM, found again by
their token prefix.

A slot's KV cache is emptied when its reply ends, so when conversations take turns on one
model each would re-read its whole history. After every reply the slot's sequence is copied
out here (KV cache only, no logits); when a reply joins a slot, the saved state sharing the
longest prefix with its prompt is copied into that slot if it saves more than re-reading.
One cache serves every slot of a model. Its capacity is what the memory planner granted
(chatcore/generation/prompt_cache.py): at least one slot's KV cache, more when the budget has
room. The least recently used states go first when the capacity is reached, and the
capacity can shrink at any time (another model needs the room).

A state is a little larger than the KV cells it holds: llama.cpp writes each cell's position
and sequence ids beside its K and V rows (about 12 bytes a token) and a header, so a state
of a full context does not fit a capacity of exactly one slot's KV cache. Sizes here are the
states' own byte counts (`llama_state_seq_get_size`).

States are kept per owner (`GenParams.owner`, the signed-in user): a reply starts only from
its own owner's states. Shared, they would let one user learn another's text by timing: a
guessed prefix that someone else sent is read in a fraction of the time unrelated text is.

Finding the best state is bounded: only an owner's MAX_COMPARED most recent states are
compared, each by a binary search over slice equality (C speed), so a crafted prompt cannot
make the decoding thread walk thousands of states token by token.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from backends.notes import Note

log = logging.getLogger(__name__)

MIN_GAIN_TOKENS = 16  # restoring costs a copy; below this, re-reading is as quick
MAX_COMPARED = 256  # an owner's most recent states compared with a prompt, at most

Key = tuple[int, ...]


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix, by binary search over slice equality: log n compares
    done in C instead of n steps in Python."""
    a, b = tuple(a), tuple(b)
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class CacheUse:
    """What the cache holds now: bytes, capacity and states."""

    used: int
    capacity: int
    count: int


def prompt_cache_note(use: CacheUse) -> Note:
    """"prompt cache 1.2 GB of 4.3 GB, 14 prompts", for the Models tab and the bench."""
    used, capacity = _size(use.used), _size(use.capacity)
    prompts = "prompt" if use.count == 1 else "prompts"
    return Note(f"prompt cache {used} of {capacity}, {use.count} {prompts}",
                "models.prompt_cache", used=used, capacity=capacity, n=use.count)


def _size(n: int) -> str:
    """As chatcore.generation.memory.format_bytes says it (the engines cannot import it)."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 or n == 0 else f"{n / 1e3:.0f} kB"


class SavedStates:
    """Thread-safe: the batch decoder's thread saves and restores, the planner resizes and the
    Models tab reads `use()` from other threads."""

    def __init__(self, capacity_bytes: int) -> None:
        self._capacity = max(0, capacity_bytes)
        self._lock = threading.Lock()
        # Per owner, states keyed by tokens, least recently used first; each a ctypes buffer
        # handed back to llama.cpp as it is. `_order` is the global LRU order of (owner, key).
        self._states: dict[str, OrderedDict[Key, ctypes.Array]] = {}
        self._order: OrderedDict[tuple[str, Key], None] = OrderedDict()
        self._bytes = 0

    @property
    def capacity_bytes(self) -> int:
        return self._capacity

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._order)

    def use(self) -> CacheUse:
        with self._lock:
            return CacheUse(self._bytes, self._capacity, len(self._order))

    def resize(self, capacity_bytes: int) -> None:
        """A new capacity; states beyond it go now, least recently used first."""
        with self._lock:
            self._capacity = max(0, capacity_bytes)
            self._evict_to(self._capacity)

    def save(self, ctx, slot: int, tokens: Sequence[int], owner: str = "") -> None:
        """Keep `slot`'s sequence (which holds `tokens`) for `owner`, replacing that owner's
        states it extends."""
        import llama_cpp

        tokens = tuple(tokens)
        if not tokens:
            return
        size = llama_cpp.llama_state_seq_get_size(ctx, slot)
        if size > self._capacity:
            log.debug("a state of %d tokens (%d bytes) is larger than the prompt cache "
                      "(%d bytes): not kept", len(tokens), size, self._capacity)
            return
        buffer = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(ctx, buffer, size, slot) != size:
            return
        with self._lock:
            mine = self._states.setdefault(owner, OrderedDict())
            for key in [k for k in _recent(mine) if tokens[:len(k)] == k]:
                self._drop(owner, key)  # an earlier turn of the same conversation
            self._evict_to(self._capacity - size)
            mine = self._states.setdefault(owner, OrderedDict())
            mine[tokens] = buffer
            self._order[(owner, tokens)] = None
            self._bytes += size

    def best(self, prompt: Sequence[int], owner: str = "") -> int:
        """How many tokens of `prompt` the best state of `owner`'s holds (0: none worth
        restoring)."""
        with self._lock:
            return self._best(tuple(prompt), owner)[1]

    def restore_best(self, ctx, slot: int, prompt: Sequence[int], owner: str = "") -> int:
        """Copy `owner`'s saved state that shares most of `prompt` into the empty `slot`,
        when it saves re-reading at least MIN_GAIN_TOKENS. Returns how many tokens of
        `prompt` the slot then holds; the state may run past them, and the caller trims it
        there."""
        import llama_cpp

        with self._lock:
            key, shared = self._best(tuple(prompt), owner)
            if key is None:
                return 0
            data = self._states[owner][key]
            self._states[owner].move_to_end(key)
            self._order.move_to_end((owner, key))
        # The buffer stays alive while used here even if a resize drops it meanwhile.
        if llama_cpp.llama_state_seq_set_data(ctx, data, len(data), slot) == 0:
            log.warning("could not restore a saved state; the prompt is read in full")
            return 0
        return shared

    def clear(self) -> None:
        with self._lock:
            self._evict_to(0)

    # -- inside (lock held) --------------------------------------------------------------
    def _best(self, prompt: Key, owner: str) -> tuple[Key | None, int]:
        best_key, best = None, MIN_GAIN_TOKENS - 1
        for key in _recent(self._states.get(owner, {})):
            if (shared := shared_prefix(key, prompt)) > best:
                best_key, best = key, shared
        return best_key, best if best_key is not None else 0

    def _evict_to(self, limit: int) -> None:
        while self._order and self._bytes > limit:
            owner, key = next(iter(self._order))
            self._drop(owner, key)

    def _drop(self, owner: str, key: Key) -> None:
        mine = self._states[owner]
        self._bytes -= len(mine.pop(key))
        del self._order[(owner, key)]
        if not mine:
            del self._states[owner]


def _recent(states: OrderedDict[Key, ctypes.Array] | dict) -> list[Key]:
    """An owner's MAX_COMPARED most recently used keys, newest first."""
    keys = []
    for key in reversed(states):
        keys.append(key)
        if len(keys) == MAX_COMPARED:
            break
    return keys
