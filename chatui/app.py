"""Assembles the page and serves it on loopback, with no share link and no analytics."""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import webbrowser
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
from gradio.utils import get_upload_folder as gradio_cache_folder
from starlette.middleware.gzip import GZipMiddleware

from chatcore.api.v1 import build_api
from chatcore.evaluate.runner import EvalRunner
from chatcore.generation.registry import ConfigError
from chatcore.evaluate.store import EvalStore
from chatcore.i18n import DEFAULT_LANGUAGE, LANGUAGES, Texts, load_texts
from chatcore.library.model_library import ModelLibrary
from chatcore.generation.manager import ModelManager
from chatcore.api.request_guard import Access, guard
from chatcore.conversations.running import RunningReplies
from chatcore.conversations.service import ConversationService
from chatcore.conversations.store import Store
from chatcore.costs.book import CostBook
from chatcore.documents.reader import MAX_FILE_BYTES
from chatui.chat_handlers import user_of
from chatui.page_language import ArriveInLanguage, LanguageRule, PagePaths, gradio_user
from chatui.chat_tab import build_chat_tab, model_choices
from chatui.compare_tab import build_compare_tab
from chatui.evaluate_handlers import EvaluateHandlers
from chatui.evaluate_tab import REVIEW_KEYS_JS, build_evaluate_tab
from chatui.exports import EXPORT_TTL_S, ExportFiles
from chatui.models_tab import build_models_tab
from chatui.styles import STYLES_CSS

log = logging.getLogger(__name__)
# Each language is a page of one Gradio app; the header's switch moves between them, so
# Gradio's own page bar (which would read "Home") is hidden.
PAGE_CSS = ".nav-holder { display: none !important; }"
# After the switch: go to the page in the chosen language (the server sends a browser that
# asks for another page there too; see chatui/page_language.py).
SWITCH_JS = "(path) => { if (path) window.location.replace(path + window.location.hash) }"
# The page and its config are about a megabyte of JSON-like text; gzip makes it a tenth.
# Streams (text/event-stream: /v1 and Gradio's queue) are never compressed, so never held.
GZIP_MIN_BYTES, GZIP_LEVEL = 1024, 6
PAGE_CONCURRENCY = 16  # the page's handlers running at once, each unless it sets its own

# System fonts only: the default theme would fetch web fonts, and the app works offline.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])


def build_app(manager: ModelManager, store: Store, initial_model: str, exports: ExportFiles,
              library: ModelLibrary | None = None,
              evaluations: EvalRunner | None = None, language: str | None = None,
              running: RunningReplies | None = None) -> gr.Blocks:
    """The whole page once per shipped language: `/` in `language` (--language, English
    when not given), every other language at `/<code>`. `evaluations` runs the Evaluate
    tab's runs; serve() passes the one it resumes and closes, and without one the page makes
    its own; so does `running`, the chat replies that run on when their tab goes away."""
    evaluations = evaluations or EvalRunner(manager, EvalStore(store))
    running = running or RunningReplies(ConversationService(store, manager))
    costs = CostBook(store)
    manager.measure_with(costs.record)  # every reply's time per token, whoever asked
    root = language or DEFAULT_LANGUAGE
    pages = PagePaths(root)
    page = PageBuilder(manager, store, initial_model, exports, library, evaluations,
                       LanguageRule(store, pages, language), costs, running)
    # Gradio deletes what it keeps for this app (an upload no handler read, say) an hour
    # after, as downloads expire, and all of it when the server stops.
    app = gr.Blocks(title=load_texts(root)("app.title"), analytics_enabled=False,
                    delete_cache=(EXPORT_TTL_S, EXPORT_TTL_S))
    # Queued while still empty: queue() builds a throwaway server app from the page as it
    # is then (about 0.15 s once the page is whole); the limit is read per event anyway.
    app.queue(default_concurrency_limit=PAGE_CONCURRENCY)
    with app:
        page.build(app, load_texts(root))
    for code, (_, name) in LANGUAGES.items():
        if code != root:
            with app.route(name, pages.path(code), show_in_navbar=False):
                page.build(app, load_texts(code))
    # Scripts use the page's API at `/` (gradio_client); the other pages' copies of the same
    # endpoints stay callable by their own page but out of the API docs.
    for fn in app.fns.values():
        if fn.page and fn.api_visibility == "public":
            fn.api_visibility = "undocumented"
    return app


