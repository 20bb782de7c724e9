"""Prompt sets for the Evaluate tab: a named list of prompts, each with an optional category
and an optional reference answer or note for the reviewer.

Sets come from three places: the built-in ones (chatcore/evaluate/builtin_sets/*.jsonl), the table
on the page (`make_set`), and uploaded files (`parse_file`: JSON Lines or CSV). Every path
validates the same bounds, and a file is all or nothing: the first bad line raises
`PromptSetError` naming the file, the line and the field, and no prompts are returned.
Standard library only; no UI here.
"""
from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

MAX_PROMPTS = 200
MAX_NAME_CHARS = 80
MAX_PROMPT_CHARS = 8000
MAX_CATEGORY_CHARS = 40
MAX_REFERENCE_CHARS = 8000
MAX_IMPORT_BYTES = 1_000_000

SUFFIXES = (".jsonl", ".json-lines", ".csv")
FIELDS = ("prompt", "category", "reference")  # "text" is accepted in place of "prompt"

BUILTIN_DIR = Path(__file__).parent / "builtin_sets"
# file in BUILTIN_DIR -> the set's name, in the order the page lists them
BUILTIN_SETS: tuple[tuple[str, str], ...] = (
    ("general.jsonl", "General knowledge"),
    ("writing.jsonl", "Writing"),
    ("coding.jsonl", "Coding"),
    ("reasoning.jsonl", "Reasoning"),
    ("filipino.jsonl", "Filipino (Tagalog)"),
)

_BOM = b"\xef\xbb\xbf"
_CONTROL = {"Cc", "Cs", "Zl", "Zp"}  # not allowed in a set name or a category
_COPY_SUFFIX = re.compile(r" \(copy(?: \d+)?\)$")


@dataclass(frozen=True)
class EvalPrompt:
    text: str
    category: str = ""
    reference: str = ""  # a reference answer or a note for the reviewer


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[EvalPrompt, ...]
    builtin: bool = False

    @property
    def categories(self) -> list[str]:
        """The distinct non-empty categories, sorted."""
        return sorted({p.category for p in self.prompts if p.category})


class PromptSetError(ValueError):
    """A set or file that cannot be used; the message names the file, line and field."""


# -- validation ----------------------------------------------------------------------------
def _control_char(text: str) -> str | None:
    for char in text:
        if unicodedata.category(char) in _CONTROL:
            return f"U+{ord(char):04X}"
    return None


def _clean(where: str, label: str, value: object, limit: int, *, required: bool = False,
           one_line: bool = False) -> str:
    """`value` stripped (line ends made "\\n"), or PromptSetError "<where>: <label> ..."."""
    if not isinstance(value, str):
        raise PromptSetError(f"{where}: {label} must be text, not {_kind(value)}")
    value = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if required and not value:
        raise PromptSetError(f"{where}: {label} is empty")
    if len(value) > limit:
        raise PromptSetError(f"{where}: {label} is longer than {limit} characters "
                             f"({len(value)})")
    if one_line and (bad := _control_char(value)):
        raise PromptSetError(f"{where}: {label} has a control character ({bad})")
    return value


def _prompt(where: str, text: object, category: object, reference: object,
            labels: tuple[str, str, str] = ("text", "category", "reference")) -> EvalPrompt:
    return EvalPrompt(
        _clean(where, labels[0], text, MAX_PROMPT_CHARS, required=True),
        _clean(where, labels[1], category, MAX_CATEGORY_CHARS, one_line=True),
        _clean(where, labels[2], reference, MAX_REFERENCE_CHARS))


def _kind(value: object) -> str:
    """What a JSON (or Python) value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def make_set(name: str, prompts: Iterable[EvalPrompt], builtin: bool = False) -> PromptSet:
    """A validated set, its name and fields stripped; PromptSetError says what is wrong."""
    if not isinstance(name, str):
        raise PromptSetError(f"set name must be text, not {_kind(name)}")
    name = name.strip()
    if not name:
        raise PromptSetError("set name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise PromptSetError(f"set name is longer than {MAX_NAME_CHARS} characters")
    if bad := _control_char(name):
        raise PromptSetError(f"set name has a control character ({bad})")
    cleaned = []
    for number, prompt in enumerate(prompts, 1):
        if number > MAX_PROMPTS:
            raise PromptSetError(f"a set holds at most {MAX_PROMPTS} prompts")
        if not isinstance(prompt, EvalPrompt):
            raise PromptSetError(f"prompt {number}: not a prompt ({_kind(prompt)})")
        cleaned.append(_prompt(f"prompt {number}", prompt.text, prompt.category,
                               prompt.reference))
    if not cleaned:
        raise PromptSetError("a set needs at least one prompt")
    return PromptSet(name, tuple(cleaned), builtin)


def name_key(name: str) -> str:
    """What makes two set names one name to a person: case, Unicode form and runs of spaces
    aside ("Thesis", " thesis" and "THESIS" are one), so no two sets in a picker read alike."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return " ".join(unicodedata.normalize("NFKC", folded).split())


