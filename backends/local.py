"""What every engine that runs a model on this machine shares: prompt -> room -> stops -> usage.

An engine built on `LocalBackend` implements only its decoding: given the prompt it encoded,
how many new tokens it may take, the sampling settings and the cancel event, it yields text
as it decodes and fills in a `Decoding` (tokens computed, whether the last one ended the
reply). The base renders the chat template, encodes, checks the room, holds back and ends on
stop strings, and decides the finish reason and the usage of the last chunk.
"""
from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import (
    Backend,
    BackendError,
    Chunk,
    FinishReason,
    GenParams,
    Message,
    PromptReport,
    Usage,
    reply_room,
)
from backends.chat_template import ChatTemplate
from backends.stops import StopStringFilter
from backends.thinking import Markers, ThoughtSplitter, takes_enable_thinking, template_markers


@dataclass
class Decoding:
    """What an engine tells the base about one reply's decoding, besides its text.

    The engine keeps it current while it decodes (and at the latest when its generator
    finishes or is closed): the base reads it only after that.
    """

    # Tokens computed for the reply, the end-of-generation token that ended it included.
    tokens: int = 0
    # The last token computed is an end-of-generation token (EOS, end of turn).
    ended_on_eog: bool = False
    # Prompt tokens taken from a saved state of an earlier prompt instead of being read.
    cached_tokens: int = 0
    # Speculative decoding: draft tokens checked, and those the sampler chose too.
    drafted: int = 0
    accepted: int = 0


