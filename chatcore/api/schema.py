"""The OpenAI chat request, validated strictly, and OpenAI-shaped errors.

Unknown fields and features this app does not have (tools, several choices, logprobs) are
refused with a 400 that names the field, rather than silently ignored.
"""
from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from backends.base import GenParams, Message
from backends.sampling import SamplingSettings, merge, optional_fields

MAX_BODY_BYTES = 4 * 2**20


class ApiError(Exception):
    """An error the API returns as {"error": {...}} with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = \
            status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False


# Every sampling setting, optional (None: the entry's default), with the bounds of
# backends/sampling.py; the reply's length is OpenAI's `max_tokens` (or the newer
# `max_completion_tokens`) rather than `max_new_tokens`.
_Sampling = create_model("_Sampling", __config__=ConfigDict(extra="forbid", strict=True),
                         **optional_fields(leave_out=("max_new_tokens",)))
MaxTokens = optional_fields()["max_new_tokens"][0]


def _length_field():
    """OpenAI's name for the reply's length, with the schema's bound and help."""
    return optional_fields()["max_new_tokens"][1]


class ChatRequest(_Sampling):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens = _length_field()
    max_completion_tokens: MaxTokens = _length_field()
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    user: str | None = None
    frequency_penalty: Literal[0, 0.0] | None = None
    presence_penalty: Literal[0, 0.0] | None = None
    logprobs: Literal[False] | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("give at most 4 non-empty stop strings")
        return value

    def chat_messages(self) -> list[Message]:
        return [Message("system" if m.role == "developer" else m.role, m.text)
                for m in self.messages]

    def params(self, defaults: SamplingSettings) -> GenParams:
        """These settings over the model entry's defaults (a ValidationError if the result
        is out of range, which the fields' own bounds already rule out)."""
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        given = {name: getattr(self, name) for name in _Sampling.model_fields}
        settings = merge(defaults, max_new_tokens=self.max_completion_tokens or self.max_tokens,
                         **given)
        return GenParams(settings, stop=tuple(stops))


def body_too_large(limit: int = MAX_BODY_BYTES) -> ApiError:
    """The 413 for a body over `limit` bytes (chatcore/api/v1.py refuses it before reading)."""
    return ApiError(413, f"the request body is larger than {limit // 2**20} MiB",
                    code="request_too_large")


def parse_request(raw: bytes) -> ChatRequest:
    """The body (already held to MAX_BODY_BYTES by chatcore.api.v1.read_body) as a
    ChatRequest, or an ApiError(400) naming the first bad field."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # a few KB of "[[[[..." would otherwise be a 500
        raise ApiError(400, "the body nests lists or objects too deeply to read") from None
    if not isinstance(document, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return ChatRequest.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"] if not str(p).startswith(("str", "list[")))
        message = "unrecognized request argument" if error["type"] == "extra_forbidden" \
            else error["msg"]
        raise ApiError(400, f"{where}: {message}" if where else message,
                       param=where or None) from None
