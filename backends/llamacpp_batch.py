"""Continuous batching: one llama.cpp context decodes the next token of every running reply
of a model in one `llama_decode`, as llama.cpp's own server does with its slots.

Each reply is a sequence with its own id in the context's KV cache (one slot each, a full
context per slot), its own sampler chain (temperature, top_p, top_k, repetition penalty,
seed), its own token budget and cancel event. A step decodes one token for every sequence
that is generating plus prompt chunks of sequences that are joining; sequences join and
leave only between steps, so Stop on one reply frees its slot and the others go on. On a
CPU one pass over the weights for four tokens costs little more than one pass for one, so
four replies share the model at close to one reply's speed each.

The decoding runs on one thread per loaded model (`batch-<model>`); a reply's own thread
reads its sampled tokens from a queue and turns them into text. The decoding thread ends a
sequence itself on an end-of-generation token, its token budget or its cancel event
(checked before every step), and decodes up to LOOKAHEAD tokens ahead of its reader, as
llama-server does: a reader that is slow (a stalled client, a busy core) never holds a step
back, and the other replies go on at full speed. A reader that ends on a stop string calls
`leave`; the tokens computed ahead of it are dropped, never shown or counted.

With prompt lookup on (backends/prompt_lookup.py), a sequence whose last tokens occurred
before in its prompt or text adds the tokens that followed them there as drafts after its
next token, with logits for each; its sampler chain then samples position after position,
and the first sample that differs from its draft is the true next token. The rejected
drafts leave the KV cache. Since every position is sampled by the same chain in the same
order (its RNG and penalty state advance exactly as without drafts), the text is the same
as plain decoding, greedy or seeded; a run of accepted drafts costs one pass over the
weights instead of one per token. Drafts are made only for a reply decoding alone: when
several share a step, they already share its pass over the weights. With a draft model
(backends/draft_model.py) the drafts are its guesses instead, checked the same way.
"""
from __future__ import annotations

import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from backends.base import BackendError, GenParams
from backends.draft_model import DraftModel, ModelDrafts
from backends.llamacpp_states import SavedStates
from backends.prompt_lookup import PromptLookup

log = logging.getLogger(__name__)

PENALTY_LAST_N = 64  # tokens the repetition penalty looks back over, as llama-cpp-python
_END = object()  # put on a sequence's queue after its last token
# Tokens a sequence may be decoded ahead of its reader: enough that a reader's pause (a
# slow client, the GIL) never costs a step, few enough that a stop string wastes little.
LOOKAHEAD = 8
# How long a step waits for readers still handling the token of the step before, so that
# their Python runs between steps, not beside llama.cpp's threads (on a small machine a
# thread that takes a core from them mid-step makes the others spin, and a step then takes
# many times as long). A reader further behind than that step's tokens is not waited for.
# Measured on 2 shared cores, 4 x 96 greedy SmolLM2 replies: 184 tok/s with the wait, 183
# without on a quiet machine; kept for a busy one, where a step is then most at risk.
CATCH_UP_S = 0.005
HISTORY = 256  # steps whose widths `BatchDecoder.history` keeps, for tests and the bench


@dataclass(eq=False)
class BatchSequence:
    """One reply in the batch: what the decoding thread needs, and its way back."""

    slot: int
    prompt: list[int]
    max_new: int
    params: GenParams
    cancel: threading.Event
    sampler: object  # llama_sampler_p
    pending: list[int] = field(default_factory=list)  # prompt tokens not read yet
    in_cache: list[int] = field(default_factory=list)  # tokens in this slot's KV cache
    reused: int = 0  # prompt tokens restored from a saved state when it joined, not read
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    sampled_from: int = 0  # `generated` before the last step sampled its tokens
    taken: int = 0  # tokens its reader has handled and asked past: at most LOOKAHEAD behind
    leaving: bool = False
    tokens: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    finished: threading.Event = field(default_factory=threading.Event)
    # Its verified tokens, to draft from (prompt lookup or a draft model); None: no drafts.
    drafter: PromptLookup | ModelDrafts | None = None
    drafted: int = 0  # draft tokens decoded for it
    accepted: int = 0  # of those, the ones its sampler chain chose too


