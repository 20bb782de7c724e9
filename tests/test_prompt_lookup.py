"""The n-gram drafter of speculative decoding: what it guesses from a reply's own tokens."""
from __future__ import annotations

import pytest

from backends.prompt_lookup import REST_STEPS, PromptLookup


def test_the_tokens_after_the_latest_earlier_match_of_the_longest_suffix_are_drafted():
    lookup = PromptLookup([9, 2, 3, 7, 8, 1, 2, 3], min_ngram=2)
    assert lookup.draft(limit=3) == [7, 8, 1]  # no earlier "1 2 3": "2 3" is the match
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 1, 2, 3], min_ngram=2)
    assert lookup.draft(limit=2) == [4, 5]  # the 3-gram "1 2 3" beats the later "2 3"
    assert PromptLookup([9, 2, 3, 7, 8, 1, 2, 3]).draft() == []  # 3-grams only by default


def test_no_match_drafts_nothing_and_growth_keeps_the_index_current():
    lookup = PromptLookup([1, 2, 3], min_ngram=2)
    assert lookup.draft() == []
    lookup.extend([4, 2, 3])
    assert lookup.draft() == [4, 2, 3]
    assert lookup.draft(limit=0) == []
    assert len(lookup) == 6


def test_the_number_drafted_grows_while_drafts_are_taken_and_shrinks_when_not():
    text = list(range(50))
    lookup = PromptLookup(text + text[:3], max_draft=8)
    assert lookup.draft() == [3, 4, 5, 6]  # half of max_draft to start with
    lookup.judge(drafted=4, accepted=4)
    assert lookup.draft() == list(range(3, 11))
    lookup.judge(drafted=8, accepted=8)
    assert len(lookup.draft()) == 8  # never more than max_draft
    lookup.judge(drafted=8, accepted=3)  # some taken: unchanged
    assert len(lookup.draft()) == 8
    for _ in range(3):
        lookup.judge(drafted=1, accepted=0)
    assert lookup.draft() == [3]  # never fewer than one
    lookup.judge(drafted=1, accepted=0)  # even one refused: drafting rests a while
    assert [lookup.draft() for _ in range(REST_STEPS)] == [[]] * REST_STEPS
    assert lookup.draft() == [3]


def test_bad_ngram_sizes_are_refused():
    with pytest.raises(ValueError):
        PromptLookup(min_ngram=0)
