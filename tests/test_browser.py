"""A real browser (Debian chromium through Playwright) on the running app."""
from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from backends.sampling import SamplingSettings
from chatcore.conversations.store import Store
from chatcore.generation.registry import load_registry
from chatui.sampling_controls import FIELDS, SettingsControls
from tests.conftest import SHIPPED_MODELS, start_app

pytestmark = pytest.mark.slow  # drives the app in chromium

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
    page.get_by_text("Parameters").click()
    set_number(page, "max-new-tokens", "120")  # growth shows in far fewer than the default
    box = page.locator("#message textarea")
    box.fill("Write a long story about a dragon who learns to cook.")
    box.press("Enter")
    lengths: list[int] = []
    deadline = time.monotonic() + 180  # a hang guard: a CPU hog may share the machine
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
    """Temperature 0 through the slider's number box, as a person would type it."""
    page.get_by_text("Parameters").click()
    number = page.locator("#temperature input[type=number]")
    slider = page.locator("#temperature input[type=range]")
    for _ in range(3):  # the first keystrokes can land before the page has hydrated
        number.fill("0")
        number.press("Enter")
        try:
            page.wait_for_function(
                "() => document.querySelector('#temperature input[type=range]')?.value === '0'",
                timeout=3_000)
            return
        except PlaywrightTimeout:
            continue
    assert slider.input_value() == "0", "the temperature slider did not take the value 0"


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


def test_models_tab_loads_and_unloads(page, artifacts):
    page.get_by_role("tab", name="Models").click()
    table = page.locator("#models-table")
    table.wait_for()
    page.locator("#models-unload").click()  # the chat tests may have loaded it already
    page.wait_for_function(
        "() => /Unloaded|was not loaded/.test(document.querySelector('#models-outcome')?.innerText)",
        timeout=30_000)
    page.locator("#models-load").click()
    page.wait_for_function(
        "() => document.querySelector('#models-outcome')?.innerText.includes('Loaded')",
        timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#models-table')?.innerText.includes('resident')",
        timeout=10_000)
    assert "not downloaded" in table.inner_text()
    page.screenshot(path=str(artifacts / "models-tab.png"), full_page=True)
    page.locator("#models-unload").click()
    page.wait_for_function(
        "() => document.querySelector('#models-outcome')?.innerText.includes('Unloaded')",
        timeout=30_000)


def test_a_conversation_survives_a_restart_and_can_be_renamed_searched_and_deleted(
        chromium_path, tmp_path, artifacts):
    data = tmp_path / "data"
    app = start_app(["--data-dir", str(data)])
    try:
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, chromium_path, app.url)
            use_greedy_decoding(page)
            page.locator("#message textarea").fill("Name the capital of France.")
            page.locator("#message textarea").press("Enter")
            page.wait_for_function(
                "() => document.querySelector('#chatbot')?.innerText.includes('tokens/s')",
                timeout=60_000)
            page.locator("#conversations label", has_text="Name the capital").wait_for()
            browser.close()
    finally:
        app.stop()

    app = start_app(["--data-dir", str(data)])  # the restart
    try:
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, chromium_path, app.url)
            entry = page.locator("#conversations label", has_text="Name the capital")
            entry.wait_for(timeout=30_000)
            entry.click()
            page.wait_for_function(
                "() => document.querySelector('#chatbot')?.innerText.includes('Paris')",
                timeout=30_000)
            page.screenshot(path=str(artifacts / "conversation-after-restart.png"),
                            full_page=True)

            page.get_by_text("This conversation").click()
            title = page.locator("#title textarea, #title input").first
            # Opening the conversation fills the title box; typing before that lands would
            # be overwritten, and the rename would keep the old title.
            page.wait_for_function(
                "() => { const box = document.querySelector('#title textarea, #title input');"
                " return box && box.value.includes('capital'); }", timeout=30_000)
            title.fill("Geography quiz")
            page.locator("#rename").click()
            page.locator("#conversations label", has_text="Geography quiz").wait_for()

            search = page.locator("#search textarea, #search input").first
            search.fill("no such words anywhere")
            page.wait_for_function(
                "() => !document.querySelector('#conversations')?.innerText.includes('Geography')")
            search.fill("paris")  # matches the reply's text, not the title
            page.locator("#conversations label", has_text="Geography quiz").wait_for()

            page.locator("#conversations label", has_text="Geography quiz").click()
            page.locator("#delete").click()
            page.locator("#confirm-delete-yes").click()
            page.wait_for_function(
                "() => !document.querySelector('#conversations')?.innerText.includes('Geography')")
            search.fill("")
            page.wait_for_timeout(500)
            assert "Geography" not in page.locator("#conversations").inner_text()
            browser.close()
    finally:
        app.stop()
    store = Store(data)
    assert store.list_conversations("") == []
    store.close()


