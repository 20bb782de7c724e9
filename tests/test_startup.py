"""Start-up imports only what the first page needs: no engine (torch, transformers,
llama.cpp) before a model loads. torch alone took seconds and about 180 MB of the start."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, SHIPPED_MODELS

ENGINES = ("torch", "transformers", "llama_cpp")


def imported_after(code: str) -> set[str]:
    """The engine modules a fresh interpreter holds after running `code` in the project."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {ENGINES!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split())


def test_the_command_line_imports_no_engine():
    assert imported_after("import chat_app") == set()


def test_the_models_tabs_fit_badges_import_no_engine_without_a_cuda_driver(tmp_path):
    """The Models tab's badges ask each local entry's planned memory and device; every
    shipped entry, the transformers ones among them, is answered without torch. The child
    is given a driver library name that cannot load, so a machine with a GPU asserts the
    driverless path too (with a driver, torch is asked, as it must be)."""
    code = f"""
import sys
import backends.cuda
backends.cuda.DRIVER_LIBRARIES = {{sys.platform: "libcuda-absent-for-this-test.so.1"}}
assert not backends.cuda.driver_present()
from pathlib import Path
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.generation.registry import load_layered_registry
from chatcore.library.model_library import ModelLibrary, personal_registry
personal = personal_registry(Path({str(tmp_path)!r}))
manager = ModelManager(load_layered_registry(Path({str(SHIPPED_MODELS)!r}), personal),
                       lambda entry: make_backend(entry))
library = ModelLibrary(manager, Path({str(SHIPPED_MODELS)!r}), personal)
fits = [library.fit_of_entry(entry.id) for entry in manager.registry.entries
        if not entry.is_remote]
assert any(fit is not None for fit in fits), fits
"""
    assert imported_after(code) == set()
