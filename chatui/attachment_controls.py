"""The Attach button, the paste that becomes a chip, and the chips, shared by the Chat and
Compare tabs: files are read once into pending attachments that go with the next message."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr

from chatcore.conversations.attachments import AttachmentStore
from chatcore.documents.document import DocumentError
from chatcore.documents.reader import PASTE_CHIP_CHARS, check_message, extract, from_paste
from chatcore.i18n import Texts
from chatui.chat_handlers import user_of
from chatui.uploads import discard_uploads

# Uploads read at once in the whole server (Chat and Compare, every page): a PDF is read in
# a child process of up to 1 GiB and 20 s of CPU, so a burst of crafted files must queue
# rather than all run together. Gradio's queue holds the rest, each told its place.
READING = {"concurrency_limit": 2, "concurrency_id": "read-uploads"}
# (user, model id, attachment ids) -> each attachment's tokens in that model's tokenizer;
# {} where it cannot count (the model is not loaded).
TokenCounter = Callable[[str, str, list[int]], dict[int, int]]


class AttachmentControls:
    def __init__(self, attachments: AttachmentStore, *, texts: Texts,
                 tokens: TokenCounter | None = None) -> None:
        """`tokens`: counts for the chips in the chosen model's tokenizer (the Chat tab's,
        whose meter adds the same counts up); without it the chips estimate."""
        self.attachments = attachments
        self.texts = texts
        self.tokens = tokens

    def attach(self, files: Sequence[str] | None, pending: list[int] | None,
               request: gr.Request, model_id: str | None = None) -> tuple:
        """Read uploaded files into pending attachments for the next message: the ids and
        the chips. A file that cannot be read is refused with its reason under the chips,
        and none of this upload is kept."""
        pending = list(pending or [])
        paths = [Path(f) for f in (files or [])]
        try:
            check_message([(p.name, p.stat().st_size) for p in paths]
                          + [(a.name, a.chars) for a in self.attachments.described(
                              user_of(request), pending)])
            documents = [extract(p.name, p.read_bytes()) for p in paths]
        except (DocumentError, OSError) as exc:
            refused = self.texts("attach.refused", detail=exc)
            return pending, f"{self.chips(pending, request, model_id)}\n\n{refused}"
        finally:
            discard_uploads(files or [])
        user = user_of(request)
        pending += [self.attachments.add(user, d).id for d in documents]
        return pending, self.chips(pending, request, model_id)

    def paste(self, text: str, pending: list[int] | None, request: gr.Request,
              model_id: str | None = None) -> tuple:
        """A paste of PASTE_CHIP_CHARS or more becomes an attachment chip, not message text."""
        pending = list(pending or [])
        if len(text or "") < PASTE_CHIP_CHARS:
            return gr.update(), pending, gr.update()
        try:
            document = from_paste(text)
        except DocumentError as exc:
            gr.Info(str(exc))
            return gr.update(), pending, gr.update()
        pending.append(self.attachments.add(user_of(request), document).id)
        return "", pending, self.chips(pending, request, model_id)

    def chips(self, pending: list[int] | None, request: gr.Request,
              model_id: str | None = None) -> str:
        user, ids = user_of(request), list(pending or [])
        counted = self.tokens(user, model_id, ids) if self.tokens and model_id and ids else {}
        return "  ".join(a.chip(self.texts, counted.get(a.id))
                         for a in self.attachments.described(user, ids))
