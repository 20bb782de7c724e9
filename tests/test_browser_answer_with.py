""""Answer with…" another model and preferring it (issue 32, parts 2 and 3), in chromium
with SmolLM2: a reply from one entry, "Answer with…" the second entry streams a sibling
whose footer and "‹ 2/2 ›" row name that model, "Prefer this one" stores an open vote, and
the Compare tab's leaderboard counts one open vote more. The two entries are the SmolLM2
GGUF under two ids and names (two real llama.cpp models to the app; they share weights).
The screenshot is the README's docs/branches.png."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import start_app
from tests.test_browser import (
    CHROMIUM_ARGS,
    pick,
    set_number,
    set_seed,
    wait_for_finished_reply,
)

pytestmark = pytest.mark.slow  # drives the app in chromium

FIRST = "SmolLM2 135M Instruct (Q4_1)"
SECOND = "SmolLM2 second voice (Q4_1)"
QUESTION = "Name three colours of the rainbow."
REGISTRY = """models:
  - id: smollm2-135m
    name: {first}
    backend: llamacpp
    path: {gguf}
    context_length: 2048
    defaults: {{temperature: 0.7, top_p: 0.9, max_new_tokens: 512}}
  - id: smollm2-second
    name: {second}
    backend: llamacpp
    path: {gguf}
    context_length: 2048
    defaults: {{temperature: 0.7, top_p: 0.9, max_new_tokens: 512}}
"""


@pytest.fixture()
def two_model_app(tmp_path, smollm2_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(REGISTRY.format(first=FIRST, second=SECOND, gguf=smollm2_path))
    app = start_app(["--models", str(registry), "--data-dir", str(tmp_path / "data")])
    yield app
    app.stop()


@pytest.fixture()
def page(chromium_path, two_model_app):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(two_model_app.url)
        page.locator("#message textarea").wait_for(timeout=30_000)
        yield page
        browser.close()


def open_votes_line(page) -> str:
    """The Compare tab's line of counts, read after the tab was shown (it counts again)."""
    page.get_by_role("tab", name="Compare").click()
    counts = page.locator("#compare-vote-counts")
    page.wait_for_function(
        "() => (document.querySelector('#compare-vote-counts')?.innerText || '')"
        ".includes('open vote')", timeout=30_000)
    return counts.inner_text()


def test_answer_with_another_model_streams_a_named_sibling_and_preferring_it_counts(
        page, artifacts):
    before = open_votes_line(page)
    assert "0 open votes" in before, before
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Parameters").click()
    set_number(page, "max-new-tokens", "64")
    set_seed(page, "1")
    box = page.locator("#message textarea")
    box.fill(QUESTION)
    box.press("Enter")
    first = wait_for_finished_reply(page, 1)
    assert FIRST in first

    pick(page, "answer-model", SECOND)
    page.locator("#answer-with").click()
    seen, deadline = [], time.monotonic() + 120
    bots = page.locator("#chatbot [data-testid='bot']")
    while time.monotonic() < deadline:
        text = bots.last.inner_text() if bots.count() else ""
        seen.append(text)
        if SECOND in text and "tokens/s" in text:
            break
        time.sleep(0.02)
    footer = seen[-1]
    assert SECOND in footer and "tokens/s" in footer, f"no finished sibling: {seen[-3:]}"
    partial = {t for t in seen if t and t != first and "tokens/s" not in t and t != "…"}
    assert partial, "the sibling never showed before it finished (it did not stream)"
    assert bots.count() == 1  # a sibling beside the first reply, not a second turn

    row = page.locator('#branches [role=group][aria-label="Reply 1: version 2 of 2"]')
    row.wait_for(timeout=30_000)
    assert SECOND in row.inner_text()  # "Reply 1 ‹ 2/2 › · SmolLM2 second voice"
    row.get_by_role("button", name="Prefer this one").click()
    page.wait_for_function(
        "() => (document.querySelector('#branches')?.innerText || '')"
        ".includes('you prefer this reply')", timeout=30_000)
    assert row.get_by_role("button", name="Prefer this one").get_attribute(
        "aria-pressed") == "true"
    page.locator("#branches").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "branches.png"), full_page=True)
    # The first version's row names its own model.
    page.get_by_role("button", name="Previous version of Reply 1", exact=True).click()
    page.locator('#branches [role=group][aria-label="Reply 1: version 1 of 2"]').wait_for(
        timeout=30_000)
    assert FIRST in page.locator("#branches").inner_text()

    after = open_votes_line(page)
    assert "0 blind votes and 1 open vote" in after, after
    assert SECOND in page.locator("#compare-leaderboard").inner_text()
    page.get_by_text("Include open votes").click()  # leave them out: the count says so
    page.wait_for_function(
        "() => (document.querySelector('#compare-vote-counts')?.innerText || '')"
        ".includes('leaves out 1 open vote')", timeout=30_000)
