"""The house rules of docs/architecture.rst, checked on the source: floors and private names.

Each rule is a function over source text, run on the package and on a small bad sample
(the control) that it must flag.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterable, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flow_escnn"
SHARED = {"_compat", "_validate", "_wigner", "_registry"}
#: floor -> the floors it may import (itself and SHARED always allowed); docs/architecture.rst's table.
ALLOWED: Dict[str, Set[str]] = {
    "flows": set(),
    "sequences": {"flows"},
    "lifted": {"flows", "sequences"},
    "checks": {"flows", "sequences", "lifted"},
    "nn": {"flows", "sequences", "lifted", "checks"},
    "data": {"flows"},
    "models": {"flows", "sequences", "lifted", "checks", "nn"},
    "experiments": {"flows", "data", "checks", "models"},
}
IMPORT = re.compile(r"^\s*(?:from|import)\s+flow_escnn\.([A-Za-z_]\w*)", re.M)


def floor_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE).parts
    return rel[0][:-3] if rel[0].endswith(".py") else rel[0]


def upward_imports(floor: str, source: str) -> List[str]:
    """The floors ``source`` (a module of ``floor``) imports against the table."""
    allowed = ALLOWED[floor] | SHARED | {floor}
    return [m for m in IMPORT.findall(source) if m not in allowed]


def private_uses(source: str, defined_here: Set[str], defined_elsewhere: Set[str]) -> List[str]:
    """Private names defined in *other* package modules that ``source`` imports or calls as attributes."""
    found = {
        alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flow_escnn")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    }
    found |= {m for m in re.findall(r"(?<!self)(?<!cls)\.(_[a-z]\w*)\(", source)
              if m in defined_elsewhere and m not in defined_here}
    return sorted(found)


def package_files() -> Iterable[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def private_definitions() -> Dict[Path, Set[str]]:
    return {p: set(re.findall(r"^\s*def\s+(_[a-z]\w*)\(", p.read_text(), re.M)) for p in package_files()}


def test_every_module_belongs_to_a_floor():
    floors = {floor_of(p) for p in package_files()} - SHARED - {"__init__"}
    assert floors <= set(ALLOWED), f"floors missing from the table: {floors - set(ALLOWED)}"


def test_no_floor_imports_upwards():
    offenders = []
    for path in package_files():
        floor = floor_of(path)
        if floor in SHARED or floor == "__init__":
            continue
        offenders += [f"{path.relative_to(ROOT)} imports flow_escnn.{m}" for m in upward_imports(floor, path.read_text())]
    assert not offenders, "\n".join(offenders)
    # control: the check flags what the rules forbid
    assert upward_imports("flows", "from flow_escnn.nn._engine import Recurrence\n") == ["nn"]
    assert upward_imports("experiments", "import flow_escnn.lifted\nfrom flow_escnn.models import x\n") == ["lifted"]


def test_no_private_names_across_modules():
    defs = private_definitions()
    offenders = []
    for path, here in defs.items():
        elsewhere = set().union(*(d for p, d in defs.items() if p != path))
        for name in private_uses(path.read_text(), here, elsewhere):
            offenders.append(f"{path.relative_to(ROOT)} uses {name}")
    assert not offenders, "\n".join(offenders)
    # control: an import of a private helper and a call of another module's private method
    assert private_uses("from flow_escnn.flows._flowset import _helper\n", set(), set()) == ["_helper"]
    assert private_uses("y = cell._unpack(s)\n", set(), {"_unpack"}) == ["_unpack"]
    assert private_uses("y = self._unpack(s)\n", set(), {"_unpack"}) == []
    assert private_uses("from flow_escnn._compat import group as _group\n", set(), set()) == []


@pytest.mark.parametrize("page", ["docs/architecture.rst"])
def test_the_architecture_page_states_the_same_table(page):
    text = (ROOT / page).read_text()
    for floor, allowed in ALLOWED.items():
        row = re.search(rf"^``{floor}``\s+(.*)$", text, re.M)
        assert row, f"{page} has no row for {floor}"
        listed = set(re.findall(r"``(\w+)``", row.group(1)))
        assert listed == allowed, f"{page}: {floor} may import {sorted(allowed)}, the page says {sorted(listed)}"
