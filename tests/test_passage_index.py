"""Retrieval over attachments with SQLite FTS5: a real in-memory database, a real PDF."""
from __future__ import annotations

import random
import sqlite3

import pytest

from chatcore.documents.document import Document, Page, Passage
from chatcore.documents.reader import extract, from_paste, passages
from chatcore.documents.passages import (
    SCHEMA, PassageIndex, Selection, match_query, phrase_query, render, schema, select)
from chatcore.i18n import english
from tests.test_documents import FACT_PAGE, twenty_page_pdf

QUESTION = "What is the lighthouse keeper's cat called?"
REPORT, NOTES = 7, 9  # attachment ids


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def report() -> list[Passage]:
    return passages(extract("report.pdf", twenty_page_pdf()), target_chars=800)


@pytest.fixture
def db() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.executescript(SCHEMA)
    yield connection
    connection.close()


@pytest.fixture
def index(db, report) -> PassageIndex:
    index = PassageIndex(db)
    index.add(REPORT, report)
    return index


def notes() -> list[Passage]:
    text = ("Ang parola ay nasa dulo ng daungan.\n\nMga tala tungkol sa pusa ng bantay-parola: "
            "si Bartholomew ay mahilig sa isda.\n\nWalang kinalaman ang talatang ito.")
    return passages(Document("notes.txt", "text", (Page(None, text),)), target_chars=60)


def test_question_ranks_the_fact_first(index, report):
    assert len(report) > 20  # pages are split, so the fact's passage is one of many
    ranked = index.search([REPORT], QUESTION)
    attachment, best = ranked[0]
    assert attachment == REPORT and best.page == FACT_PAGE
    assert "Bartholomew" in best.text and best.document == "report.pdf"
    assert best in report  # the passage comes back exactly as it was added
    # Decoys that share one word of the question rank, but lower.
    assert {5, 8} <= {p.page for _, p in ranked[1:]}


def test_select_with_little_room_retrieves_the_fact(index, report):
    selection = select(index, [(REPORT, report)], QUESTION, room_tokens=300, count_tokens=words)
    assert not selection.whole and selection.total == len(report)
    assert any(p.page == FACT_PAGE and "Bartholomew" in p.text for _, p in selection.chosen)
    block = render(selection.chosen)
    assert words(block) <= 300
    assert selection.chosen == sorted(selection.chosen, key=lambda pair: pair[1].index)
    note = selection.note(english())
    assert note.startswith(f"used {len(selection.chosen)} of {len(report)} passages (page")
    assert str(FACT_PAGE) in note.split("(")[1]
    # Best first: with room for just one passage, it is the fact's.
    [fact] = [p for p in report if "Bartholomew" in p.text]
    one = select(index, [(REPORT, report)], QUESTION, room_tokens=words(render([(REPORT, fact)])),
                 count_tokens=words)
    assert one.chosen == [(REPORT, fact)]
    assert one.note(english()) == f"used 1 of {len(report)} passages (page {FACT_PAGE})"


def test_select_with_room_for_everything_sends_it_whole(index, report):
    selection = select(index, [(REPORT, report)], QUESTION, room_tokens=100_000,
                       count_tokens=words)
    assert selection.whole and selection.note(english()) == ""
    assert [p for _, p in selection.chosen] == report
    block = render(selection.chosen)
    assert "[...]" not in block and block.count("[page ") == 20
    assert block.startswith('<document name="report.pdf">\n[page 1]\nChapter 1:')


def test_select_with_no_matching_word_sends_the_beginning(index, report):
    selection = select(index, [(REPORT, report)], "Zyxwv qwertz?", room_tokens=300,
                       count_tokens=words)
    assert selection.chosen and [p.index for _, p in selection.chosen] == list(
        range(len(selection.chosen)))
    assert selection.note(english()).startswith(
        f"used {len(selection.chosen)} of {len(report)} passages")


def test_select_across_attachments_keeps_message_order(index, report):
    index.add(NOTES, notes())
    selection = select(index, [(NOTES, notes()), (REPORT, report)],
                       "Ano ang pangalan ng pusa ng bantay-parola?", room_tokens=200,
                       count_tokens=words)
    assert selection.chosen[0][0] == NOTES
    assert any("pusa" in p.text for _, p in selection.chosen)
    assert all(att == NOTES for att, _ in selection.chosen)  # nothing in report matches
    assert selection.note(english()) == \
        f"used {len(selection.chosen)} of {len(report) + 3} passages"
    block = render(selection.chosen)
    assert block.startswith('<document name="notes.txt">\n')
    assert "[page" not in block


def test_note_names_pages_per_document_when_several_pdfs():
    p = Passage
    chosen = [(1, p("a.pdf", 9, 5, "x")), (1, p("a.pdf", 3, 1, "x")), (1, p("a.pdf", 3, 2, "x")),
              (2, p("b.pdf", 4, 0, "x")), (3, p("c.txt", None, 0, "x"))]
    assert Selection(chosen, 41, False).note(english()) == (
        "used 5 of 41 passages (a.pdf: pages 3, 9; b.pdf: page 4)")
    assert Selection(chosen[:3], 41, False).note(english()) == "used 3 of 41 passages (pages 3, 9)"
    assert Selection(chosen[4:], 12, False).note(english()) == "used 1 of 12 passages"
    assert Selection([], 12, False).note(english()) == "used 0 of 12 passages"


