"""Local Chat: open models on this machine, in the browser or in one shot from a terminal.

    python chat_app.py                         # the chat page on http://127.0.0.1:7860
    python chat_app.py --prompt "Hello"        # one reply on stdout, no server
    python chat_app.py --list-models           # what models.yaml offers, and its state
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

import platformdirs
from pydantic import ValidationError

from chatcore.generation.registry import ConfigError, load_layered_registry
from chatcore.api.credentials import AUTH_ENV, CredentialsError, resolve
from backends.shared_weights import SharedWeights
from chatcore.generation.factory import APP_NAME, default_cache_dir, make_backend
from chatcore.library.fit import WeightsCheck
from chatcore.library.hub import Hub
from chatcore.library.hub_errors import HubError
from chatcore.i18n import DEFAULT_LANGUAGE, LANGUAGES, english, load_texts
from chatcore.library.model_library import ModelLibrary, personal_registry
from chatcore.library.errors import LibraryError
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.memory import MemoryBudget, format_bytes
from chatcore.generation.oneshot import run_prompt
from chatcore.api.request_guard import (Access, is_loopback, parse_allowed_hosts,
                                    parse_cors_origins)
from backends.base import GenParams
from backends.sampling import merge
from chatcore.conversations.store import Store

DEFAULT_MODELS = Path(__file__).resolve().parent / "models.yaml"
EXIT_FAILED, EXIT_USAGE = 1, 2
API_KEY_ENV = "LOCAL_CHAT_API_KEY"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Chat with open models on this machine, in the browser or the terminal.")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, metavar="PATH",
                        help="the model registry to read (default: models.yaml beside this file)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only)")
    parser.add_argument("--allowed-hosts", action="append", metavar="NAME[,NAME...]",
                        help="more names the server answers to, e.g. a reverse proxy's or a "
                             "LAN name (loopback names and --host always work; others get 403)")
    parser.add_argument("--cors-origin", action="append", metavar="URL",
                        help="let the web front end at URL (e.g. http://localhost:3000) call "
                             "the API at /v1 from its pages; repeatable (default: none)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--model", metavar="ID",
                        help="model selected on start, or used by --prompt (default: the first)")
    parser.add_argument("--offline", action="store_true",
                        help="never touch the network: Hugging Face libraries run offline")
    parser.add_argument("--allow-download", action="store_true",
                        help="let entries with a 'repo' download missing files from the Hub")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), metavar="DIR",
                        help="where conversations are kept (default: %(default)s)")
    parser.add_argument("--auth-file", type=Path, metavar="PATH",
                        help="require sign-in with the users in PATH, one USER:PASSWORD per "
                             "line; each user sees only their own conversations (also: "
                             f"${AUTH_ENV}=USER:PASSWORD,...)")
    parser.add_argument("--auth", metavar="USER:PASSWORD[,...]",
                        help="as --auth-file, on the command line, where every local user can "
                             "read the passwords (ps): prefer --auth-file")
    parser.add_argument("--api-key", metavar="KEY", default=os.environ.get(API_KEY_ENV),
                        help="key the OpenAI-compatible API at /v1 requires as a Bearer token "
                             f"(default: ${API_KEY_ENV}); required with a --host other than "
                             "loopback")
    parser.add_argument("--max-memory", metavar="SIZE",
                        help="memory the models may take: 12GB for RAM, or cpu=12GB,cuda:0=20GB "
                             "(default: 75%% of the RAM free at start, 90%% of free GPU memory)")
    parser.add_argument("--language", choices=list(LANGUAGES), metavar="|".join(LANGUAGES),
                        help="the page's language for everyone (default: each browser's "
                             "language; a person's own choice on the page comes first), "
                             "and the language of --prompt's notes")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open the page in a browser on start")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging detail")
    parser.add_argument("--list-models", action="store_true",
                        help="print every model entry with its backend and state, then exit")
    library = parser.add_argument_group("the model library (your models.yaml in --data-dir)")
    library.add_argument("--scan", action="store_true",
                         help="list the models on this machine (Hugging Face cache, LM Studio, "
                              "Ollama, llama.cpp, GPT4All, --models-dir) with their fit, then exit")
    library.add_argument("--json", action="store_true", help="with --scan: print JSON")
    library.add_argument("--models-dir", action="append", type=Path, default=[], metavar="DIR",
                         help="another folder to search for GGUF files and checkpoints "
                              "(repeatable)")
    library.add_argument("--add", metavar="PATH_OR_SCAN_ID",
                         help="add a GGUF file, a checkpoint folder or a scanned model to your "
                              "registry, then exit")
    library.add_argument("--id", metavar="ID", help="with --add: the id to give it")
    library.add_argument("--download", metavar="REPO_OR_ID",
                         help="download a GGUF from the Hugging Face Hub (a repo with --file, or "
                              "a registry entry's id) into its cache, resuming what an earlier "
                              "try left, then add it to your registry and exit")
    library.add_argument("--file", metavar="NAME", help="with --download REPO: the GGUF file")
    library.add_argument("--admins", metavar="USER[,USER...]",
                         help="with --auth: the users who may add, edit, remove and download "
                              "models (without --auth, you are the admin)")
    oneshot = parser.add_argument_group("one-shot mode (no server)")
    oneshot.add_argument("--prompt", help="send this one message and stream the reply to stdout")
    oneshot.add_argument("--system", help="system prompt for --prompt")
    oneshot.add_argument("--temperature", type=float, help="sampling temperature; 0 is greedy")
    oneshot.add_argument("--max-new-tokens", type=int, help="longest reply, in tokens")
    oneshot.add_argument("--seed", type=int, help="random seed, for repeatable sampling")
    oneshot.add_argument("--min-p", type=float,
                         help="leave out tokens below this share of the likeliest's "
                              "probability (0-1; 0 is off)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.offline and args.allow_download:
        return _fail("--offline and --allow-download contradict each other", EXIT_USAGE)
    try:
        credentials = resolve(args.auth, args.auth_file)
    except CredentialsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    auth = credentials.users
    if args.admins and not auth:
        return _fail("--admins names users of --auth: without --auth there is one local "
                     "user, who is the admin", EXIT_USAGE)
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    personal = personal_registry(args.data_dir)
    try:
        registry = load_layered_registry(args.models, personal)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        budget = MemoryBudget.parse(args.max_memory)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    for broken in registry.broken:
        print(f"warning: {broken.reason}", file=sys.stderr)
    cache_dir = default_cache_dir()
    shared = SharedWeights()  # a base several entries name is loaded once
    manager = ModelManager(
        registry,
        lambda entry: make_backend(entry, allow_download=args.allow_download, cache_dir=cache_dir,
                                   shared=shared),
        budget=budget, allow_download=args.allow_download, weights_check=WeightsCheck())

    if args.download is not None:
        if args.offline:
            return _fail("--download needs the network; --offline forbids it", EXIT_USAGE)
        return _download(manager, args, personal)
    hub = Hub() if args.allow_download else None
    library = ModelLibrary(manager, args.models, personal, scan_dirs=args.models_dir,
                           admins=_admins(args, auth), hub=hub, offline=args.offline)
    if args.scan:
        return _print_scan(library, args.json)
    if args.add is not None:
        return _add(library, args.add, args.id)
    if args.list_models:
        for status in manager.statuses():
            reason = f"  ({status.reason})" if status.reason else ""
            print(f"{status.id:32} {status.backend:13} {status.state.value:15} "
                  f"{status.name}{reason}")
        return 0
    model_id = args.model or registry.entries[0].id
    try:
        entry = manager.entry(model_id)
    except (UnknownModel, ModelUnavailable) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if args.prompt is not None:
        return _one_shot(manager, args, entry.defaults, model_id)

    if not (args.api_key or auth) and not is_loopback(args.host):
        return _fail(f"--host {args.host} opens the API to other machines: give it a key with "
                     f"--api-key or ${API_KEY_ENV}, or require sign-in with --auth", EXIT_USAGE)
    for warning in credentials.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        access = Access(host=args.host, auth=auth, api_key=args.api_key,
                        allowed_hosts=parse_allowed_hosts(args.allowed_hosts),
                        cors_origins=parse_cors_origins(args.cors_origin))
        store = Store(args.data_dir)
    except ValueError as exc:  # GuardSettingError among them
        return _fail(str(exc), EXIT_USAGE)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"cannot open the conversation store in {args.data_dir}: {exc}",
                     EXIT_FAILED)
    if not auth and not is_loopback(args.host):
        print(f"warning: without --auth, the page and its stored conversations are open to "
              f"anyone who can reach {args.host}:{args.port}", file=sys.stderr)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from chatui.app import ServeError, serve  # gradio is slow to import: only when serving

    try:
        serve(manager, store, model_id, access, args.port,
              open_browser=not args.no_browser, library=library,
              language=args.language)
    except ServeError as exc:
        return _fail(str(exc), EXIT_FAILED)
    return 0


def _admins(args: argparse.Namespace, auth: list[tuple[str, str]] | None) -> list[str] | None:
    """None (everyone may) without sign-in; with it, only the users --admins names."""
    if not auth:
        return None
    return [name.strip() for name in (args.admins or "").split(",") if name.strip()]


def _print_scan(library: ModelLibrary, as_json: bool) -> int:
    result = library.scan()
    rows = []
    for found in result.models:
        fit = library.fit_of_found(found)
        rows.append({
            "scan_id": found.scan_id, "source": found.source, "name": found.name,
            "path": str(found.path), "format": found.format,
            "architecture": found.architecture, "parameters": found.n_params,
            "quantization": found.quantization, "size_bytes": found.size_bytes,
            "context_length": found.context_length,
            "chat_template": found.has_chat_template, "suggested_id": found.suggested_id,
            "fit": fit.verdict if fit else None, "fit_detail": fit.detail if fit else None,
            "tags": found.tags.model_dump(mode="json", exclude_defaults=True),
            "problem": found.problem, "adapter_for": found.adapter_for or None,
            "base_path": str(found.base_path) if found.base_path else None})
    if as_json:
        print(json.dumps({"models": rows, "skipped": list(result.skipped)}, indent=1))
        return 0
    print(f"{'SCAN ID':11} {'SOURCE':12} {'QUANT':8} {'PARAMS':>7} {'SIZE':>8} {'CONTEXT':>7} "
          f"{'TEMPLATE':8} {'FIT':10} NAME")
    for row in rows:
        params = f"{row['parameters'] / 1e9:.2f}B" if row["parameters"] else "?"
        print(f"{row['scan_id']:11} {row['source']:12} {row['quantization'] or '?':8} "
              f"{params:>7} {format_bytes(row['size_bytes']):>8} "
              f"{row['context_length'] or '?':>7} "
              f"{'yes' if row['chat_template'] else 'no':8} {row['fit'] or '-':10} "
              f"{row['name']}"
              + (f" (LoRA adapter for {row['adapter_for']})" if row["adapter_for"] else "")
              + (f"  (unreadable: {row['problem']})" if row["problem"] else ""))
    if result.skipped:
        print(f"({len(result.skipped)} paths skipped: {'; '.join(result.skipped[:3])}"
              + (" ..." if len(result.skipped) > 3 else "") + ")")
    return 0


def _add(library: ModelLibrary, text: str, model_id: str | None) -> int:
    try:
        entry, notes = library.add(text, model_id)
    except (LibraryError, ConfigError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    print(f"added {entry.id} ({entry.name}) to {library.personal}")
    texts = english()  # the terminal stays English
    for note in notes:
        print(f"note: {texts(f'library.note.{note.kind}', **note.params)}")
    return 0


def _download(manager: ModelManager, args: argparse.Namespace, personal: Path) -> int:
    """One download on the terminal, with its progress on stderr; asking for it is the
    permission, so it needs no --allow-download."""
    hub = Hub()
    library = ModelLibrary(manager, args.models, personal, hub=None)
    target, filename = args.download, args.file
    try:
        if manager.registry.get(target) is not None and filename is None:
            entry = manager.entry(target)
            if not entry.repo or not entry.file:
                return _fail(f"{target} has no GGUF file to download (it needs 'repo' and "
                             "'file' in its entry)", EXIT_USAGE)
            target, filename = entry.repo, entry.file
        if filename is None:
            files = hub.listing(target).gguf_files
            if len(files) != 1:
                choices = ", ".join(f"{f.filename} ({format_bytes(f.size)})" for f in files)
                return _fail(f"{target} holds {len(files)} GGUF files: pick one with --file "
                             f"({choices or 'none'})", EXIT_USAGE)
            filename = files[0].filename
        shown = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - shown[0] >= 0.5 or done == total:
                shown[0] = now
                share = f" ({done / total:.0%})" if total else ""
                print(f"\r{filename}: {format_bytes(done)} of {format_bytes(total)}{share}   ",
                      end="", file=sys.stderr, flush=True)

        path = hub.download(target, filename, progress=progress)
        print(file=sys.stderr)
        library.register_download(target, filename, path)
    except (HubError, LibraryError, ConfigError) as exc:
        print(file=sys.stderr)
        return _fail(str(exc), EXIT_FAILED)
    print(f"downloaded {target}/{filename} to {path}")
    added = [e for e in library.manager.registry.entries
             if e.repo == target and e.file == filename]
    if added:
        print(f"use it with --model {added[0].id}")
    return 0


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def _one_shot(manager: ModelManager, args: argparse.Namespace, defaults, model_id: str) -> int:
    try:
        params = GenParams(merge(defaults, temperature=args.temperature,
                                 max_new_tokens=args.max_new_tokens, seed=args.seed,
                                 min_p=args.min_p))
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-")
        return _fail(f"{flag}: {error['msg']} (got {error['input']})", EXIT_USAGE)
    try:
        run_prompt(manager, model_id, args.prompt, args.system, params,
                   texts=load_texts(args.language or DEFAULT_LANGUAGE))
    except (ModelUnavailable, UnknownModel) as exc:
        return _fail(str(exc), EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - BackendError and anything else: one line
        return _fail(str(exc), EXIT_FAILED)
    finally:
        manager.unload_all()
    return 0


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
