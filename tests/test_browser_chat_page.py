"""The chat page in chromium: the context meter, the chat's trash button, duplicate titles
in the sidebar, and Compare's pane titles (issue #29's first hour without surprises)."""
from __future__ import annotations

import re

import pytest
from gradio_client import Client

from tests.test_browser import (  # noqa: F401 - `page` is a fixture
    last_reply,
    page,
    pick,
    set_number,
    start_new_chat,
    use_greedy_decoding,
    wait_for_finished_reply,
)

pytestmark = pytest.mark.slow  # drives the app in chromium

METER = re.compile(r"system (\d+) \+ history (\d+) \+ draft (\d+)(?: \+ attachments (\d+))?"
                   r" = (\d+) of (\d+) tokens")
SMOLLM2 = "SmolLM2 135M Instruct (Q4_1)"
SMOLLM2_HF = "SmolLM2 135M Instruct [transformers · 4bit nf4 · auto]"


def meter_text(page) -> str:
    return page.locator("#context-meter").inner_text()


def wait_for_meter(page, pattern: str) -> str:
    """Wait until the meter's text matches the JavaScript regex `pattern`; returns it."""
    page.wait_for_function(
        "(p) => new RegExp(p).test(document.querySelector('#context-meter')?.innerText || '')",
        arg=pattern, timeout=30_000)
    return meter_text(page)


def short_greedy_replies(page) -> None:
    """Short greedy replies: the tests need a finished reply, not a long one."""
    use_greedy_decoding(page)
    set_number(page, "max-new-tokens", "24")


def send(page, text: str, replies: int) -> None:
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")
    wait_for_finished_reply(page, replies)


def unload(page, model: str) -> None:
    """Unload `model` (its name in the Models tab's picker) there, loaded or not."""
    page.get_by_role("tab", name="Models").click()
    pick(page, "models-choice", model)
    page.locator("#models-unload").click()
    page.wait_for_function(
        "() => /Unloaded|was not loaded/.test("
        "document.querySelector('#models-outcome')?.innerText)", timeout=30_000)


def test_the_meter_follows_a_new_chat_and_a_new_model(page):
    short_greedy_replies(page)
    send(page, "Name the capital of France.", 1)
    wait_for_meter(page, r"history [1-9]\d*")
    start_new_chat(page)
    fresh = wait_for_meter(page, r"history 0 \+ draft 0 ")
    assert METER.search(fresh), fresh

    unload(page, "SmolLM2 135M Instruct")  # another test of this session may have loaded it
    page.get_by_role("tab", name="Chat").click()
    pick(page, "model", SMOLLM2_HF)  # not loaded: the meter says when it will count
    other = wait_for_meter(page, "counted once")
    assert SMOLLM2_HF in other, other
    pick(page, "model", SMOLLM2)
    assert METER.search(wait_for_meter(page, r"history 0 \+ draft 0 "))


def test_the_chat_trash_deletes_the_conversation_after_asking(page, running_app):
    short_greedy_replies(page)
    question = "Trash test: name the capital of Peru."
    send(page, question, 1)
    sidebar = page.locator("#conversations")
    sidebar.get_by_text("Trash test", exact=False).wait_for(timeout=30_000)
    trash = page.locator("#chatbot").get_by_label("Delete this conversation")  # its catalog words

    trash.click()
    page.locator("#confirm-delete-no").click()  # Keep: nothing is lost, the chat stays
    page.wait_for_function("() => document.querySelector('#sidebar-status')?.innerText"
                           ".includes('Kept')", timeout=30_000)
    assert question in page.locator("#chatbot").inner_text()
    assert "Trash test" in sidebar.inner_text()

    trash.click()
    page.locator("#confirm-delete-yes").click()
    page.wait_for_function("() => !document.querySelector('#conversations')?.innerText"
                           ".includes('Trash test')", timeout=30_000)
    assert question not in page.locator("#chatbot").inner_text()
    stored = Client(running_app.url, verbose=False).predict("", api_name="/conversations")
    assert not [c for c in stored if c["title"].startswith("Trash test")], stored