def _ending(sequence: BatchSequence) -> bool:
    return sequence.leaving or sequence.cancel.is_set()


def _catching_up(sequence: BatchSequence) -> bool:
    """Its reader is handling the tokens of the last step, and was idle before it."""
    return sequence.next_token is not None and not _ending(sequence) \
        and sequence.sampled_from <= sequence.taken < sequence.generated


def _ready(sequence: BatchSequence) -> bool:
    """Has work for the next step: prompt left to read, or a sampled token while its reader
    is less than LOOKAHEAD tokens behind (and no end to be handled first)."""
    return not _ending(sequence) and (bool(sequence.pending) or (
        sequence.next_token is not None
        and sequence.generated - sequence.taken < LOOKAHEAD))


def sampler_chain(n_vocab: int, params: GenParams):
    """The sampler for one sequence, in llama-cpp-python's order (penalties, top_k, top_p,
    min_p, temperature, then a seeded draw; greedy at temperature 0)."""
    import llama_cpp as lib

    settings = params.sampling
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    add = lambda sampler: lib.llama_sampler_chain_add(chain, sampler)  # noqa: E731
    add(lib.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, settings.repetition_penalty,
                                         0.0, 0.0))
    if settings.temperature == 0:
        add(lib.llama_sampler_init_greedy())
        return chain
    if settings.top_k > 0:
        add(lib.llama_sampler_init_top_k(settings.top_k))
    add(lib.llama_sampler_init_top_p(settings.top_p, 1))
    if settings.min_p > 0:
        add(lib.llama_sampler_init_min_p(settings.min_p, 1))
    add(lib.llama_sampler_init_temp(settings.temperature))
    seed = settings.seed if settings.seed is not None else random.randrange(2**31)
    add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain


