"""A conversation as a tree of messages: which branch is shown, and checks on a tree's shape.

Regenerating a reply or editing a question adds a sibling instead of replacing it; each
message remembers which of its children was shown last (`shown_child`), so flipping back to
a branch brings back that branch's own later messages. Pure functions over ids: the store
keeps the rows, these decide what they mean, the same for a database, a migration and an
imported file.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Regenerate and edit add siblings; past this many the next one is refused, not stored.
MAX_SIBLINGS = 32


class TreeError(Exception):
    """A tree that cannot be stored or shown as asked; the message names the message."""


class TooManyVersions(TreeError):
    """A message already has MAX_SIBLINGS children: the next one is refused, not stored."""

    def __init__(self, parent_id: int | None, where: str) -> None:
        super().__init__(f"{where}: already {MAX_SIBLINGS} versions under it, the most one "
                         f"message keeps")
        self.parent_id = parent_id


@dataclass(frozen=True)
class Node:
    """One message's place in the tree: its parent (None: a first message) and the child
    shown under it last (None: the newest)."""

    id: int
    parent: int | None
    shown_child: int | None = None


@dataclass(frozen=True)
class Position:
    """Where a shown message stands among its siblings: `index` of `count`, from 1."""

    index: int
    count: int
    siblings: tuple[int, ...]


def children_of(nodes: Sequence[Node]) -> dict[int | None, list[int]]:
    """Each parent's children (None's: the first messages), oldest first."""
    children: dict[int | None, list[int]] = {}
    for node in sorted(nodes, key=lambda n: n.id):
        children.setdefault(node.parent, []).append(node.id)
    return children


def shown_path(nodes: Sequence[Node], shown_root: int | None) -> list[int]:
    """The ids of the branch shown, first message first: at each message the child it
    remembers, or its newest child where it remembers none (or one that is gone)."""
    children = children_of(nodes)
    by_id = {node.id: node for node in nodes}
    path: list[int] = []
    seen: set[int] = set()
    choice, options = shown_root, children.get(None, [])
    while options:
        current = choice if choice in options else options[-1]
        if current in seen:  # a cycle cannot be stored; never loop on one read back
            break
        seen.add(current)
        path.append(current)
        choice, options = by_id[current].shown_child, children.get(current, [])
    return path


def positions(nodes: Sequence[Node], path: Sequence[int]) -> dict[int, Position]:
    """Each shown message's place among its siblings (every message has one, 1 of 1 when
    it has no siblings)."""
    children = children_of(nodes)
    parents = {node.id: node.parent for node in nodes}
    placed = {}
    for message_id in path:
        siblings = tuple(children[parents[message_id]])
        placed[message_id] = Position(siblings.index(message_id) + 1, len(siblings), siblings)
    return placed


def check_child(nodes: Sequence[Node], parent_id: int | None, conversation_id: int,
                max_depth: int) -> None:
    """Refuse (TreeError) a new child of a message elsewhere, a 33rd version, or one past
    `max_depth` messages down its branch."""
    parents = {n.id: n.parent for n in nodes}
    if parent_id is not None and parent_id not in parents:
        raise TreeError(f"message {parent_id} is not in conversation {conversation_id}")
    if len(children_of(nodes).get(parent_id, [])) >= MAX_SIBLINGS:
        raise TooManyVersions(parent_id, f"message {parent_id}" if parent_id is not None
                              else f"conversation {conversation_id}'s first message")
    depth, current = 0, parent_id
    while current is not None and depth <= max_depth:
        depth, current = depth + 1, parents[current]
    if depth >= max_depth:
        raise TreeError(f"message {parent_id}: a branch keeps at most {max_depth} messages")


def version(nodes: Sequence[Node], message_id: int, index: int, conversation_id: int) -> int:
    """The id of version `index` (from 1) of `message_id`; TreeError naming the message
    when there is no such version."""
    parents = {n.id: n.parent for n in nodes}
    if message_id not in parents:
        raise TreeError(f"message {message_id} is not in conversation {conversation_id}")
    siblings = children_of(nodes)[parents[message_id]]
    if not 1 <= index <= len(siblings):
        raise TreeError(f"message {message_id} has {len(siblings)} versions: there is no "
                        f"version {index}")
    return siblings[index - 1]


def check_tree(nodes: Sequence[Node], max_depth: int) -> None:
    """Refuse (TreeError, naming the message) an orphan, a cycle, a branch point with more
    than MAX_SIBLINGS children or a branch deeper than `max_depth`."""
    by_id = {node.id: node for node in nodes}
    if len(by_id) != len(nodes):
        duplicate = next(n.id for n in nodes if sum(m.id == n.id for m in nodes) > 1)
        raise TreeError(f"message {duplicate}: its id is used twice")
    for node in nodes:
        if node.parent is not None and node.parent not in by_id:
            raise TreeError(f"message {node.id}: its parent {node.parent} is not in the "
                            f"conversation (an orphan)")
    for parent, kids in children_of(nodes).items():
        if len(kids) > MAX_SIBLINGS:
            raise TreeError(f"message {kids[MAX_SIBLINGS]}: more than {MAX_SIBLINGS} "
                            f"versions of one message")
    depth: dict[int, int] = {}
    for node in nodes:
        chain, current = [], node.id
        while current is not None and current not in depth:
            if current in chain:
                raise TreeError(f"message {current}: its parents lead back to itself "
                                f"(a cycle)")
            chain.append(current)
            current = by_id[current].parent
        level = depth.get(current, 0) if current is not None else 0
        for member in reversed(chain):
            level += 1
            depth[member] = level
            if level > max_depth:
                raise TreeError(f"message {member}: a branch deeper than {max_depth} "
                                f"messages")


@dataclass(frozen=True)
class FlatMessage:
    """A message of a conversation stored before branches: its order and flags."""

    id: int
    role: str
    superseded: bool


def tree_from_flat(messages: Sequence[FlatMessage]) -> tuple[list[Node], int | None]:
    """The tree a flat conversation was (its nodes and shown first message): regenerating
    superseded the last reply, editing the last question and what followed it, so a
    superseded reply followed by a reply is that reply's earlier sibling, and a superseded
    question (with its replies) followed by a question is that question's earlier sibling.
    The messages not superseded stay the shown branch."""
    path: list[FlatMessage] = []  # the thread as it stood when each message was added
    parents: dict[int, int | None] = {}
    for message in sorted(messages, key=lambda m: m.id):
        if message.role == "assistant":
            while path and path[-1].superseded and path[-1].role == "assistant":
                path.pop()  # regenerated: the new reply answers the same question
        elif path and path[-1].superseded:
            popped = list(path)
            while popped and popped[-1].superseded:
                last = popped.pop()
                if last.role == "user":  # edited: the new question replaces this one
                    path = popped
                    break
        parents[message.id] = path[-1].id if path else None
        path.append(message)
    nodes = []
    children: dict[int | None, list[FlatMessage]] = {}
    for message in sorted(messages, key=lambda m: m.id):
        children.setdefault(parents[message.id], []).append(message)
    for message in messages:
        kids = children.get(message.id, [])
        nodes.append(Node(message.id, parents[message.id], _shown(kids)))
    return nodes, _shown(children.get(None, []))


def _shown(kids: Sequence[FlatMessage]) -> int | None:
    """The child on the branch that was shown: the newest not superseded, else the newest."""
    if not kids:
        return None
    current = [k for k in kids if not k.superseded]
    return (current or list(kids))[-1].id
