"""Speculative decoding with a draft model: a small GGUF of the same tokenizer guesses the
next tokens of a reply, and the batch (backends/llamacpp_batch.py) checks the guesses in
one `llama_decode` of the target, exactly as it checks prompt-lookup drafts.

The draft model has its own llama.cpp context of one sequence, loaded with the target and
charged in its memory estimate. It drafts only for a reply decoding alone (the batch's
rule), so one sequence serves every reply of the model: before each proposal the context
keeps the longest prefix it shares with the reply's verified tokens and reads the rest, so
a reply costs its prompt once and each step only the tokens verified since. Its guesses
are greedy; they decide only what the target computes, never what is written (each
position is still sampled by the reply's own sampler chain), so the text is the same as
without drafts. How many it drafts adapts as prompt lookup's do (`DraftRoom`).

Drafts are token ids, so the two models must share one tokenizer: the load refuses a draft
whose vocabulary (type, size, every token's text) or BOS/EOS ids differ from the target's.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backends.base import BackendError
from backends.prompt_lookup import MAX_DRAFT, DraftRoom

log = logging.getLogger(__name__)

N_BATCH = 512  # prompt tokens the draft context reads per `llama_decode`


@dataclass(frozen=True)
class DraftSpec:
    """Which draft model to load with a target: its file (None: not installed, so the
    target drafts by prompt lookup), and the registry ids of both (for messages)."""

    path: Path | None
    draft_id: str
    target_id: str
    name: str = ""  # the draft's display name; its id when empty

    @property
    def label(self) -> str:
        return self.name or self.draft_id


def tokenizer_difference(target_vocab, draft_vocab) -> str | None:
    """What differs between two loaded vocabularies (llama_vocab pointers), or None."""
    import llama_cpp as lib

    sizes = lib.llama_vocab_n_tokens(target_vocab), lib.llama_vocab_n_tokens(draft_vocab)
    if sizes[0] != sizes[1]:
        return f"vocabulary of {sizes[0]:,} tokens vs {sizes[1]:,}"
    kinds = lib.llama_vocab_type(target_vocab), lib.llama_vocab_type(draft_vocab)
    if kinds[0] != kinds[1]:
        return f"tokenizer type {kinds[0]} vs {kinds[1]}"
    for what, read in (("BOS", lib.llama_vocab_bos), ("EOS", lib.llama_vocab_eos)):
        ids = read(target_vocab), read(draft_vocab)
        if ids[0] != ids[1]:
            return f"{what} token {ids[0]} vs {ids[1]}"
    for token in range(sizes[0]):
        texts = (lib.llama_vocab_get_text(target_vocab, token),
                 lib.llama_vocab_get_text(draft_vocab, token))
        if texts[0] != texts[1]:
            shown = [t.decode("utf-8", errors="replace") for t in texts]
            return f"token {token} is {shown[0]!r} vs {shown[1]!r}"
    return None


class DraftModel:
    """A loaded draft model and its one-sequence context; used by the decoding thread only."""

    def __init__(self, spec: DraftSpec, model, ctx) -> None:
        import llama_cpp as lib

        self.spec = spec
        self._lib = lib
        self._model, self._ctx = model, ctx  # llama_cpp._internals LlamaModel, LlamaContext
        self._memory = lib.llama_get_memory(ctx.ctx)
        self._n_ctx = lib.llama_n_ctx(ctx.ctx)
        self._batch = lib.llama_batch_init(N_BATCH, 0, 1)
        self._greedy = lib.llama_sampler_init_greedy()
        self._cached: list[int] = []  # the tokens in the context's sequence 0

    @classmethod
    def load(cls, spec: DraftSpec, target_vocab, model_params, context_params) -> DraftModel:
        """Load the draft beside a loaded target; BackendError (naming both ids) when it
        cannot be loaded or its tokenizer is not the target's."""
        from llama_cpp._internals import LlamaContext, LlamaModel

        try:
            model = LlamaModel(path_model=str(spec.path), params=model_params, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp could not load the draft model {spec.draft_id} of "
                               f"{spec.target_id} ({spec.path}): {exc}") from exc
        import llama_cpp as lib

        if lib.llama_model_is_recurrent(model.model) or lib.llama_model_is_hybrid(model.model):
            model.close()
            raise BackendError(f"the draft model {spec.draft_id} of {spec.target_id} is "
                               "recurrent: its state cannot drop rejected drafts")
        if difference := tokenizer_difference(target_vocab, model.vocab):
            model.close()
            raise BackendError(f"the draft model {spec.draft_id} does not share the tokenizer "
                               f"of {spec.target_id} ({difference}): drafts are token ids, "
                               f"so remove 'draft: {spec.draft_id}' from {spec.target_id}")
        try:
            ctx = LlamaContext(model=model, params=context_params, verbose=False)
        except ValueError as exc:
            model.close()
            raise BackendError(f"llama.cpp could not make a context for the draft model "
                               f"{spec.draft_id} of {spec.target_id}: out of memory") from exc
        log.info("loaded draft model %s for %s", spec.draft_id, spec.target_id)
        return cls(spec, model, ctx)

    def drafts_for(self, prompt: Iterable[int]) -> ModelDrafts:
        """One reply's drafter, starting from its prompt."""
        return ModelDrafts(self, prompt)

    def set_threads(self, n_threads: int) -> None:
        self._lib.llama_set_n_threads(self._ctx.ctx, n_threads, n_threads)

    def propose(self, tokens: list[int], count: int) -> list[int]:
        """Up to `count` greedy guesses at the tokens after `tokens`; fewer at the context's
        end or after an end-of-generation guess."""
        count = min(count, self._n_ctx - len(tokens))
        if count <= 0 or not tokens:
            return []
        keep = 0
        for mine, theirs in zip(self._cached, tokens):
            if mine != theirs:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)  # the last token is read again for its logits
        self._lib.llama_memory_seq_rm(self._memory, 0, keep, -1)
        del self._cached[keep:]
        self._read(tokens[keep:])
        guesses: list[int] = []
        while True:
            guess = self._lib.llama_sampler_sample(self._greedy, self._ctx.ctx, -1)
            guesses.append(guess)
            if len(guesses) >= count or self._lib.llama_vocab_is_eog(self._model.vocab, guess):
                return guesses
            self._read([guess])

    def _read(self, tokens: list[int]) -> None:
        """Decode tokens into sequence 0, in batches, with logits for the last only."""
        lib, batch = self._lib, self._batch
        for start in range(0, len(tokens), N_BATCH):
            chunk = tokens[start:start + N_BATCH]
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = len(self._cached)
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = start + i == len(tokens) - 1
                self._cached.append(token)
            batch.n_tokens = len(chunk)
            if (result := lib.llama_decode(self._ctx.ctx, batch)) != 0:
                lib.llama_memory_seq_rm(self._memory, 0, -1, -1)
                self._cached.clear()
                raise BackendError(f"the draft model {self.spec.draft_id} could not decode "
                                   f"{len(chunk)} tokens (llama_decode returned {result})")

    def close(self) -> None:
        self._lib.llama_sampler_free(self._greedy)
        self._lib.llama_batch_free(self._batch)
        self._ctx.close()
        self._model.close()


class ModelDrafts:
    """One reply's side of a draft model: its verified tokens and how many to draft next
    (the same calls as backends/prompt_lookup.PromptLookup, which the batch also takes)."""

    def __init__(self, model: DraftModel, prompt: Iterable[int],
                 max_draft: int = MAX_DRAFT) -> None:
        self._model = model
        self._tokens = list(prompt)
        self.adapt = DraftRoom(max_draft)

    def extend(self, tokens: Iterable[int]) -> None:
        """Add verified tokens (never drafts that may be rejected)."""
        self._tokens.extend(tokens)

    def draft(self, limit: int | None = None) -> list[int]:
        room = self.adapt.take(limit)
        return self._model.propose(self._tokens, room) if room > 0 else []

    def judge(self, drafted: int, accepted: int) -> None:
        self.adapt.judge(drafted, accepted)
