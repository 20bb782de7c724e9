"""The thought/answer splitter, fed its markers cut at every possible place."""
from __future__ import annotations

import itertools

from backends.thinking import Markers, ThoughtSplitter, takes_enable_thinking, template_markers

TEXT = "<think>\nWeigh the options: A or B.\n</think>\n\nThe answer is B."


def run(chunks: list[str], inside: bool = False) -> tuple[str, str]:
    splitter = ThoughtSplitter(Markers(), inside)
    thought, answer = "", ""
    for chunk in chunks:
        t, a = splitter.feed(chunk)
        thought, answer = thought + t, answer + a
    t, a = splitter.flush()
    return thought + t, answer + a


def test_markers_cut_at_every_position_across_two_and_three_chunks():
    expected = ("Weigh the options: A or B.\n", "The answer is B.")
    for i in range(len(TEXT) + 1):
        assert run([TEXT[:i], TEXT[i:]]) == expected, i
    for i, j in itertools.combinations(range(len(TEXT) + 1), 2):
        assert run([TEXT[:i], TEXT[i:j], TEXT[j:]]) == expected, (i, j)


def test_one_character_at_a_time_and_held_text_is_never_shown_early():
    splitter = ThoughtSplitter(Markers())
    shown = [splitter.feed(ch) for ch in TEXT]
    assert "".join(t for t, _ in shown) == "Weigh the options: A or B.\n"
    assert "".join(a for _, a in shown) + splitter.flush()[1] == "The answer is B."
    assert not any("<" in t or ">" in t for t, _ in shown)


def test_a_prompt_that_opened_the_thought():
    text = "Thinking it over.</think>Done."
    for i in range(len(text) + 1):
        assert run([text[:i], text[i:]], inside=True) == ("Thinking it over.", "Done.")


def test_no_markers_is_all_answer_and_a_lone_less_than_is_kept():
    assert run(["Hello ", "<b>world</b>"]) == ("", "Hello <b>world</b>")
    assert run(["<", "thin", "king about it"]) == ("", "<thinking about it")
    assert run(["  <thi"]) == ("", "<thi")  # ended before the marker was whole


def test_an_unfinished_thought_stays_a_thought_and_a_forced_end_keeps_held_text():
    assert run(["<think>still going </th"]) == ("still going </th", "")
    splitter = ThoughtSplitter(Markers(), inside=True)
    assert splitter.feed("budget spent </") == ("budget spent ", "")
    assert splitter.force_end() == "</"
    assert splitter.feed("\n\nAnswer.") == ("", "Answer.")


def test_other_markers_and_detection_from_templates():
    markers = Markers("[THINK]", "[/THINK]")
    splitter = ThoughtSplitter(markers)
    assert splitter.feed("[THI") == ("", "")
    assert splitter.feed("NK]x[/THINK]y") == ("x", "y")
    assert template_markers("{% if enable_thinking %}...{% endif %}") == Markers()
    assert template_markers("{{ '<think>' }}") == Markers()
    assert template_markers("{{ messages }}") is None
    assert takes_enable_thinking("{% if enable_thinking is false %}")


def test_a_stray_marker_in_the_answer_is_not_shown():
    text = "<think>a</think>b </think>c <think>d"
    for i in range(len(text) + 1):
        assert run([text[:i], text[i:]]) == ("a", "b c d"), i
