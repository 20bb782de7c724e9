"""A real browser (Debian chromium through Playwright) on the running app."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture()
def page(chromium_path, running_app):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(running_app.url)
        page.locator("#message textarea").wait_for(timeout=30_000)
        yield page
        outside = [u for u in requests if not u.startswith(running_app.url.rstrip("/"))
                   and not u.startswith(("data:", "blob:"))]
        assert outside == [], f"the page reached outside this machine: {outside}"
        browser.close()


def last_reply(page) -> str:
    replies = page.locator("#chatbot [data-testid='bot']")
    return replies.last.inner_text() if replies.count() else ""


def test_send_a_message_and_watch_the_reply_grow(page, artifacts):
    box = page.locator("#message textarea")
    box.fill("Write a long story about a dragon who learns to cook.")
    box.press("Enter")
    lengths: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = last_reply(page)
        if text and text != "…":
            lengths.append(len(text))
        if "tokens/s" in text:
            break
        time.sleep(0.03)
    assert "tokens/s" in last_reply(page), "the reply never finished"
    growth = sorted(set(lengths))
    assert len(growth) >= 3, f"the reply did not grow in steps: {growth}"
    assert page.locator("#chatbot [data-testid='user']").last.inner_text().startswith(
        "Write a long story")
    page.screenshot(path=str(artifacts / "chat-page.png"), full_page=True)


def use_greedy_decoding(page) -> None:
    page.get_by_text("Parameters").click()
    temperature = page.locator("#temperature input[type=number]")
    temperature.fill("0")
    temperature.press("Tab")
    page.wait_for_function(
        "() => document.querySelector('#temperature input[type=range]').value === '0'")


def test_capital_question_then_stop(page, artifacts):
    use_greedy_decoding(page)
    box = page.locator("#message textarea")
    box.fill("Name the capital of France.")
    box.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"#chatbot [data-testid='bot']\")]"
        ".some(e => e.innerText.includes('tokens/s'))", timeout=60_000)
    assert "Paris" in last_reply(page)
    page.screenshot(path=str(artifacts / "chat-capital.png"), full_page=True)

    page.locator("#message textarea").fill("Write a very long essay about the history of bread.")
    page.locator("#send").click()
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll(\"#chatbot [data-testid='bot']\")];"
        " return r.length >= 2 && r[r.length - 1].innerText.length > 40; }", timeout=60_000)
    page.locator("#stop").click()
    page.wait_for_function(
        "() => { const r = [...document.querySelectorAll(\"#chatbot [data-testid='bot']\")];"
        " return r[r.length - 1].innerText.includes('stopped'); }", timeout=30_000)
