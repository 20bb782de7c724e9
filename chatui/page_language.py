"""Which language's page a person gets, decided by the server on the first request.

A browser that asks for a page in another language than the person's is answered with a
redirect to the right one before anything is drawn: no page in one language is shown and
then replaced by another (which lost whatever was typed into it). The rule is the person's
own choice (the switch, kept in the store per user), then `--language`, then the browser's
Accept-Language; a language's own page (`/fil`), opened on purpose, stays as it is unless
the person chose another.

The page that is sent says its language in `<html lang>` and carries, in its config, the
words Gradio's own frontend would otherwise show as bare keys (`common.complete`, which a
screen reader hears when an action finishes), in the page's language from our catalogs.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatcore.conversations.store import Store
from chatcore.i18n import LANGUAGES, choose_language, load_texts

LANGUAGE_PREFERENCE = "language"  # the store's preference name for the page's language
# First in the page's head: keeps `<html lang>` the page's language, which Gradio's frontend
# would set to the browser's once it starts.
KEEP_LANG_JS = ("<script>(() => {{ const html = document.documentElement; const keep = () =>"
                " {{ if (html.lang !== '{code}') html.lang = '{code}'; }}; new MutationObserver("
                "keep).observe(html, {{ attributes: true, attributeFilter: ['lang'] }}); }})();"
                "</script>")
HEAD = b"<head>"
# Gradio's page template starts `<html lang="en" …>` whatever the page's language.
TEMPLATE_LANG = re.compile(rb'(<html\s+lang=")[^"]*(")')
# The config embedded in the page, when no gr.I18n is given (none is: see gradio_words).
NO_TRANSLATIONS = b'"i18n_translations":null'
# Gradio's frontend keys shown on the page -> our catalog's key for the same word (Gradio has
# no Filipino catalog, and one it lacks, common.complete, shows as the bare key).
GRADIO_KEYS = {"common.complete": "app.done", "chatbot.edit": "gradio.edit",
               "chatbot.submit": "gradio.submit", "chatbot.cancel": "gradio.cancel",
               "chatbot.copy_message": "gradio.copy", "chatbot.copied_message": "gradio.copied",
               "chatbot.clear": "gradio.clear"}


class PagePaths:
    """Where each language's page lives: the default language at `/`, the others at
    `/<code>`."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, code: str) -> str:
        return "/" if code == self.root else f"/{code}"

    def language_at(self, path: str) -> str | None:
        """The language of the page at `path` (`/fil` or `/fil/`); None for any other path."""
        path = path.rstrip("/") or "/"
        return next((code for code in LANGUAGES if self.path(code) == path), None)


class LanguageRule:
    """The page's language for a person: the choice they made with the switch, then
    `--language`, then their browser's."""

    def __init__(self, store: Store, pages: PagePaths, language: str | None) -> None:
        self.store, self.pages, self.language = store, pages, language

    def language_for(self, user: str | None, here: str, accept_language: str | None) -> str:
        """`user` is None for a person not signed in yet (with --auth): no choice of theirs
        is known. `here` is the language of the page asked for."""
        chosen = self.store.preference(user, LANGUAGE_PREFERENCE) if user is not None else None
        if chosen not in LANGUAGES and here != self.pages.root:
            return here
        return choose_language(chosen, self.language, accept_language)

    def choose(self, user: str, code: str) -> None:
        self.store.set_preference(user, LANGUAGE_PREFERENCE, code)


def gradio_user(server: Starlette) -> Callable[[Mapping[str, str]], str | None]:
    """Who a request's cookies sign in, as Gradio's own /user route reads them, in the
    Gradio app mounted on `server` (found when asked: it is mounted after this is made):
    "" when the app has no --auth (everyone shares one user), None when no one is signed
    in."""

    def user(cookies: Mapping[str, str]) -> str | None:
        gradio_app = next(route.app for route in server.routes if isinstance(route, Mount))
        if gradio_app.auth is None:
            return ""
        cookie = gradio_app.cookie_id
        token = cookies.get(f"access-token-{cookie}") or \
            cookies.get(f"access-token-unsecure-{cookie}")
        return gradio_app.tokens.get(token)

    return user


def gradio_words(code: str) -> bytes:
    """The config's `i18n_translations` for the page in `code`: Gradio's missing words in
    that language. Gradio picks its locale from the browser, never from the page, and looks
    up a word it lacks in English last, so the page's words go under "en"."""
    texts = load_texts(code)
    words = {"en": {key: texts(ours) for key, ours in GRADIO_KEYS.items()}}
    return b'"i18n_translations":' + json.dumps(words, ensure_ascii=False).encode()


class ArriveInLanguage:
    """ASGI middleware: a GET of a page (`/`, `/fil`) that is not in the person's language
    is answered with a redirect to the page that is, and the page that is says its language
    in `<html lang>` (for screen readers, from the first paint); everything else passes
    untouched."""

    def __init__(self, app: ASGIApp, rule: LanguageRule,
                 user: Callable[[Mapping[str, str]], str | None]) -> None:
        self.app, self.rule, self.user = app, rule, user
        self.heads = {code: HEAD + KEEP_LANG_JS.format(code=code).encode()
                      for code in LANGUAGES}
        self.words = {code: gradio_words(code) for code in LANGUAGES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        here = self.rule.pages.language_at(scope["path"]) if scope["type"] == "http" and \
            scope.get("method") in ("GET", "HEAD") else None
        if here is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        code = await anyio.to_thread.run_sync(  # the store is SQLite: off the event loop
            self.rule.language_for, self.user(request.cookies), here,
            request.headers.get("accept-language"))
        if code == here:
            page = _as_page(send, here, self.heads[here], self.words[here])
            await self.app(scope, receive, page if scope["method"] == "GET" else send)
            return
        query = scope.get("query_string", b"")
        location = (scope.get("root_path", "") + self.rule.pages.path(code)).encode() + \
            (b"?" + query if query else b"")
        await send({"type": "http.response.start", "status": 302,
                    "headers": [(b"location", location), (b"content-length", b"0"),
                                (b"cache-control", b"no-store"),
                                (b"vary", b"cookie, accept-language")]})
        await send({"type": "http.response.body", "body": b""})


def _as_page(send: Send, code: str, head: bytes, words: bytes) -> Send:
    """`send` with the page's `<html lang>` set to `code`, `head` as its head's start and
    `words` as its config's translations; the page is one body message."""
    start: Message = {}

    async def send_page(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if start and message["type"] == "http.response.body" and \
                not message.get("more_body", False):
            body = TEMPLATE_LANG.sub(rb"\g<1>" + code.encode() + rb"\g<2>",
                                     message.get("body", b""), count=1)
            body = body.replace(HEAD, head, 1).replace(NO_TRANSLATIONS, words, 1)
            headers = [(name, str(len(body)).encode() if name.lower() == b"content-length"
                        else value) for name, value in start.get("headers", [])]
            start, message = {**start, "headers": headers}, {**message, "body": body}
        if start:
            await send(start)
            start = {}
        await send(message)

    return send_page
