"""The page in Filipino for a Filipino browser from the first document, the switch, and the
choice kept in the store across a reload and a restart; an English browser gets English; the
page and its config travel compressed. Debian chromium through Playwright, with the
browser's locale set as a person's would be."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import sync_playwright

from chatcore.i18n import load_texts
from tests.conftest import SHIPPED_MODELS, start_app
from tests.test_browser import CHROMIUM_ARGS, last_reply

pytestmark = pytest.mark.slow  # drives the app in chromium

FIL, EN = load_texts("fil"), load_texts("en")
FILIPINO_BROWSER = {"locale": "fil-PH",
                    "extra_http_headers": {"Accept-Language": "fil-PH,fil;q=0.9,en;q=0.5"}}
# Every document the tab parses, as [path, <html lang>] when it is parsed: kept in the tab's
# sessionStorage, which outlives a navigation to another page of the app.
RECORD_DOCUMENTS_JS = """document.addEventListener('DOMContentLoaded', () => {
  const seen = JSON.parse(sessionStorage.getItem('documents') || '[]');
  seen.push([location.pathname, document.documentElement.lang]);
  sessionStorage.setItem('documents', JSON.stringify(seen));
});"""
WIRE_LIMIT = 150_000  # bytes: the page's document and /config, compressed
# Everything the page says to a screen reader through Gradio's status announcer.
RECORD_ANNOUNCEMENTS_JS = """window.announced = [];
new MutationObserver(() => {
  for (const region of document.querySelectorAll('.sr-only[role=status]')) {
    const text = region.textContent.trim();
    if (text && window.announced.at(-1) !== text) window.announced.push(text);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });"""


def open_page(playwright, chromium_path: str, url: str, locale: str):
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale=locale)
    page = context.new_page()
    page.goto(url)
    page.locator("#message textarea").wait_for(timeout=30_000)
    return browser, page


def at(page, path: str, language: str) -> None:
    """Wait until the browser has settled on `path` (`/` or `/fil`) in `language`: the page
    sets <html lang> once it knows it is the right one."""
    page.wait_for_function(
        "([path, language]) => (location.pathname.replace(/\\/$/, '') || '/') === path"
        " && document.documentElement.lang === language", arg=[path, language],
        timeout=30_000)
    page.locator("#message textarea").wait_for(timeout=30_000)


def shows(page, texts) -> None:
    """The page's words are `texts`' own: tab names, Send and Stop."""
    for key in ("app.chat", "app.compare", "app.evaluate", "app.models"):
        page.get_by_role("tab", name=texts(key), exact=True).wait_for(timeout=30_000)
    assert page.locator("#send").inner_text().strip() == texts("chat.send")
    assert page.locator("#stop").inner_text().strip() == texts("chat.stop")


def navigations(page) -> list[str]:
    """The paths the tab's main frame goes to from now on (redirects it follows never
    show a document, so they are not among them)."""
    paths: list[str] = []
    page.on("framenavigated", lambda frame: paths.append(
        "/" + frame.url.split("/", 3)[3].split("?")[0]) if frame == page.main_frame else None)
    return paths


def documents(page) -> list[list[str]]:
    return page.evaluate("() => JSON.parse(sessionStorage.getItem('documents') || '[]')")


def meter_reads(page, texts) -> None:
    """The context meter, which counts the draft as it is typed, speaks `texts`' language:
    the full count once the model is loaded, or the note that it counts after loading."""
    page.locator("#message textarea").fill("Kumusta? Hello?")
    line = texts("chat.meter.line", system="0", history="0", draft="0", attachments="",
                 total="0", budget="0", bar="").replace("**", "").strip()
    unloaded = texts("chat.meter.unloaded", model="MODEL")
    pattern = "|".join([re.escape(line).replace("0", r"[\d,]+"),
                        re.escape(unloaded).replace("MODEL", ".+")])
    page.wait_for_function(
        "pattern => new RegExp(pattern).test("
        "document.querySelector('#context-meter')?.innerText || '')", arg=pattern,
        timeout=30_000)


def test_a_filipino_browser_gets_filipino_and_the_switch_holds(chromium_path, tmp_path,
                                                                 artifacts):
    args = ["--models", str(SHIPPED_MODELS), "--data-dir", str(tmp_path / "data")]
    app = start_app(args)
    try:
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, chromium_path, app.url, "fil-PH")
            at(page, "/fil", "fil")
            shows(page, FIL)
            box = page.locator("#message textarea")
            box.fill("Name the capital of France.")  # a short reply; replies are never translated
            box.press("Enter")
            page.wait_for_function(
                "word => [...document.querySelectorAll(\"#chatbot [data-testid='bot']\")]"
                ".some(b => b.innerText.includes(word))", arg=FIL("reply.speed", rate="")
                .strip(), timeout=90_000)
            assert FIL("reply.first_token", seconds="").strip() in last_reply(page)
            meter_reads(page, FIL)
            page.screenshot(path=str(artifacts / "language-fil.png"), full_page=True)

            page.locator("#language input").click()
            page.locator("#language").get_by_role("option", name="English", exact=True).click()
            at(page, "/", "en")
            shows(page, EN)
            meter_reads(page, EN)
            page.reload()
            at(page, "/", "en")  # not back to the browser's language
            shows(page, EN)
            browser.close()
    finally:
        app.stop()

    restarted = start_app(args)  # the choice is the store's, not the process's
    try:
        with sync_playwright() as playwright:
            browser, page = open_page(playwright, chromium_path, restarted.url + "fil",
                                      "fil-PH")
            at(page, "/", "en")  # /fil sends a person who chose English home
            shows(page, EN)
            browser.close()
    finally:
        restarted.stop()


def test_an_english_browser_gets_english(chromium_path, running_app, artifacts):
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, chromium_path, running_app.url, "en-US")
        at(page, "/", "en")
        shows(page, EN)
        meter_reads(page, EN)
        page.screenshot(path=str(artifacts / "language-en.png"), full_page=True)
        browser.close()


def test_a_filipino_browser_never_sees_the_english_page(chromium_path, tmp_path):
    """The server answers `/` with the Filipino page, so nothing English is drawn first and
    nothing typed is lost to a later redirect; after choosing English, `/` stays English."""
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(tmp_path / "data")])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path,
                                                 args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1200, "height": 900},
                                          **FILIPINO_BROWSER)
            context.add_init_script(RECORD_DOCUMENTS_JS)
            page = context.new_page()
            shown = navigations(page)
            page.goto(app.url)
            at(page, "/fil", "fil")
            shows(page, FIL)
            assert shown == ["/fil"], f"the tab showed these pages in turn: {shown}"
            assert documents(page) == [["/fil", "fil"]], \
                f"documents parsed as [path, lang]: {documents(page)}"

            page.locator("#language input").click()
            page.locator("#language").get_by_role("option", name="English", exact=True).click()
            at(page, "/", "en")
            again = context.new_page()  # the same person, a Filipino browser, a new tab
            shown = navigations(again)
            again.goto(app.url)
            at(again, "/", "en")
            shows(again, EN)
            assert shown == ["/"], f"the tab showed these pages in turn: {shown}"
            assert documents(again) == [["/", "en"]], \
                f"documents parsed as [path, lang]: {documents(again)}"
            browser.close()
    finally:
        app.stop()


def test_the_page_and_its_config_arrive_compressed(chromium_path, running_app):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_context(locale="en-US").new_page()
        with page.expect_request_finished(lambda r: r.resource_type == "document") as doc:
            page.goto(running_app.url)
        page.locator("#message textarea").wait_for(timeout=30_000)
        with page.expect_request_finished(lambda r: r.url.endswith("/config")) as config:
            length = page.evaluate("() => fetch('config').then(r => r.text())"
                                   ".then(text => text.length)")
        for name, request in (("the page", doc.value), ("/config", config.value)):
            wire = request.sizes()["responseBodySize"]
            encoding = request.response().headers.get("content-encoding")
            assert encoding == "gzip" and wire < WIRE_LIMIT, \
                f"{name}: {wire:,} bytes on the wire, Content-Encoding {encoding}"
        assert length > WIRE_LIMIT, f"/config is {length:,} characters: not the whole config"
        browser.close()


@pytest.mark.parametrize(("path", "locale", "texts"), [("", "en-US", EN), ("fil", "fil-PH", FIL)],
                         ids=["en", "fil"])
def test_a_screen_reader_hears_done_in_the_pages_language(chromium_path, running_app, path,
                                                          locale, texts):
    """Gradio announces a finished action as `common.complete`, a key its own catalogs
    lack; the page gives it the word in its language."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(locale=locale)
        context.add_init_script(RECORD_ANNOUNCEMENTS_JS)
        page = context.new_page()
        page.goto(running_app.url + path)
        at(page, "/" + path, texts.language)
        page.wait_for_function(  # the page's first events finish as it opens
            "words => window.announced.some(text => words.includes(text))",
            arg=["common.complete", texts("app.done")], timeout=30_000)
        announced = page.evaluate("window.announced")
        assert texts("app.done") in announced and "common.complete" not in announced, \
            f"a screen reader heard: {announced}"
        browser.close()
