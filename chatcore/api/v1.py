"""The OpenAI-compatible API, on the same port as the page: /v1/models, /v1/chat/completions.

Other tools (the openai client, editors, scripts) reach the models this app hosts through
it. Each request runs through the same manager as the page: the same memory budget, the same
line per model, the same Stop. A client that disconnects ends its generation: the reply's
worker is cancelled and joined before the request is done.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from backends.base import Chunk
from backends.model_tags import LANGUAGE_CODE, OPENNESS, TASKS, ModelTags, TagFilter
from chatcore.api.schema import (
    MAX_BODY_BYTES,
    ApiError,
    ChatRequest,
    body_too_large,
    parse_request,
)
from chatcore.generation.context import ContextOverflow
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.replies import ReplyRequest

log = logging.getLogger(__name__)

_END = object()
DISCONNECT_POLL_S = 0.2


def build_api(manager: ModelManager, api_key: str | None,
              users: list[tuple[str, str]] | None = None) -> APIRouter:
    """`api_key` (Bearer) and `users` (the page's --auth, as HTTP Basic) each open the API;
    with neither, it is open (the server then listens on loopback only)."""
    router = APIRouter(prefix="/v1")
    # Each accepted Authorization value and who it signs in: an --auth user by name, the
    # key's holder as "" (the same owner as the page without sign-in).
    accepted = {f"Bearer {api_key}": ""} if api_key else {}
    accepted |= {"Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode(): name
                 for name, secret in users or []}

    def check_key(request: Request) -> str:
        """Who the request signs in as ("" when the API is open or for the key)."""
        if not accepted:
            return ""
        given = request.headers.get("authorization", "").strip()
        scheme, _, token = given.partition(" ")
        given = f"{scheme.capitalize()} {token.strip()}"
        # Every value is compared (no early exit), so timing says nothing of which matched.
        matched = [user for ok, user in accepted.items()
                   if hmac.compare_digest(given.encode(), ok.encode())]
        if not matched:
            ways = " or ".join(filter(None, [
                "'Authorization: Bearer <key>' with the key given to --api-key"
                if api_key else "", "HTTP Basic with an --auth user" if users else ""]))
            raise ApiError(401, f"sign in first: send {ways}", code="invalid_api_key")
        return matched[0]

    @router.get("/models")
    async def list_models(request: Request):
        try:
            check_key(request)
        except ApiError as exc:
            return _error(exc)
        try:
            only = _tag_filter(request.query_params)
        except ApiError as exc:
            return _error(exc)
        data = []
        for s in manager.statuses():
            tags = entry.tags if (entry := manager.registry.get(s.id)) else ModelTags()
            if s.usable and only.matches(tags):
                data.append({"id": s.id, "object": "model", "created": 0,
                             "owned_by": "local-chat", "name": s.name, "backend": s.backend,
                             "state": s.state.value,
                             "tags": {**tags.model_dump(mode="json", exclude={"openness"}),
                                      "openness": tags.open_as}})
        return {"object": "list", "data": data}

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        try:
            user = check_key(request)
            require_json(request)
            body = parse_request(await read_body(request))
            entry = manager.entry(body.model)
        except ApiError as exc:
            return _error(exc)
        except UnknownModel:
            return _error(ApiError(404, f"the model {body.model!r} does not exist; GET "
                                   "/v1/models lists the models", param="model",
                                   code="model_not_found"))
        except ModelUnavailable as exc:
            return _error(_unavailable(exc))
        reply = _Reply(manager, body, body.params(entry.defaults), user)
        try:
            first = await reply.next()  # a failure to load still gets its own status
        except ApiError as exc:
            await reply.close()
            return _error(exc)
        if body.stream:
            return _ClosingStream(reply.sse(first), reply, media_type="text/event-stream",
                                  headers={"Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        return await reply.complete(first, request)

    return router


def require_json(request: Request) -> None:
    """Only JSON bodies: a browser sends a text/plain or form body across sites without
    asking first, and a JSON one never, so this shuts that door even without Origin."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"the body must be JSON, sent with 'Content-Type: application/json' "
                            f"(this request said {kind or 'nothing'!r})",
                       code="unsupported_media_type")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, or ApiError(413) as soon as it is known to be over `limit`: a declared
    Content-Length over it is refused before a byte is read, and a chunked or undeclared
    body is read from the stream only until it would pass it. So a client that sends
    512 MiB costs the server at most `limit` held (plus the chunk in hand), never the body."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, f"the Content-Length header {declared!r} is not a number",
                           code="invalid_content_length") from None
        if size > limit:
            log.info("refused a /v1 body of %d bytes (declared) unread", size)
            raise body_too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:  # checked before keeping it: never over `limit`
            log.info("refused a /v1 body after reading %d bytes of it",
                     len(body) + len(chunk))
            raise body_too_large(limit)
        body += chunk
    return bytes(body)


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"the model cannot be used now: {exc}", kind="server_error",
                    code="model_unavailable")


