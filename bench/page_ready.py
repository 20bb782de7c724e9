"""python -m bench.page_ready URL: how long a newcomer waits for a usable page.

Each run starts a new chromium (no cache), opens URL and stops the clock when the message
box can be typed into on the page in the browser's language (`/` for English, `/fil` for
Filipino when English is the default). Prints every run and the median per browser
language, and the bytes the page's document took on the wire. Start the app first:

    python chat_app.py --no-browser --port 7860 &
    python -m bench.page_ready http://127.0.0.1:7860/ --runs 5
    python -m bench.page_ready http://127.0.0.1:7860/ --mbps 20   # as over a home Wi-Fi
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import time

from playwright.sync_api import sync_playwright

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update"]
# Browser language -> the page path it should settle on (English is the default page).
LOCALES = {"en-US": "/", "fil-PH": "/fil"}
READY = ("path => (location.pathname.replace(/\\/$/, '') || '/') === path && "
         "!!document.querySelector('#message textarea:not([disabled])')")


def one_run(playwright, chromium: str, url: str, locale: str,
            mbps: float | None) -> tuple[float, int]:
    """Seconds from navigation to a usable message box, and the document bytes received."""
    browser = playwright.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
    try:
        context = browser.new_context(locale=locale,
                                      extra_http_headers={"Accept-Language": locale})
        page = context.new_page()
        if mbps:  # chromium's own throttling (DevTools), both ways, 5 ms each way
            rate = mbps * 1_000_000 / 8
            context.new_cdp_session(page).send("Network.emulateNetworkConditions", {
                "offline": False, "latency": 5, "downloadThroughput": rate,
                "uploadThroughput": rate})
        documents: list[int] = []
        page.on("requestfinished", lambda r: documents.append(r.sizes()["responseBodySize"])
                if r.resource_type == "document" else None)
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_function(READY, arg=LOCALES[locale], timeout=60_000, polling=20)
        elapsed = time.perf_counter() - start
        return elapsed, sum(documents)
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.page_ready",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the running app's page, e.g. http://127.0.0.1:7860/")
    parser.add_argument("--runs", type=int, default=5, help="cold browsers per language")
    parser.add_argument("--mbps", type=float, help="throttle the browser's network to this")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        parser.error("needs Debian's chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        for locale in LOCALES:
            runs = [one_run(playwright, chromium, args.url, locale, args.mbps)
                    for _ in range(args.runs)]
            seconds = [s for s, _ in runs]
            print(f"{locale}: median {statistics.median(seconds):.2f} s "
                  f"(runs: {', '.join(f'{s:.2f}' for s in seconds)}); "
                  f"document bytes on the wire: {runs[-1][1]:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
