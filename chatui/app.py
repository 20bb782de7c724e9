"""Assembles the page and serves it on loopback, with no share link and no analytics."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from chatcore.manager import ModelManager
from chatcore.store import Store
from chatcore.transfer import MAX_IMPORT_BYTES
from chatui.chat_tab import build_chat_tab
from chatui.compare_tab import build_compare_tab
from chatui.models_tab import build_models_tab

# System fonts only: the default theme would fetch web fonts, and the app works offline.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "monospace"])


def build_app(manager: ModelManager, store: Store, initial_model: str,
              export_dir: Path) -> gr.Blocks:
    with gr.Blocks(title="Local Chat", analytics_enabled=False) as app:
        gr.Markdown("## Local Chat\nOpen models on this machine; nothing leaves it.")
        with gr.Tab("Chat", id="chat"):
            build_chat_tab(app, manager, store, initial_model, export_dir)
        with gr.Tab("Compare", id="compare"):
            build_compare_tab(app, manager, store, initial_model, export_dir)
        with gr.Tab("Models", id="models"):
            build_models_tab(manager)
    return app


def serve(manager: ModelManager, store: Store, initial_model: str, host: str, port: int,
          open_browser: bool, data_dir: Path,
          auth: list[tuple[str, str]] | None = None) -> None:
    export_dir = data_dir / "exports"
    export_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(manager, store, initial_model, export_dir)
    app.queue(default_concurrency_limit=16)
    _, local_url, _ = app.launch(server_name=host, server_port=port, share=False,
                                 inbrowser=open_browser, quiet=True, prevent_thread_lock=True,
                                 theme=THEME, footer_links=[], ssr_mode=False,
                                 enable_monitoring=False, mcp_server=False, auth=auth,
                                 allowed_paths=[str(export_dir)],
                                 max_file_size=MAX_IMPORT_BYTES)
    print(f"Chat page: {local_url}", flush=True)
    try:
        app.block_thread()
    finally:
        manager.unload_all()
        store.close()