def test_render_marks_gaps_and_pages():
    p = Passage
    block = render([(1, p('q"<&.pdf', 3, 4, "four")), (1, p('q"<&.pdf', 3, 5, "five")),
                    (1, p('q"<&.pdf', 4, 6, "six")), (1, p('q"<&.pdf', 9, 20, "twenty")),
                    (2, p("n.txt", None, 0, "zero")), (2, p("n.txt", None, 2, "two"))])
    assert block == (
        '<document name="q&quot;&lt;&amp;.pdf">\n[page 3]\nfour\nfive\n[page 4]\nsix\n[...]\n'
        '[page 9]\ntwenty\n</document>\n\n'
        '<document name="n.txt">\nzero\n[...]\ntwo\n</document>')
    assert render([]) == ""


def test_search_only_sees_the_given_attachments_and_delete_forgets(db, index, report):
    index.add(NOTES, notes())
    assert {att for att, _ in index.search([NOTES], "Bartholomew")} == {NOTES}
    assert {att for att, _ in index.search([REPORT, NOTES], "Bartholomew")} == {REPORT, NOTES}
    assert index.search([], "Bartholomew") == []
    assert index.search([42], "Bartholomew") == []
    assert index.search([REPORT], "?!") == []
    assert len(index.search([REPORT], "survey", limit=3)) == 3
    index.delete(REPORT)
    assert index.search([REPORT, NOTES], "Bartholomew") == [
        (NOTES, p) for p in notes() if "Bartholomew" in p.text]
    assert db.execute("SELECT count(*) FROM passages").fetchone() == (len(notes()),)


def test_diacritics_case_and_scripts(db):
    index = PassageIndex(db)
    index.add(1, passages(from_paste("Nagpunta kami sa PARAÑAQUE kahapon. Straße. हिन्दी भाषा. "
                                     "ᜊᜌ᜔ᜊᜌᜒᜈ᜔ 日本語の文書")))
    for question in ("paranaque", "Parañaque", "Paran\u0303aque", "straße", "हिन्दी?",
                     "ᜊᜌ᜔ᜊᜌᜒᜈ᜔", "日本語の文書"):
        assert index.search([1], question), question
    match = "SELECT count(*) FROM passages WHERE passages MATCH ?"
    assert db.execute(match, (phrase_query("कल हिन्"),)).fetchone() == (0,)  # every word
    assert db.execute(match, (phrase_query("straße हिन्"),)).fetchone() == (1,)  # last: prefix


def test_other_table_names_and_schema(db):
    db.executescript(schema("chat_passages"))
    other = PassageIndex(db, "chat_passages")
    other.add(1, notes())
    assert other.search([1], "pusa")
    assert PassageIndex(db).search([1], "pusa") == []
    with pytest.raises(ValueError, match="table name"):
        PassageIndex(db, "passages; DROP TABLE x")
    assert "tokenize='unicode61 remove_diacritics 2'" in SCHEMA


def test_queries():
    assert match_query(QUESTION) == '"lighthouse" OR "keeper" OR "cat" OR "called"'
    assert match_query("Ano ang pangalan ng pusa?") == '"pangalan" OR "pusa"'
    assert match_query("What is it? IT is.") == '"What" OR "is" OR "it"'  # all stopwords: kept
    assert match_query("हिन्दी भाषा") == '"हिन्दी" OR "भाषा"'  # marks stay in their word
    assert match_query("a ? ! x") is None
    assert match_query("   ") is None
    assert phrase_query("keeper's ca") == '"keeper" AND "s" AND "ca"*'
    assert phrase_query("NOT (this)") == '"NOT" AND "this"*'
    assert phrase_query("--") is None


NASTY = [
    "", " ", '"', '""', "'", "(", ")", "()", "(((", "AND", "OR", "NOT", "NEAR", "NEAR(a b)",
    "a AND", "OR OR OR", "AND OR NOT NEAR", "*", "abc*", "^abc", ":", "text:foo", "{text}: x",
    "-", "+", "a - b", "\\", "%", "_", "__init__", "DROP TABLE passages;--", '"unbalanced',
    'x"y"z', "\x00", "\u200b\u200b", "🐱🐱 cat", "ñandú", "ᜀᜁᜂ Baybayin", "日本語の文書",
    "العربية", "Ｆｕｌｌｗｉｄｔｈ", "e\u0301", "ß İstanbul", "NEAR/3", "1.5e10 0x1F",
    "a" * 5000, " ".join(["word"] * 500), "ng mga sa", "'; SELECT 1; --", "col1 : col2",
    "x²³ ½", "٣٤٥", "\t\n\r", "text MATCH 'x'", "passages", "rank", "bm25(passages)",
    "- NOT ^ * : + ( ) { } \" ' ,",
]


def test_queries_never_break_a_real_match(db, report):
    index = PassageIndex(db)
    index.add(1, report[:5])
    rng = random.Random(7)
    alphabet = list('"\'()*:^+-{},.;AORNDTEa b\\/ñé日🐱_0\u0301\u200b\x00\n')
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(400)]
    for text in NASTY + fuzz:
        for query in (match_query(text), phrase_query(text)):
            if query is not None:
                db.execute("SELECT count(*) FROM passages WHERE passages MATCH ?",
                           (query,)).fetchone()
        index.search([1], text)
