"""llama.cpp's own log lines stay off the terminal: llama's and ggml's loggers both go to
the Python log (backends/llamacpp_log.py), where --log-level DEBUG shows them."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

# llama.cpp's own warning (llama-kv-cache-iswa.cpp), sent through each logger as llama.cpp
# does: ggml's ggml_log_internal, and llama's llama_log_internal (C++, so its mangled name).
EMIT = """
import ctypes, logging, sys
import llama_cpp
from llama_cpp._ggml import libggml
from backends.llamacpp import _quiet
if sys.argv[1] == "debug":
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
_quiet(llama_cpp)
line = b"llama_kv_cache_iswa: using full-size SWA cache (ref: #13194)\\n"
libggml.ggml_log_internal(2, b"%s", line)
llama = getattr(llama_cpp.llama_cpp._lib, "_Z18llama_log_internal14ggml_log_levelPKcz", None)
if llama is not None:
    llama(2, b"%s", line)
print("llama" if llama is not None else "ggml only")
"""


def emit(mode: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", EMIT, mode], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_llama_cpp_warnings_do_not_reach_stderr():
    result = emit("default")
    assert result.stderr == ""


def test_they_reach_the_python_log_at_debug():
    result = emit("debug")
    lines = [line for line in result.stderr.splitlines() if "full-size SWA cache" in line]
    expected = 2 if result.stdout.strip() == "llama" else 1
    assert lines == ["DEBUG llama.cpp: llama_kv_cache_iswa: using full-size SWA cache "
                     "(ref: #13194)"] * expected
