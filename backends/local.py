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

    def __init__(self, context_length: int, chat_template: str | None) -> None:
        self.context_length = context_length
        self._template_override = chat_template
        self._template: ChatTemplate | None = None
        self._warnings: list[str] = []

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
    def render_prompt(self, messages: Sequence[Message], continue_final: bool = False) -> str:
        return self._require_template().render(messages, continue_final=continue_final)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self._encode_prompt(self.render_prompt(messages))[1]

    def prompt_report(self, messages: Sequence[Message], params: GenParams) -> PromptReport:
        prompt = self.render_prompt(messages, params.continue_final)
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
        prompt, prompt_tokens = self._encode_prompt(
            self.render_prompt(messages, params.continue_final))
        max_new = reply_room(prompt_tokens, self.context_length, params.max_new_tokens)
        stops = StopStringFilter(self._stop_strings(params))
        decoding = Decoding()
        pieces = self._decode(prompt, max_new, params, cancel, decoding)
        try:
            for piece in pieces:
                shown = stops.feed(piece)
                if shown:
                    yield Chunk(shown)
                if stops.stopped:
                    break
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
        completion = decoding.tokens - (1 if decoding.ended_on_eog else 0)
        tail = "" if stops.stopped else stops.flush()
        yield Chunk(tail, finish_reason=finish,
                    usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion))