def open_page(playwright, chromium_path: str, url: str):
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(url)
    return browser, page


def set_number(page, elem_id: str, value: str) -> None:
    """Type into a slider's number box and wait until the slider took it."""
    number = page.locator(f"#{elem_id} input[type=number]")
    for _ in range(3):
        number.fill(value)
        number.press("Enter")
        try:
            page.wait_for_function(
                f"() => document.querySelector('#{elem_id} input[type=range]')?.value"
                f" === '{value}'", timeout=3_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"#{elem_id} did not take the value {value}")


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()
    page.wait_for_function(
        f"() => document.querySelector('#{elem_id} input')?.value === {option!r}")


def test_compare_two_models_vote_and_see_the_leaderboard_change(page, artifacts):
    page.get_by_role("tab", name="Compare").click()
    pick(page, "compare-model-0", "SmolLM2 135M Instruct (Q4_1)")
    pick(page, "compare-model-1", "SmolLM2 135M Instruct [transformers · 4bit nf4 · auto]")
    for pane in (0, 1):
        page.locator(f"#compare-settings-{pane}").get_by_text("Settings").click()
        set_number(page, f"compare-max-new-tokens-{pane}", "40")
    board = page.locator("#compare-leaderboard")
    board_before = board.inner_text()
    box = page.locator("#compare-message textarea")

    def round_of(prompt: str, replies: int) -> list[tuple[str, str]]:
        """Send `prompt`; the panes' newest replies as they grew, until both finished."""
        box.fill(prompt)
        box.press("Enter")
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 300  # a first load of the 4-bit copy under a CPU hog
        while time.monotonic() < deadline:
            bots = [page.locator(f"#compare-pane-{pane} [data-testid='bot']") for pane in (0, 1)]
            texts = tuple(b.last.inner_text() if b.count() >= replies else "" for b in bots)
            seen.append(texts)
            if all("tokens/s" in t for t in texts):
                break
            time.sleep(0.03)
        assert all("tokens/s" in t for t in seen[-1]), f"the panes never finished: {seen[-1]}"
        return seen

    # A first round loads both models; the second shows them streaming side by side.
    round_of("Name the capital of France.", 1)
    seen = round_of("Write a long story about a dragon who learns to cook.", 2)
    for pane in (0, 1):
        growth = {texts[pane] for texts in seen if texts[pane] not in ("", "…")}
        assert len(growth) >= 3, f"pane {pane} did not grow in steps: {sorted(growth)}"
    assert any(all(t not in ("", "…") and "tokens/s" not in t for t in texts)
               for texts in seen), "the two panes never streamed at the same time"
    page.locator("#compare-vote-a").click()
    page.wait_for_function(
        "() => document.querySelector('#compare-status')?.innerText.includes('Vote saved')")
    page.wait_for_function(
        f"() => document.querySelector('#compare-leaderboard')?.innerText !== {board_before!r}")
    assert "SmolLM2 135M Instruct (Q4_1)" in board.inner_text()
    page.screenshot(path=str(artifacts / "compare-tab.png"), full_page=True)


XSS_REPLY = "\n\n".join([
    "Here is some markup:",
    '<img src=x onerror="window.__pwned = 1">',
    "<script>window.__pwned = 2</script>",
    "[a markdown link](javascript:window.__pwned=3)",
    '<a href="javascript:window.__pwned=4">an html link</a>',
    '<svg onload="window.__pwned = 5"></svg>',
    '<iframe srcdoc="<script>parent.__pwned = 6</script>"></iframe>',
    "end of the markup test",
])


