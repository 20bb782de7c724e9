"""Each tab in each language, as a person first sees it: its own words from that language's
catalog, nothing from the other catalog on the screen, and a screenshot of it in
test-artifacts/ (the ones in docs/ are copied from there and looked at)."""
from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

from chatcore.i18n import load_texts
from tests.test_browser import CHROMIUM_ARGS

pytestmark = pytest.mark.slow  # drives the app in chromium

# What each tab shows once it is open: an element that only that tab has, and catalog keys
# of words it must show in the page's language.
TABS = {
    "models": ("#models-table", ["models.load", "models.unload", "library.scan.title"]),
    "compare": ("#compare-send", ["compare.send", "compare.leaderboard", "compare.tie"]),
    "evaluate": ("#eval-start", ["evaluate.run.start", "evaluate.sets.box", "evaluate.run.box"]),
}
# Words of each language's tabs that only that language has (the English page must not show
# the Filipino ones and the other way round).
TAB_KEYS = [key for _, keys in TABS.values() for key in keys]


@pytest.mark.parametrize("language", ["en", "fil"])
def test_each_tab_speaks_the_page_language(chromium_path, running_app, artifacts, language):
    texts, other = load_texts(language), load_texts("fil" if language == "en" else "en")
    url = running_app.url.rstrip("/") + ("/fil" if language == "fil" else "/")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900},
                                   locale="fil-PH" if language == "fil" else "en-US").new_page()
        try:
            page.goto(url)
            page.locator("#message textarea").wait_for(timeout=30_000)
            for tab, (marker, keys) in TABS.items():
                page.get_by_role("tab", name=texts(f"app.{tab}"), exact=True).click()
                page.locator(marker).wait_for(state="visible", timeout=30_000)
                page.wait_for_timeout(1500)  # the tab's lists fill after it is shown
                shown = page.locator("body").inner_text()
                missing = [key for key in keys if texts(key) not in shown]
                assert missing == [], f"the {tab} tab in {language} lacks {missing}"
                foreign = [other(key) for key in TAB_KEYS
                           if other(key) != texts(key) and other(key) in shown]
                assert foreign == [], f"the {tab} tab in {language} shows {foreign}"
                page.screenshot(path=str(artifacts / f"tab-{tab}-{language}.png"),
                                full_page=True)
        finally:
            browser.close()
