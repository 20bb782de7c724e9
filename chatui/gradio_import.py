"""Import Gradio without rewriting its type stubs. Gradio's component metaclass re-parses
its own source and rewrites each component's `.pyi` file in site-packages on every import
(`gradio.component_meta.create_or_modify_pyi`): a tool for Gradio's developers that took
about a second of every start on 2 cores, and that writes into the installed package. The
app needs no stubs at run time, so the rewrite is replaced by nothing, before the first
component class is made."""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

log = logging.getLogger(__name__)

STUB_MODULE = "gradio.component_meta"
STUB_FUNCTION = "create_or_modify_pyi"


def skip_stub_rewrite() -> None:
    """Make Gradio's stub rewrite do nothing: at once where Gradio is already imported,
    else as `gradio.component_meta` is imported (before its first component class)."""
    module = sys.modules.get(STUB_MODULE)
    if module is not None:
        _disable(module)
    elif not any(isinstance(finder, _StubSkipper) for finder in sys.meta_path):
        sys.meta_path.insert(0, _StubSkipper())


def stubs_skipped() -> bool:
    """Whether the imported Gradio makes its components without rewriting stubs."""
    module = sys.modules.get(STUB_MODULE)
    return module is not None and getattr(module, STUB_FUNCTION, None) is _no_stub


def _no_stub(*args: object, **kwargs: object) -> None:
    """Stands in for Gradio's stub rewrite."""


def _disable(module: ModuleType) -> None:
    if hasattr(module, STUB_FUNCTION):
        setattr(module, STUB_FUNCTION, _no_stub)
    else:  # a Gradio that no longer has it: nothing to skip
        log.info("%s has no %s: Gradio's imports are left as they are", STUB_MODULE,
                 STUB_FUNCTION)


class _StubSkipper(importlib.abc.MetaPathFinder):
    """Finds `gradio.component_meta` as Python would, and disables the rewrite as soon as
    the module has run; then steps out of the import system."""

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != STUB_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            _disable(module)

        spec.loader.exec_module = exec_module  # this spec's own loader, made for it
        return spec
