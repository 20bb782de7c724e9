"""Prompt sets: the built-in ones, the JSONL and CSV formats, and every bound with its message.
Real bytes through the real parsers; nothing is mocked."""
from __future__ import annotations

import json
import re

import pytest

from chatcore.evaluate.prompt_sets import (
    MAX_CATEGORY_CHARS,
    MAX_IMPORT_BYTES,
    MAX_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    MAX_REFERENCE_CHARS,
    EvalPrompt,
    PromptSet,
    PromptSetError,
    builtin_sets,
    make_set,
    parse_csv,
    parse_file,
    parse_jsonl,
    to_csv,
    to_jsonl,
    unique_name,
)

TRICKY = make_set("Tricky", [
    EvalPrompt("Plain prompt"),
    EvalPrompt('Commas, "double quotes", \'single\' and a semicolon;', "facts", "Yes, \"it\" is"),
    EvalPrompt("Line one\nline two\n\nline four", "multi line", "ref\nwith a newline"),
    EvalPrompt("Ano ang ibig sabihin ng \"bahala na\"? Señor, niño, Parañaque, à é ñ ü",
               "pagsasalin", "Mañana — “curly” quotes"),
    EvalPrompt("Tab\there, emoji 🇵🇭, a raw line separator\u2028and done", "", "x"),
    EvalPrompt("=SUM(A1:A2) starts like a formula", "csv", ""),
])