class PageBuilder:
    """Builds one language's page: the header with its language switch, and the four tabs,
    every word from that language's catalog."""

    def __init__(self, manager: ModelManager, store: Store, initial_model: str,
                 exports: ExportFiles, library: ModelLibrary | None, evaluations: EvalRunner,
                 languages: LanguageRule, costs: CostBook,
                 running: RunningReplies) -> None:
        self.manager, self.store, self.initial_model = manager, store, initial_model
        self.exports, self.library, self.evaluations = exports, library, evaluations
        self.languages, self.costs, self.running = languages, costs, running

    def build(self, app: gr.Blocks, texts: Texts) -> None:
        manager, store, initial_model = self.manager, self.store, self.initial_model
        with gr.Row(equal_height=True, elem_id="header"):
            gr.Markdown(f"## {texts('app.title')}\n{texts('app.tagline')}", elem_id="title")
            switch = gr.Dropdown([(name, code) for code, (_, name) in LANGUAGES.items()],
                                 value=texts.language, label=texts("app.language"), scale=0,
                                 min_width=160, interactive=True, elem_id="language")
        elsewhere = gr.Textbox(visible=False)  # the page to go to, when not this one
        with gr.Tab(texts("app.chat"), id="chat") as chat_tab:
            chat_model = build_chat_tab(app, manager, store, initial_model, self.exports,
                                        self.library, texts=texts, costs=self.costs,
                                        running=self.running)
        with gr.Tab(texts("app.compare"), id="compare") as compare_tab:
            pickers = build_compare_tab(app, manager, store, initial_model, self.exports,
                                        texts=texts, costs=self.costs, tab=compare_tab)
        with gr.Tab(texts("app.evaluate"), id="evaluate") as evaluate_tab:
            handlers = EvaluateHandlers(manager, self.evaluations.evals, self.evaluations,
                                        self.exports, texts=texts, costs=self.costs)
            eval_pickers, eval_timer, eval_lists, eval_list_outputs = build_evaluate_tab(
                app, manager, handlers, initial_model, texts=texts)
        with gr.Tab(texts("app.models"), id="models") as models_tab:
            timer, registry_changes = build_models_tab(app, manager, self.library, texts=texts,
                                                       costs=self.costs)
        # The Models tab and the Evaluate tab's progress refresh only while shown; the other
        # tabs read the model list again when shown, and at once after this page changed the
        # registry.
        pickers_out = [chat_model, *pickers, *eval_pickers]
        timers = [timer, eval_timer]

        def fresh_choices() -> list:
            return [gr.update(choices=model_choices(manager, texts=texts))] * len(pickers_out)

        models_tab.select(lambda: [gr.Timer(active=True), gr.Timer(active=False)], None,
                          timers, api_name=False, queue=False)
        for tab in (chat_tab, compare_tab):
            tab.select(lambda: [gr.Timer(active=False)] * 2 + fresh_choices(), None,
                       [*timers, *pickers_out], api_name=False, queue=False)

        def evaluate_shown(request: gr.Request) -> list:
            return [gr.Timer(active=False), gr.Timer(active=True), *fresh_choices(),
                    *eval_lists(request)]

        evaluate_tab.select(evaluate_shown, None, [*timers, *pickers_out, *eval_list_outputs],
                            api_name=False, queue=False)
        for change in registry_changes:
            change.then(fresh_choices, None, pickers_out, api_name=False, queue=False)

        def choose(code: str, request: gr.Request) -> str:
            """"" on the right page; else the path of the page in the chosen language."""
            if code not in LANGUAGES:
                return ""
            self.languages.choose(user_of(request), code)
            return "" if code == texts.language else self.languages.pages.path(code)

        switch.input(choose, switch, elsewhere, api_name=False, queue=False).then(
            None, elsewhere, None, js=SWITCH_JS, api_name=False, queue=False)


