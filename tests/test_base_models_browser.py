"""A base model found on disk, as a person meets it in chromium: Scan, Add, and it is in
completion mode, says why, and continues a sentence; an instruct model beside it keeps
chat mode; one click puts the base model in chat mode, with the guessed template marked
in the picker before it loads. On an app of its own, so other tests' lists stay as they are."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import sync_playwright

from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS, RunningApp, start_app
from tests.test_browser import (CHROMIUM_ARGS, pick, set_number, start_new_chat,
                                use_greedy_decoding, wait_for_finished_reply)

pytestmark = pytest.mark.slow  # starts the app and drives it in chromium

BASE = "SmolLM2-135M-base.Q4_1.gguf"  # no template, nothing says instruct: like Gemma 3 270M
INSTRUCT = "SmolLM2-135M-Instruct.Q4_1.gguf"  # SmolLM2 as shipped, with its template
# What chat turns look like in SmolLM2's format: a completion must not echo them.
CHAT_FORMAT = ("<|im_start|>", "<|im_end|>", "assistant\n", "user\n")


@pytest.fixture(scope="module")
def base_app(tmp_path_factory, base_gguf, smollm2_path) -> Iterator[tuple[RunningApp, Path,
                                                                          Path]]:
    folder = tmp_path_factory.mktemp("found-models")
    try:
        os.link(base_gguf, folder / BASE)
    except OSError:
        shutil.copy(base_gguf, folder / BASE)
    (folder / INSTRUCT).symlink_to(smollm2_path)
    data = tmp_path_factory.mktemp("base-data")
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(data)])
    yield app, folder, data
    app.stop()


def add_found(page, name: str) -> str:
    """Pick a scanned model by its name, press Add, and return what the page said."""
    label = f"{name} (folder)"
    # Typed, then Enter, as a person at the keyboard does: the list of candidates opens at
    # the page's foot, where a click on an option may fall outside the window.
    field = page.locator("#add-candidate input")
    field.click()
    field.fill(label)
    field.press("Enter")
    page.wait_for_function(
        "(label) => document.querySelector('#add-candidate input')?.value === label",
        arg=label)
    page.locator("#add").click()
    page.wait_for_function(
        "(name) => document.querySelector('#models-outcome')?.innerText.includes(name)",
        arg=name, timeout=30_000)
    return page.locator("#models-outcome").inner_text()


def pick_model(page, label: str) -> list[str]:
    """Pick `label` in the Chat tab's model picker; returns every label it offered, as a
    person reads them when it opens (the label is looked for among them: a failing test
    shows them all)."""
    page.locator("#model input").click()
    options = page.locator("#model [role=option]")
    options.first.wait_for(timeout=30_000)
    labels = [text.strip() for text in options.all_inner_texts()]
    assert label in labels, labels
    page.locator("#model").get_by_role("option", name=label, exact=True).click()
    page.wait_for_function(
        "(label) => document.querySelector('#model input')?.value === label", arg=label,
        timeout=30_000)
    return labels


def saved_template(data: Path, name: str) -> str | None:
    entries = yaml.safe_load((data / "models.yaml").read_text())["models"]
    return next(e for e in entries if e["name"] == name).get("chat_template")


def test_a_base_model_is_added_in_completion_mode_and_an_instruct_one_keeps_chat_mode(
        base_app, chromium_path, artifacts):
    app, folder, data = base_app
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(app.url)
        page.locator("#message textarea").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Models").click()
        page.locator("#scan-folder textarea").fill(str(folder))
        page.locator("#scan").click()
        page.wait_for_function(
            f"() => ['{BASE}', '{INSTRUCT}'].every(n => document.querySelector("
            "'#scan-table')?.innerText.includes(n))", timeout=60_000)

        said = add_found(page, BASE)
        assert "looks like a base model" in said and "added in completion mode" in said, said
        page.screenshot(path=str(artifacts / "base-model-added.png"), full_page=True)
        said = add_found(page, INSTRUCT)
        assert "base model" not in said and "completion mode" not in said, said
        assert saved_template(data, BASE) == "none"
        assert saved_template(data, INSTRUCT) is None  # the model's own template

        page.get_by_role("tab", name="Chat").click()
        labels = pick_model(page, f"{BASE} · completion mode")
        assert INSTRUCT in labels, labels  # chat mode, no mark
        use_greedy_decoding(page)
        set_number(page, "max-new-tokens", "24")
        box = page.locator("#message textarea")
        box.fill("The capital of France is")
        box.press("Enter")
        continued = wait_for_finished_reply(page, 1)
        assert "Paris" in continued, continued
        assert not any(marker in continued for marker in CHAT_FORMAT), continued
        start_new_chat(page)  # the question alone, not after the completion
        pick_model(page, INSTRUCT)  # a new model brings its own defaults: greedy again
        set_number(page, "temperature", "0")  # the Parameters are still open
        set_number(page, "max-new-tokens", "24")
        box.fill(CAPITAL_PROMPT)
        box.press("Enter")
        answered = wait_for_finished_reply(page, 1)
        assert "Paris" in answered, answered

        page.get_by_role("tab", name="Models").click()
        pick(page, "models-choice", BASE)
        page.locator("#library-edit").get_by_text("Edit the selected model").click()
        switch = page.locator("#edit-mode")
        page.wait_for_function(
            "() => document.querySelector('#edit-mode')?.innerText.includes('chat mode')",
            timeout=30_000)
        switch.click()
        page.wait_for_function(
            "() => document.querySelector('#models-outcome')?.innerText"
            ".includes('in chat mode now')", timeout=30_000)
        assert saved_template(data, BASE) == "llama3"  # kept in the person's models.yaml
        page.get_by_role("tab", name="Chat").click()
        pick_model(page, f"{BASE} ⚠ template")  # marked before it loads again
        page.screenshot(path=str(artifacts / "base-model-chat-mode.png"), full_page=True)
        browser.close()
