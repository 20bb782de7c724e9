"""The n-gram drafter of speculative decoding: what it guesses from a reply's own tokens."""
from __future__ import annotations

import pytest

from backends.prompt_lookup import PromptLookup


def test_the_tokens_after_the_latest_earlier_match_of_the_longest_suffix_are_drafted():
    lookup = PromptLookup([9, 2, 3, 7, 8, 1, 2, 3])
    assert lookup.draft() == [7, 8, 1, 2, 3]  # no earlier "1 2 3": "2 3" is the match
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 1, 2, 3])
    assert lookup.draft(limit=2) == [4, 5]  # the 3-gram "1 2 3" beats the later "2 3"


def test_no_match_drafts_nothing_and_growth_keeps_the_index_current():
    lookup = PromptLookup([1, 2, 3], min_ngram=2)
    assert lookup.draft() == []
    lookup.extend([4, 2, 3])
    assert lookup.draft() == [4, 2, 3]
    assert lookup.draft(limit=0) == []
    assert len(lookup) == 6


def test_drafts_are_at_most_max_draft_tokens():
    text = list(range(50))
    lookup = PromptLookup(text + text[:3], max_draft=8)
    assert lookup.draft() == list(range(3, 11))


def test_bad_ngram_sizes_are_refused():
    with pytest.raises(ValueError):
        PromptLookup(min_ngram=0)
