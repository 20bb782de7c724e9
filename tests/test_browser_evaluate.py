"""The Evaluate tab in a real browser, on an app of its own whose data folder holds finished
runs (seeded through the real EvalStore, as a run would have left them), plus one real
SmolLM2 run for what only a running run shows: the status line and the time left."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from backends.sampling import SamplingSettings
from chatcore.conversations.store import Store
from chatcore.evaluate.prompt_sets import EvalPrompt, make_set
from chatcore.evaluate.store import Candidate, EvalReply, EvalStore
from tests.conftest import SHIPPED_MODELS, RunningApp, start_app
from tests.test_browser import CHROMIUM_ARGS, pick, set_number

pytestmark = pytest.mark.slow  # drives an app in chromium

Q4 = "SmolLM2 135M Instruct (Q4_1)"
HAIKU = "line one\nline two\nline three"
# A reply of three lines, the middle one markup a model could write: it must stay text.
MARKUP = 'first line\n<img src=x onerror="window.__pwned = 1">second line\nthird line'
# Prompts SmolLM2 answers at length: the run lasts long enough to watch its time left.
STORIES = ["Write a long story about a brave cat.", "Write a long story about a lost dog."]
LEFT = re.compile(r"(\d+) of \d+ replies.*about (\d+) s left")


def seed_run(evals: EvalStore, set_name: str, replies: list[str]) -> int:
    """A finished run of one prompt over two candidates, as the runner stores it."""
    params = SamplingSettings().model_dump()
    candidates = [Candidate("smollm2-135m", "SmolLM2 A", params),
                  Candidate("smollm2-135m", "SmolLM2 B", params)]
    run_id = evals.create_run("", set_name, [EvalPrompt("Write a haiku.", "poems")],
                              candidates, state="done")
    now = time.time()
    for index, content in enumerate(replies):
        evals.finish_reply(run_id, EvalReply(0, index, "done", content, 0.1, 30.0, 12,
                                             "stop", started=now - 1))
    return run_id


@pytest.fixture(scope="module")
def seeded_app(tmp_path_factory) -> Iterator[RunningApp]:
    data_dir = tmp_path_factory.mktemp("eval-data")
    store = Store(data_dir)
    evals = EvalStore(store)
    seed_run(evals, "Poems", [HAIKU, MARKUP])
    seed_run(evals, "Newest poems", [HAIKU, HAIKU])
    evals.save_prompt_set("", make_set("Stories", [EvalPrompt(text) for text in STORIES]))
    store.close()
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(data_dir)])
    yield app
    app.stop()


@pytest.fixture()
def eval_page(chromium_path, seeded_app):
    """The page, freshly loaded, on the Evaluate tab."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        page.goto(seeded_app.url)
        page.locator("#message textarea").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#eval-run").wait_for(timeout=30_000)
        # The page opens the newest run once it has loaded; a pick made before that lands
        # would be replaced by it, so the tests start after it.
        page.wait_for_function(
            "() => document.querySelector('#eval-run input')?.value.startsWith('#')",
            timeout=60_000)
        yield page
        browser.close()


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def visual_lines(page, elem_id: str) -> list[str]:
    """The element's text as the browser lays it out, one entry a line, once Gradio's
    progress timer ("0.1s"), shown over it while it updates, is gone."""
    page.wait_for_function(
        "id => !/^\\s*\\d+(\\.\\d+)?s\\s*$/m.test("
        "document.querySelector('#' + id)?.innerText ?? '0s')", arg=elem_id, timeout=30_000)
    return [line.strip() for line in text_of(page, elem_id).splitlines() if line.strip()]


def open_run(page, prefix: str) -> None:
    """Pick the run whose choice starts with `prefix` ("#1 · Poems") in the Run dropdown."""
    page.locator("#eval-run input").click()
    page.locator("#eval-run").get_by_role("option").filter(has_text=prefix).first.click()
    page.wait_for_function(
        f"() => document.querySelector('#eval-run input')?.value.startsWith({prefix!r})",
        timeout=30_000)


def test_a_reply_of_three_lines_is_reviewed_as_three_lines_and_stays_inert(eval_page,
                                                                           artifacts):
    page = eval_page
    open_run(page, "#1 · Poems")
    page.wait_for_function("() => document.querySelector('#review-header')?.innerText"
                           ".includes('Pair 1 of 1')", timeout=30_000)
    replies = {text_of(page, "review-reply-a"), text_of(page, "review-reply-b")}
    assert any("line two" in r for r in replies), f"the haiku is not on the page: {replies}"
    for elem_id in ("review-reply-a", "review-reply-b"):
        lines = visual_lines(page, elem_id)
        assert len(lines) == 3, f"#{elem_id} shows {len(lines)} line(s), not 3: {lines}"
    assert any(line == "second line" for side in ("review-reply-a", "review-reply-b")
               for line in visual_lines(page, side)), "the markup line lost its text"
    page.locator("#review-reply-a").hover()
    page.locator("#review-reply-b").hover()
    assert page.evaluate("() => window.__pwned") is None, "markup from a reply ran"
    live = page.evaluate("""() => [...document.querySelectorAll(
        '#review-reply-a *, #review-reply-b *')].filter(e =>
        [...e.attributes].some(a => a.name.startsWith('on')) ||
        ['SCRIPT', 'IFRAME'].includes(e.tagName)).map(e => e.outerHTML)""")
    assert live == [], f"live markup in the review: {live}"
    page.screenshot(path=str(artifacts / "evaluate-review-lines.png"), full_page=True)


