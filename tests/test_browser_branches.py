"""Branches in chromium, with SmolLM2: regenerate twice and flip ‹ 1/3 › ‹ 3/3 › (the later
messages follow the branch), edit the last question with Edit and an earlier one in the chat
itself, and flip back to the old branches."""
from __future__ import annotations

import pytest

from tests.test_browser import (  # noqa: F401 - `page` is a fixture
    last_reply,
    page,
    set_number,
    set_seed,
    start_new_chat,
    wait_for_finished_reply,
)

pytestmark = pytest.mark.slow  # drives the app in chromium

QUESTION = "Name the capital of France."
FOLLOW_UP = "And the capital of Italy?"
EDITED = "And the capital of Spain?"
FIRST_EDITED = "Name the capital of Japan."


def body(text: str) -> str:
    """A reply's words, without its footer ("‹ 2/3 › · model · speed")."""
    return text.split("‹")[0].split("SmolLM2")[0].strip()


def wait_for_versions(page, text: str) -> None:
    """Wait until a versions row under the chat says `text` ("Reply 1: version 3 of 3")."""
    page.locator(f'#branches [role=group][aria-label="{text}"]').wait_for(timeout=120_000)


def users(page) -> list[str]:
    return page.locator("#chatbot [data-testid='user']").all_inner_texts()


def flip(page, label: str, expect: str) -> None:
    button = page.get_by_role("button", name=label, exact=True)
    button.focus()  # keyboard reachable: a real button, Enter flips
    page.keyboard.press("Enter")
    wait_for_versions(page, expect)


def test_regenerate_twice_flip_between_versions_and_edit_an_earlier_question(page, artifacts):
    start_new_chat(page)
    page.get_by_text("Parameters").click()
    set_number(page, "max-new-tokens", "12")
    replies = []
    for seed in ("1", "2", "3"):
        set_seed(page, seed)
        if not replies:
            box = page.locator("#message textarea")
            box.fill(QUESTION)
            box.press("Enter")
            replies.append(body(wait_for_finished_reply(page, 1)))
            continue
        page.locator("#regenerate").click()
        wait_for_versions(page, f"Reply 1: version {len(replies) + 1} of {len(replies) + 1}")
        replies.append(body(last_reply(page)))
    box = page.locator("#message textarea")
    box.fill(FOLLOW_UP)
    box.press("Enter")
    wait_for_finished_reply(page, 2)
    assert users(page) == [QUESTION, FOLLOW_UP]

    flip(page, "Previous version of Reply 1", "Reply 1: version 2 of 3")
    flip(page, "Previous version of Reply 1", "Reply 1: version 1 of 3")
    page.wait_for_function("() => document.querySelectorAll(\"#chatbot [data-testid='bot']\")"
                           ".length === 1")
    assert users(page) == [QUESTION]  # the first version's branch has no follow-up
    assert body(last_reply(page)) == replies[0]
    assert "‹ 1/3 ›" in last_reply(page)  # its footer says so too
    page.get_by_role("button", name="Next version of Reply 1", exact=True).click()
    wait_for_versions(page, "Reply 1: version 2 of 3")
    assert body(last_reply(page)) == replies[1]
    flip(page, "Next version of Reply 1", "Reply 1: version 3 of 3")
    page.wait_for_function("() => document.querySelectorAll(\"#chatbot [data-testid='bot']\")"
                           ".length === 2")
    assert users(page) == [QUESTION, FOLLOW_UP]  # the follow-up came back with its branch
    assert page.get_by_role("button", name="Next version of Reply 1").is_disabled()

    page.locator("#edit").click()
    page.wait_for_function(
        f"() => document.querySelector('#message textarea')?.value === {FOLLOW_UP!r}")
    box.fill(EDITED)
    box.press("Enter")
    wait_for_versions(page, "Question 2: version 2 of 2")
    assert users(page) == [QUESTION, EDITED]
    page.screenshot(path=str(artifacts / "branches-edited.png"), full_page=True)
    flip(page, "Previous version of Question 2", "Question 2: version 1 of 2")
    page.wait_for_function(
        f"() => (document.querySelector('#chatbot')?.innerText || '').includes({FOLLOW_UP!r})")
    assert users(page) == [QUESTION, FOLLOW_UP]  # the old branch is still reachable
    assert page.locator("#chatbot [data-testid='bot']").count() == 2

    # An earlier question edited in the chat itself (its pencil): a version of question 1
    # of its own; the whole old branch, follow-up included, is one flip away.
    page.locator("#chatbot [data-testid='user']").first.hover()
    page.locator("#chatbot").get_by_role("button", name="Edit").first.click()
    page.locator("#chatbot textarea.edit-textarea").fill(FIRST_EDITED)
    page.locator("#chatbot").get_by_role("button", name="Submit").click()
    wait_for_versions(page, "Question 1: version 2 of 2")
    wait_for_finished_reply(page, 1)
    assert users(page) == [FIRST_EDITED]
    page.screenshot(path=str(artifacts / "branches-first-question-edited.png"),
                    full_page=True)
    flip(page, "Previous version of Question 1", "Question 1: version 1 of 2")
    page.wait_for_function(
        f"() => (document.querySelector('#chatbot')?.innerText || '').includes({FOLLOW_UP!r})")
    assert users(page) == [QUESTION, FOLLOW_UP]
