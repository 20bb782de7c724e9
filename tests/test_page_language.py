"""The server's choice of a page's language, over plain ASGI: who is signed in, the redirect,
and the page sent with its language and Gradio's missing words. No app, no browser."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Mount
from starlette.testclient import TestClient

from chatcore.conversations.store import Store
from chatcore.i18n import load_texts
from chatui.page_language import (
    GRADIO_KEYS,
    ArriveInLanguage,
    LanguageRule,
    PagePaths,
    gradio_user,
)

TEMPLATE = '<!doctype html>\n<html\n\tlang="en"\n>\n<head><script>window.gradio_config = ' \
           '{"title":"x","i18n_translations":null};</script></head>'


@pytest.fixture()
def store(tmp_path):
    store = Store(tmp_path)
    yield store
    store.close()


def client(store: Store, user: str | None = "") -> TestClient:
    page = HTMLResponse(TEMPLATE)
    app = ArriveInLanguage(page, LanguageRule(store, PagePaths("en"), None),
                           lambda cookies: user)
    return TestClient(app, follow_redirects=False)


def test_a_filipino_browser_is_sent_to_the_filipino_page_before_any_page(store):
    browser = client(store)
    reply = browser.get("/?deep_link=x", headers={"Accept-Language": "fil-PH,fil;q=0.9"})
    assert reply.status_code == 302 and reply.headers["location"] == "/fil?deep_link=x"
    assert reply.text == ""
    page = browser.get("/fil", headers={"Accept-Language": "fil-PH"})
    assert page.status_code == 200
    assert '<html\n\tlang="fil"' in page.text
    assert "<head><script>(() => { const html" in page.text and "!== 'fil'" in page.text
    assert int(page.headers["content-length"]) == len(page.content)
    filipino = load_texts("fil")
    assert f'"i18n_translations":{{"en": {{"common.complete": "{filipino("app.done")}"' \
        in page.text
    for key, ours in GRADIO_KEYS.items():  # Gradio's buttons on a message, in Filipino
        assert f'"{key}": "{filipino(ours)}"' in page.text
    english = browser.get("/", headers={"Accept-Language": "en-US"})
    assert english.status_code == 200 and 'lang="en"' in english.text
    assert '"common.complete": "Done"' in english.text


def test_the_stored_choice_comes_first_and_a_stranger_has_none(store):
    LanguageRule(store, PagePaths("en"), None).choose("", "en")
    assert client(store).get("/fil", headers={"Accept-Language": "fil"}).headers[
        "location"] == "/"
    # with --auth, nobody signed in yet: no one's choice, the browser's language counts
    assert client(store, None).get("/", headers={"Accept-Language": "fil"}).headers[
        "location"] == "/fil"


def test_other_paths_pass_untouched(store):
    browser = client(store)
    reply = browser.get("/config", headers={"Accept-Language": "fil"})
    assert reply.status_code == 200 and 'lang="en"' in reply.text
    assert browser.post("/", headers={"Accept-Language": "fil"}).status_code == 200


def mounted(gradio_app) -> Starlette:
    return Starlette(routes=[Mount("/", app=gradio_app)])


def test_the_signed_in_user_is_read_from_gradios_cookie():
    gradio_app = SimpleNamespace(auth={"alice": "pw"}, cookie_id="c1", tokens={"t": "alice"})
    user = gradio_user(mounted(gradio_app))
    assert user({"access-token-c1": "t"}) == "alice"
    assert user({"access-token-unsecure-c1": "t"}) == "alice"
    assert user({"access-token-c1": "forged"}) is None and user({}) is None
    assert gradio_user(mounted(SimpleNamespace(auth=None)))({}) == ""  # no --auth: one user