def unique_name(name: str, taken: Collection[str]) -> str:
    """`name` if no set has it yet (compared by name_key), else "name (copy)", "name (copy
    2)", ... (a name that already ends in "(copy N)" counts on from its base); never over
    MAX_NAME_CHARS."""
    taken = {name_key(t) for t in taken}
    name = name.strip()
    first = name[:MAX_NAME_CHARS].rstrip()
    if name_key(first) not in taken:
        return first
    base = _COPY_SUFFIX.sub("", name)
    for number in itertools.count(1):
        suffix = " (copy)" if number == 1 else f" (copy {number})"
        candidate = base[:MAX_NAME_CHARS - len(suffix)].rstrip() + suffix
        if name_key(candidate) not in taken:
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover


# -- files ---------------------------------------------------------------------------------
def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f}".removesuffix(".0") + " MB"


def _decode(data: bytes, source: str) -> str:
    """The file as text: size cap first, then UTF-8 (a BOM is dropped)."""
    if len(data) > MAX_IMPORT_BYTES:
        size, limit = _size(len(data)), _size(MAX_IMPORT_BYTES)
        if size == limit:  # 1,000,400 bytes would read "1 MB; the limit is 1 MB"
            size, limit = f"{len(data):,} bytes", f"{MAX_IMPORT_BYTES:,} bytes"
        raise PromptSetError(f"{source} is {size}; the limit is {limit}")
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PromptSetError(f"{source}, line {line}: not valid UTF-8 (byte "
                             f"0x{data[exc.start]:02x}); save the file as UTF-8") from None


def _too_many(source: str, line: int) -> PromptSetError:
    return PromptSetError(f"{source}, line {line}: more than {MAX_PROMPTS} prompts; "
                          f"the limit is {MAX_PROMPTS}")


def _no_prompts(source: str) -> PromptSetError:
    return PromptSetError(f"{source} holds no prompts")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise _Duplicate(key)
        found[key] = value
    return found


class _Duplicate(Exception):
    pass


def parse_jsonl(data: bytes, source: str = "upload") -> list[EvalPrompt]:
    """One JSON object a line: {"prompt": ..., "category": ..., "reference": ...} ("text"
    may stand for "prompt"; null counts as empty for category and reference). Blank lines
    are skipped. The first bad line raises PromptSetError "<source>, line N: <what>"."""
    text = _decode(data, source)
    found: list[EvalPrompt] = []
    # Split on "\n" only: a raw U+2028 is legal inside a JSON string, and the line numbers
    # must match the byte count that _decode reports.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line:
            continue
        where = f"{source}, line {number}"
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as exc:
            raise PromptSetError(f"{where}: not valid JSON ({exc.msg} at column "
                                 f"{exc.colno})") from None
        except _Duplicate as exc:
            raise PromptSetError(f"{where}: field {exc.args[0]!r} appears twice") from None
        except RecursionError:  # "[[[[..." a few KB long: refused like any bad line
            raise PromptSetError(f"{where}: lists or objects nest too deeply; a line "
                                 f'is one object like {{"prompt": "..."}}') from None
        if not isinstance(row, dict):
            raise PromptSetError(f'{where}: expected an object like {{"prompt": "..."}}, '
                                 f"not {_kind(row)}")
        unknown = [key for key in row if key not in FIELDS and key != "text"]
        if unknown:
            raise PromptSetError(f"{where}: unknown field {unknown[0]!r} (the fields are "
                                 f"prompt or text, category, reference)")
        if "prompt" in row and "text" in row:
            raise PromptSetError(f"{where}: both 'prompt' and 'text'; give one of them")
        key = "text" if "text" in row else "prompt"
        if key not in row:
            raise PromptSetError(f"{where}: no 'prompt' field")
        if len(found) == MAX_PROMPTS:
            raise _too_many(source, number)
        category, reference = row.get("category"), row.get("reference")
        found.append(_prompt(where, row[key], "" if category is None else category,
                             "" if reference is None else reference,
                             (f"field {key!r}", "field 'category'", "field 'reference'")))
    if not found:
        raise _no_prompts(source)
    return found


