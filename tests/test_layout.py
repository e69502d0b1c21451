"""The package's layout follows the data flow: every import points down, no module is a tangle.

Imports are read with ``ast`` (function-level imports included, since lazy imports are still
dependencies), resolved to the top-level room of ``neurodecode`` they land in, and checked against
the order of the rooms along the data flow.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neurodecode"

# The rooms in data-flow order. A module may import from its own room or from rooms earlier in this
# list, never from later ones. Rooms on one line are independent of each other.
ORDER: list[tuple[str, ...]] = [
    ("_version", "_docs", "utils", "_sys_info"),
    ("io",),
    ("preprocessing",),
    ("readers",),
    ("simulate",),
    ("teachers",),
    ("encoders", "losses"),
    ("evaluation",),
    ("training",),
    ("reconstruction",),
    ("streaming",),
    ("reporting",),
    ("cli",),
]
RANK = {room: i for i, rooms in enumerate(ORDER) for room in rooms}
# the package facade (lazy helpers such as neurodecode.from_pretrained), ``python -m neurodecode`` and
# the deprecated 0.1 location of the store may reach anywhere
FACADES = {"__init__", "__main__", "store"}
MAX_LINES = 500
LONG_REASON = "better whole"  # "... reads better whole", with the reason


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_rooms(path: Path) -> set[str]:
    """Top-level rooms of neurodecode that ``path`` imports (absolute or relative, at any depth)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(PACKAGE).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    rooms: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                mod = ".".join(["neurodecode", *base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            names = [mod] if mod != "neurodecode" else [f"neurodecode.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "neurodecode" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in _modules():
        room = _room(path)
        if room in FACADES:
            continue
        edges.setdefault(room, set()).update(_imported_rooms(path) - {room})
    return edges


def test_every_room_has_a_place_in_the_order():
    rooms = {_room(p) for p in _modules()} - FACADES
    assert rooms <= set(RANK), f"rooms missing from ORDER: {sorted(rooms - set(RANK))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_data_flow(path):
    room = _room(path)
    if room in FACADES:
        return
    upward = sorted(r for r in _imported_rooms(path) - {room} if r not in RANK or RANK[r] >= RANK[room])
    assert not upward, (f"{path.relative_to(PACKAGE)} (room {room!r}) imports {upward}, which are not below it "
                        f"in the data flow {ORDER}")


def test_rooms_form_no_cycle():
    edges = _edges()
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in edges.get(node, ()):
            if seen.get(nxt) == 1:
                raise AssertionError(f"import cycle between rooms: {' -> '.join([*stack, node, nxt])}")
            if nxt not in seen:
                visit(nxt, [*stack, node])
        seen[node] = 2

    for room in edges:
        if room not in seen:
            visit(room, [])


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_readable_in_one_sitting(path):
    text = path.read_text()
    n = text.count("\n")
    if n <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert LONG_REASON in doc, (f"{path.relative_to(PACKAGE)} has {n} lines (> {MAX_LINES}); split it, or say in "
                                f"its module docstring why it reads {LONG_REASON}")


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neurodecode"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and node.module not in ("neurodecode._version", "neurodecode._sys_info"):
                    offenders.append(f"{path.relative_to(PACKAGE)}: from {node.module} import {private}")
    assert not offenders, "private helpers imported across modules:\n" + "\n".join(offenders)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    # the test above must be able to fail: a fake evaluation module that imports training is caught
    fake = tmp_path / "neurodecode" / "evaluation" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("def f():\n    from neurodecode.training.lit import AlignmentModule\n    from ..reporting import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "neurodecode")
    assert _imported_rooms(fake) == {"training", "reporting"}
