"""The code's floors, checked from its source: engines below the core, the core below the
page, and the core's rooms (chatcore/__init__.py) importing only from rooms listed before
them, so no import runs back up and there is no circle. Small rooms, small modules."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The core's rooms, lowest first: each may import from itself and those before it.
ROOMS = ("i18n", "documents", "generation", "conversations", "library", "costs", "compare",
         "evaluate", "api")
# The layers: each may import from itself and those before it.
LAYERS = ("backends", "chatcore", "chatui")
MOST_MODULES_PER_ROOM = 15
MOST_LINES_PER_MODULE = 400


def imported(path: Path) -> set[str]:
    """Every module this file imports, at its top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def test_every_room_is_declared_in_order_and_the_core_has_no_loose_modules():
    rooms = {p.name for p in (ROOT / "chatcore").iterdir()
             if p.is_dir() and (p / "__init__.py").exists()}
    loose = [p.name for p in (ROOT / "chatcore").glob("*.py") if p.name != "__init__.py"]
    assert rooms == set(ROOMS), f"rooms on disk {sorted(rooms)} vs declared {ROOMS}"
    assert loose == [], f"modules outside a room: {loose}"
    listed = (ROOT / "chatcore/__init__.py").read_text(encoding="utf-8")
    assert [room for room in ROOMS if f"\n{room} " in listed] == list(ROOMS), \
        "chatcore/__init__.py lists the rooms lowest first, one line each"


def test_no_import_runs_up_a_layer_or_a_room():
    wrong = []
    for layer in LAYERS:
        for path in sources(layer):
            here = path.relative_to(ROOT).parts
            for name in imported(path):
                parts = name.split(".")
                if parts[0] in LAYERS and LAYERS.index(parts[0]) > LAYERS.index(layer):
                    wrong.append(f"{'/'.join(here)} imports {name} (a layer above)")
                if layer == "chatcore" == parts[0] and len(here) > 2 and len(parts) > 1 \
                        and parts[1] in ROOMS and ROOMS.index(parts[1]) > ROOMS.index(here[1]):
                    wrong.append(f"{'/'.join(here)} imports {name} (a room above)")
    assert wrong == [], "\n".join(wrong)


def test_rooms_and_modules_stay_small():
    crowded = {room: n for room in ROOMS
               if (n := len(list((ROOT / "chatcore" / room).glob("*.py"))) - 1)
               > MOST_MODULES_PER_ROOM}
    long = {str(p.relative_to(ROOT)): n for layer in ("chatcore", "chatui")
            for p in sources(layer)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MOST_LINES_PER_MODULE}
    assert crowded == {}, f"rooms over {MOST_MODULES_PER_ROOM} modules: {crowded}"
    assert long == {}, f"modules over {MOST_LINES_PER_MODULE} lines: {long}"