def test_after_a_reload_the_newest_run_is_open_and_reviewed(eval_page):
    page = eval_page
    page.wait_for_function("() => document.querySelector('#eval-run input')?.value"
                           ".startsWith('#2 · Newest poems')", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#review-header')?.innerText"
                           ".includes('Pair 1 of 1')", timeout=30_000)
    assert "Start a run" not in text_of(page, "review-header")
    assert "line two" in text_of(page, "review-reply-a")
    assert "2 of 2 replies · done" in text_of(page, "eval-progress")


def add_prompt(page, name: str, prompt: str, category: str) -> None:
    """A new set named `name` with one prompt added (not saved yet)."""
    page.locator("#eval-set-new").click()
    page.wait_for_function("() => document.querySelector('#eval-set-status')?.innerText"
                           ".includes('A new set')", timeout=30_000)  # its fields are empty
    page.locator("#eval-set-name textarea").fill(name)
    page.locator("#eval-new-prompt textarea").fill(prompt)
    page.locator("#eval-new-category textarea").fill(category)
    page.locator("#eval-add-prompt").click()
    page.wait_for_function(f"() => document.querySelector('#eval-set-rows')?.innerText"
                           f".includes({prompt!r})", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#eval-new-prompt textarea')"
                           "?.value === ''", timeout=30_000)


def test_add_prompt_clears_the_category_too(eval_page):
    add_prompt(eval_page, "Rain set", "Write a haiku about rain.", "poems")
    assert eval_page.locator("#eval-new-category textarea").input_value() == "", \
        "the category stayed after Add prompt"


def test_save_set_confirms_what_it_saved(eval_page):
    page = eval_page
    add_prompt(page, "Haiku set", "Write a haiku about snow.", "poems")
    page.locator("#eval-set-save").click()
    page.wait_for_function("() => document.querySelector('#eval-set input')?.value"
                           " === 'Haiku set (1)'", timeout=30_000)
    page.wait_for_timeout(3_000)  # the picker's own change event has answered by now
    assert "Saved “Haiku set” (1 prompt)." in text_of(page, "eval-set-status"), \
        f"no confirmation after Save set: {text_of(page, 'eval-set-status')!r}"


def test_a_run_s_status_line_and_time_left_follow_it_to_done(eval_page, seeded_app,
                                                             artifacts):
    page = eval_page
    pick(page, "eval-set", "Stories (2)")
    for index in (0, 1):
        pick(page, f"eval-model-{index}", Q4)
        page.locator(f"#eval-settings-{index}").get_by_text("Settings").click()
        set_number(page, f"eval-max-new-tokens-{index}", "200")  # seconds enough to count down
    page.locator("#eval-start").click()
    page.wait_for_function("() => document.querySelector('#eval-run-status')?.innerText"
                           ".includes('started: 2 prompts × 2 models')", timeout=30_000)
    seen: list[str] = []
    deadline = time.monotonic() + 600  # a loaded machine
    while time.monotonic() < deadline:
        seen.append(text_of(page, "eval-progress"))
        if "4 of 4 replies · done" in seen[-1]:
            break
        page.wait_for_timeout(200)
    assert "4 of 4 replies · done" in seen[-1], \
        f"the run did not end: {seen[-1]!r}; the app said:\n{''.join(seeded_app.output[-20:])}"
    assert "left" not in seen[-1], f"a time left after the run ended: {seen[-1]!r}"
    try:  # the status line follows the run it started to its end
        page.wait_for_function("() => document.querySelector('#eval-run-status')"
                               "?.innerText.includes('Run #3: done.')", timeout=30_000)
    except PlaywrightTimeout:
        raise AssertionError("the status line still says: "
                             f"{text_of(page, 'eval-run-status')!r}") from None
    # Within one count of finished replies, the estimate goes down as the replies go on.
    estimates: dict[str, list[int]] = {}
    for line in seen:
        if match := LEFT.search(line):
            values = estimates.setdefault(match[1], [])
            if not values or values[-1] != int(match[2]):
                values.append(int(match[2]))
    longest = max(estimates.values(), key=len, default=[])
    assert len(longest) >= 2 and longest == sorted(set(longest), reverse=True), \
        f"the time left did not count down while replies ran: {estimates}"
    page.screenshot(path=str(artifacts / "evaluate-run-done.png"), full_page=True)
