"""llama.cpp's own log lines into the Python log, so the terminal shows only the app's.

llama.cpp (llama's and ggml's lines alike) logs through the callback given to
llama_log_set. llama-cpp-python installs one that prints to stderr whatever passes the level
of its logger, which passes every line until something sets that level; here they go to
the logger "llama.cpp" instead: errors as warnings, the rest (the "llama_kv_cache_iswa:
using full-size SWA cache" kind) at DEBUG, which --log-level DEBUG shows.
"""
from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger("llama.cpp")

GGML_LOG_LEVEL_ERROR = 3


def route_to_python_logging(llama_cpp) -> None:
    """Point llama.cpp's logger at the Python log (idempotent)."""
    llama_cpp.llama_log_set(_callback(llama_cpp.llama_log_callback), ctypes.c_void_p(0))


@functools.cache
def _callback(callback_type):
    """One callback for the process: llama.cpp keeps the pointer, so it must never be freed."""
    return callback_type(_forward)


def _forward(level: int, text: bytes, user_data) -> None:
    line = text.decode("utf-8", errors="replace").rstrip("\n")
    if line:
        log.log(logging.WARNING if level == GGML_LOG_LEVEL_ERROR else logging.DEBUG, "%s", line)
