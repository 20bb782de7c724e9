"""Files and long text in the chat, with the real SmolLM2 (2k context): a 20-page PDF that
does not fit is searched with BM25 (FTS5) and the page with the answer goes in; a short
file goes in whole; scans, oversize files and wrong types are refused with nothing stored;
conversation search finds a word deep in a long reply."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from backends.sampling import SamplingSettings
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.documents.reader import MAX_FILE_BYTES
from chatcore.generation.factory import make_backend
from chatcore.i18n import english, load_texts
from chatcore.generation.manager import ModelManager
from chatcore.documents.passages import sources_note
from chatcore.conversations.store import Store, StoredMessage
from chatui.exports import ExportFiles
from chatui.attachment_controls import AttachmentControls
from chatui.chat_handlers import ChatHandlers
from tests.conftest import SHIPPED_MODELS
from tests.test_documents import FACT, image_only_pdf, twenty_page_pdf

pytestmark = pytest.mark.slow

DANA = SimpleNamespace(session_hash="tab-7", username="dana")
GREEDY = SamplingSettings(temperature=0.0, max_new_tokens=48)


@pytest.fixture(scope="module")
def chat(smollm2_path, tmp_path_factory):
    entry = ModelEntry(id="smol", name="SmolLM2", backend="llamacpp", path=str(smollm2_path),
                       context_length=2048)
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                           make_backend)
    store = Store(tmp_path_factory.mktemp("attachments"))
    yield ChatHandlers(manager, store, texts=english())
    manager.unload_all()
    store.close()


def controls(attachments) -> AttachmentControls:
    """The Attach button's handlers on an English page."""
    return AttachmentControls(attachments, texts=english())


def attached_rows(chat: ChatHandlers) -> int:
    with chat.store.transaction() as db:
        return db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0]


def ask(chat: ChatHandlers, question: str, pending: list[int]) -> int:
    *_, (bubbles, _, conversation_id, _) = chat.send(
        question, None, False, "smol", "", GREEDY, pending, request=DANA)
    return conversation_id


def test_a_long_pdf_is_searched_and_the_page_with_the_answer_goes_in(chat, tmp_path):
    pdf = tmp_path / "survey.pdf"
    pdf.write_bytes(twenty_page_pdf())
    pending, chips = controls(chat.attachments).attach([str(pdf)], [], DANA)
    assert len(pending) == 1 and "survey.pdf · 20 pages" in chips
    conversation_id = ask(chat, "What is the lighthouse keeper's cat named?", pending)
    prompt, details = chat.inspect(conversation_id, DANA)
    assert " ".join(FACT.split()) in " ".join(prompt.split()), "the page-13 passage is not in"
    assert "[page 13]" in prompt and "<document name=\"survey.pdf\">" in prompt
    assert len(prompt) < len(twenty_page_pdf())  # passages, not the whole file
    reply = chat.store.get_conversation("dana", conversation_id).messages[-1]
    note = sources_note(reply.sources, english())  # kept as JSON, shown in the page's language
    assert re.fullmatch(r"used \d+ of 41 passages \(pages? [\d, ]*\b13\b.*\)", note), note
    assert "ginamit ang" in sources_note(reply.sources, load_texts("fil"))
    assert "Bartholomew Quince" in reply.content  # greedy SmolLM2 reads it off the page
    shown = chat.display("dana", conversation_id)
    assert note in shown[-1].footer and "survey.pdf · 20 pages" in shown[0].footer


def test_a_short_file_goes_in_whole(chat, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Trip\n\nThe ferry to Bohol leaves at 7:40 from pier 3.\n",
                     encoding="utf-8")
    pending, chips = controls(chat.attachments).attach([str(notes)], [], DANA)
    conversation_id = ask(chat, "When does the ferry leave?", pending)
    prompt, _ = chat.inspect(conversation_id, DANA)
    assert "The ferry to Bohol leaves at 7:40 from pier 3." in prompt
    reply = chat.store.get_conversation("dana", conversation_id).messages[-1]
    assert reply.sources == "" and reply.content.strip()


def test_scans_oversize_files_and_wrong_types_are_refused_and_nothing_is_stored(
        chat, tmp_path):
    before = attached_rows(chat)
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(image_only_pdf())
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    png = tmp_path / "notes.txt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    for path, reason in ((scan, "no text found: is it a scan?"), (big, "the limit per file"),
                         (png, "a PNG image")):
        pending, chips = controls(chat.attachments).attach([str(path)], [], DANA)
        assert pending == [] and "⚠️ Not attached:" in chips and reason in chips, chips
    # A good file in the same upload as a bad one is not kept either.
    good = tmp_path / "good.txt"
    good.write_text("fine", encoding="utf-8")
    pending, chips = controls(chat.attachments).attach([str(good), str(png)], [], DANA)
    assert pending == [] and attached_rows(chat) == before


def test_a_long_paste_becomes_a_chip(chat):
    text = "Ang bayanihan ay diwa ng pagtutulungan. " * 120
    box, pending, chips = controls(chat.attachments).paste(text, [], DANA)
    assert box == "" and len(pending) == 1 and "Pasted text" in chips
    assert controls(chat.attachments).paste("short", pending, DANA)[1] == pending


def test_search_finds_a_word_deep_in_a_long_reply(chat):
    store = chat.store
    conversation_id = store.create_conversation("dana", "Long one", "smol")
    filler = "word " * 5000
    store.add_message("dana", conversation_id, StoredMessage("user", "Tell me a lot."))
    store.add_message("dana", conversation_id,
                      StoredMessage("assistant", f"{filler} the Maynilà archipelago {filler}"))
    found = [c.id for c in store.list_conversations("dana", "maynila archipel")]
    assert conversation_id in found  # accents and case aside, the last word as a prefix
    assert store.list_conversations("dana", "zanzibar") == []
    assert conversation_id not in [c.id for c in store.list_conversations("eve", "maynila")]


def test_one_attachment_goes_to_every_compare_pane(chat, tmp_path):
    from chatui.compare_handlers import CompareHandlers

    compare = CompareHandlers(chat.manager, chat.store, ExportFiles(tmp_path / "exports"),
                              texts=english())
    notes = tmp_path / "menu.txt"
    notes.write_text("Today's soup at the canteen is sinigang na hipon.", encoding="utf-8")
    pending, _ = controls(compare.attachments).attach([str(notes)], [], DANA)
    settings = [SamplingSettings(temperature=0.0, max_new_tokens=24)] * 4
    *_, last = compare.send("What is the soup today?", None, False, "2", "", ["smol"] * 4,
                            settings,
                            attachments=pending, request=DANA)
    comparison = last[4]
    assert comparison.attachments == pending
    assert comparison.inspector.count("Today's soup at the canteen is sinigang na hipon.") == 2
    assert all(reply is not None and reply.content.strip()
               for reply in comparison.rounds[-1].replies)
