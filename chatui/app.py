"""Assembles the page and serves it on loopback, with no share link and no analytics."""
from __future__ import annotations

import logging

import gradio as gr

from chatcore.manager import ModelManager
from chatui.chat_tab import build_chat_tab
from chatui.models_tab import build_models_tab

log = logging.getLogger(__name__)

# System fonts only: the default theme would fetch web fonts, and the app works offline.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])


def build_app(manager: ModelManager, initial_model: str) -> gr.Blocks:
    with gr.Blocks(title="Local Chat", analytics_enabled=False) as app:
        gr.Markdown("## Local Chat\nOpen models on this machine; nothing leaves it.")
        with gr.Tab("Chat", id="chat"):
            build_chat_tab(manager, initial_model)
        with gr.Tab("Models", id="models"):
            build_models_tab(manager)
    return app


def serve(manager: ModelManager, initial_model: str, host: str, port: int,
          open_browser: bool) -> None:
    app = build_app(manager, initial_model)
    app.queue(default_concurrency_limit=16)
    _, local_url, _ = app.launch(server_name=host, server_port=port, share=False,
                                 inbrowser=open_browser, quiet=True, prevent_thread_lock=True,
                                 theme=THEME, footer_links=[], ssr_mode=False,
                                 enable_monitoring=False, mcp_server=False)
    print(f"Chat page: {local_url}", flush=True)
    try:
        app.block_thread()
    finally:
        manager.unload_all()