def test_html_and_script_in_a_reply_stay_inert(page, tmp_path, artifacts):
    """A reply full of markup (imported, as a model could write it) runs nothing."""
    document = {"format": "local-chat/conversation", "version": 1, "title": "Markup test",
                "model": "smollm2-135m", "system_prompt": "", "params": {},
                "messages": [{"role": "user", "content": "<b onmouseover=alert(1)>hi</b>"},
                             {"role": "assistant", "content": XSS_REPLY}]}
    upload = tmp_path / "markup.json"
    upload.write_text(json.dumps(document), encoding="utf-8")
    page.get_by_text("This conversation", exact=True).click()
    with page.expect_file_chooser() as chooser:
        page.locator("#import").click()
    chooser.value.set_files(str(upload))
    page.wait_for_function(
        "() => document.querySelector('#chatbot')?.innerText.includes('end of the markup test')",
        timeout=30_000)
    for element in page.locator("#chatbot [data-testid='bot'], #chatbot [data-testid='user']") \
            .all():
        element.hover()
    page.locator("#chatbot").get_by_text("a markdown link").first.click(no_wait_after=True) \
        if page.locator("#chatbot").get_by_text("a markdown link").count() else None
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__pwned") is None, "script from a reply ran"
    dangerous = page.evaluate("""() => [...document.querySelectorAll('#chatbot *')].filter(e =>
        [...e.attributes].some(a => a.name.startsWith('on')) ||
        (e.getAttribute('href') || '').trim().toLowerCase().startsWith('javascript:') ||
        ['SCRIPT', 'IFRAME'].includes(e.tagName)).map(e => e.outerHTML)""")
    assert dangerous == [], f"live markup in the chat: {dangerous}"
    page.screenshot(path=str(artifacts / "markup-inert.png"), full_page=True)


def start_new_chat(page) -> None:
    """Click "+ New chat" and wait until its answer has reached the page: it clears the
    message box, so a draft typed before its answer came back would be wiped (a CPU hog
    makes that answer slow enough to lose the next question)."""
    box = page.locator("#message textarea")
    box.fill("(a draft that New chat clears)")
    page.locator("#new-chat").click()
    page.wait_for_function(
        "() => document.querySelector('#message textarea')?.value === '' &&"
        " document.querySelectorAll(\"#chatbot [data-testid='bot']\").length === 0",
        timeout=30_000)


def wait_for_finished_reply(page, count: int) -> str:
    """Wait until the chat holds `count` finished replies; returns the last one (a first
    reply may include loading its model on a machine a CPU hog shares)."""
    page.wait_for_function(
        "(n) => { const r = [...document.querySelectorAll(\"#chatbot [data-testid='bot']\")];"
        " return r.length >= n && /tokens\\/s|tokens ·|\\d tokens/.test(r[r.length - 1].innerText); }",
        arg=count, timeout=120_000)
    return last_reply(page)


def test_regenerate_edit_and_a_new_conversation(page, artifacts):
    use_greedy_decoding(page)
    set_number(page, "max-new-tokens", "24")
    box = page.locator("#message textarea")
    box.fill("Name the capital of France.")
    box.press("Enter")
    first = wait_for_finished_reply(page, 1)
    page.locator("#regenerate").click()
    page.wait_for_timeout(300)
    wait_for_finished_reply(page, 1)
    page.get_by_text("Earlier replies", exact=True).click()
    page.wait_for_function(
        "() => (document.querySelector('#earlier')?.innerText || '').includes('Paris')",
        timeout=30_000)
    assert first.split("\n")[0] in page.locator("#earlier").inner_text()

    page.locator("#edit").click()
    page.wait_for_function(
        "() => document.querySelector('#message textarea')?.value === "
        "'Name the capital of France.'")
    box.fill("Name the capital of Italy.")
    box.press("Enter")
    page.wait_for_function(
        "() => (document.querySelector('#chatbot')?.innerText || '').includes('capital of Italy')")
    wait_for_finished_reply(page, 1)
    users = page.locator("#chatbot [data-testid='user']").all_inner_texts()
    assert users == ["Name the capital of Italy."], users
    page.screenshot(path=str(artifacts / "edited-conversation.png"), full_page=True)

    start_new_chat(page)
    page.locator("#conversations label", has_text="Name the capital of").first.wait_for()