def parse_csv(data: bytes, source: str = "upload") -> list[EvalPrompt]:
    """A header row naming a "prompt" (or "text") column and optionally "category" and
    "reference" (any case, any order), then one prompt a row. Blank rows are skipped. The
    first bad row raises PromptSetError "<source>, line N: <what>"."""
    text = _decode(data, source)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns: list[str] | None = None
    found: list[EvalPrompt] = []
    last = 0  # the physical line the previous record ended on
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise PromptSetError(f"{source}, line {reader.line_num}: not valid CSV "
                                 f"({exc})") from None
        number, last = last + 1, reader.line_num  # a record may span several lines
        where = f"{source}, line {number}"
        if not any(cell.strip() for cell in row):
            continue
        if columns is None:
            columns = _header(row, where)
            continue
        if len(row) != len(columns):
            raise PromptSetError(f"{where}: {len(row)} fields, but the header has "
                                 f"{len(columns)}")
        if len(found) == MAX_PROMPTS:
            raise _too_many(source, number)
        cells = dict(zip(columns, row))
        key = "text" if "text" in cells else "prompt"
        found.append(_prompt(where, cells[key], cells.get("category", ""),
                             cells.get("reference", ""),
                             (f"column {key!r}", "column 'category'", "column 'reference'")))
    if columns is None or not found:
        raise _no_prompts(source)
    return found


def _header(row: list[str], where: str) -> list[str]:
    columns = [cell.strip().lower() for cell in row]
    for position, column in enumerate(columns, 1):
        if not column:
            raise PromptSetError(f"{where}: column {position} of the header has no name")
        if column not in FIELDS and column != "text":
            hint = ""
            if len(columns) == 1 and (";" in column or "\t" in column):
                hint = "; separate the columns with commas"
            raise PromptSetError(f"{where}: unknown column {row[position - 1].strip()!r} "
                                 f"(the columns are prompt or text, category, reference)"
                                 f"{hint}")
        if columns.count(column) > 1:
            raise PromptSetError(f"{where}: column {column!r} appears twice")
    if "prompt" in columns and "text" in columns:
        raise PromptSetError(f"{where}: both 'prompt' and 'text' columns; give one of them")
    if "prompt" not in columns and "text" not in columns:
        raise PromptSetError(f"{where}: the header has no 'prompt' column")
    return columns


def parse_file(name: str, data: bytes) -> list[EvalPrompt]:
    """Parse by the file name's suffix (.jsonl, .json-lines or .csv, any case)."""
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".json-lines")):
        return parse_jsonl(data, name)
    if lowered.endswith(".csv"):
        return parse_csv(data, name)
    raise PromptSetError(f"{name}: not a prompt file; use a {', '.join(SUFFIXES[:-1])} or "
                         f"{SUFFIXES[-1]} file")


def to_jsonl(prompt_set: PromptSet) -> str:
    """One JSON object a line, every field present; parse_jsonl reads it back."""
    lines = []
    for p in prompt_set.prompts:
        line = json.dumps({"prompt": p.text, "category": p.category,
                           "reference": p.reference}, ensure_ascii=False)
        # Escape the two line separators that some JSONL readers split on.
        lines.append(line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return "\n".join(lines) + "\n"


def to_csv(prompt_set: PromptSet) -> str:
    """A header and one row a prompt, "\\n" line ends (so writing it in text mode on any
    system stays valid); parse_csv reads it back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for p in prompt_set.prompts:
        writer.writerow([p.text, p.category, p.reference])
    return out.getvalue()


# -- built-in sets -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[PromptSet, ...]:
    found = []
    for file_name, set_name in BUILTIN_SETS:
        path = BUILTIN_DIR / file_name
        found.append(make_set(set_name, parse_jsonl(path.read_bytes(), file_name),
                              builtin=True))
    return tuple(found)


def builtin_sets() -> list[PromptSet]:
    """The sets that ship with the app, in BUILTIN_SETS order (read once, then cached)."""
    return list(_builtin())