def test_two_conversations_with_one_title_read_differently(page):
    short_greedy_replies(page)
    for _ in range(2):
        start_new_chat(page)
        send(page, "Twin title: say hello.", 1)
    entries = page.locator("#conversations label", has_text="Twin title")
    page.wait_for_function("() => [...document.querySelectorAll('#conversations label')]"
                           ".filter(e => e.innerText.includes('Twin title')).length === 2",
                           timeout=30_000)
    texts = entries.all_inner_texts()
    assert len(set(texts)) == 2, texts


def test_compare_pane_title_does_not_cover_the_question(page, artifacts):
    page.set_viewport_size({"width": 760, "height": 900})  # half a laptop's screen
    page.get_by_role("tab", name="Compare").click()
    for pane in (0, 1):
        pick(page, f"compare-model-{pane}", SMOLLM2)
        page.locator(f"#compare-settings-{pane}").get_by_text("Settings").click()
        set_number(page, f"compare-max-new-tokens-{pane}", "24")
    box = page.locator("#compare-message textarea")
    box.fill("Name the capital of France in one word, and say nothing else at all.")
    box.press("Enter")
    page.wait_for_function(
        "() => [0, 1].every(i => (document.querySelector(`#compare-pane-${i}`)?.innerText"
        " || '').includes('tokens/s'))", timeout=120_000)
    page.screenshot(path=str(artifacts / "compare-pane-titles.png"), full_page=True)
    boxes = page.evaluate("""() => {
        const pane = document.querySelector('#compare-pane-1');
        const label = pane.querySelector('[data-testid="block-label"]');
        const user = pane.querySelector("[data-testid='user']");
        // The question as a person sees it after scrolling the pane back to the top.
        for (let e = user.parentElement; e && e !== pane.parentElement; e = e.parentElement)
            if (e.scrollHeight > e.clientHeight) e.scrollTop = 0;
        const box = e => { const r = e.getBoundingClientRect();
                           return [r.left, r.top, r.right, r.bottom]; };
        return {label: box(label), title: label.innerText, user: box(user)};
    }""")
    label, user = boxes["label"], boxes["user"]
    assert SMOLLM2 in boxes["title"], boxes  # the title names the model: it is long
    overlap = (min(label[2], user[2]) > max(label[0], user[0])
               and min(label[3], user[3]) > max(label[1], user[1]))
    assert not overlap, f"pane B's title covers the question: {boxes}"


def test_the_meter_counts_the_template_prompt_and_an_attachment_once(page, tmp_path):
    notes = tmp_path / "ferry.md"
    notes.write_text("# Trip\n\nThe ferry to Bohol leaves at 7:40 from pier 3. Bring a hat,"
                     " water and the printed ticket; the office closes at noon.\n",
                     encoding="utf-8")
    short_greedy_replies(page)
    send(page, "Name the capital of France.", 1)  # the model is loaded: the meter counts
    page.reload()  # an empty chat
    page.locator("#message textarea").wait_for(timeout=30_000)
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files(str(notes))
    page.wait_for_function("() => document.querySelector('#attachments')?.innerText"
                           ".includes('ferry.md')", timeout=30_000)
    found = METER.search(wait_for_meter(page, "attachments"))
    assert found, meter_text(page)
    system, history, draft, attached, total, _ = (int(n) for n in found.groups())
    chip = page.locator("#attachments").inner_text()
    chip_tokens = int(re.search(r"(\d+) tokens", chip).group(1))
    # The empty system box still sends SmolLM2's own default system prompt.
    assert system > 15, meter_text(page)
    assert draft == 0 and history == 0, meter_text(page)  # nothing typed, nothing said
    assert attached == chip_tokens, (meter_text(page), chip)
    assert system + history + draft + attached == total, meter_text(page)
