"""Thinking models: the markers around a thought, and a stream split into thought and answer.

Models such as DeepSeek-R1's distills and Qwen3 write `<think> ... </think>` before their
answer. Every backend's text goes through one `ThoughtSplitter`, which tells the two apart
as the text arrives, even when a marker is cut across chunks, so the page can fold the
thought away, the store can keep it apart and the next turn's prompt can leave it out.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Markers:
    start: str = "<think>"
    end: str = "</think>"


def template_markers(source: str) -> Markers | None:
    """The usual markers when a chat template mentions them or takes `enable_thinking`
    (the models that think: their templates strip or switch the thought)."""
    if "<think>" in source or "enable_thinking" in source:
        return Markers()
    return None


def takes_enable_thinking(source: str) -> bool:
    """Whether the template renders a switch for thinking (Qwen3's `enable_thinking`)."""
    return "enable_thinking" in source


def _held(text: str, marker: str) -> int:
    """How many characters at the end of `text` could begin `marker` (held back)."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class Reasoning(BaseModel):
    """The markers a thinking model writes around its thought."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field("<think>", min_length=1, max_length=40)
    end: str = Field("</think>", min_length=1, max_length=40)


class ThoughtSplitter:
    """Feed text as it streams; get back (thought, answer) text safe to show now.

    Before anything else, text that begins with the start marker opens a thought; text that
    cannot begin with it is all answer. `inside` says the prompt already opened the thought
    (a template or a pre-filled reply ends with the start marker). The end marker closes it;
    neither marker is ever shown, not even a stray one in the answer. White space right
    after a marker is dropped."""

    def __init__(self, markers: Markers, inside: bool = False) -> None:
        self.markers = markers
        self.state = "thought" if inside else "before"
        self.thought_started = inside
        self.thought_ended = False
        self._buffer = ""
        self._trim = inside  # drop the white space that follows a marker

    @property
    def in_thought(self) -> bool:
        return self.state == "thought"

    def feed(self, text: str) -> tuple[str, str]:
        self._buffer += text
        thought, answer = "", ""
        while self._buffer:
            if self.state == "before":
                rest = self._buffer.lstrip()
                if not rest or (self.markers.start.startswith(rest)
                                and rest != self.markers.start):
                    break  # only white space, or the start marker's beginning: wait
                if rest.startswith(self.markers.start):
                    self._buffer = rest[len(self.markers.start):]
                    self.state, self.thought_started, self._trim = "thought", True, True
                else:
                    self.state = "answer"
            elif self.state == "thought":
                self._drop_leading_space()
                at = self._buffer.find(self.markers.end)
                if at >= 0:
                    thought += self._buffer[:at]
                    self._buffer = self._buffer[at + len(self.markers.end):]
                    self._enter_answer()
                    continue
                keep = _held(self._buffer, self.markers.end)
                thought += self._buffer[:len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep:]
                break
            else:
                self._drop_leading_space()
                for marker in (self.markers.start, self.markers.end):
                    self._buffer = self._buffer.replace(marker, "")  # a stray one: unshown
                keep = max(_held(self._buffer, self.markers.start),
                           _held(self._buffer, self.markers.end))
                answer += self._buffer[:len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep:]
                break
        return thought, answer

    def force_end(self) -> str:
        """End the thought now (the backend writes the end marker when the budget is
        spent); returns the thought text that was held back."""
        held = ""
        if self.state == "thought":
            held, self._buffer = self._buffer, ""
        self._enter_answer()
        return held

    def _enter_answer(self) -> None:
        self.state, self.thought_ended, self._trim = "answer", True, True

    def flush(self) -> tuple[str, str]:
        """What is held back, at the end of the stream."""
        held, self._buffer = self._buffer, ""
        if self.state == "thought":
            return held, ""
        return "", held.lstrip() if self._trim or self.state == "before" else held

    def _drop_leading_space(self) -> None:
        if self._trim:
            self._buffer = self._buffer.lstrip()
            if self._buffer:
                self._trim = False