def meter_total(page) -> int:
    import re

    text = page.locator("#context-meter").inner_text()
    found = re.search(r"= (\d+) of (\d+) tokens", text)
    return int(found.group(1)) if found else -1


def test_the_inspector_shows_the_prompt_and_the_meter_follows_the_draft(page, artifacts):
    use_greedy_decoding(page)
    box = page.locator("#message textarea")
    box.fill("Name the capital of France.")
    box.press("Enter")
    wait_for_finished_reply(page, 1)
    page.get_by_text("Inspector: what the model received", exact=False).first.click()
    page.wait_for_function(
        "() => (document.querySelector('#inspector-prompt')?.innerText || '')"
        ".includes('<|im_start|>assistant')", timeout=30_000)
    prompt = page.locator("#inspector-prompt").inner_text()
    assert "<|im_start|>user" in prompt and "Name the capital of France." in prompt
    # The details are the same handler's other output, drawn a moment later on a busy machine.
    page.wait_for_function("() => (document.querySelector('#inspector-details')?.innerText"
                           " || '').includes(\"GGUF file's metadata\")", timeout=30_000)

    page.wait_for_function("() => /= \\d+ of \\d+ tokens/.test("
                           "document.querySelector('#context-meter')?.innerText || '')",
                           timeout=30_000)
    empty = meter_total(page)
    box.fill("tell me more " * 60)
    page.wait_for_function(f"() => {{ const m = /= (\\d+) of/.exec("
                           f"document.querySelector('#context-meter')?.innerText || '');"
                           f" return m && Number(m[1]) > {empty + 100}; }}", timeout=30_000)
    longer = meter_total(page)
    box.fill("tell me more " * 400)
    page.wait_for_function(f"() => {{ const m = /= (\\d+) of/.exec("
                           f"document.querySelector('#context-meter')?.innerText || '');"
                           f" return m && Number(m[1]) > {longer + 500}; }}", timeout=30_000)
    page.screenshot(path=str(artifacts / "inspector-and-meter.png"), full_page=True)
    box.fill("")


def test_evaluate_a_set_of_two_prompts_review_with_keys_and_see_ratings(page, artifacts):
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-set-new").click()
    page.wait_for_function("() => document.querySelector('#eval-set-status')?.innerText"
                           ".includes('A new set')")  # New's reply empties the name: first
    page.locator("#eval-set-name textarea").fill("Browser set")
    for text, category in (("Name the capital of France.", "facts"),
                           ("What is 2 + 2?", "math")):
        page.locator("#eval-new-prompt textarea").fill(text)
        page.locator("#eval-new-category textarea").fill(category)
        page.locator("#eval-add-prompt").click()
        page.wait_for_function(
            f"() => document.querySelector('#eval-set-rows')?.innerText.includes({text!r})")
    page.locator("#eval-set-save").click()
    page.wait_for_function("() => document.querySelector('#eval-set-status')?.innerText"
                           ".includes('Saved “Browser set” (2 prompts)')")
    pick(page, "eval-model-0", "SmolLM2 135M Instruct (Q4_1)")
    pick(page, "eval-model-1", "SmolLM2 135M Instruct [transformers · 4bit nf4 · auto]")
    for index in (0, 1):
        page.locator(f"#eval-settings-{index}").get_by_text("Settings").click()
        set_number(page, f"eval-max-new-tokens-{index}", "16")
    page.locator("#eval-start").click()
    page.wait_for_function("() => document.querySelector('#eval-run-status')?.innerText"
                           ".includes('started: 2 prompts × 2 models')")
    values: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        bar = page.locator("#eval-progress-bar")
        if bar.count():
            values.append(bar.get_attribute("value"))
            if "4 of 4 replies · done" in page.locator("#eval-progress-text").inner_text():
                break
        time.sleep(0.05)
    assert "4 of 4 replies · done" in page.locator("#eval-progress-text").inner_text()
    # the bar as it stands now: the text can say done between reading the bar and the text
    values.append(page.locator("#eval-progress-bar").get_attribute("value"))
    moved = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    assert len(set(moved)) >= 3, f"the progress bar did not move in steps: {moved}"
    header = page.locator("#review-header")
    page.wait_for_function("() => document.querySelector('#review-header')?.innerText"
                           ".includes('Pair 1 of 2')")
    header.click()  # focus on the page, not a text field: the keys are for the queue
    page.keyboard.press("1")
    page.wait_for_function("() => document.querySelector('#review-revealed')?.innerText"
                           ".includes('You voted A is better')")
    assert "SmolLM2" in page.locator("#review-revealed").inner_text()  # names after the vote
    page.wait_for_function("() => document.querySelector('#review-header')?.innerText"
                           ".includes('Pair 2 of 2')")
    assert "SmolLM2" not in page.locator("#review-reply-a").inner_text()
    page.keyboard.press("b")
    page.wait_for_function("() => document.querySelector('#review-header')?.innerText"
                           ".includes('All 2 pairs reviewed')")
    ratings = page.locator("#eval-ratings")
    page.wait_for_function("() => document.querySelector('#eval-ratings')?.innerText"
                           ".includes('Overall')")
    for word in ("Overall", "facts", "math", "SmolLM2 135M Instruct"):
        assert word in ratings.inner_text(), f"{word!r} missing from the ratings table"
    page.wait_for_function("() => (document.querySelector('#eval-choose')?.innerText || '')"
                           ".includes('Overall')")  # another output of the same handler
    assert "needs 5 votes" in ratings.inner_text()  # one vote a category: no interval yet
    page.locator("#eval-plot-button").click()
    page.locator("#eval-plot img").wait_for(timeout=30_000)
    page.screenshot(path=str(artifacts / "evaluate-tab.png"), full_page=True)


