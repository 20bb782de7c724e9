"""A model served by another program over the OpenAI-compatible protocol: the scale-out path.

vLLM (tensor parallel across GPUs and nodes), TGI, a llama.cpp server or Ollama do the work;
this backend streams their server-sent events as chunks. The server applies its own chat
template and schedules its own requests, so several replies may run at once. Every failure
(refused connection, timeout, an error status, a server that dies mid-reply) becomes one
readable BackendError.

The request is plain OpenAI: top_k and repetition penalty have no field there, so
`unhonoured` names them when they are set, and a cut reply cannot be continued (the
protocol has no way to leave the last assistant message open).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Literal

import httpx

from backends.base import Backend, BackendError, Chunk, GenParams, Message, Usage
from backends.thinking import Markers, ThoughtSplitter

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
STOP_POLL_S = 0.05
FINISH_REASONS = {"stop": "stop", "length": "length"}
MAX_STOP_STRINGS = 4  # OpenAI's API takes up to four; more may be refused
# Sampling settings OpenAI's request has no field for, which some servers take by this name
# (vLLM, llama.cpp's server); sent only to a server whose entry lists them.
ServerSetting = Literal["min_p", "top_k"]


class OpenAIBackend(Backend):
    concurrent = True
    can_continue = False  # the protocol cannot leave the last assistant message open
    shows_prompt = False  # the server applies its own chat template
    exact_token_counts = False  # the server's usage when it sends one, else an estimate

    def __init__(self, base_url: str, remote_model: str, api_key_env: str | None = None,
                 timeout: float | None = None, context_length: int = 2048,
                 reasoning: Markers | None = None,
                 server_settings: tuple[ServerSetting, ...] = ()) -> None:
        self.reasoning = reasoning  # markers the server may leave inside its text
        self.server_settings = server_settings
        self.base_url = base_url.rstrip("/")
        self.remote_model = remote_model
        self.api_key_env = api_key_env
        self.timeout = timeout or DEFAULT_TIMEOUT_S
        self.context_length = context_length
        self._client: httpx.Client | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def load(self, progress=None) -> None:
        headers = {"Accept": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise BackendError(f"the environment variable {self.api_key_env} (api_key_env)"
                                   f" holds no key for {self.base_url}")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, trust_env=False,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT_S)))
        if progress is not None:
            progress(0.5, f"asking {self.base_url}")
        try:
            served = self.served_models()
        except BackendError:
            self.unload()
            raise
        if served is not None and self.remote_model not in served:
            self.unload()
            raise BackendError(f"{self.base_url} does not serve {self.remote_model!r}; it serves:"
                               f" {', '.join(served) or 'nothing'}")

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def served_models(self) -> list[str] | None:
        """The model names the server lists at /models; None if it has no such list."""
        try:
            response = self._require_client().get("/models")
        except httpx.HTTPError as exc:
            raise BackendError(self._describe(exc)) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackendError(self._status_message(response.status_code, response.text))
        try:
            return [str(m["id"]) for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise BackendError(f"{self.base_url}/models answered something that is not an "
                               "OpenAI model list") from None

    @property
    def placement(self) -> str:
        return f"remote: {self.base_url}"

    def unhonoured(self, params: GenParams) -> list[str]:
        """top_k and min_p when set and the server is not known to take them, the repetition
        penalty (no common field), the thinking switches, the stop strings past the first
        four."""
        settings = params.sampling
        ignored = []
        if settings.top_k and "top_k" not in self.server_settings:
            ignored.append(f"top_k {settings.top_k}")
        if settings.min_p and "min_p" not in self.server_settings:
            ignored.append(f"min_p {settings.min_p:g}")
        if settings.repetition_penalty != 1.0:
            ignored.append(f"repetition penalty {settings.repetition_penalty:g}")
        if settings.think is not None:
            ignored.append("the Think switch (the server renders its own template)")
        if settings.thinking_budget:
            ignored.append("the thinking budget (the protocol has no field for it)")
        if len(params.stop) > MAX_STOP_STRINGS:
            extra = ", ".join(repr(s) for s in params.stop[MAX_STOP_STRINGS:])
            ignored.append(f"stop strings past the first {MAX_STOP_STRINGS}: {extra}")
        return ignored

    # -- generation ----------------------------------------------------------------------
    def stream_chat(self, messages: Sequence[Message], params: GenParams,
                    cancel: threading.Event) -> Iterator[Chunk]:
        if params.continue_final:
            raise BackendError(f"{self.remote_model} on a remote server cannot continue a "
                               "cut reply")
        settings = params.sampling
        body = {"model": self.remote_model, "messages": [m.as_dict() for m in messages],
                "stream": True, "temperature": settings.temperature, "top_p": settings.top_p,
                "max_tokens": settings.max_new_tokens}
        if settings.seed is not None:
            body["seed"] = settings.seed
        for name in self.server_settings:
            if value := getattr(settings, name):
                body[name] = value
        if params.stop:
            body["stop"] = list(params.stop)[:MAX_STOP_STRINGS]
        finish, usage, pieces = "stop", None, 0
        # A server sends the thought as `reasoning_content` (vLLM, llama.cpp's server with a
        # reasoning format) or leaves its markers inside the text: both become thought.
        split = ThoughtSplitter(self.reasoning) if self.reasoning else None
        try:
            with self._require_client().stream("POST", "/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    raise BackendError(self._status_message(reply.status_code,
                                                            reply.read().decode(errors="replace")))
                with _closed_on(cancel, reply):
                    for event in _events(reply):
                        if cancel.is_set():  # events already buffered are not shown
                            break
                        if "error" in event:
                            raise BackendError(f"{self.base_url}: {_error_text(event)}")
                        usage = event.get("usage") or usage
                        for choice in event.get("choices") or []:
                            delta = choice.get("delta") or {}
                            text = delta.get("content") or ""
                            thought = delta.get("reasoning_content") or ""
                            if split is not None and text:
                                more_thought, text = split.feed(text)
                                thought += more_thought
                            if text or thought:
                                pieces += 1
                                yield Chunk(text, thought=thought)
                            if choice.get("finish_reason"):
                                finish = FINISH_REASONS.get(choice["finish_reason"], "stop")
        except Exception as exc:  # noqa: BLE001 - a closed stream after Stop is no failure
            if not cancel.is_set():
                if isinstance(exc, httpx.HTTPError):
                    raise BackendError(self._describe(exc)) from None
                raise
        if cancel.is_set():
            finish = "cancelled"
        thought, text = split.flush() if split is not None else ("", "")
        yield Chunk(text, thought=thought, finish_reason=finish, usage=Usage(
            prompt_tokens=int(usage["prompt_tokens"]) if usage else self.count_tokens(messages),
            completion_tokens=int(usage["completion_tokens"]) if usage else pieces))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """An estimate (the tokenizer is on the server): about 3.5 characters a token."""
        return sum(4 + int(len(m.content) / 3.5) for m in messages)

    def memory_estimate(self) -> int:
        return 0  # the weights live on the server

    # -- messages for people -------------------------------------------------------------
    def _describe(self, exc: httpx.HTTPError) -> str:
        if isinstance(exc, httpx.ConnectTimeout):
            return f"cannot connect to {self.base_url}: no answer within {CONNECT_TIMEOUT_S:g} s"
        if isinstance(exc, httpx.TimeoutException):
            return f"{self.base_url} sent nothing for {self.timeout:g} s (timeout)"
        if isinstance(exc, httpx.ConnectError):
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc)
            return f"cannot connect to {self.base_url}: {reason} (is the server running?)"
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return f"{self.base_url} closed the connection in the middle of the reply"
        return f"{self.base_url}: {type(exc).__name__}: {exc}"

    def _status_message(self, status: int, text: str) -> str:
        try:
            detail = _error_text(json.loads(text))
        except ValueError:
            detail = text.strip()[:200] or "no details"
        if status == 401:
            hint = f" (check {self.api_key_env})" if self.api_key_env else \
                " (the server wants a key: set api_key_env)"
            return f"{self.base_url} refused the key{hint}: {detail}"
        return f"{self.base_url} answered {status}: {detail}"

    def _require_client(self) -> httpx.Client:
        if self._client is None:
            raise BackendError(f"{self.base_url} is not connected")
        return self._client


def _events(reply: httpx.Response) -> Iterator[dict]:
    """The JSON payloads of a server-sent event stream, up to `data: [DONE]`."""
    for line in reply.iter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            yield json.loads(payload)
        except ValueError:
            raise BackendError(f"the server sent an event that is not JSON: {payload[:80]!r}") \
                from None


def _error_text(document) -> str:
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if error:
        return str(error)
    if isinstance(document, dict) and "detail" in document:
        return str(document["detail"])
    return str(document)[:200]


class _closed_on:
    """Close the response when `cancel` is set, so Stop ends even a read that is waiting."""

    def __init__(self, cancel: threading.Event, reply: httpx.Response) -> None:
        self._cancel, self._reply = cancel, reply
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="remote-stop", daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(STOP_POLL_S):
            if self._cancel.is_set():
                self._reply.close()
                return

    def __enter__(self) -> None:
        self._watcher.start()

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._watcher.join()