def jsonl(*rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def raises(fn, *args, match: str) -> str:
    with pytest.raises(PromptSetError) as caught:
        fn(*args)
    message = str(caught.value)
    assert re.search(match, message), message
    return message


# -- built-in sets -------------------------------------------------------------------------
def test_builtin_sets_are_five_valid_sets_with_categories():
    sets = builtin_sets()
    assert [s.name for s in sets] == ["General knowledge", "Writing", "Coding", "Reasoning",
                                      "Filipino (Tagalog)"]
    for s in sets:
        assert s.builtin
        assert 10 <= len(s.prompts) <= 15, s.name
        assert 2 <= len(s.categories) <= 4, s.name
        assert all(p.category for p in s.prompts), s.name
        assert all(len(p.text) < 600 for p in s.prompts), s.name
        assert any(p.reference for p in s.prompts), s.name
        assert len({p.text for p in s.prompts}) == len(s.prompts), s.name
        assert make_set(s.name, s.prompts, builtin=True) == s  # already clean
    assert builtin_sets() == sets and builtin_sets() is not sets  # a fresh list each call


def test_filipino_set_is_in_tagalog():
    filipino = next(s for s in builtin_sets() if s.name == "Filipino (Tagalog)")
    tagalog = {"ang", "ng", "mga", "sa", "na"}
    in_tagalog = [p for p in filipino.prompts
                  if len(tagalog & set(re.findall(r"\w+", p.text.lower()))) >= 2]
    assert len(in_tagalog) == len(filipino.prompts)
    assert {"pagsasalin", "paliwanag", "pagsulat", "pangangatwiran"} == set(
        filipino.categories)


def test_builtin_sets_survive_both_export_formats():
    for s in builtin_sets():
        assert parse_jsonl(to_jsonl(s).encode(), s.name) == list(s.prompts)
        assert parse_csv(to_csv(s).encode(), s.name) == list(s.prompts)


# -- round trips ---------------------------------------------------------------------------
def test_jsonl_round_trip_keeps_every_character():
    text = to_jsonl(TRICKY)
    assert "\u2028" not in text and "ñ" in text  # readable, and safe for splitlines readers
    assert len(text.splitlines()) == len(TRICKY.prompts)
    assert parse_jsonl(text.encode("utf-8")) == list(TRICKY.prompts)


def test_csv_round_trip_keeps_every_character():
    text = to_csv(TRICKY)
    assert text.startswith("prompt,category,reference\n") and "\r" not in text
    assert parse_csv(text.encode("utf-8")) == list(TRICKY.prompts)
    # Windows line ends (a file written in text mode there) read the same.
    assert parse_csv(text.replace("\n", "\r\n").encode()) == list(TRICKY.prompts)


def test_parse_file_picks_the_format_by_suffix():
    assert parse_file("Mine.JSONL", to_jsonl(TRICKY).encode()) == list(TRICKY.prompts)
    assert parse_file("mine.json-lines", to_jsonl(TRICKY).encode()) == list(TRICKY.prompts)
    assert parse_file("mine.csv", to_csv(TRICKY).encode()) == list(TRICKY.prompts)
    message = raises(parse_file, "prompts.json", b'[{"prompt": "x"}]', match="prompts.json")
    assert ".jsonl" in message and ".json-lines" in message and ".csv" in message
    raises(parse_file, "prompts.txt", b"hello", match=r"not a prompt file")


# -- JSONL ---------------------------------------------------------------------------------
def test_jsonl_accepts_text_alias_blank_lines_nulls_and_strips():
    data = jsonl({"text": "  first  ", "category": " facts "}, "", "   ",
                 {"prompt": "second", "category": None, "reference": None},
                 {"prompt": "third\r\nline", "reference": " 42 "}) + b"\r\n"
    assert parse_jsonl(data) == [EvalPrompt("first", "facts"), EvalPrompt("second"),
                                 EvalPrompt("third\nline", "", "42")]


@pytest.mark.parametrize("rows, match", [
    (({"prompt": "ok"}, {"prompt": "ok"}, '{"prompt": "unclosed'),
     r"^up\.jsonl, line 3: not valid JSON \(.* at column \d+\)$"),
    (({"prompt": "ok"}, {"prompt": "ok", "answer": "x"}),
     r"^up\.jsonl, line 2: unknown field 'answer'"),
    (({"prompt": "ok"}, "", {"prompt": "   ", "category": "facts"}),
     r"^up\.jsonl, line 3: field 'prompt' is empty$"),
    (({"text": ""},), r"^up\.jsonl, line 1: field 'text' is empty$"),
    (({"prompt": "ok", "category": 7},),
     r"^up\.jsonl, line 1: field 'category' must be text, not a number$"),
    (({"prompt": 12},), r"^up\.jsonl, line 1: field 'prompt' must be text, not a number$"),
    (({"prompt": None},), r"line 1: field 'prompt' must be text, not null$"),
    (({"prompt": "ok", "reference": ["a"]},), r"line 1: field 'reference' must be text, "
                                               r"not a list$"),
    (({"prompt": "ok", "category": True},), r"line 1: field 'category' must be text"),
    (({"category": "facts"},), r"^up\.jsonl, line 1: no 'prompt' field$"),
    (({"prompt": "a", "text": "b"},), r"line 1: both 'prompt' and 'text'"),
    (('{"prompt": "a", "prompt": "b"}',), r"line 1: field 'prompt' appears twice"),
    (('["prompt", "a list"]',), r"line 1: expected an object .* not a list$"),
    (({"prompt": "ok", "category": "x" * (MAX_CATEGORY_CHARS + 1)},),
     rf"line 1: field 'category' is longer than {MAX_CATEGORY_CHARS} characters"),
    (({"prompt": "ok", "category": "two\nlines"},),
     r"line 1: field 'category' has a control character \(U\+000A\)"),
    (({"prompt": "p" * (MAX_PROMPT_CHARS + 1)},),
     rf"line 1: field 'prompt' is longer than {MAX_PROMPT_CHARS} characters \(8001\)"),
    (({"prompt": "ok", "reference": "r" * (MAX_REFERENCE_CHARS + 1)},),
     rf"line 1: field 'reference' is longer than {MAX_REFERENCE_CHARS} characters"),
    (("", "  "), r"^up\.jsonl holds no prompts$"),
])
def test_jsonl_refuses_a_bad_line_naming_line_and_field(rows, match):
    raises(parse_jsonl, jsonl(*rows), "up.jsonl", match=match)


def test_jsonl_first_bad_line_wins_and_nothing_is_returned():
    data = jsonl({"prompt": "fine"}, {"prompt": 1}, "not json")
    raises(parse_jsonl, data, "up.jsonl", match=r"line 2: field 'prompt'")


# -- CSV -----------------------------------------------------------------------------------
def test_csv_header_any_case_any_order_text_alias_and_blank_rows():
    data = ("\n Reference ,CATEGORY,Text\n"
            "42,math,What is 6 x 7?\n"
            ",,\n"
            "\n"
            ',,"Say ""hi"", then go"\n').encode()
    assert parse_csv(data) == [EvalPrompt("What is 6 x 7?", "math", "42"),
                               EvalPrompt('Say "hi", then go')]
    assert parse_csv(b"prompt\nonly a prompt\n") == [EvalPrompt("only a prompt")]


@pytest.mark.parametrize("text, match", [
    ("category,reference\nfacts,x\n", r"^up\.csv, line 1: the header has no 'prompt' column$"),
    ("prompt,category,answer\na,b,c\n", r"^up\.csv, line 1: unknown column 'answer'"),
    ("prompt;category\na;b\n", r"unknown column 'prompt;category'.*separate the columns "
                               r"with commas"),
    ("prompt,,category\na,,b\n", r"line 1: column 2 of the header has no name$"),
    ("prompt,Prompt\na,b\n", r"line 1: column 'prompt' appears twice$"),
    ("prompt,text\na,b\n", r"line 1: both 'prompt' and 'text' columns"),
    ("prompt,category\na,b\nc,d\ne,f,g\n", r"^up\.csv, line 4: 3 fields, but the header "
                                           r"has 2$"),
    ('prompt,category\n"multi\nline",b\nc\n', r"^up\.csv, line 4: 1 fields"),
    ("prompt,category\nok,b\n ,facts\n", r"^up\.csv, line 3: column 'prompt' is empty$"),
    ("text\n\n\n \n", r"^up\.csv holds no prompts$"),
    ("", r"^up\.csv holds no prompts$"),
    ('prompt\n"unclosed\n', r"^up\.csv, line \d+: not valid CSV"),
    ("prompt,category\nok," + "c" * (MAX_CATEGORY_CHARS + 1) + "\n",
     rf"line 2: column 'category' is longer than {MAX_CATEGORY_CHARS} characters"),
])
def test_csv_refuses_a_bad_file_naming_line_and_column(text, match):
    raises(parse_csv, text.encode(), "up.csv", match=match)


# -- caps and encoding (both formats) ------------------------------------------------------
@pytest.mark.parametrize("parse, row", [(parse_jsonl, '{"prompt": "q"}'),
                                        (parse_csv, "q")])
def test_prompt_count_cap(parse, row):
    header = "" if parse is parse_jsonl else "prompt\n"
    at_cap = (header + "\n".join([row] * MAX_PROMPTS)).encode()
    assert len(parse(at_cap)) == MAX_PROMPTS
    over = (header + "\n".join([row] * (MAX_PROMPTS + 1))).encode()
    line = MAX_PROMPTS + 1 + (parse is parse_csv)
    raises(parse, over, "f", match=rf"^f, line {line}: more than {MAX_PROMPTS} prompts; "
                                   rf"the limit is {MAX_PROMPTS}$")


@pytest.mark.parametrize("parse", [parse_jsonl, parse_csv])
def test_size_cap_is_checked_first(parse):
    big = b"\xff" * 1_300_000  # not even UTF-8: the size is what gets reported
    raises(parse, big, "big.file", match=r"^big\.file is 1\.3 MB; the limit is 1 MB$")
    just_over = b" " * (MAX_IMPORT_BYTES + 1)
    raises(parse, just_over, "f", match=r"^f is 1,000,001 bytes; the limit is "
                                        r"1,000,000 bytes$")


def test_file_of_exactly_the_cap_is_read():
    row = b'{"prompt": "q"}\n'
    data = row + b" " * (MAX_IMPORT_BYTES - len(row))
    assert parse_jsonl(data) == [EvalPrompt("q")]


@pytest.mark.parametrize("parse, data", [
    (parse_jsonl, b'{"prompt": "ok"}\n{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n'),
    (parse_csv, b"prompt\nok\nfine\ncaf\xe9\n"),
])
def test_invalid_utf8_names_the_line(parse, data):
    line = 3 if parse is parse_jsonl else 4
    raises(parse, data, "latin1.file", match=rf"^latin1\.file, line {line}: not valid "
                                             r"UTF-8 \(byte 0xe9\)")
    raises(parse, b"\xef\xbb\xbf" + data, "f", match=rf"^f, line {line}: not valid UTF-8")


def test_bom_is_accepted():
    bom = b"\xef\xbb\xbf"
    assert parse_jsonl(bom + '{"prompt": "Kumusta ka?"}\n'.encode()) == [
        EvalPrompt("Kumusta ka?")]
    excel = bom + "prompt,category\r\nPaano magluto ng adobo?,paliwanag\r\n".encode()
    assert parse_csv(excel) == [EvalPrompt("Paano magluto ng adobo?", "paliwanag")]


# -- make_set ------------------------------------------------------------------------------
def test_make_set_strips_and_keeps_order():
    s = make_set("  Mine  ", [EvalPrompt(" b ", " math ", " 2 "), EvalPrompt("a", "facts")])
    assert s == PromptSet("Mine", (EvalPrompt("b", "math", "2"), EvalPrompt("a", "facts")))
    assert s.categories == ["facts", "math"] and not s.builtin
    assert make_set("x", (p for p in [EvalPrompt("q")])).prompts == (EvalPrompt("q"),)


@pytest.mark.parametrize("name, prompts, message", [
    ("", [EvalPrompt("q")], "set name is empty"),
    ("   ", [EvalPrompt("q")], "set name is empty"),
    ("n" * (MAX_NAME_CHARS + 1), [EvalPrompt("q")],
     f"set name is longer than {MAX_NAME_CHARS} characters"),
    ("tab\there", [EvalPrompt("q")], "set name has a control character (U+0009)"),
    ("empty", [], "a set needs at least one prompt"),
    ("many", [EvalPrompt("q")] * (MAX_PROMPTS + 1),
     f"a set holds at most {MAX_PROMPTS} prompts"),
    ("s", [EvalPrompt("a"), EvalPrompt("b"), EvalPrompt("  ", "facts")],
     "prompt 3: text is empty"),
    ("s", [EvalPrompt("t" * (MAX_PROMPT_CHARS + 1))],
     f"prompt 1: text is longer than {MAX_PROMPT_CHARS} characters (8001)"),
    ("s", [EvalPrompt("q", "c" * (MAX_CATEGORY_CHARS + 1))],
     f"prompt 1: category is longer than {MAX_CATEGORY_CHARS} characters (41)"),
    ("s", [EvalPrompt("q", "", "r" * (MAX_REFERENCE_CHARS + 1))],
     f"prompt 1: reference is longer than {MAX_REFERENCE_CHARS} characters (8001)"),
    ("s", [EvalPrompt("q", 3)], "prompt 1: category must be text, not a number"),
    ("s", ["just a string"], "prompt 1: not a prompt (str)"),
])
def test_make_set_bounds(name, prompts, message):
    with pytest.raises(PromptSetError) as caught:
        make_set(name, prompts)
    assert str(caught.value) == message


def test_make_set_at_the_bounds():
    s = make_set("n" * MAX_NAME_CHARS,
                 [EvalPrompt("t" * MAX_PROMPT_CHARS, "c" * MAX_CATEGORY_CHARS,
                             "r" * MAX_REFERENCE_CHARS)] * MAX_PROMPTS)
    assert len(s.prompts) == MAX_PROMPTS and len(s.name) == MAX_NAME_CHARS


# -- unique_name ---------------------------------------------------------------------------
def test_unique_name():
    assert unique_name("Coding", []) == "Coding"
    assert unique_name(" Coding ", ["Other"]) == "Coding"
    assert unique_name("Coding", ["Coding"]) == "Coding (copy)"
    assert unique_name("Coding", {"Coding", "Coding (copy)"}) == "Coding (copy 2)"
    taken = ["Coding", "Coding (copy)", "Coding (copy 2)"]
    assert unique_name("Coding", taken) == "Coding (copy 3)"
    assert unique_name("Coding (copy)", taken) == "Coding (copy 3)"  # counts on, no "(copy) (copy)"
    assert unique_name("Coding (copy 2)", taken) == "Coding (copy 3)"


def test_unique_name_fits_the_name_limit():
    long = "x" * MAX_NAME_CHARS
    assert unique_name(long + "yyy", []) == long
    first = unique_name(long, [long])
    assert first == "x" * (MAX_NAME_CHARS - 7) + " (copy)" and len(first) == MAX_NAME_CHARS
    second = unique_name(long, [long, first])
    assert second.endswith(" (copy 2)") and len(second) == MAX_NAME_CHARS
    make_set(second, [EvalPrompt("q")])  # a valid name
