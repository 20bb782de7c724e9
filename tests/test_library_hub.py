"""The library and the Hub: fit before download, download, the model in the registry and
answering, from the library, the Models tab's handlers, the command line and a browser.

The real huggingface_hub library talks to tests/hub_server.py on 127.0.0.1 (the real Hub is
out of reach here): in this process through `endpoint=` and huggingface_hub's cache setting,
in the app's process through HF_ENDPOINT and HF_HUB_CACHE.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import sync_playwright

from backends.base import GenParams, Message
from backends.sampling import SamplingSettings
from backends.llamacpp_memory import llamacpp_estimate
from chatcore.generation.registry import CPU_PARALLEL
from chatcore.generation.registry import load_layered_registry
from chatcore.generation.factory import make_backend
from chatcore.library.fit import WeightsCheck
from chatcore.library.hub import Hub
from chatcore.library.model_library import ModelLibrary
from chatcore.library.errors import NotAllowed
from chatcore.generation.manager import ModelManager, ModelState
from chatcore.generation.memory import MemoryBudget
from chatcore.i18n import english
from chatui.library_handlers import LibraryHandlers
from tests.conftest import CAPITAL_PROMPT, ROOT, SHIPPED_MODELS, SMOLLM2_FILE, start_app
from tests.hub_server import HubServer
from tests.test_browser import CHROMIUM_ARGS, pick, use_greedy_decoding, wait_for_finished_reply
from tests.test_hub import SMOL, hub_root, server  # noqa: F401 - the served repos, the server
from tests.fakes import reply_chunks
from tests.helpers import greedy

FITS_BADGE = '<span class="fit-badge fit-fits">fits</span>'  # a word, coloured by CSS

SAFETY_S = 120  # a hang guard, not a timing


@pytest.fixture(autouse=True)
def this_cache(tmp_path: Path, server: HubServer, monkeypatch) -> Path:  # noqa: F811
    """huggingface_hub's cache for this test, read by downloads and by model lookups."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server.clear()
    server.reset_counters()
    yield cache
    server.clear()


def library_with_hub(tmp_path: Path, server: HubServer, cache: Path,  # noqa: F811
                     personal_entries: list[dict] | None = None, admins=None) -> ModelLibrary:
    personal = tmp_path / "data" / "models.yaml"
    if personal_entries:
        personal.parent.mkdir(parents=True)
        personal.write_text(yaml.safe_dump({"models": personal_entries}))
    manager = ModelManager(load_layered_registry(SHIPPED_MODELS, personal), make_backend,
                           budget=MemoryBudget({"cpu": 8 * 10**9}), weights_check=WeightsCheck())
    hub = Hub(endpoint=server.endpoint, token=False, timeout=30, cache_dir=cache)
    return ModelLibrary(manager, SHIPPED_MODELS, personal, hub=hub, admins=admins, env={},
                        home=tmp_path / "home")


def answer(manager: ModelManager, model_id: str) -> str:
    return "".join(c.text for c in reply_chunks(
        manager, model_id, [Message("user", CAPITAL_PROMPT)],
        greedy(24)))


@pytest.mark.slow
def test_fit_before_download_then_download_add_and_answer(  # noqa: F811 - fixtures
        tmp_path, server, this_cache, smollm2_path):
    library = library_with_hub(tmp_path, server, this_cache)
    assert [r.repo_id for r in library.search("SmolLM2")] == [SMOL]
    fit = library.hub_fit(SMOL, SMOLLM2_FILE)
    sent = server.bytes_sent(SMOL, SMOLLM2_FILE)
    assert 0 < sent <= 16 * 2**20, sent  # the header only, of a 98 MB file
    assert fit.verdict == "fits"
    assert fit.needs == llamacpp_estimate(smollm2_path, 4096, CPU_PARALLEL).total  # loads' planner
    job = library.download(SMOL, SMOLLM2_FILE)
    done = library.downloads.wait(job, SAFETY_S)
    assert done.state == "done", done
    added = [e for e in library.manager.registry.entries if e.repo == SMOL]
    assert len(added) == 1 and added[0].file == SMOLLM2_FILE
    assert added[0].id in yaml.safe_load(library.personal.read_text())["models"][0]["id"]
    assert library.manager.status(added[0].id).state == ModelState.AVAILABLE
    assert "Paris" in answer(library.manager, added[0].id)
    library.manager.unload_all()
    library.downloads.close()


def test_an_entry_waiting_for_its_file_shows_size_and_fit_and_downloads(  # noqa: F811
        tmp_path, server, this_cache):
    library = library_with_hub(tmp_path, server, this_cache, [
        {"id": "smol-from-hub", "backend": "llamacpp", "repo": SMOL, "file": SMOLLM2_FILE,
         "context_length": 2048}])
    assert library.manager.status("smol-from-hub").state == ModelState.NOT_DOWNLOADED
    assert library.can_download("smol-from-hub")
    assert not library.can_download("smollm2-135m")  # already here
    summary = library.remote_summary("smol-from-hub")
    waited = threading.Event()
    for _ in range(SAFETY_S * 10):
        summary = library.remote_summary("smol-from-hub")
        if summary != "…":
            break
        waited.wait(0.1)
    assert summary == "98 MB · fits", summary
    handlers = LibraryHandlers(library, texts=english())
    assert handlers.download_selected("smol-from-hub").startswith("Downloading the file")
    job = library.downloads.jobs()[0]
    assert library.downloads.wait(job.job_id, SAFETY_S).state == "done"
    assert library.manager.status("smol-from-hub").state == ModelState.AVAILABLE
    assert library.manager.registry.ids.count("smol-from-hub") == 1  # nothing added twice
    assert "done · 98 MB" in handlers.downloads_text()
    library.downloads.close()


