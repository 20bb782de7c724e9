"""The catalogs agree with each other and with the code, and the page's code shows no words
of its own: every string a person reads comes from chatcore/i18n/locales/<language>.toml."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from chatcore.i18n import (
    LANGUAGES,
    CatalogError,
    Texts,
    catalog_path,
    choose_language,
    load_texts,
    match_language,
    placeholders,
    read_catalog,
)

ROOT = Path(__file__).resolve().parent.parent
UI_FILES = sorted((ROOT / "chatui").glob("*.py"))
# chatcore modules whose words reach the page (footers, chips, verdicts, presets).
CORE_FILES_WITH_UI_TEXT = ["generation/replies.py", "generation/reply_timing.py",
                           "conversations/attachments.py", "conversations/presets.py",
                           "compare/comparison.py", "evaluate/results.py"]
# Keyword arguments whose values are identifiers or code, never words for a person.
NON_TEXT_KEYWORDS = {"elem_id", "elem_classes", "variant", "size", "type", "api_name",
                     "file_types", "js", "css", "head", "key", "language", "format",
                     "datatype", "file_count", "buttons", "show_progress", "render",
                     "trigger_mode", "concurrency_id", "queue", "id", "group_name"}
# What the server prints to its terminal, which stays English for scripts.
TERMINAL_CALLS = {"print", "ServeError"}
# Words that are the same in every language: units, file kinds, product and format names.
ALLOWED = {"GB", "MB", "KB", "GiB", "MiB", "tok/s", "GGUF", "JSON", "JSONL", "CSV", "Markdown",
           "PNG", "A", "B", "C", "D", "TTFT", "Local Chat", "OK"}
# A lower-case identifier (`primary`, `file_path`, `tie`) is a value, not a word for a person.
IDENTIFIER = re.compile(r"^[a-z0-9_.\-/:=#%*+\[\]]*$")
KEY_CALL = re.compile(r"""\btexts\(\s*f?["']([A-Za-z0-9_.]+)["']""")


@pytest.fixture(scope="module")
def catalogs() -> dict[str, dict]:
    return {language: read_catalog(catalog_path(language)) for language in LANGUAGES}


def test_every_language_has_every_key(catalogs):
    english = set(catalogs["en"])
    for language, messages in catalogs.items():
        missing, extra = english - set(messages), set(messages) - english
        assert not missing, f"{language}.toml lacks {sorted(missing)}"
        assert not extra, f"{language}.toml has keys en.toml lacks: {sorted(extra)}"


def test_placeholders_agree_and_nothing_is_empty(catalogs):
    for language, messages in catalogs.items():
        for key, message in messages.items():
            forms = [message] if isinstance(message, str) else list(message.values())
            assert all(form.strip() for form in forms), f"{language}.toml: {key} is empty"
            assert placeholders(message) == placeholders(catalogs["en"][key]), \
                f"{language}.toml: {key} uses {sorted(placeholders(message))}, " \
                f"en.toml {sorted(placeholders(catalogs['en'][key]))}"


def test_plural_messages_have_each_form_their_language_uses(catalogs):
    for language, messages in catalogs.items():
        texts = load_texts(language)
        needed = {texts.plural_category(n) for n in range(0, 200)}
        for key, message in messages.items():
            if not isinstance(message, str):
                assert needed <= set(message), f"{language}.toml: {key} lacks " \
                    f"{sorted(needed - set(message))}"


def test_every_key_the_code_names_exists(catalogs):
    used = set()
    for path in [*UI_FILES, *(ROOT / "chatcore" / name for name in CORE_FILES_WITH_UI_TEXT)]:
        used |= {key for key in KEY_CALL.findall(path.read_text()) if not key.endswith(".")}
    missing = sorted(key for key in used if key not in catalogs["en"])
    assert not missing, f"the code asks for keys no catalog has: {missing}"


def test_plural_and_number_formatting():
    texts = Texts("en", {"n": {"one": "{n} request", "other": "{n} requests"}})
    assert texts("n", n=1) == "1 request"
    assert texts("n", n=12345) == "12,345 requests"
    with pytest.raises(CatalogError, match="no message 'absent'"):
        texts("absent")
    filipino = load_texts("fil")
    assert filipino.number(1234567) == "1,234,567"  # the Philippines groups as English does
    assert filipino.number(3.14159, 1) == "3.1"


@pytest.mark.parametrize("header, language", [
    ("fil-PH,fil;q=0.9,en;q=0.8", "fil"), ("fil", "fil"), ("tl", "fil"), ("tl-PH", "fil"),
    ("en-US,en;q=0.9", "en"), ("ja-JP,fil;q=0.5", "fil"), ("ja-JP", None), ("", None),
    (None, None), ("en;q=0.2,fil;q=0.8", "fil"), ("*", None), ("fil;q=0", None)])
def test_browser_languages(header, language):
    assert match_language(header) == language


def test_whose_choice_counts():
    assert choose_language("en", "fil", "fil-PH") == "en"  # the switch, first
    assert choose_language(None, "fil", "en-US") == "fil"  # then --language
    assert choose_language(None, None, "fil-PH") == "fil"  # then the browser
    assert choose_language(None, None, "ja") == "en"
    assert choose_language("xx", None, None) == "en"  # a stored code no longer shipped


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _skipped(tree: ast.AST) -> set[int]:
    """Constants that are not words for a person: keys, code, identifiers' keyword values,
    logging, exceptions for programmers and the *_JS / *_CSS constants."""
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else \
                getattr(node.func, "id", "")
            if name in TERMINAL_CALLS:
                skip |= {id(n) for a in node.args for n in ast.walk(a)}
            if name in {"texts", "choices"} and node.args:
                skip |= {id(n) for n in ast.walk(node.args[0])}
            if name in {"debug", "info", "warning", "error", "exception"} and \
                    isinstance(node.func, ast.Attribute) and \
                    getattr(node.func.value, "id", "") == "log":
                skip |= {id(n) for a in node.args for n in ast.walk(a)}
            for keyword in node.keywords:
                if keyword.arg in NON_TEXT_KEYWORDS:
                    skip |= {id(n) for n in ast.walk(keyword.value)}
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith(("_JS", "_CSS")) for t in node.targets):
            skip |= {id(n) for n in ast.walk(node.value)}
        elif isinstance(node, ast.Subscript):  # mapping["key"]
            skip |= {id(n) for n in ast.walk(node.slice)}
        elif isinstance(node, ast.Compare):  # outcome == "tie"
            skip |= {id(n) for n in ast.walk(node)}
    return skip


def words_in(path: Path) -> list[str]:
    """`file:line: 'literal'` for every literal in the file a person would read."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _skipped(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) \
                or id(node) in skip:
            continue
        text = re.sub(r"<[^>]*>", "", node.value).strip()  # HTML markup is not words
        if not re.search(r"[A-Za-z]{2,}", text) or IDENTIFIER.match(text) or text in ALLOWED:
            continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_the_page_code_shows_no_words_of_its_own(path):
    found = words_in(path)
    assert not found, "words shown to a person must come from the catalog " \
        "(chatcore/i18n/locales/*.toml, through texts(key)):\n" + "\n".join(found)


def test_the_scan_catches_a_label(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('import gradio as gr\nb = gr.Button("Send", elem_id="send")\n'
                      'm = gr.Markdown(f"Loaded on: {1}")\nok = gr.Button(texts("chat.send"))\n')
    sample = sample.rename(ROOT / "tests" / "_scan_sample.py")
    try:
        assert [line.split(": ", 1)[1] for line in words_in(sample)] == \
            ["'Send'", "'Loaded on: '"]
    finally:
        sample.unlink()


def test_the_switch_is_kept_per_user_across_restarts(tmp_path):
    from chatcore.conversations.store import Store
    from chatui.page_language import LanguageRule, PagePaths

    def rule(store: Store, language: str | None = None) -> LanguageRule:
        return LanguageRule(store, PagePaths("en"), language)

    store = Store(tmp_path)
    assert rule(store).language_for("alice", "en", "fil-PH,fil;q=0.9") == "fil"
    assert rule(store, "fil").language_for("alice", "en", "en-US") == "fil"
    # /fil opened on purpose by an English browser, with no choice made yet, stays Filipino
    assert rule(store).language_for("alice", "fil", "en-US") == "fil"
    rule(store).choose("alice", "en")
    store.close()
    store = Store(tmp_path)  # a restart reads the same file
    assert rule(store).language_for("alice", "en", "fil-PH") == "en"
    assert rule(store).language_for("alice", "fil", "fil-PH") == "en"
    assert rule(store, "fil").language_for("alice", "en", "fil-PH") == "en"
    assert rule(store).language_for("bob", "en", "fil-PH") == "fil"  # bob: no choice
    # with --auth, a person not signed in yet has no choice of theirs to read
    assert rule(store).language_for(None, "en", "fil-PH") == "fil"
    assert PagePaths("en").path("fil") == "/fil" and PagePaths("fil").path("fil") == "/"
    assert PagePaths("en").language_at("/fil/") == "fil"
    assert PagePaths("en").language_at("/") == "en"
    assert PagePaths("en").language_at("/config") is None
    store.close()