class LocalBackend(Backend):
    """A model whose chat template, tokenizer and decoding run in this process.

    Subclasses set `_template` and `_warnings` when they load, and implement `_model_name`,
    `_encode_prompt`, `_eog_ids` and `_decode`.
    """

    can_continue = True
    shows_prompt = True
    exact_token_counts = True
    # Where prompt_report says the template came from when the model's own one is used.
    template_origin = "the model file"

    def __init__(self, context_length: int, chat_template: str | None,
                 reasoning: Markers | None = None) -> None:
        self.context_length = context_length
        self._template_override = chat_template
        self._reasoning = reasoning
        self._template: ChatTemplate | None = None
        self._warnings: list[str] = []

    @property
    def reasoning(self) -> Markers | None:
        """The thought's markers: the entry's, or the usual ones when the loaded template
        mentions them."""
        if self._reasoning is not None or self._template is None:
            return self._reasoning
        return template_markers(self._template.source)

    @property
    def thinking_switch(self) -> bool:
        return self._template is not None and takes_enable_thinking(self._template.source)

    def unhonoured(self, params: GenParams) -> list[str]:
        ignored = []
        if params.sampling.think is not None and not self.thinking_switch:
            ignored.append("the Think switch (this model's template has none)")
        if params.sampling.thinking_budget and self.reasoning is None:
            ignored.append("the thinking budget (this model is not set up as one that "
                           "thinks: see reasoning in models.yaml)")
        return ignored

    # -- what an engine implements --------------------------------------------------------
    @property
    @abstractmethod
    def _model_name(self) -> str:
        """The model's name in messages ("… is not loaded")."""

    @abstractmethod
    def _encode_prompt(self, prompt: str) -> tuple[Any, int]:
        """The rendered prompt as the engine's decoder takes it, and its length in tokens."""

    @abstractmethod
    def _eog_ids(self) -> tuple[int, ...]:
        """The token ids that end a reply."""

    @abstractmethod
    def _decode(self, prompt: Any, max_new: int, params: GenParams, cancel: threading.Event,
                decoding: Decoding) -> Iterator[str]:
        """Yield the reply's text as it is decoded, from `prompt` (what `_encode_prompt`
        gave), at most `max_new` tokens.

        Check `cancel` before computing each token and end when it is set; end on an
        end-of-generation token; keep `decoding` current. The base closes this generator
        when a stop string matches, and the engine's computation must end with it (a
        `finally` that stops the engine and waits for any worker of its own).
        """

    # -- prompting ------------------------------------------------------------------------
    def render_prompt(self, messages: Sequence[Message], continue_final: bool = False,
                      think: bool | None = None) -> str:
        template = self._require_template()
        return template.render(messages, continue_final=continue_final,
                               enable_thinking=think if self.thinking_switch else None)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self._encode_prompt(self.render_prompt(messages))[1]

    def prompt_report(self, messages: Sequence[Message], params: GenParams) -> PromptReport:
        prompt = self.render_prompt(messages, params.continue_final, params.sampling.think)
        template = self._require_template()
        return PromptReport(
            prompt=prompt, template=template.describe_origin(self.template_origin),
            prompt_tokens=self._encode_prompt(prompt)[1],
            stop_strings=self._stop_strings(params), eos_ids=tuple(self._eog_ids()))

    def template_warnings(self) -> list[str]:
        return list(self._warnings)

    def _stop_strings(self, params: GenParams) -> tuple[str, ...]:
        return (*params.stop, *self._require_template().stop_strings)

    def _require_template(self) -> ChatTemplate:
        if self._template is None:
            raise BackendError(f"{self._model_name} is not loaded")
        return self._template

    # -- generation -----------------------------------------------------------------------
    def stream_chat(self, messages: Sequence[Message], params: GenParams,
                    cancel: threading.Event) -> Iterator[Chunk]:
        rendered = self.render_prompt(messages, params.continue_final, params.sampling.think)
        prompt, prompt_tokens = self._encode_prompt(rendered)
        max_new = reply_room(prompt_tokens, self.context_length, params.sampling.max_new_tokens)
        markers = self.reasoning
        split = ThoughtSplitter(markers, inside=_opens_thought(rendered, markers)) \
            if markers else None
        budget = (params.sampling.thinking_budget or None) if split is not None else None
        stops = StopStringFilter(self._stop_strings(params))
        decoding = first_pass = Decoding()
        spent = thought_tokens = 0  # tokens of a pass ended at the budget; of the thought
        drafted = accepted = 0  # of passes ended at the budget
        raw = ""  # what the model wrote, for the prompt that goes on after a cut thought
        pieces = self._decode(prompt, max_new, params, cancel, decoding)
        try:
            while True:
                counted = 0
                for piece in pieces:
                    raw += piece
                    ended_before = split is None or split.thought_ended
                    if chunk := _chunk(split, stops.feed(piece)):
                        yield chunk
                    if not ended_before and split.thought_started:  # a piece of the thought
                        thought_tokens += decoding.tokens - counted
                    counted = decoding.tokens
                    if stops.stopped:
                        break
                    if budget is not None and split.in_thought and thought_tokens >= budget:
                        break
                else:
                    break
                if stops.stopped or not split.in_thought:
                    break
                # The thought spent its budget: write the end marker and go on to the answer.
                pieces.close()
                held = _chunk(split, stops.flush())
                thought = (held.thought if held else "") + split.force_end()
                if thought:
                    yield Chunk("", thought=thought)
                spent += decoding.tokens
                drafted, accepted = drafted + decoding.drafted, accepted + decoding.accepted
                raw = raw.rstrip() + f"\n{markers.end}\n\n"
                prompt, tokens = self._encode_prompt(rendered + raw)
                room = min(max_new - spent, self.context_length - tokens)
                if room <= 0:
                    break
                stops, decoding = StopStringFilter(self._stop_strings(params)), Decoding()
                pieces = self._decode(prompt, room, params, cancel, decoding)
        finally:
            pieces.close()  # a stop string, or a reader that left: the engine stops here
        finish: FinishReason
        if cancel.is_set():
            finish = "cancelled"
        elif stops.stopped or decoding.ended_on_eog:
            finish = "stop"
        else:
            finish = "length"
        # The end-of-generation token is no reply text, and is not counted as such.
        completion = spent + decoding.tokens - (1 if decoding.ended_on_eog else 0)
        tail = None if stops.stopped else _chunk(split, stops.flush())
        if split is not None:
            more_thought, more_answer = split.flush()
            tail = Chunk((tail.text if tail else "") + more_answer,
                         thought=(tail.thought if tail else "") + more_thought)
        yield Chunk(tail.text if tail else "", finish_reason=finish,
                    thought=tail.thought if tail else "",
                    usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                                reasoning_tokens=min(thought_tokens, completion),
                                cached_tokens=first_pass.cached_tokens,
                                accepted_prediction_tokens=accepted + decoding.accepted,
                                rejected_prediction_tokens=drafted + decoding.drafted
                                - accepted - decoding.accepted))


def _opens_thought(prompt: str, markers: Markers) -> bool:
    """The prompt leaves a thought open: a template that starts every reply thinking, or a
    reply pre-filled with the start marker (and perhaps its first words)."""
    start = prompt.rfind(markers.start)
    return start >= 0 and markers.end not in prompt[start:]


def _chunk(split: ThoughtSplitter | None, text: str) -> Chunk | None:
    """New text as a chunk, its thought apart when the model thinks; None when empty."""
    if not text:
        return None
    if split is None:
        return Chunk(text)
    thought, answer = split.feed(text)
    return Chunk(answer, thought=thought) if thought or answer else None
