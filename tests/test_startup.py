"""Start-up imports only what the first page needs: no engine (torch, transformers,
llama.cpp, peft, ...) before a model loads, and Gradio without its stub rewrite. torch alone
took seconds and about 180 MB of the start; Gradio's rewrite of its own `.pyi` files about a
second (chatui/gradio_import.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SHIPPED_MODELS

ENGINES = ("torch", "transformers", "llama_cpp")
# What the page does not need before a model loads or a file is attached: the engines and
# their helpers, the PDF reader, the benchmark's plotting.
DEFERRED = (*ENGINES, "peft", "accelerate", "bitsandbytes", "safetensors", "tokenizers",
            "openai", "llm", "pypdf", "matplotlib")
# Records, in the child, the project line whose import first pulled in each deferred module.
WHO_IMPORTED = f"""
import sys, traceback
first_importer = {{}}
class _Recorder:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in {DEFERRED!r} and top not in first_importer:
            ours = [f for f in traceback.extract_stack()[:-1]
                    if f.filename.startswith({str(ROOT)!r}) and "/tests/" not in f.filename]
            first_importer[top] = (f"{{ours[-1].filename}}:{{ours[-1].lineno}} "
                                   f"({{ours[-1].name}})" if ours else "outside the project")
        return None
sys.meta_path.insert(0, _Recorder())
"""


def imported_after(code: str) -> set[str]:
    """The engine modules a fresh interpreter holds after running `code` in the project."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {ENGINES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split())


def test_the_command_line_imports_no_engine():
    assert imported_after("import chat_app") == set()


def test_the_start_up_to_serving_imports_nothing_the_first_page_does_not_need(tmp_path):
    """chat_app.main() as `python chat_app.py` runs it, the page built for both languages,
    the Models tab's badges drawn, "Chat page:" printed; only uvicorn's listening is left
    out (its run() says it started and returns, and the app then stops as on Ctrl-C)."""
    code = WHO_IMPORTED + f"""
import uvicorn
uvicorn.Server.run = lambda self, sockets=None: setattr(self, "started", True)
import chat_app
assert chat_app.main(["--no-browser", "--port", "0", "--data-dir", {str(tmp_path)!r}]) == 0
from chatui.gradio_import import stubs_skipped
print("stubs skipped:", stubs_skipped())
for name, where in sorted(first_importer.items()):
    if name in sys.modules:
        print(f"deferred module imported: {{name}}, first by {{where}}")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("Chat page: http://127.0.0.1:") for line in lines), \
        result.stdout + result.stderr[-3000:]
    deferred = [line for line in lines if line.startswith("deferred module")]
    assert deferred == [], "the start imported what only a model or a file needs:\n" + \
        "\n".join(deferred)
    assert "stubs skipped: True" in lines, \
        "Gradio rewrote its .pyi stubs on import (chatui/__init__.py skips that)"


def test_gradio_imported_before_the_page_still_skips_its_stub_rewrite():
    """Another entry point (a script, a test) may import Gradio first: the page's import
    then disables the rewrite at once, and Gradio's components still build."""
    code = """
import gradio as gr
import gradio.component_meta
gradios_own = gradio.component_meta.create_or_modify_pyi
assert gradios_own.__module__ == "gradio.component_meta"
import chatui.app
from chatui.gradio_import import stubs_skipped
assert stubs_skipped() and gradio.component_meta.create_or_modify_pyi is not gradios_own
with gr.Blocks() as page:
    gr.Textbox(label="still a textbox")
assert [b.label for b in page.blocks.values() if isinstance(b, gr.Textbox)] == ["still a textbox"]
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def fit_badges(data_dir: Path) -> str:
    """Child code: the Models tab's fit badge of every local shipped entry, as it asks."""
    return f"""
from pathlib import Path
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.generation.registry import load_layered_registry
from chatcore.library.model_library import ModelLibrary, personal_registry
personal = personal_registry(Path({str(data_dir)!r}))
manager = ModelManager(load_layered_registry(Path({str(SHIPPED_MODELS)!r}), personal),
                       lambda entry: make_backend(entry))
library = ModelLibrary(manager, Path({str(SHIPPED_MODELS)!r}), personal)
fits = [library.fit_of_entry(entry.id) for entry in manager.registry.entries
        if not entry.is_remote]
assert any(fit is not None for fit in fits), fits
"""


def test_the_models_tabs_fit_badges_import_no_engine_without_a_cuda_driver(tmp_path):
    """The Models tab's badges ask each local entry's planned memory and device; every
    shipped entry, the transformers ones among them, is answered without torch. The child
    is given a driver library name that cannot load, so a machine with a GPU asserts the
    driverless path too (with a driver, torch is asked: the next test)."""
    code = f"""
import sys
import backends.cuda
backends.cuda.DRIVER_LIBRARIES = {{sys.platform: "libcuda-absent-for-this-test.so.1"}}
assert not backends.cuda.driver_present()
{fit_badges(tmp_path)}
"""
    assert imported_after(code) == set()


def test_with_a_cuda_driver_present_the_badges_ask_torch(tmp_path):
    """The other path, on every machine, with or without a GPU: the child's "driver" is a
    library that loads (the C library), so driver_present() holds, the badges ask torch,
    and whether CUDA works is torch's own answer."""
    code = f"""
import ctypes.util, sys
import backends.cuda
backends.cuda.DRIVER_LIBRARIES = {{sys.platform: ctypes.util.find_library("c") or "msvcrt"}}
assert backends.cuda.driver_present()
assert "torch" not in sys.modules
{fit_badges(tmp_path)}
assert "torch" in sys.modules, "with a driver present, the fit badges never asked torch"
import torch
assert backends.cuda.cuda_available() == torch.cuda.is_available()
"""
    assert "torch" in imported_after(code)
