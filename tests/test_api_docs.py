"""The API pages' "Public names" paragraphs list exactly each package's ``__all__`` (written by hand for
their grouping, so this test keeps them from drifting)."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "docs" / "api"
PAGES = sorted(p for p in API.glob("*.rst") if "Public names:" in p.read_text())


def listed_names(text: str) -> set:
    paragraph = re.search(r"Public names:(.*?)\n\n", text, re.S)
    assert paragraph, "a 'Public names:' paragraph ends with a blank line"
    return set(re.findall(r"``([A-Za-z_][A-Za-z0-9_]*)``", paragraph.group(1)))


def test_pages_with_public_names_exist():
    assert len(PAGES) >= 4


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_public_names_match_all(page):
    text = page.read_text()
    package = importlib.import_module(text.splitlines()[0].strip())
    listed = listed_names(text)
    assert sorted(set(package.__all__) - listed) == [], "exported but not listed on the page"
    assert sorted(listed - set(package.__all__)) == [], "listed on the page but not exported"


def test_a_missing_name_is_flagged():
    """Control: the same comparison flags a page that forgot a name."""
    text = "flow_escnn.flows\n\nPublic names: ``FlowSet``.\n\n"
    assert listed_names(text) != set(importlib.import_module("flow_escnn.flows").__all__)
