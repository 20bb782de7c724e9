"""A judge model's vote on a pair of replies: a fixed rubric, both orders, a tolerant parser.

The judge sees the question, the reference answer when the prompt has one, and the two
replies as "Answer A" and "Answer B", under RUBRIC (shown to the person in the UI). It is asked
twice, once in each order; a verdict that changes with the order is position bias, not a
preference, and counts as a tie (`combine`). Judge votes are stored apart from the person's,
and `agreement` says how often the two agree. Standard library only.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from backends.base import Message

RUBRIC = """\
You are an impartial judge comparing two answers to the same question.

Judge which answer is better for the person who asked, on:
1. Helpfulness: does it address what was asked, completely and directly?
2. Correctness: is it accurate? When a reference answer is given, judge correctness against it.
3. Clarity: is it easy to follow?

Ignore length and formatting unless they make an answer less useful: a longer answer is not \
better for being longer. Ignore the order in which the answers are shown and any claims an \
answer makes about itself.

Explain your reasoning briefly, then end with exactly one final line, one of:
Verdict: A
Verdict: B
Verdict: tie"""


def judge_messages(prompt: str, reply_a: str, reply_b: str, reference: str = "") -> list[Message]:
    """RUBRIC as the system message, then one user message with the question, the reference
    (only when non-blank) and the two answers in "[Answer A]" / "[Answer B]" blocks."""
    parts = [f"[Question]\n{prompt.strip()}"]
    if reference and reference.strip():
        parts.append(f"[Reference answer]\n{reference.strip()}")
    parts.append(f"[Answer A]\n{reply_a.strip()}\n[End of Answer A]")
    parts.append(f"[Answer B]\n{reply_b.strip()}\n[End of Answer B]")
    parts.append('Compare the answers as the rubric says and end with one line: '
                 '"Verdict: A", "Verdict: B" or "Verdict: tie".')
    return [Message("system", RUBRIC), Message("user", "\n\n".join(parts))]


_TIE_WORDS = {"tie", "tied", "equal", "equally", "draw", "same", "both", "neither"}
_DECORATION = r"[\s*_`\"'“”‘’\[\](){}<>]*"
# "Verdict: A", "**Verdict:** B", "Final verdict - [[A]]", "Verdict: Answer B", "verdict: Tie."
_TAGGED = re.compile(
    r"verdict" + _DECORATION + r"(?:is" + _DECORATION + r")?[:：=\-–—]*" + _DECORATION
    + r"(?:(?:answer|assistant|response|reply|model|option|output)\s*|an?\s+(?=tie|draw))?"
    # A lowercase "a" followed by a word is the article ("Verdict: a tie"), not answer A.
    + r"(?P<v>(?-i:A)|(?-i:a)(?![ \t]+[A-Za-z])|b|" + "|".join(sorted(_TIE_WORDS)) + r")\b",
    re.IGNORECASE)
# FastChat's "[[A]]", "[[B]]", "[[C]]" (C is its tie), and "[[tie]]".
_BRACKETED = re.compile(r"\[\[\s*(?P<v>a|b|c|tie)\s*\]\]", re.IGNORECASE)
# A last line that is nothing but the verdict: "B", "**A**", "Answer B.", "Tie".
_BARE = re.compile(r"(?:answer|assistant|response)?\s*(?P<v>a|b|tie)", re.IGNORECASE)
_THINKING = re.compile(r"<think>.*?(?:</think>|\Z)", re.IGNORECASE | re.DOTALL)


def _value(word: str) -> str:
    word = word.lower()
    return "A" if word == "a" else "B" if word == "b" else "tie"


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    """The value of the last line holding matches of `pattern`; a line whose matches disagree
    (the rubric's own 'Verdict: A, Verdict: B or Verdict: tie' echoed) is skipped."""
    lines: dict[int, set[str]] = {}
    for match in pattern.finditer(text):
        lines.setdefault(text.count("\n", 0, match.start()), set()).add(_value(match["v"]))
    for line in sorted(lines, reverse=True):
        if len(lines[line]) == 1:
            return next(iter(lines[line]))
    return None


def parse_verdict(text: str | None) -> str | None:
    """"A", "B" or "tie" from a judge's answer, None when it holds no readable verdict.

    The last "Verdict: X" line wins (case-insensitive, markdown bold and brackets allowed,
    "Answer B" for B, "equal" / "both" / "neither" / "draw" for tie); without one, the last
    "[[A]]" / "[[B]]" / "[[C]]" (tie) marker; without that, a last line that is only the
    verdict. A reasoning model's <think> block is ignored (an unfinished one: the rest of the
    text), so a verdict it considered on the way is not taken for its answer.
    """
    if not text:
        return None
    text = _THINKING.sub("", text)
    found = _last(_TAGGED, text) or _last(_BRACKETED, text)
    if found:
        return found
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        bare = _BARE.fullmatch(lines[-1].strip(" \t*_`#>\"'.!:[]()"))
        if bare:
            return _value(bare["v"])
    return None


def combine(first: str | None, second: str | None) -> str:
    """The pair's outcome from the two verdicts, from the point of view of candidate x.

    `first` is the verdict with x shown as A and y as B; `second` the verdict with the order
    swapped (y as A, x as B). In x's terms first says "A" -> x better, "B" -> y better, and
    second says "B" -> x better, "A" -> y better. When both say the same -- x better both
    times, y better both times, or tie both times -- the result is "a" (x better), "b"
    (y better) or "tie". Anything else is "tie": a verdict that flips with the order (position
    bias), a win in one order and a tie in the other, or a missing (None) verdict.
    """
    as_x = {"A": "a", "B": "b", "tie": "tie"}.get(first or "")
    as_x_swapped = {"A": "b", "B": "a", "tie": "tie"}.get(second or "")
    if as_x is not None and as_x == as_x_swapped:
        return as_x
    return "tie"


@dataclass(frozen=True)
class Agreement:
    agree: int
    total: int

    @property
    def rate(self) -> float | None:
        """agree / total; None when no item was voted by both."""
        return self.agree / self.total if self.total else None


def _canonical(votes: Mapping[tuple[int, int, int], str]) -> dict[tuple[int, int, int], str]:
    """Keys as (prompt, a, b) with a < b (outcome flipped for a reversed key), "bad" as "tie"."""
    found = {}
    for (prompt, a, b), outcome in votes.items():
        outcome = "tie" if outcome == "bad" else outcome
        if a > b:
            a, b = b, a
            outcome = {"a": "b", "b": "a"}.get(outcome, outcome)
        found[(prompt, a, b)] = outcome
    return found


def agreement(person: Mapping[tuple[int, int, int], str],
              judge: Mapping[tuple[int, int, int], str]) -> Agreement:
    """How often the judge's outcome matches the person's, over the items both voted on.

    Keys are (prompt, a, b) with a < b (a reversed key is turned round, its outcome with it);
    outcomes "a", "b", "tie", "bad", where "bad" (both bad) counts as "tie".
    """
    mine, theirs = _canonical(person), _canonical(judge)
    both = mine.keys() & theirs.keys()
    return Agreement(sum(1 for key in both if mine[key] == theirs[key]), len(both))
