""""Answer with…" another model and preferring it (issue 32, parts 2 and 3), in chromium
with SmolLM2: a reply from one entry, "Answer with…" the second entry streams a sibling
whose footer and "‹ 2/2 ›" row name that model, "Prefer this one" stores an open vote, and
the Compare tab's leaderboard counts one open vote more. The two entries are the SmolLM2
GGUF under two ids and names (two real llama.cpp models to the app; they share weights).
The screenshot is the README's docs/branches.png."""
from __future__ import annotations

import time

import pytest
from gradio_client import Client
from playwright.sync_api import sync_playwright

from chatcore.conversations.store import Store
from tests.conftest import start_app
from tests.test_app_client import send_args
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


def counts_say(page, expected: str) -> None:
    """Show the Compare tab (it counts the votes again) and wait until its line of counts
    says `expected`."""
    page.get_by_role("tab", name="Compare").click()
    try:
        page.wait_for_function(
            "(e) => (document.querySelector('#compare-vote-counts')?.innerText || '')"
            ".includes(e)", arg=expected, timeout=30_000)
    except Exception:
        raise AssertionError(f"the counts never said {expected!r}: "
                             f"{page.locator('#compare-vote-counts').inner_text()!r}") from None


def test_answer_with_another_model_streams_a_named_sibling_and_preferring_it_counts(
        page, artifacts):
    counts_say(page, "Counts 0 blind votes and 0 open votes.")
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
    # The README's picture (docs/branches.png): the chat, its versions row, Answer with….
    page.screenshot(path=str(artifacts / "branches.png"), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1200, "height": 1400})
    # The first version's row names its own model.
    page.get_by_role("button", name="Previous version of Reply 1", exact=True).click()
    page.locator('#branches [role=group][aria-label="Reply 1: version 1 of 2"]').wait_for(
        timeout=30_000)
    assert FIRST in page.locator("#branches").inner_text()

    counts_say(page, "Counts 0 blind votes and 1 open vote.")  # one more open vote
    assert SECOND in page.locator("#compare-leaderboard").inner_text()
    page.get_by_text("Include open votes").click()  # leave them out: the count says so
    page.wait_for_function(
        "() => (document.querySelector('#compare-vote-counts')?.innerText || '')"
        ".includes('leaves out 1 open vote')", timeout=30_000)


def test_answer_with_through_the_page_api_keeps_both_versions_with_their_models(
        two_model_app, tmp_path):
    """What the README promises scripts: /answer_with takes Regenerate's arguments, the
    model being the one that answers, then the reply to answer again (None: the last); the
    store holds both versions, the new one shown."""
    client = Client(two_model_app.url, verbose=False)
    client.predict(*send_args(QUESTION, max_new_tokens=8), api_name="/send")
    other = ("smollm2-second", *send_args(QUESTION, max_new_tokens=8)[2:], None)
    client.predict(*other, api_name="/answer_with")
    [listed] = client.predict("", api_name="/conversations")
    shown = client.predict(listed["id"], api_name="/conversation")
    assert [m["model"] for m in shown["messages"]] == [None, "smollm2-second"]
    store = Store(tmp_path / "data")  # the app's own file, read beside it
    try:
        tree = store.get_conversation("", listed["id"], include_superseded=True).messages
    finally:
        store.close()
    replies = [m for m in tree if m.role == "assistant"]
    assert [m.model for m in replies] == ["smollm2-135m", "smollm2-second"]
    assert replies[0].parent_id == replies[1].parent_id == tree[0].id  # siblings
    assert all(m.content and m.tokens_per_second for m in replies)


def test_blind_mode_hides_which_model_answered_until_one_is_preferred(page):
    """Blind on: the second model's version streams and ends as "model hidden" (footer and
    row), and so does the first's; preferring one brings both names back."""
    page.get_by_text("Parameters").click()
    set_number(page, "max-new-tokens", "16")
    set_seed(page, "1")
    page.locator("#answer-blind input").check()
    box = page.locator("#message textarea")
    box.fill(QUESTION)
    box.press("Enter")
    assert FIRST in wait_for_finished_reply(page, 1)  # one model so far: named
    pick(page, "answer-model", SECOND)
    page.locator("#answer-with").click()
    row = page.locator('#branches [role=group][aria-label="Reply 1: version 2 of 2"]')
    row.wait_for(timeout=120_000)
    bots = page.locator("#chatbot [data-testid='bot']")
    footer = bots.last.inner_text()
    assert "model hidden" in footer and SECOND not in footer, footer
    assert "model hidden" in row.inner_text() and SECOND not in row.inner_text()
    page.get_by_role("button", name="Previous version of Reply 1", exact=True).click()
    first = page.locator('#branches [role=group][aria-label="Reply 1: version 1 of 2"]')
    first.wait_for(timeout=30_000)
    assert "model hidden" in bots.last.inner_text() and FIRST not in bots.last.inner_text()
    first.get_by_role("button", name="Prefer this one").click()
    page.wait_for_function(
        "(name) => (document.querySelector('#branches')?.innerText || '').includes(name)",
        arg=FIRST, timeout=30_000)
    assert FIRST in bots.last.inner_text()  # judged: the names are back
    page.locator("#answer-blind input").uncheck()