def _error(exc: ApiError) -> JSONResponse:
    """The error as OpenAI's JSON. A 413 leaves the rest of the body unread: it also closes
    the connection, so the server stops taking in the upload instead of discarding it."""
    headers = {"Connection": "close"} if exc.status == 413 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


class _Reply:
    """One generation, read on the event loop: its worker hands events straight to the
    loop, so a request runs on the manager's worker thread and nothing else."""

    def __init__(self, manager: ModelManager, body: ChatRequest, params, user: str) -> None:
        self.body = body
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.cancel = threading.Event()
        self._replies = manager.start(
            [ReplyRequest(body.model, body.chat_messages(), params, user=user)], self.cancel,
            loop=asyncio.get_running_loop())

    async def next(self):
        """The next chunk of the reply, `_END` after the last; errors as ApiError."""
        async for _, item in self._replies:
            if isinstance(item, ContextOverflow):
                raise ApiError(400, str(item), param="messages", code="context_length_exceeded")
            if isinstance(item, ModelUnavailable):
                raise _unavailable(item)
            if isinstance(item, Exception):  # BackendError: the text is fit to show
                raise ApiError(500, f"generation failed: {item}", kind="server_error")
            if isinstance(item, Chunk):
                return item
        return _END

    async def close(self) -> None:
        """Cancel the generation and wait until its worker has stopped."""
        with anyio.CancelScope(shield=True):
            await self._replies.aclose()

    def _chunk(self, delta: dict, finish: str | None = None, usage=None) -> str:
        document = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            document = {**document, "choices": [], "usage": usage}
        return f"data: {json.dumps(document, ensure_ascii=False)}\n\n"

    async def sse(self, first) -> AsyncIterator[str]:
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            item = first
            while item is not _END:
                # The thought goes as `reasoning_content` (the convention of DeepSeek's API,
                # vLLM and llama.cpp's server), the answer as `content`.
                if item.thought:
                    yield self._chunk({"reasoning_content": item.thought})
                if item.text:
                    yield self._chunk({"content": item.text})
                if item.finish_reason is not None:
                    yield self._chunk({}, _finish(item.finish_reason))
                    if item.usage is not None and self.body.stream_options and \
                            self.body.stream_options.include_usage:
                        yield self._chunk({}, usage=_usage(item.usage))
                try:
                    item = await self.next()
                except ApiError as exc:  # the status is sent: report it in the stream
                    yield f"data: {json.dumps(exc.body(), ensure_ascii=False)}\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            await self.close()

    async def complete(self, first, request: Request) -> JSONResponse:
        """Collect the whole reply, cancelling it if the client goes away meanwhile."""
        text, thought, finish, usage = [], [], "stop", None
        watcher = asyncio.create_task(_cancel_on_disconnect(request, self.cancel))
        try:
            item = first
            while item is not _END:
                text.append(item.text)
                thought.append(item.thought)
                if item.finish_reason is not None:
                    finish, usage = _finish(item.finish_reason), item.usage
                item = await self.next()
        except ApiError as exc:
            return _error(exc)
        finally:
            watcher.cancel()
            await self.close()
        message = {"role": "assistant", "content": "".join(text)}
        if any(thought):
            message["reasoning_content"] = "".join(thought)
        return JSONResponse({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.body.model,
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": _usage(usage) if usage else None})


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(usage) -> dict:
    found = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
             "total_tokens": usage.total_tokens,
             "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}
    details = {"reasoning_tokens": usage.reasoning_tokens} if usage.reasoning_tokens else {}
    if usage.accepted_prediction_tokens or usage.rejected_prediction_tokens:
        details |= {"accepted_prediction_tokens": usage.accepted_prediction_tokens,
                    "rejected_prediction_tokens": usage.rejected_prediction_tokens}
    if details:
        found["completion_tokens_details"] = details
    return found


async def _cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


class _ClosingStream(StreamingResponse):
    """Streams until the reply ends or the client leaves, and always ends the generation.

    Starlette notices a client that left only when a write fails; this also listens for
    the disconnect, so a reply waiting for its next token is cancelled at once.
    """

    def __init__(self, content, reply: _Reply, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self._reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass  # the client is gone
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()
                await self._reply.close()


def _tag_filter(query) -> TagFilter:
    """?task=code&language=tl&openness=osi on GET /v1/models; a value outside the lists is
    a 400 naming the parameter."""
    task, language, openness = (query.get(name, "")[:40]
                                for name in ("task", "language", "openness"))
    for name, value, fine in (("task", task, not task or task in TASKS),
                              ("language", language, not language or LANGUAGE_CODE.match(language)),
                              ("openness", openness, not openness or openness in OPENNESS)):
        if not fine:
            known = {"task": ", ".join(TASKS), "openness": ", ".join(OPENNESS),
                     "language": "an ISO 639 code such as en, tl or fil"}[name]
            raise ApiError(400, f"unknown {name} {value!r}; expected {known}", param=name)
    return TagFilter(task, language, openness)