def test_hub_failures_are_sentences_and_others_may_not_download(tmp_path, server,  # noqa: F811
                                                                this_cache):
    library = library_with_hub(tmp_path, server, this_cache, admins=["alice"])
    handlers = LibraryHandlers(library, texts=english())
    missing = handlers.hub_files("nobody/nothing")[1]
    assert missing.startswith("⚠️ ") and "nobody/nothing" in missing and "\n" not in missing
    server.fail(SMOL, SMOLLM2_FILE, status=500)
    broken = handlers.hub_fit(SMOL, SMOLLM2_FILE, None)
    assert broken.startswith("⚠️ ") and SMOLLM2_FILE in broken and "500" in broken
    server.clear()
    assert handlers.hub_fit(SMOL, SMOLLM2_FILE, None).startswith(f"**{FITS_BADGE}**")

    class Request:
        username = "bob"

    assert handlers.hub_download(SMOL, SMOLLM2_FILE, Request()).startswith(
        "⚠️ bob may not change the model library")
    with pytest.raises(NotAllowed):
        library.download(SMOL, SMOLLM2_FILE, user="bob")
    assert library.downloads.jobs() == []
    library.downloads.close()


def test_downloads_are_off_without_permission(tmp_path):
    personal = tmp_path / "models.yaml"
    manager = ModelManager(load_layered_registry(SHIPPED_MODELS, personal), make_backend)
    handlers = LibraryHandlers(ModelLibrary(manager, SHIPPED_MODELS, personal, env={},
                                            home=tmp_path), texts=english())
    refused = handlers.hub_search("SmolLM2", "GGUF")[1]
    assert refused == ("⚠️ downloads are off: start the app with --allow-download to search "
                       "the Hugging Face Hub and fetch models")


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "chat_app.py"), *args], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_cli_download_then_chat(tmp_path, server, this_cache):  # noqa: F811
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HUB_CACHE": str(this_cache)}
    env.pop("HF_HUB_OFFLINE", None)
    data = tmp_path / "data"
    got = cli(env, "--download", SMOL, "--file", SMOLLM2_FILE, "--data-dir", str(data))
    assert got.returncode == 0, got.stderr
    assert "(100%)" in got.stderr and SMOLLM2_FILE in got.stdout
    model_id = got.stdout.strip().splitlines()[-1].removeprefix("use it with --model ")
    reply = cli(env, "--model", model_id, "--prompt", CAPITAL_PROMPT, "--temperature", "0",
                "--max-new-tokens", "24", "--data-dir", str(data), "--offline")
    assert reply.returncode == 0 and "Paris" in reply.stdout, reply.stderr
    missing = cli(env, "--download", "llama-3.1-8b-instruct-q4", "--data-dir", str(data))
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: Downloading Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf from "
        "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF failed: 404 not found (no such repo).")


@pytest.fixture()
def hub_app(tmp_path, server, this_cache) -> Iterator:  # noqa: F811
    env = {"HF_ENDPOINT": server.endpoint, "HF_HUB_CACHE": str(this_cache)}
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(tmp_path / "data"),
                     "--allow-download"], env=env)
    yield app
    app.stop()


@pytest.mark.slow
def test_search_download_and_chat_in_the_browser(hub_app, server, chromium_path,  # noqa: F811
                                                 artifacts):
    server.throttle(SMOL, SMOLLM2_FILE, chunk_bytes=256 * 1024, delay_s=0.05)  # ~5 MB/s
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        page.goto(hub_app.url)
        page.locator("#message textarea").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Models").click()
        page.locator("#hub").get_by_text("Get models from the Hugging Face Hub").click()
        page.locator("#hub-query textarea").fill("SmolLM2")
        page.locator("#hub-search").click()
        page.wait_for_function(
            "() => document.querySelector('#hub-fit')?.innerText.includes('fits')",
            timeout=60_000)
        page.locator("#hub-download").click()
        page.wait_for_function(
            "() => document.querySelector('#models-outcome')?.innerText.includes('Downloading')",
            timeout=60_000)
        seen = set()
        for _ in range(SAFETY_S * 10):
            text = page.locator("#hub-downloads").inner_text()
            if " of " in text:
                seen.add(text)
            if "done" in text:
                break
            page.wait_for_timeout(100)
        assert "done" in page.locator("#hub-downloads").inner_text()
        assert len(seen) >= 2, f"the progress did not move: {seen}"
        page.screenshot(path=str(artifacts / "hub-download.png"), full_page=True)
        page.get_by_role("tab", name="Chat").click()
        pick(page, "model", f"{SMOL} · {SMOLLM2_FILE}")
        use_greedy_decoding(page)
        box = page.locator("#message textarea")
        box.fill(CAPITAL_PROMPT)
        box.press("Enter")
        assert "Paris" in wait_for_finished_reply(page, 1)
        browser.close()
