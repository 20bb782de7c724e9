"""The judge: its prompt, the verdict parser on realistic outputs, both-orders combining, and
agreement with the person."""
from __future__ import annotations

import pytest

from backends.base import Message
from chatcore.evaluate.rubric import RUBRIC, Agreement, agreement, combine, judge_messages, parse_verdict


def test_rubric_names_the_criteria_and_the_verdict_lines():
    for phrase in ("helpful", "correct", "reference", "clar", "length", "formatting",
                   "Verdict: A", "Verdict: B", "Verdict: tie"):
        assert phrase.lower() in RUBRIC.lower(), phrase
    assert RUBRIC.isascii()


def test_judge_messages_without_reference():
    messages = judge_messages("Capital of France?", "Paris.", "Lyon, I think.")
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[0] == Message("system", RUBRIC)
    user = messages[1].content
    assert "Capital of France?" in user
    assert "[Answer A]\nParis." in user and "[Answer B]\nLyon, I think." in user
    assert user.index("Capital of France?") < user.index("[Answer A]") < user.index("[Answer B]")
    assert "reference" not in user.lower()
    assert "reference" not in judge_messages("Q", "a", "b", reference="  ")[1].content.lower()


def test_judge_messages_with_reference():
    user = judge_messages("2+2?", "4", "5", reference="4")[1].content
    assert "[Reference answer]\n4" in user
    assert user.index("2+2?") < user.index("[Reference answer]") < user.index("[Answer A]")


@pytest.mark.parametrize("text,expected", [
    ("Both answers name Paris, but A also explains why.\n\nVerdict: A", "A"),
    ("Answer B is correct and A is wrong about the year.\n**Verdict:** B", "B"),
    ("Equally good.\nVerdict: Tie", "tie"),
    ("**Verdict: tie**", "tie"),
    ("Verdict: equal", "tie"),
    ("VERDICT: b.", "B"),
    ("My verdict is [[A]]", "A"),
    ("After comparing them: [[B]]", "B"),
    ("Neither stands out. [[C]]", "tie"),
    ("Verdict: Answer B", "B"),
    ("Final verdict -- Assistant A is better.", "A"),
    ("At first glance Verdict: A seemed right, but B cites the source.\nVerdict: B", "B"),
    ("Verdict: A\n\nOn reflection, B handles the edge case.\n\nVerdict: B", "B"),
    ("Reasoning...\n\n### Verdict\n\n**B**", "B"),
    ("I must answer with \"Verdict: A\", \"Verdict: B\" or \"Verdict: tie\".\nVerdict: A", "A"),
    ("<think>Maybe Verdict: A... no.</think>\nB is more accurate.\nVerdict: B", "B"),
    ("A is more complete.\n\nB", "B"),
    ("Verdict: a tie, both are fine.", "tie"),
    ("The verdict is a close call.", None),
    ("I cannot compare these answers.", None),
    ("The answers differ in tone.", None),
    ("Verdict: maybe", None),
    ("I must answer with \"Verdict: A\", \"Verdict: B\" or \"Verdict: tie\".", None),
    ("<think>I lean towards Verdict: A but let me check", None),
    ("", None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


def test_parse_verdict_of_none():
    assert parse_verdict(None) is None


@pytest.mark.parametrize("first,second,expected", [
    ("A", "B", "a"),      # x better as A, and x better as B: consistent
    ("B", "A", "b"),      # y better both times
    ("tie", "tie", "tie"),
    ("A", "A", "tie"),    # "whichever is first": flips with the order
    ("B", "B", "tie"),    # "whichever is second"
    ("A", "tie", "tie"),
    ("tie", "B", "tie"),
    ("A", None, "tie"),
    (None, "B", "tie"),
    (None, None, "tie"),
])
def test_combine_truth_table(first, second, expected):
    assert combine(first, second) == expected


def test_agreement_counts_items_voted_by_both():
    person = {(0, 0, 1): "a", (0, 0, 2): "b", (1, 0, 1): "bad", (1, 1, 2): "tie",
              (2, 0, 1): "a"}
    judge = {(0, 0, 1): "a", (0, 0, 2): "a", (1, 0, 1): "tie", (1, 1, 2): "b",
             (3, 0, 1): "a"}
    found = agreement(person, judge)
    assert found == Agreement(agree=2, total=4)  # (0,0,1) equal; (1,0,1) bad counts as tie
    assert found.rate == pytest.approx(0.5)


def test_agreement_bad_is_tie_on_either_side_and_reversed_keys_turn_round():
    assert agreement({(0, 0, 1): "tie"}, {(0, 0, 1): "bad"}) == Agreement(1, 1)
    assert agreement({(0, 0, 1): "a"}, {(0, 1, 0): "b"}) == Agreement(1, 1)


def test_agreement_with_nothing_in_common():
    found = agreement({(0, 0, 1): "a"}, {(1, 0, 1): "a"})
    assert found == Agreement(0, 0) and found.rate is None
    assert agreement({}, {}).rate is None
    assert Agreement(3, 4).rate == pytest.approx(0.75)
