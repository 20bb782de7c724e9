"""The one interface every inference engine implements, and the shapes that cross it.

Messages and chunks follow the OpenAI chat schema so the remote backend and the HTTP API
stay thin. A backend is a plain generator of chunks; the manager owns threads, locks and
timing, so a new engine is one small class.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from backends.sampling import SamplingSettings
from backends.thinking import Markers

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]
ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class GenParams:
    """What one reply runs with: its sampling settings, whole, and what the request adds."""

    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    stop: tuple[str, ...] = field(default_factory=tuple)
    # Extend the final assistant message instead of starting a new one (a cut reply).
    continue_final: bool = False
    # How many CPU threads to use right now; asked between tokens, so a reply speeds up when
    # a neighbour sharing the cores finishes. None: the backend's own setting.
    threads: Callable[[], int] | None = field(default=None, compare=False, repr=False)
    # Who asks (the signed-in user; "" without sign-in). Engines that keep the states of
    # earlier prompts to read a new one faster reuse only the same owner's: a prompt read
    # quickly would tell another user that it begins with text someone else sent.
    owner: str = field(default="", repr=False)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0  # of the completion tokens, those of the thought
    # Of the prompt tokens, those taken from the engine's saved state of an earlier prompt
    # (the asker's own: see GenParams.owner) instead of being read again.
    cached_tokens: int = 0
    # Speculative decoding (OpenAI's completion_tokens_details names): draft tokens the
    # sampler chose too, and those it did not (computed, not written).
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Chunk:
    """New text only; the last chunk of a reply carries finish_reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    thought: str = ""  # new text of the model's thought (backends/thinking.py), not answer


@dataclass(frozen=True)
class PromptReport:
    """What a model is given for a reply, for a person to inspect."""

    prompt: str  # the exact text after the chat template ("" when a server renders it)
    template: str  # where the template came from
    prompt_tokens: int
    stop_strings: tuple[str, ...]
    eos_ids: tuple[int, ...]


class BackendError(Exception):
    """A failure whose message is fit to show a person as it is."""


def reply_room(prompt_tokens: int, context_length: int, max_new_tokens: int) -> int:
    """How many tokens the reply may take; an error when the prompt leaves none."""
    room = context_length - prompt_tokens
    if room <= 0:
        raise BackendError(
            f"the prompt takes {prompt_tokens} tokens but the model's context holds "
            f"{context_length}: shorten the conversation")
    return min(max_new_tokens, room)


class Backend(ABC):
    """One loaded (or loadable) model on one engine."""

    # True when the engine schedules several requests itself (a remote server); otherwise
    # the manager lets `parallel` replies at a time use the model.
    concurrent: bool = False
    # Replies the engine decodes at once (llama.cpp's batch slots); the rest wait in line.
    parallel: int = 1

    # Capabilities, declared by each engine's class (False until an engine says otherwise).
    can_continue: bool = False
    """True when the engine can extend a cut reply (`GenParams.continue_final`): the final
    assistant message is left open in the prompt and the model writes on from its last
    token. An engine without it refuses such a request with a BackendError."""

    shows_prompt: bool = False
    """True when `prompt_report` can show the exact text the model reads, after its chat
    template; False where a server applies a template this app never sees."""

    # The thought's markers when the model thinks (backends/thinking.py); None otherwise.
    reasoning: Markers | None = None
    # True when the Think switch reaches the model (its template takes enable_thinking).
    thinking_switch: bool = False

    exact_token_counts: bool = False
    """True when `count_tokens` and the usage of the last chunk are the model's own
    tokenizer's counts; False where they are estimated or taken on trust from a server."""

    @property
    def placement(self) -> str:
        """Where the loaded model runs, for a person: "cpu", "cuda:0, cpu", "cpu + 20 GPU
        layers", "remote: http://host:8000/v1"; "" when not loaded or not known."""
        return ""

    @property
    def runtime_notes(self) -> list[str]:
        """How the loaded model runs, where the entry's settings do not say it, for the
        Models tab and the bench ("plain buffers (the AMX probe died with SIGILL)"); empty
        when not loaded."""
        return []

    def grant_prompt_cache(self, extra_bytes: int) -> int:
        """Lend the engine up to `extra_bytes` of host RAM beyond its estimate for the saved
        states of earlier prompts (chatcore/generation/prompt_cache.py); before the load or
        while loaded, larger or smaller (0 takes the loan back). Returns the bytes it will
        hold at most beyond the estimate: 0 for an engine that keeps no such cache."""
        return 0

    def unhonoured(self, params: GenParams) -> list[str]:
        """The settings in `params` this engine will not apply, in words for a person
        ("top_k 40", "repetition penalty 1.3"); empty when every setting takes effect."""
        return []

    @abstractmethod
    def load(self, progress: ProgressCallback | None = None) -> None: ...

    @abstractmethod
    def unload(self) -> None: ...

    @abstractmethod
    def stream_chat(
        self, messages: Sequence[Message], params: GenParams, cancel: threading.Event
    ) -> Iterator[Chunk]:
        """Yield new text as it is decoded; check `cancel` between tokens."""

    @abstractmethod
    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the prompt for these messages takes, with the chat template applied."""

    @abstractmethod
    def memory_estimate(self) -> int:
        """Bytes the model will take on `memory_device()` once loaded, known before loading."""

    def memory_device(self) -> str:
        """Where the estimate is charged: "cpu" (RAM) or "cuda:N"."""
        return "cpu"

    def memory_breakdown(self):
        """The backends.footprint.MemoryEstimate (weights, KV cache, working memory) behind
        `memory_estimate`, for fit badges; None where the engine does not say."""
        return None

    def prompt_report(self, messages: Sequence[Message], params: GenParams) -> PromptReport:
        """The prompt these messages make, with what ends the reply (loaded models only)."""
        raise BackendError("this engine cannot show its prompt")

    def shared_weights(self) -> tuple[object, int] | None:
        """(key, bytes) of the base weights this backend shares with other entries that
        name the same base (backends/shared_weights.py): the planner counts them once.
        None where the weights are the backend's own."""
        return None

    def template_warnings(self) -> list[str]:
        """Problems found in the chat template when the model loaded."""
        return []

    def decodes_on_cpu(self) -> bool:
        """True when replies are computed by this machine's cores, which concurrent replies
        then share (see `GenParams.threads`)."""
        return False
