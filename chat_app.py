"""Local Chat: open models on this machine, in the browser or in one shot from a terminal.

    python chat_app.py                         # the chat page on http://127.0.0.1:7860
    python chat_app.py --prompt "Hello"        # one reply on stdout, no server
    python chat_app.py --list-models           # what models.yaml offers, and its state
"""
from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from pathlib import Path

import platformdirs

from backends.base import GenParams
from chatcore.config import ConfigError, load_registry
from chatcore.factory import APP_NAME, default_cache_dir, make_backend
from chatcore.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.memory import MemoryBudget
from chatcore.request_guard import (Access, is_loopback, parse_allowed_hosts,
                                    parse_cors_origins)
from chatcore.store import Store
from chatcore.oneshot import run_prompt

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
    parser.add_argument("--auth", metavar="USER:PASSWORD[,...]",
                        help="require sign-in; each user sees only their own conversations")
    parser.add_argument("--api-key", metavar="KEY", default=os.environ.get(API_KEY_ENV),
                        help="key the OpenAI-compatible API at /v1 requires as a Bearer token "
                             f"(default: ${API_KEY_ENV}); required with a --host other than "
                             "loopback")
    parser.add_argument("--max-memory", metavar="SIZE",
                        help="memory the models may take: 12GB for RAM, or cpu=12GB,cuda:0=20GB "
                             "(default: 75%% of the RAM free at start, 90%% of free GPU memory)")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open the page in a browser on start")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging detail")
    parser.add_argument("--list-models", action="store_true",
                        help="print every model entry with its backend and state, then exit")
    oneshot = parser.add_argument_group("one-shot mode (no server)")
    oneshot.add_argument("--prompt", help="send this one message and stream the reply to stdout")
    oneshot.add_argument("--system", help="system prompt for --prompt")
    oneshot.add_argument("--temperature", type=float, help="sampling temperature; 0 is greedy")
    oneshot.add_argument("--max-new-tokens", type=int, help="longest reply, in tokens")
    oneshot.add_argument("--seed", type=int, help="random seed, for repeatable sampling")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if args.offline and args.allow_download:
        return _fail("--offline and --allow-download contradict each other", EXIT_USAGE)
    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        registry = load_registry(args.models)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        budget = MemoryBudget.parse(args.max_memory)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    for broken in registry.broken:
        print(f"warning: {broken.reason}", file=sys.stderr)
    cache_dir = default_cache_dir()
    manager = ModelManager(
        registry,
        lambda entry: make_backend(entry, allow_download=args.allow_download, cache_dir=cache_dir),
        budget=budget, allow_download=args.allow_download)

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

    if not (args.api_key or args.auth) and not is_loopback(args.host):
        return _fail(f"--host {args.host} opens the API to other machines: give it a key with "
                     f"--api-key or ${API_KEY_ENV}, or require sign-in with --auth", EXIT_USAGE)
    try:
        auth = parse_auth(args.auth)
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
              open_browser=not args.no_browser, data_dir=args.data_dir)
    except ServeError as exc:
        return _fail(str(exc), EXIT_FAILED)
    return 0


def parse_auth(text: str | None) -> list[tuple[str, str]] | None:
    """`alice:secret,bob:hunter2` -> [("alice", "secret"), ("bob", "hunter2")]."""
    if not text:
        return None
    pairs = []
    for item in text.split(","):
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"--auth: {item!r} is not USER:PASSWORD")
        pairs.append((user.strip(), password))
    return pairs


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def _one_shot(manager: ModelManager, args: argparse.Namespace, defaults, model_id: str) -> int:
    params = GenParams(
        temperature=defaults.temperature if args.temperature is None else args.temperature,
        top_p=defaults.top_p,
        top_k=defaults.top_k,
        max_new_tokens=args.max_new_tokens or defaults.max_new_tokens,
        repetition_penalty=defaults.repetition_penalty,
        seed=defaults.seed if args.seed is None else args.seed,
    )
    try:
        run_prompt(manager, model_id, args.prompt, args.system, params)
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