def unfold(page, title, folded_length: int) -> None:
    """Open a folded thought by its title, clicking again if a click landed while the chat
    was being re-rendered (on a busy machine the reply's last update can come after it)."""
    for _ in range(3):
        title.click()
        try:
            page.wait_for_function(
                f"() => document.querySelector('#chatbot')?.innerText.length > {folded_length}",
                timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError("the thought did not unfold when its title was clicked")


def test_a_thought_streams_into_a_folded_block_with_its_duration(
        chromium_path, smollm2_path, tmp_path, artifacts):
    from tests.test_thinking import THINKING_TEMPLATE

    registry = tmp_path / "models.yaml"
    entry = {"id": "smol-think", "name": "SmolLM2 (thinking)", "backend": "llamacpp",
             "path": str(smollm2_path), "chat_template": THINKING_TEMPLATE,
             "defaults": {"temperature": 0.0, "max_new_tokens": 64, "thinking_budget": 24}}
    registry.write_text(json.dumps({"models": [entry]}), encoding="utf-8")  # YAML reads JSON
    app = start_app(["--models", str(registry), "--data-dir", str(tmp_path / "data")])
    try:
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, chromium_path, app.url)
            page.locator("#message textarea").fill(
                "Write a long story about a dragon who learns to cook.")
            page.locator("#message textarea").press("Enter")
            page.wait_for_function(
                "() => document.querySelector('#chatbot')?.innerText.includes('tokens/s')",
                timeout=90_000)
            chatbot = page.locator("#chatbot")
            title = chatbot.get_by_text(re.compile(r"Thought for \d+\.\d s, 24 tokens"))
            title.wait_for(timeout=10_000)
            answer = page.locator("#chatbot [data-testid='bot']").last.inner_text()
            assert "tokens/s" in answer and "<think>" not in answer and "</think>" not in answer
            # Folded: the block's title is shown, its text only once it is opened.
            texts = chatbot.inner_text()
            page.screenshot(path=str(artifacts / "thinking-folded.png"), full_page=True)
            unfold(page, title, len(texts))
            page.screenshot(path=str(artifacts / "thinking-open.png"), full_page=True)
            browser.close()
    finally:
        app.stop()


