"""Other websites kept out: the Host allow-list, the Origin check, JSON-only /v1 and closed
CORS, against the real app (httpx and raw sockets sending the headers a browser sends) and
in a real chromium where a page from another origin tries to use the app.

Whether a model ran is read from the app itself: the fresh app below has never loaded
SmolLM2, so `GET /v1/models` reports it "available" until something generates with it (the
last test shows that a request that is let through does flip it to "resident").
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from gradio_client import Client
from playwright.sync_api import Browser, sync_playwright

from chatcore.api.request_guard import (AllowedHosts, GuardSettingError, Origin, parse_allowed_hosts,
                                    parse_cors_origins, parse_origin, split_host)
from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS, RunningApp, start_app
from tests.test_browser import CHROMIUM_ARGS

MODEL = "smollm2-135m"
PROXY_NAME = "chat.lan"
FRONT_END = "http://localhost:5173"
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def guarded_app(tmp_path_factory) -> Iterator[RunningApp]:
    data_dir = tmp_path_factory.mktemp("guarded-data")
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(data_dir),
                     "--allowed-hosts", PROXY_NAME, "--cors-origin", FRONT_END])
    yield app
    app.stop()


def port_of(app: RunningApp) -> int:
    return urlsplit(app.url).port


def raw_request(port: int, host: str | None, method: str = "GET", path: str = "/",
                headers: dict[str, str] | None = None, version: str = "1.1") -> tuple[int, str]:
    """Exactly the Host header given (or none), which httpx would not send."""
    lines = [f"{method} {path} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Content-Length: 0", "Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def model_state(app: RunningApp) -> str:
    listing = httpx.get(f"{app.url}v1/models", timeout=10).json()
    return next(m["state"] for m in listing["data"] if m["id"] == MODEL)


def chat_body() -> dict:
    return {"model": MODEL, "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": CAPITAL_PROMPT}]}


# -- the rules, without a server ------------------------------------------------------

def test_host_headers_are_split_into_one_spelling():
    assert split_host("LocalHost.:7860") == ("localhost", 7860)
    assert split_host("[::1]:7860") == ("::1", 7860)
    assert split_host("127.0.0.1") == ("127.0.0.1", 80)
    assert split_host("chat.lan", "https") == ("chat.lan", 443)
    for bad in ("", "   ", ":7860", "a@b:1", "evil/x", "host:notaport", "[::1"):
        assert split_host(bad) is None, bad


def test_origins_parse_and_print_the_way_browsers_send_them():
    assert parse_origin("http://LOCALHOST:3000") == Origin("http", "localhost", 3000)
    assert str(parse_origin("https://chat.lan")) == "https://chat.lan"
    assert str(parse_origin("http://[::1]:8080")) == "http://[::1]:8080"
    for bad in ("null", "", "file:///x", "http://a/path", "*", "http://:80"):
        assert parse_origin(bad) is None, bad


def test_allowed_hosts_loopback_always_machine_addresses_only_beyond_it():
    machine = ["192.168.1.20", "workstation"]
    local = AllowedHosts.for_server("127.0.0.1", ["chat.lan"], machine=machine)
    for name in ("localhost", "127.0.0.1", "127.3.4.5", "::1", "chat.lan"):
        assert local.allows(name), name
    for name in ("evil.example", "192.168.1.20", "workstation", "0.0.0.0", "localhost.evil"):
        assert not local.allows(name), name
    everywhere = AllowedHosts.for_server("0.0.0.0", [], machine=machine)
    assert everywhere.allows("192.168.1.20") and everywhere.allows("workstation")
    assert not everywhere.allows("0.0.0.0") and not everywhere.allows("evil.example")
    assert AllowedHosts.for_server("10.0.0.7", [], machine=[]).allows("10.0.0.7")


def test_flag_values_that_could_never_match_are_refused_with_the_value_named():
    assert parse_allowed_hosts(["chat.lan,Box.Local.", "192.168.1.20", "[fe80::1]"]) == \
        ["chat.lan", "box.local", "192.168.1.20", "fe80::1"]
    for bad in ("http://chat.lan", "chat.lan:8080", "chat lan", "*"):
        with pytest.raises(GuardSettingError) as refused:
            parse_allowed_hosts([bad])
        assert str(refused.value).startswith(f"--allowed-hosts: {bad!r} is not a host name")
    assert parse_cors_origins(["http://localhost:3000"]) == [Origin("http", "localhost", 3000)]
    for bad in ("*", "localhost:3000", "http://x/app"):
        with pytest.raises(GuardSettingError, match="--cors-origin"):
            parse_cors_origins([bad])


# -- the running app ------------------------------------------------------------------

def gradio_paths() -> list[tuple[str, str]]:
    return [("GET", "/"), ("GET", "/config"), ("GET", "/gradio_api/info"),
            ("POST", "/gradio_api/call/conversations"),
            ("GET", "/gradio_api/file=" + str(SHIPPED_MODELS)),
            ("GET", "/v1/models"), ("POST", "/v1/chat/completions")]


@pytest.mark.slow
def test_foreign_empty_and_port_only_hosts_get_403_everywhere(guarded_app):
    port = port_of(guarded_app)
    for host in ("evil.example", f"evil.example:{port}", f":{port}", "", None):
        for method, path in gradio_paths():
            version = "1.0" if host is None else "1.1"  # HTTP/1.1 requires a Host
            status, body = raw_request(port, host, method, path, version=version)
            assert status == 403, (host, path, status, body[:200])
            assert "--allowed-hosts" in body, (host, path, body[:200])
    status, body = raw_request(port, f"evil.example:{port}", path="/v1/models")
    assert json.loads(body)["error"]["code"] == "forbidden_origin"
    assert model_state(guarded_app) == "available"


@pytest.mark.slow
def test_own_names_and_allowed_hosts_get_200(guarded_app):
    port = port_of(guarded_app)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost.",
                 f"{PROXY_NAME}:{port}", PROXY_NAME.upper()):
        for path in ("/", "/config", "/v1/models"):
            status, body = raw_request(port, host, path=path)
            assert status == 200, (host, path, status, body[:200])


@pytest.mark.slow
def test_foreign_origins_cannot_post_and_the_model_does_not_run(guarded_app):
    url, port = guarded_app.url, port_of(guarded_app)
    for origin in (EVIL, f"http://127.0.0.1:{port + 1}", f"http://localhost:{port + 1}",
                   "null", FRONT_END):
        headers = {"Origin": origin}
        reply = httpx.post(f"{url}v1/chat/completions", json=chat_body(), headers=headers,
                           timeout=30)
        if origin == FRONT_END:  # a --cors-origin may use /v1 ...
            continue
        assert reply.status_code == 403, (origin, reply.text)
        assert "--cors-origin" in reply.json()["error"]["message"]
        for path in ("/gradio_api/call/conversations", "/gradio_api/queue/join",
                     "/gradio_api/call/send"):  # ... and never the page's own API
            gradio = httpx.post(f"{url}{path.lstrip('/')}", json={"data": [""]},
                                headers=headers, timeout=30)
            assert gradio.status_code == 403, (origin, path, gradio.text)
    for path in ("/gradio_api/call/conversations", "/gradio_api/queue/join"):
        front = httpx.post(f"{url}{path.lstrip('/')}", json={"data": [""]},
                           headers={"Origin": FRONT_END}, timeout=30)
        assert front.status_code == 403, (path, front.text)
    upgrade = {"Origin": EVIL, "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    status, _ = raw_request(port, f"127.0.0.1:{port}", path="/gradio_api/queue/data",
                            headers=upgrade)
    assert status == 403
    assert model_state(guarded_app) == "resident"  # the front end's request ran it ...


@pytest.fixture(scope="module")
def fresh_app(tmp_path_factory) -> Iterator[RunningApp]:
    """An app that has never generated, for the tests that prove nothing ran."""
    data_dir = tmp_path_factory.mktemp("fresh-data")
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(data_dir)])
    yield app
    app.stop()


@pytest.mark.slow
def test_foreign_origin_and_plain_text_do_not_run_the_model(fresh_app):
    url = fresh_app.url
    reply = httpx.post(f"{url}v1/chat/completions", json=chat_body(),
                       headers={"Origin": EVIL}, timeout=30)
    assert reply.status_code == 403
    send = httpx.post(f"{url}gradio_api/call/send", headers={"Origin": EVIL}, timeout=30,
                      json={"data": [CAPITAL_PROMPT, MODEL, "", 0, 0.9, 40, 16, 1.0, -1]})
    assert send.status_code == 403
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        headers = {"Content-Type": kind} if kind else {}
        plain = httpx.post(f"{url}v1/chat/completions", content=json.dumps(chat_body()),
                           headers=headers, timeout=30)
        assert plain.status_code == 415, (kind, plain.text)
        error = plain.json()["error"]
        assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert model_state(fresh_app) == "available"  # nothing was loaded, so nothing generated
    assert Client(url, verbose=False).predict("", api_name="/conversations") == []


@pytest.mark.slow
def test_cors_is_closed_except_v1_for_the_named_front_end(guarded_app):
    url = guarded_app.url
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    for origin in (EVIL, f"http://localhost:{port_of(guarded_app) + 1}"):
        for path in ("v1/models", "config", "gradio_api/info"):
            reply = httpx.get(f"{url}{path}", headers={"Origin": origin}, timeout=30)
            assert "access-control-allow-origin" not in reply.headers, (origin, path)
            assert reply.status_code == 403
        options = httpx.options(f"{url}v1/chat/completions",
                                headers={"Origin": origin, **preflight}, timeout=30)
        assert "access-control-allow-origin" not in options.headers
    options = httpx.options(f"{url}v1/chat/completions",
                            headers={"Origin": FRONT_END, **preflight}, timeout=30)
    assert options.status_code == 200
    assert options.headers["access-control-allow-origin"] == FRONT_END
    models = httpx.get(f"{url}v1/models", headers={"Origin": FRONT_END}, timeout=30)
    assert models.status_code == 200
    assert models.headers["access-control-allow-origin"] == FRONT_END
    page = httpx.get(f"{url}config", headers={"Origin": FRONT_END}, timeout=30)
    assert page.status_code == 403 and "access-control-allow-origin" not in page.headers
    plain = httpx.get(f"{url}config", timeout=30)  # no Origin: a script, served, no CORS
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


@pytest.mark.slow
def test_the_page_itself_still_posts_with_its_own_origin(guarded_app):
    url = guarded_app.url.rstrip("/")
    reply = httpx.post(f"{url}/v1/chat/completions", json=chat_body(),
                       headers={"Origin": url}, timeout=120)
    assert reply.status_code == 200 and "Paris" in reply.json()["choices"][0]["message"]["content"]
    behind_proxy = httpx.post(f"{url}/gradio_api/call/conversations", json={"data": [""]},
                              headers={"Origin": f"https://{PROXY_NAME}",
                                       "Host": PROXY_NAME}, timeout=30)
    assert behind_proxy.status_code == 200, behind_proxy.text


def own_address() -> str:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    pytest.fail("this test needs a network interface with an IPv4 address besides loopback")


@pytest.mark.slow
def test_beyond_loopback_the_machine_addresses_answer_and_others_do_not(tmp_path):
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(tmp_path),
                     "--host", "0.0.0.0", "--api-key", "k3y"])
    try:
        port = port_of(app)
        assert raw_request(port, f"{own_address()}:{port}", path="/config")[0] == 200
        assert raw_request(port, f"localhost:{port}", path="/config")[0] == 200
        assert raw_request(port, f"evil.example:{port}", path="/config")[0] == 403
        assert raw_request(port, f"0.0.0.0:{port}", path="/config")[0] == 403
        warning = "".join(app.output)
        assert "without --auth, the page and its stored conversations are open" in warning
    finally:
        app.stop()


# -- a real browser on another origin -------------------------------------------------

ATTACK_PAGE = """<!doctype html><title>another site</title><script>
async function attempt(name, url, options) {
  try {
    const reply = await fetch(url, options);
    return name + ": read " + reply.status + " " + (await reply.text()).slice(0, 80);
  } catch (error) { return name + ": blocked"; }
}
window.results = Promise.all([
  attempt("v1", "APP/v1/chat/completions", {method: "POST",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify(BODY)}),
  attempt("conversations", "APP/gradio_api/call/conversations", {method: "POST",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({data: [""]})}),
  attempt("models", "APP/v1/models", {}),
  attempt("config", "APP/config", {}),
]);
</script>"""


def serve_page(html: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


@contextmanager
def another_site(html: str, chromium_path: str) -> Iterator[tuple[Browser, str]]:
    """Chromium, and the address of `html` served by another site (another port of this
    machine): the attacker's page, for a test to visit."""
    server, page_url = serve_page(html)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path,
                                                 args=CHROMIUM_ARGS)
            try:
                yield browser, page_url
            finally:
                browser.close()
    finally:
        server.shutdown()


@pytest.mark.slow
def test_a_page_from_another_origin_reads_nothing_and_runs_nothing(fresh_app, chromium_path,
                                                                   artifacts: Path):
    html = ATTACK_PAGE.replace("APP/", fresh_app.url).replace("BODY", json.dumps(chat_body()))
    with another_site(html, chromium_path) as (browser, page_url):
        page = browser.new_page()
        page.goto(page_url)
        results = page.evaluate("window.results")
    assert sorted(results) == ["config: blocked", "conversations: blocked", "models: blocked",
                               "v1: blocked"], results
    (artifacts / "cross-origin-attempts.json").write_text(json.dumps(results, indent=1))
    assert model_state(fresh_app) == "available"  # the model never ran
    assert Client(fresh_app.url, verbose=False).predict("", api_name="/conversations") == []
