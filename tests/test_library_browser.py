"""The model library in a real browser (Debian chromium through Playwright): scan a folder,
see the fit badge, add the model, pick it in the Chat tab and get a streamed reply, on an
app of its own so the other tests' model lists stay as they are."""
from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import sync_playwright

from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS, RunningApp, start_app
from tests.test_browser import CHROMIUM_ARGS, pick, use_greedy_decoding, wait_for_finished_reply

pytestmark = pytest.mark.slow  # starts the app and drives it in chromium

ADDED_NAME = "tiny-assistant.Q4_1.gguf"


@pytest.fixture(scope="module")
def library_app(tmp_path_factory, smollm2_path) -> Iterator[tuple[RunningApp, Path, Path]]:
    folder = tmp_path_factory.mktemp("my-models")
    shutil.copy(smollm2_path, folder / ADDED_NAME)
    data = tmp_path_factory.mktemp("library-data")
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(data)])
    yield app, folder, data
    app.stop()


def api_ids(app: RunningApp) -> list[str]:
    return [m["id"] for m in httpx.get(f"{app.url}v1/models", timeout=30).json()["data"]]


def test_scan_add_and_chat_with_a_found_model(library_app, chromium_path, artifacts):
    app, folder, _ = library_app
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(app.url)
        page.locator("#message textarea").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Models").click()
        page.locator("#scan-folder textarea").fill(str(folder))
        page.locator("#scan").click()
        page.wait_for_function(
            f"() => document.querySelector('#scan-table')?.innerText.includes({ADDED_NAME!r})",
            timeout=60_000)
        page.wait_for_function(
            "() => document.querySelector('#add-fit')?.innerText.includes('fits')",
            timeout=60_000)
        badge = page.locator("#add-fit").inner_text()
        assert "needs" in badge and "budget on cpu" in badge
        page.screenshot(path=str(artifacts / "model-library.png"), full_page=True)
        page.locator("#add").click()
        page.wait_for_function(
            "() => document.querySelector('#models-outcome')?.innerText.includes('Added')",
            timeout=30_000)
        page.get_by_role("tab", name="Chat").click()
        pick(page, "model", ADDED_NAME)
        use_greedy_decoding(page)
        box = page.locator("#message textarea")
        box.fill(CAPITAL_PROMPT)
        box.press("Enter")
        answer = wait_for_finished_reply(page, 1)
        assert "Paris" in answer and ADDED_NAME in answer
        browser.close()
    assert "tiny-assistant-q4_1" in api_ids(app)  # the API lists it too, without a restart


def test_a_hand_edit_is_read_on_sighup_and_a_bad_one_is_refused(library_app):
    app, folder, data = library_app
    personal = data / "models.yaml"
    models = yaml.safe_load(personal.read_text())["models"]
    personal.write_text(yaml.safe_dump({"models": models + [
        {"id": "hand-edited", "backend": "llamacpp", "path": str(folder / ADDED_NAME)}]}))
    app.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while "hand-edited" not in api_ids(app) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "hand-edited" in api_ids(app)
    personal.write_text("models: [oops")
    app.process.send_signal(signal.SIGHUP)
    while "registry not reloaded" not in "".join(app.output) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "registry not reloaded, the last good one stays" in "".join(app.output)
    assert "hand-edited" in api_ids(app)  # the last good registry serves on