def test_attach_a_file_send_and_see_its_chip_and_the_reply(page, tmp_path, artifacts):
    notes = tmp_path / "ferry.md"
    notes.write_text("# Trip\n\nThe ferry to Bohol leaves at 7:40 from pier 3.\n",
                     encoding="utf-8")
    use_greedy_decoding(page)
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files(str(notes))
    page.wait_for_function("() => document.querySelector('#attachments')?.innerText"
                           ".includes('ferry.md')")
    box = page.locator("#message textarea")
    box.fill("When does the ferry leave?")
    box.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#chatbot')?.innerText.includes('tokens/s')",
        timeout=60_000)
    assert "Attached: ferry.md" in page.locator("#chatbot").inner_text()  # the chip, kept
    page.wait_for_function("() => !document.querySelector('#attachments')?.innerText"
                           ".includes('ferry.md')")  # sent with the message
    page.get_by_text("Inspector: what the model received").click()
    page.wait_for_function("() => document.querySelector('#inspector-prompt')?.innerText"
                           ".includes('pier 3')", timeout=30_000)
    page.screenshot(path=str(artifacts / "attachment.png"), full_page=True)


# Every sampling control on the Chat tab, by elem_id, in the schema's order.
SETTING_IDS = [name.replace("_", "-") for name in FIELDS]


def shown_settings(page) -> list[str]:
    """What every sampling control shows, read from the page: a slider's or number box's
    number, the Radio's checked choice."""
    return page.evaluate(
        "(ids) => ids.map(id => { const el = document.querySelector('#' + id);"
        " const checked = el?.querySelector('input:checked');"
        " if (checked) return checked.value;"
        " return el?.querySelector('input[type=number]')?.value ?? null; })", SETTING_IDS)


def expected_controls(settings: SamplingSettings) -> list[str]:
    """The controls' values for these settings, as the page's inputs hold them (text)."""
    return [value if isinstance(value, str) else f"{value:g}"
            for value in SettingsControls.shown(settings)]


def set_seed(page, value: str) -> None:
    box = page.locator("#seed input")
    box.fill(value)
    box.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#seed input')?.value === '{value}'")


def set_think(page, choice: str) -> None:
    page.locator("#think").get_by_label(choice, exact=True).check()
    page.wait_for_function(
        f"() => document.querySelector('#think input:checked')?.value === '{choice}'")


def open_conversation(page, title: str, opened: str) -> None:
    """Click a conversation in the sidebar until the page shows it (`opened`, a JavaScript
    condition): a click that lands while the list is being re-rendered is lost."""
    for _ in range(3):
        page.locator("#conversations label", has_text=title).first.click()
        try:
            page.wait_for_function(f"() => {opened}", timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the conversation {title!r} did not open")


def test_reopening_a_conversation_restores_every_setting_it_was_sent_with(page, artifacts):
    defaults = load_registry(SHIPPED_MODELS).get("smollm2-135m").defaults
    first = defaults.model_copy(update={"seed": 1234, "temperature": 0.35, "think": False,
                                        "max_new_tokens": 8})
    second = defaults.model_copy(update={"seed": 99, "temperature": 1.2, "think": True,
                                         "thinking_budget": 50, "max_new_tokens": 8})
    page.get_by_text("Parameters").click()
    set_number(page, "max-new-tokens", "8")
    set_number(page, "temperature", "0.35")
    set_seed(page, "1234")
    set_think(page, "off")
    box = page.locator("#message textarea")
    box.fill("Name the capital of France.")
    box.press("Enter")
    wait_for_finished_reply(page, 1)

    start_new_chat(page)
    set_number(page, "temperature", "1.2")
    set_seed(page, "99")
    set_think(page, "on")
    set_number(page, "thinking-budget", "50")
    box.fill("Say hello.")
    box.press("Enter")
    wait_for_finished_reply(page, 1)

    page.locator("#conversations label", has_text="Say hello.").first.wait_for()
    for title, sent in (("Name the capital of France.", first), ("Say hello.", second)):
        open_conversation(page, title, f"document.querySelector('#seed input')?.value === "
                                       f"'{sent.seed}'")
        assert shown_settings(page) == expected_controls(sent), title
    page.screenshot(path=str(artifacts / "settings-restored.png"), full_page=True)
