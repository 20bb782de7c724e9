"""No silent English: every function that makes the page's words is given the page's `Texts`.

A `texts: Texts | None = None` parameter with `texts or english()` inside renders English on
the Filipino page whenever a caller forgets the argument, and nothing fails. So `texts` is
required everywhere in chatcore/ and chatui/: the source check below finds any optional
`texts` or English fallback, and building each language's page turns a forgotten argument
into a TypeError. Code that means English (the exported reports, the tests) says
`english()` where it calls.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from chatcore.i18n import LANGUAGES, load_texts

ROOT = Path(__file__).resolve().parent.parent
CODE = sorted(path for package in ("chatcore", "chatui")
              for path in (ROOT / package).rglob("*.py"))
FALLBACKS = ("english", "load_texts")  # what a fallback calls to get a language unasked


def _names(node: ast.AST) -> set[str]:
    """Every name in an annotation, string annotations ("Texts | None") read too."""
    found = set()
    for part in ast.walk(node):
        if isinstance(part, ast.Name):
            found.add(part.id)
        elif isinstance(part, ast.Attribute):
            found.add(part.attr)
        elif isinstance(part, ast.Constant) and part.value is None:
            found.add("None")
        elif isinstance(part, ast.Constant) and isinstance(part.value, str):
            try:
                found |= _names(ast.parse(part.value, mode="eval"))
            except SyntaxError:
                pass
    return found


def _optional_texts(annotation: ast.AST | None) -> bool:
    """`Texts | None`, `None | Texts`, `Optional[Texts]`, `Union[Texts, None]`."""
    if annotation is None:
        return False
    names = _names(annotation)
    return "Texts" in names and bool(names & {"None", "Optional"})


def _falls_back(node: ast.AST) -> bool:
    """A call of english() (or load_texts) somewhere in `node`."""
    return any(isinstance(part, ast.Call) and (
        getattr(part.func, "id", None) in FALLBACKS or getattr(part.func, "attr", None)
        in FALLBACKS) for part in ast.walk(node))


def fallbacks_in(source: str, name: str) -> list[str]:
    """`name:line: what` for every way the code could show English to a page that did not
    ask for it: an optional Texts parameter, a `texts` parameter with a default, and
    `texts or english()` / `texts if texts else english()`."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            defaults = dict(zip([a.arg for a in positional[len(positional)
                                                              - len(args.defaults):]],
                                args.defaults))
            defaults.update((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults)
                            if d is not None)
            for arg in [*positional, *args.kwonlyargs]:
                if _optional_texts(arg.annotation):
                    found.append(f"{name}:{arg.lineno}: parameter {arg.arg}: "
                                 f"{ast.unparse(arg.annotation)}")
                elif arg.arg == "texts" and arg.arg in defaults:
                    found.append(f"{name}:{arg.lineno}: parameter texts has a default "
                                 f"({ast.unparse(defaults[arg.arg])})")
        elif isinstance(node, ast.AnnAssign) and _optional_texts(node.annotation):
            found.append(f"{name}:{node.lineno}: {ast.unparse(node.target)}: "
                         f"{ast.unparse(node.annotation)}")
        elif isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and any(
                _falls_back(value) for value in node.values[1:]):
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.IfExp) and "texts" in _names(node.test) and (
                _falls_back(node.body) or _falls_back(node.orelse)):
            found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_falls_back_to_english(path):
    found = fallbacks_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "the page's Texts must be passed, not defaulted to English " \
        "(make `texts: Texts` required and pass it from the caller):\n" + "\n".join(found)


def test_the_check_catches_each_way_to_fall_back():
    sample = '''
from typing import Optional
def a(x, texts: Texts | None = None): return (texts or english())("k")
def b(texts: Optional[Texts] = None): pass
def c(*, texts: "Texts | None" = None): pass
def d(texts=english()): pass
class E:
    def __init__(self, texts: Texts | None = None):
        self.texts = texts if texts is not None else english()
def f(label, texts: Texts) -> str: return texts("k", label=label)
def g(*, texts: Texts, other: int | None = None): return other or 1
'''
    lines = sorted(int(line.split(":")[1]) for line in fallbacks_in(sample, "sample.py"))
    assert lines == [3, 3, 4, 5, 6, 8, 9]


@pytest.fixture()
def page_parts(tmp_path):
    """What a page is built from, with no model loaded: the shipped registry, an engine
    factory that refuses to load anything, and a library without the Hub."""
    from chatcore.conversations.store import Store
    from chatcore.evaluate.runner import EvalRunner
    from chatcore.evaluate.store import EvalStore
    from chatcore.generation.manager import ModelManager
    from chatcore.generation.registry import load_layered_registry
    from chatcore.library.model_library import ModelLibrary
    from chatui.exports import ExportFiles
    from tests.conftest import SHIPPED_MODELS

    def no_engine(entry):
        raise AssertionError(f"building the page asked for an engine for {entry.id}")

    personal = tmp_path / "models.yaml"
    manager = ModelManager(load_layered_registry(SHIPPED_MODELS, personal), no_engine)
    store = Store(tmp_path / "data")
    exports = ExportFiles(tmp_path / "exports")
    library = ModelLibrary(manager, SHIPPED_MODELS, personal, env={}, home=tmp_path)
    evaluations = EvalRunner(manager, EvalStore(store))
    try:
        yield manager, store, exports, library, evaluations
    finally:
        evaluations.close()
        exports.close()
        store.close()


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_each_languages_page_builds_with_its_own_words(page_parts, language):
    """The whole page, `/` in `language` and every other language at `/<code>`: a function
    on the way that is not handed the page's Texts is a TypeError here."""
    from chatui.app import build_app

    manager, store, exports, library, evaluations = page_parts
    initial = manager.registry.entries[0].id
    app = build_app(manager, store, initial, exports, library, evaluations, language)
    assert app.title == load_texts(language)("app.title")
    shown = {getattr(block, "label", None) for block in app.blocks.values()}
    for code in LANGUAGES:  # each page's tabs, in its own words
        assert {load_texts(code)(f"app.{tab}") for tab in
                ("chat", "compare", "evaluate", "models")} <= shown, code