class BatchDecoder:
    """Runs every reply of one llama.cpp context; `slots` replies at a time."""

    def __init__(self, ctx, vocab, n_vocab: int, slots: int, n_batch: int, n_threads: int,
                 states: SavedStates | None, name: str, speculative: bool = False,
                 draft_model: DraftModel | None = None) -> None:
        self._ctx = ctx
        self._vocab = vocab
        self._n_vocab = n_vocab
        self._n_batch = n_batch
        self._n_threads = n_threads
        self._threads_now = n_threads
        self.states = states
        self.speculative = speculative  # drafts for every new sequence
        self.draft_model = draft_model  # makes them; None: prompt lookup (owned by the caller)
        self._free = list(range(slots))
        self._joining: list[BatchSequence] = []
        self._running: list[BatchSequence] = []
        self._changed = threading.Condition()
        self._closed = False
        import llama_cpp as lib

        self._lib = lib
        self._memory = lib.llama_get_memory(ctx)
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self.steps = 0  # llama_decode calls, for tests and the bench
        self.widest = 0  # most replies that sampled a token in one step
        # The slots that sampled a token in each of the last HISTORY steps, oldest first.
        self.history: deque[tuple[int, ...]] = deque(maxlen=HISTORY)
        self._thread = threading.Thread(target=self._run, name=f"batch-{name}", daemon=True)
        self._thread.start()

    # -- a reply's side ----------------------------------------------------------------
    def submit(self, prompt: Sequence[int], max_new: int, params: GenParams,
               cancel: threading.Event) -> BatchSequence | None:
        """Take a free slot (waiting for the one a finished reply is handing back) and join
        the batch at the next step; None when `cancel` is set first."""
        if not prompt:
            raise BackendError("the prompt is empty: there is nothing to answer")
        with self._changed:
            while not self._free:
                if cancel.is_set() or self._closed:
                    return None
                self._changed.wait(0.05)
            if self._closed:
                raise BackendError("the model was unloaded")
            slot = self._free.pop(0)
            sequence = BatchSequence(slot, list(prompt), max_new, params, cancel,
                                     sampler_chain(self._n_vocab, params))
            if self.speculative:
                sequence.drafter = self.draft_model.drafts_for(prompt) if self.draft_model \
                    else PromptLookup(prompt)
            self._joining.append(sequence)
            self._changed.notify_all()
        return sequence

    def tokens(self, sequence: BatchSequence) -> Iterator[int]:
        """The sequence's sampled tokens as they come; raises what failed its decoding."""
        while True:
            item = sequence.tokens.get()
            if item is _END:
                return
            if isinstance(item, BackendError):
                raise item
            yield item
            with self._changed:  # done with it: one more off the look-ahead
                sequence.taken += 1
                self._changed.notify_all()

    def leave(self, sequence: BatchSequence) -> None:
        """End the sequence at the next step (a stop string, a reader gone) and wait until
        its slot is free: no token of it is computed after this returns, and the tokens
        computed ahead of the reader (LOOKAHEAD at most) are dropped with it."""
        with self._changed:
            sequence.leaving = True
            self._changed.notify_all()
        while not sequence.finished.wait(0.1):
            if not self._thread.is_alive():
                return

    def close(self) -> None:
        """End every sequence and the decoding thread; the context may be freed after."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        self._lib.llama_batch_free(self._batch)

    # -- the decoding thread -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(
                    lambda: self._closed or self._joining or any(
                        _ready(s) or _ending(s) for s in self._running),
                    timeout=0.05 if self._running else None)  # cancel events are polled
                if self._closed:
                    for sequence in self._joining + self._running:
                        self._finish(sequence, BackendError("the model was unloaded"))
                    return
                for sequence in self._joining:
                    self._join(sequence)
                self._running.extend(self._joining)
                self._joining.clear()
                for sequence in [s for s in self._running if _ending(s)]:
                    self._finish(sequence)
                self._changed.wait_for(lambda: not any(map(_catching_up, self._running)),
                                       timeout=CATCH_UP_S)
                ready = [s for s in self._running if _ready(s)]
            if ready:
                try:
                    self._step(ready)
                except BackendError as exc:
                    with self._changed:
                        for sequence in ready:
                            self._finish(sequence, exc)
                except Exception as exc:  # noqa: BLE001 - each reader gets the reason
                    log.exception("batched decoding failed")
                    with self._changed:
                        for sequence in ready:
                            self._finish(sequence, BackendError(f"decoding failed: {exc}"))

    def _join(self, sequence: BatchSequence) -> None:
        """Put the longest saved prefix of the prompt into the slot; the rest is read by the
        next steps. At least the prompt's last token is read, for its logits."""
        lib, slot, prompt = self._lib, sequence.slot, sequence.prompt
        lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
        reused = self.states.restore_best(self._ctx, slot, prompt, sequence.params.owner) \
            if self.states else 0
        reused = min(reused, len(prompt) - 1)
        if reused > 0:
            lib.llama_memory_seq_rm(self._memory, slot, reused, -1)
        sequence.reused = max(reused, 0)
        sequence.in_cache = list(prompt[:reused])
        sequence.pending = list(prompt[reused:])

    def _step(self, ready: list[BatchSequence]) -> None:
        lib, batch = self._lib, self._batch
        count = 0
        # (sequence, index in the batch of the first logits it samples, drafts after it)
        outputs: list[tuple[BatchSequence, int, list[int]]] = []

        def add(token: int, sequence: BatchSequence, logits: bool) -> int:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = len(sequence.in_cache)
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = sequence.slot
            batch.logits[count] = logits
            sequence.in_cache.append(token)
            count += 1
            return count - 1

        generating = [s for s in ready if s.next_token is not None]
        # Drafts only for a reply decoding alone: with several, one pass over the weights
        # already serves them all, and each drafted token adds compute to everyone's step
        # (4 concurrent greedy stories on 2 cores: 104 tokens/s with drafts, 154 without).
        alone = len(generating) == 1
        for i, sequence in enumerate(generating):  # first: the next token of each, drafts
            after = len(generating) - 1 - i  # room kept for the next tokens of the others
            drafts = self._drafts(sequence, self._n_batch - count - 1 - after) if alone \
                else []
            first = add(sequence.next_token, sequence, True)
            for token in drafts:
                add(token, sequence, True)
            outputs.append((sequence, first, drafts))
            sequence.next_token = None
        for sequence in ready:  # then what joining prompts fit in the rest of the batch
            take = min(len(sequence.pending), self._n_batch - count)
            for i, token in enumerate(sequence.pending[:take]):
                index = add(token, sequence, i == len(sequence.pending) - 1)
                if i == len(sequence.pending) - 1:
                    outputs.append((sequence, index, []))
            del sequence.pending[:take]
        batch.n_tokens = count
        self._follow_threads(ready)
        result = lib.llama_decode(self._ctx, batch)
        self.steps += 1
        self.widest = max(self.widest, len(outputs))
        self.history.append(tuple(sequence.slot for sequence, _, _ in outputs))
        if result != 0:
            raise BackendError(f"llama.cpp could not decode a batch of {count} tokens "
                               f"(llama_decode returned {result})")
        for sequence, first, drafts in outputs:
            self._sample(sequence, first, drafts)

    def _drafts(self, sequence: BatchSequence, room: int) -> list[int]:
        """Drafts for the sequence, within the batch's room, its token budget (which keeps
        them inside its context) and the look-ahead of its reader."""
        if sequence.drafter is None:
            return []
        ahead = sequence.generated - sequence.taken
        return sequence.drafter.draft(min(room, sequence.max_new - sequence.generated - 1,
                                         LOOKAHEAD - ahead - 1))

    def _sample(self, sequence: BatchSequence, first: int, drafts: list[int]) -> None:
        """Sample the sequence's next token, and one more after each draft its sampler
        chain agrees with; drop the rest of the drafts from its cache."""
        lib, kept, ended = self._lib, 0, False
        sequence.sampled_from = sequence.generated
        for offset in range(len(drafts) + 1):
            token = lib.llama_sampler_sample(sequence.sampler, self._ctx, first + offset)
            sequence.generated += 1
            sequence.tokens.put(token)
            if sequence.drafter is not None:
                sequence.drafter.extend((token,))
            if lib.llama_vocab_is_eog(self._vocab, token) or \
                    sequence.generated >= sequence.max_new:
                ended = True
                break
            if offset < len(drafts) and token == drafts[offset]:
                kept += 1
                continue
            sequence.next_token = token
            break
        sequence.drafted += len(drafts)
        sequence.accepted += kept
        if sequence.drafter is not None:
            sequence.drafter.judge(len(drafts), kept)
        if rejected := len(drafts) - kept:
            del sequence.in_cache[-rejected:]
            lib.llama_memory_seq_rm(self._memory, sequence.slot, len(sequence.in_cache), -1)
        if ended:
            with self._changed:
                self._finish(sequence)

    def _follow_threads(self, running: list[BatchSequence]) -> None:
        """Use the cores this model's share allows now (asked between steps)."""
        ask: Callable[[], int] | None = next(
            (s.params.threads for s in running if s.params.threads is not None), None)
        wanted = min(self._n_threads, ask()) if ask else self._n_threads
        if wanted != self._threads_now:
            self._threads_now = wanted
            self._lib.llama_set_n_threads(self._ctx, wanted, wanted)
            if self.draft_model is not None:
                self.draft_model.set_threads(wanted)

    def _finish(self, sequence: BatchSequence, error: BackendError | None = None) -> None:
        """Hand the sequence's slot back (called with the lock held)."""
        if sequence.finished.is_set():
            return
        sequence.tokens.put(error if error is not None else _END)
        if self.states is not None and error is None and sequence.in_cache:
            self.states.save(self._ctx, sequence.slot, sequence.in_cache, sequence.params.owner)
        self._lib.llama_memory_seq_rm(self._memory, sequence.slot, -1, -1)
        self._lib.llama_sampler_free(sequence.sampler)
        for line in (self._running, self._joining):
            if sequence in line:
                line.remove(sequence)
        self._free.append(sequence.slot)
        sequence.finished.set()
        self._changed.notify_all()

