"""A conversation out to Markdown or JSON, and JSON back in, validated before anything is saved.

JSON version 2 keeps the tree: each message's `id` and `parent_id`, and `shown`, the last
message of the branch shown. Version 1 files (flat, earlier versions marked `superseded`)
still import, as the tree they were.
"""
from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatcore.generation.replies import thought_title
from chatcore.i18n import english
from chatcore.conversations.store import MAX_MESSAGE_CHARS, MAX_MESSAGES, Conversation, \
    StoredMessage
from chatcore.conversations.tree import FlatMessage, Node, TreeError, check_tree, tree_from_flat

FORMAT = "local-chat/conversation"
MAX_IMPORT_BYTES = 2 * 2**20
# An export nests 4 deep (document, messages, message, params); a file far deeper is crafted,
# and a stored value that deep would break whatever later reads it back recursively.
MAX_DEPTH = 32


class ImportRejected(Exception):
    """The file cannot become a conversation; the message says what is wrong and where."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)
    model: str | None = None
    params: dict | None = None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    finish_reason: str | None = None
    stopped: bool = False
    superseded: bool = False
    created: float | None = None
    thought: str = Field("", max_length=1_000_000)
    thought_seconds: float | None = Field(None, ge=0)
    thought_tokens: int | None = Field(None, ge=0)
    sources: str = Field("", max_length=10_000)
    id: int | None = Field(None, ge=1)  # version 2: the file's ids, parents point at them
    parent_id: int | None = Field(None, ge=1)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["local-chat/conversation"]
    version: Literal[1, 2]
    title: str = Field(min_length=1, max_length=200)
    model: str = Field(max_length=128)
    system_prompt: str = Field("", max_length=100_000)
    params: dict = Field(default_factory=dict)
    messages: list[_Message] = Field(max_length=MAX_MESSAGES)
    shown: int | None = Field(None, ge=1)  # the last message of the branch shown


THOUGHT_FIELDS = ("thought", "thought_seconds", "thought_tokens")


def to_json(conversation: Conversation, thoughts: bool = False) -> str:
    """The conversation as JSON (every branch, when read with include_superseded); a
    thinking model's thoughts only when asked."""
    left_out = {"superseded"} if thoughts else {"superseded", *THOUGHT_FIELDS}
    messages = [{k: v for k, v in vars(m).items() if k not in left_out}
                for m in conversation.messages]
    if any(m["id"] is None for m in messages):  # never stored: one branch, in its order
        for number, message in enumerate(messages, start=1):
            message["id"], message["parent_id"] = number, number - 1 or None
    shown = [m["id"] for m, kept in zip(messages, conversation.messages) if not kept.superseded]
    document = {
        "format": FORMAT, "version": 2, "title": conversation.title,
        "model": conversation.model, "system_prompt": conversation.system_prompt,
        "params": conversation.params, "messages": messages,
        "shown": max(shown, default=None),
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def to_markdown(conversation: Conversation, thoughts: bool = False) -> str:
    lines = [f"# {conversation.title}", "",
             f"Model: `{conversation.model}` · exported {time.strftime('%Y-%m-%d %H:%M')}", ""]
    if conversation.system_prompt:
        lines += ["**System**", "", conversation.system_prompt, ""]
    for message in conversation.messages:
        who = "You" if message.role == "user" else f"Assistant ({message.model or '?'})"
        if message.superseded:
            who += ", earlier version"
        if message.stopped:
            who += ", stopped"
        lines += [f"**{who}**", ""]
        if thoughts and message.thought:
            title = thought_title(message.thought_seconds, message.thought_tokens, english())
            lines += [f"<details><summary>{title}</summary>", "",
                      message.thought, "", "</details>", ""]
        lines += [message.content, ""]
    return "\n".join(lines)


def parse_import(data: bytes, source: str) -> _Document:
    """Validate an exported JSON file; raises ImportRejected naming the file and the field."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRejected(f"{source}: {len(data)} bytes is over the import limit of "
                             f"{MAX_IMPORT_BYTES} bytes")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportRejected(f"{source}: not a JSON file ({exc})") from None
    except RecursionError:
        raise _too_deep(source) from None
    if _depth(raw) > MAX_DEPTH:  # `params` is free-form: keep what is stored shallow
        raise _too_deep(source)
    try:
        document = _Document.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "document"
        raise ImportRejected(f"{source}: field {where!r}: {error['msg']}") from None
    return _with_tree(document, source)


def _with_tree(document: _Document, source: str) -> _Document:
    """A version 1 file's messages get the ids and parents of the tree they were; either
    version's tree is checked (no orphan, no cycle, bounds) before anything is stored."""
    messages = document.messages
    if document.version == 1:
        for number, message in enumerate(messages, start=1):
            message.id = number
        nodes, _ = tree_from_flat([FlatMessage(m.id, m.role, m.superseded) for m in messages])
        parents = {node.id: node.parent for node in nodes}
        for message in messages:
            message.parent_id = parents[message.id]
        document.shown = max((m.id for m in messages if not m.superseded), default=None)
    elif (missing := next((i for i, m in enumerate(messages) if m.id is None), None)) \
            is not None:
        raise ImportRejected(f"{source}: field 'messages.{missing}.id': a version 2 file "
                             f"gives every message an id")
    try:
        check_tree([Node(m.id, m.parent_id) for m in messages], MAX_MESSAGES)
    except TreeError as exc:
        raise ImportRejected(f"{source}: {exc}") from None
    if document.shown is not None and document.shown not in {m.id for m in messages}:
        raise ImportRejected(f"{source}: field 'shown': message {document.shown} is not in "
                             f"the file")
    return document


def _too_deep(source: str) -> ImportRejected:
    return ImportRejected(f"{source}: its lists or objects nest more than {MAX_DEPTH} deep; "
                          f"a conversation exported from this app never does")


def _depth(value: object) -> int:
    """How deep lists and objects nest in a parsed JSON value (a scalar is 0), counted
    without recursion, so a deep value cannot exhaust the stack here either."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else \
            item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


def imported_messages(document: _Document) -> list[StoredMessage]:
    now = time.time()
    return [StoredMessage(**{**m.model_dump(), "created": m.created or now, "superseded": False})
            for m in document.messages]
