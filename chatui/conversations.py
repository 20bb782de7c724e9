"""The sidebar: the conversation list, and what can be done to a whole conversation."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import gradio as gr

from chatcore.i18n import Texts
from chatcore.generation.manager import ModelManager
from chatcore.conversations.presets import builtin_names, builtin_presets
from chatcore.conversations.store import NotFound, Store
from chatcore.conversations.export import (
    ImportRejected,
    imported_messages,
    parse_import,
    to_json,
    to_markdown,
)
from chatui.chat_handlers import ChatHandlers, session_key, user_of
from chatui.exports import ExportFiles, conversation_key
from chatui.sampling_controls import FIELDS, SettingsControls
from chatui.transcript import chatbot_messages
from chatui.uploads import discard_uploads

# What an export's file name leaves out of the title: anything but ASCII letters and digits.
NOT_IN_SLUG = re.compile(r"[\W_]+", re.ASCII)


def file_slug(text: str, fallback: str) -> str:
    """A file name's part from a title or prompt: "Ano ang…?" -> "Ano-ang"."""
    return NOT_IN_SLUG.sub("-", text).strip("-")[:40] or fallback


class ConversationHandlers:
    def __init__(self, manager: ModelManager, store: Store, chat: ChatHandlers,
                 exports: ExportFiles, *, texts: Texts) -> None:
        self.texts = texts
        self.manager = manager
        self.store = store
        self.chat = chat
        self.exports = exports

    # -- the list ------------------------------------------------------------------------
    def choices(self, user: str, query: str = "") -> list[tuple[str, int]]:
        """The list's entries; conversations that share a title are numbered, oldest first,
        so each can be told apart (the same number whatever the search)."""
        shown = self.store.list_conversations(user, query)
        every = self.store.list_conversations(user) if query.strip() else shown
        twins = {t for t, n in Counter(c.title for c in every).items() if n > 1}
        seen: Counter[str] = Counter()
        numbers = {}
        for c in sorted((c for c in every if c.title in twins), key=lambda c: c.id):
            seen[c.title] += 1
            numbers[c.id] = seen[c.title]
        return [(self.texts("conversations.numbered", title=c.title, n=numbers[c.id])
                 if c.id in numbers else c.title, c.id) for c in shown]

    def refresh(self, query: str, conversation_id: int | None, request: gr.Request):
        return gr.update(choices=self.choices(user_of(request), query or ""),
                         value=conversation_id)

    def after_reply(self, query: str, conversation_id: int | None, request: gr.Request):
        """The sidebar after a reply; the chat itself keeps what the reply showed (an error,
        a note on left-out messages), which re-reading the store would wipe."""
        user = user_of(request)
        try:
            conversation = self.store.get_conversation(user, conversation_id,
                                                       include_superseded=True)
        except NotFound:
            return self.refresh(query, conversation_id, request), gr.update(), gr.update()
        earlier = [m for m in conversation.messages if m.superseded]
        return (self.refresh(query, conversation_id, request), conversation.title,
                _earlier_markdown(earlier, self.texts))

    def new_chat(self, request: gr.Request) -> tuple:
        self.chat.stops.stop(session_key(request))
        return [], None, False, "", gr.update(value=None), "", ""

    def open(self, conversation_id: int | None, request: gr.Request) -> tuple:
        """Show a conversation with the model, system prompt and every setting it last
        used."""
        user = user_of(request)
        unchanged = (gr.update(),) * (7 + len(FIELDS))
        if conversation_id is None:
            return unchanged
        try:
            conversation, settings = self.chat.conversations.open(user, conversation_id)
        except NotFound:
            gr.Warning(self.texts("conversations.gone", id=str(conversation_id)))
            return unchanged
        earlier = [m for m in conversation.messages if m.superseded]
        model = conversation.model if self.manager.registry.get(conversation.model) else gr.update()
        return (chatbot_messages(self.chat.display(user, conversation_id), texts=self.texts),
                conversation_id, False, conversation.title, model, conversation.system_prompt,
                *SettingsControls.shown(settings), _earlier_markdown(earlier, self.texts))

    def rename(self, conversation_id: int | None, title: str, query: str,
               request: gr.Request):
        user = user_of(request)
        if conversation_id is None or not title.strip():
            return gr.update(), self.texts("conversations.rename_first")
        try:
            self.store.rename(user, conversation_id, title)
        except NotFound as exc:
            return gr.update(), self.texts("chat.error", detail=str(exc))
        return (gr.update(choices=self.choices(user, query or ""), value=conversation_id),
                self.texts("conversations.renamed", title=title.strip()))

    def ask_clear(self, conversation_id: int | None, request: gr.Request) -> tuple:
        """The chat's trash: the page has emptied the chat, so show it again and ask, as
        Delete does; an unsaved chat has nothing to delete and stays empty."""
        if conversation_id is None:
            return [], gr.update(visible=False), "", gr.update()
        shown = chatbot_messages(self.chat.display(user_of(request), conversation_id),
                                 texts=self.texts)
        return (shown, gr.update(visible=True), self.texts("conversations.delete_ask"),
                gr.Accordion(open=True))

    def ask_delete(self, conversation_id: int | None):
        if conversation_id is None:
            return gr.update(visible=False), self.texts("conversations.open_first")
        return gr.update(visible=True), self.texts("conversations.delete_ask")

    def confirm_delete(self, conversation_id: int | None, query: str, request: gr.Request):
        user = user_of(request)
        message = self.texts("conversations.deleted")
        try:
            if conversation_id is not None:
                self.chat.conversations.delete(user, conversation_id)
                self.exports.discard(conversation_key(user, conversation_id))
        except NotFound as exc:
            message = self.texts("chat.error", detail=str(exc))
        return (gr.update(visible=False), message,
                gr.update(choices=self.choices(user, query or ""), value=None), [], None, "")

    def cancel_delete(self):
        return gr.update(visible=False), self.texts("conversations.kept")

    # -- export and import ---------------------------------------------------------------
    def export(self, conversation_id: int | None, kind: str, request: gr.Request,
               thoughts: bool = False):
        """A file of the conversation; a thinking model's thoughts only when asked."""
        if conversation_id is None:
            return gr.update(visible=False), self.texts("conversations.export_first")
        try:
            conversation = self.store.get_conversation(user_of(request), conversation_id,
                                                       include_superseded=True)
        except NotFound as exc:
            return gr.update(visible=False), self.texts("chat.error", detail=str(exc))
        path = self.exports.path(f"{file_slug(conversation.title, 'chat')}.{kind}",
                                 about=conversation_key(user_of(request), conversation_id))
        path.write_text(to_markdown(conversation, thoughts) if kind == "md"
                        else to_json(conversation, thoughts), encoding="utf-8")
        return (gr.update(value=str(path), visible=True),
                self.texts("conversations.exported", file=path.name))

    def export_markdown(self, conversation_id: int | None, thoughts: bool = False,
                        request: gr.Request = None):
        return self.export(conversation_id, "md", request, thoughts)

    def export_json(self, conversation_id: int | None, thoughts: bool = False,
                    request: gr.Request = None):
        return self.export(conversation_id, "json", request, thoughts)

    def import_file(self, upload: str | None, query: str, request: gr.Request):
        user = user_of(request)
        if not upload:
            return gr.update(), self.texts("conversations.import_choose")
        path = Path(upload)
        try:
            try:
                data = path.read_bytes()
            finally:
                discard_uploads([upload])
            document = parse_import(data, path.name)
            conversation_id = self.store.import_conversation(
                user, document.title, document.model, document.system_prompt,
                document.params, imported_messages(document), document.shown)
        except ImportRejected as exc:
            return gr.update(), self.texts("conversations.not_imported", detail=str(exc))
        except OSError as exc:
            return gr.update(), self.texts("conversations.unreadable", file=path.name,
                                           detail=str(exc))
        return (gr.update(choices=self.choices(user, query or ""), value=conversation_id),
                self.texts("conversations.imported", title=document.title))

    # -- for scripts: the page's API -----------------------------------------------------
    def api_list(self, query: str, request: gr.Request) -> list[dict]:
        """The caller's conversations, newest first: id, title, updated (Unix time)."""
        return [{"id": c.id, "title": c.title, "updated": c.updated}
                for c in self.store.list_conversations(user_of(request), query or "")]

    def api_get(self, conversation_id: int, request: gr.Request) -> dict:
        """One of the caller's conversations as exported JSON; {} when it is not theirs."""
        try:
            conversation = self.store.get_conversation(user_of(request), int(conversation_id))
        except NotFound:
            return {}
        return json.loads(to_json(conversation))

    # -- presets -------------------------------------------------------------------------
    def preset_choices(self, user: str) -> list[str]:
        """This page's built-in presets, then the user's own; a saved one that bears a
        built-in name of this page's language stays behind the built-in."""
        builtin = builtin_presets(self.texts)
        return list(builtin) + [n for n in self.store.presets(user) if n not in builtin]

    def apply_preset(self, name: str | None, request: gr.Request):
        if not name:
            return gr.update()
        prompts = {**self.store.presets(user_of(request)), **builtin_presets(self.texts)}
        return prompts.get(name, gr.update())

    def save_preset(self, name: str, prompt: str, request: gr.Request):
        """A user's own preset; a built-in preset's name (in any language) is refused."""
        user = user_of(request)
        if not (name or "").strip():
            return gr.update(), self.texts("conversations.preset_unnamed")
        if name.strip() in builtin_names():
            return gr.update(), self.texts("conversations.preset_builtin", name=name.strip())
        self.store.save_preset(user, name, prompt or "")
        return (gr.update(choices=self.preset_choices(user), value=name.strip()),
                self.texts("conversations.preset_saved", name=name.strip()))

    def on_page_load(self, request: gr.Request):
        user = user_of(request)
        return gr.update(choices=self.choices(user)), gr.update(choices=self.preset_choices(user))


def _earlier_markdown(earlier, texts: Texts) -> str:
    if not earlier:
        return texts("conversations.no_earlier")
    parts = []
    for message in earlier:
        who = texts("conversations.you") if message.role == "user" else \
            texts("conversations.assistant", model=message.model or "?")
        parts.append(f"**{who}**\n\n{message.content}")
    return "\n\n---\n\n".join(parts)