def build_server(manager: ModelManager, store: Store, initial_model: str,
                 exports: ExportFiles,
                 access: Access, library: ModelLibrary | None = None,
                 evaluations: EvalRunner | None = None, language: str | None = None,
                 running: RunningReplies | None = None):
    """The page at / (and /<language>) and the API at /v1 as one ASGI app, behind the Host
    and Origin guard; a page is sent in the person's language from the first request, and
    compressed."""
    blocks = build_app(manager, store, initial_model, exports, library, evaluations,
                       language, running)
    server_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    server_app.include_router(build_api(manager, access.api_key, access.auth))
    rule = LanguageRule(store, PagePaths(language or DEFAULT_LANGUAGE), language)
    server_app.add_middleware(ArriveInLanguage, rule=rule, user=gradio_user(server_app))
    server_app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES,
                              compresslevel=GZIP_LEVEL)  # added last: it wraps the other
    server_app = gr.mount_gradio_app(
        # No allowed_paths: every file the page hands out is in Gradio's cache under a
        # random folder (chatui/exports.py), and the run history, which would keep inputs
        # and outputs in the browser after a conversation is deleted, is off.
        server_app, blocks, path="", auth=access.auth, run_history=False,
        max_file_size=MAX_FILE_BYTES, theme=THEME, footer_links=[], ssr_mode=False,
        enable_monitoring=False, mcp_server=False, show_error=False, head=REVIEW_KEYS_JS,
        css=PAGE_CSS + STYLES_CSS)
    return guard(server_app, access)


def serve(manager: ModelManager, store: Store, initial_model: str, access: Access, port: int,
          open_browser: bool, library: ModelLibrary | None = None,
          language: str | None = None) -> None:
    """The page and the API on one port, until Ctrl-C. `language` (--language) is every
    page's language unless a person picks another with the switch."""
    host = access.host
    _check_port(host, port)
    exports = ExportFiles(Path(gradio_cache_folder()))
    evaluations = EvalRunner(manager, EvalStore(store))
    running = RunningReplies(ConversationService(store, manager))
    server_app = build_server(manager, store, initial_model, exports, access, library,
                              evaluations, language, running)
    server = uvicorn.Server(uvicorn.Config(server_app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=5))
    runner = threading.Thread(target=server.run, name="http-server")
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill also unloads and closes the store
    if library is not None:  # SIGHUP reads the registry files again, as Reload does
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
            target=_reload, args=(library,), name="reload-registry", daemon=True).start())
    runner.start()
    try:
        while not server.started:
            if not runner.is_alive():
                raise ServeError(f"could not serve on {host}:{port}: see the log above")
            time.sleep(0.05)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        print(f"Chat page: {url}", flush=True)
        print(f"OpenAI-compatible API: {url}v1", flush=True)
        if open_browser:
            webbrowser.open(url)
        evaluations.resume_all()  # runs a stopped app left going
        while runner.is_alive():
            runner.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        runner.join()
    finally:
        running.close()  # every chat reply still running stops
        evaluations.close()
        exports.close()
        manager.unload_all()
        store.close()


def _check_port(host: str, port: int) -> None:
    """Fail with one line before the server would log its own traceback-like error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ServeError(f"could not serve on {host}:{port}: {exc.strerror or exc} "
                         "(pass another port with --port)") from None


def _reload(library: ModelLibrary) -> None:
    try:
        changed = library.reload()
        log.warning("registry reloaded on SIGHUP%s", f"; changed: {', '.join(changed)}"
                    if changed else "")
    except ConfigError as exc:
        log.warning("registry not reloaded, the last good one stays: %s", exc)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class ServeError(Exception):
    """The server could not start; the message says why."""
