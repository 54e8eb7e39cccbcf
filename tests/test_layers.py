"""The packages' order: each imports only the ones below it (and itself).

    utils < music < data < models < training, generation < eval < demo, entry points

``training`` and ``generation`` stand side by side: neither imports the other. Every ``import`` in
``src`` is parsed, the ones inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LEVEL = {"utils": 0, "music": 1, "data": 2, "models": 3, "training": 4, "generation": 4, "eval": 5, "demo": 6}


def src_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported src package) for every import of ``src.<package>`` in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "src"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "src" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
    return out


def violations(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            continue  # src/__init__.py
        here = rel.parts[0]
        if here not in LEVEL:
            bad.append(f"{rel}: package {here!r} has no place in the order {LEVEL}")
            continue
        for line, there in src_imports(path):
            if there not in LEVEL:
                bad.append(f"{rel}:{line} imports unknown package src.{there}")
            elif there != here and LEVEL[there] >= LEVEL[here]:
                bad.append(f"{rel}:{line}: src.{here} imports src.{there} (same level or above)")
    return bad


def test_every_package_has_a_level():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LEVEL)


def test_no_package_imports_upward_or_sideways():
    assert violations(SRC) == []


@pytest.mark.parametrize(
    ("package", "imported", "ok"),
    [
        ("data", "music", True),
        ("music", "data", False),  # upward
        ("training", "generation", False),  # sideways
        ("eval", "generation", True),
        ("models", "models", True),
    ],
)
def test_the_checker_catches_what_it_should(tmp_path, package, imported, ok):
    for name in LEVEL:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "mod.py").write_text(f"def f():\n    from src.{imported}.x import y\n")
    assert (violations(tmp_path) == []) == ok
