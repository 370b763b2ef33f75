"""The documentation's code cannot rot: its Python code blocks run, and the site builds with -W.

Convention (also stated in docs/index.rst):

* **Every** ``.. code-block:: python`` block in ``docs/*.rst`` is executed, and every
  fenced ```` ```python ```` block in ``README.md``, each in a **fresh Python process** (in
  which neither escnn nor flow_escnn is imported yet, so import order matters as it does for
  a user: under numpy 2, ``from escnn import gspaces`` before ``import flow_escnn`` fails).
  The blocks of one docs page run in order in one process and namespace (a page can build an
  example step by step); every README block runs alone (readers copy one block). All run in a
  temporary working directory. Keep them small (tiny sizes, seconds).
* Where a page (a README block) imports escnn, it imports flow_escnn first (checked without
  running anything, so the rule holds under numpy 1 too).
* Blocks that must not run use another language (``.. code-block:: bash`` / ``text``) or a
  plain ``::`` literal block. The examples included with ``literalinclude`` on the
  tutorials page are run by ``tests/test_examples.py`` instead.
* The site is built with ``sphinx-build -W --keep-going`` (warnings are errors) into a
  temporary folder. The build takes about 15 s on 2 cores; ``bash scripts/docs.sh`` runs
  the same build into ``docs/_build/html``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::\s*(?P<lang>\S+)\s*$")


def rst_python_blocks(text: str) -> List[Tuple[int, str]]:
    """``(line number, code)`` of every ``.. code-block:: python`` block of an rST text."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m or m.group("lang").lower() not in ("python", "python3", "py"):
            i += 1
            continue
        indent = len(m.group("indent").expandtabs())
        start = i + 1
        j = start
        # directive options (":linenos:" etc.) directly below the directive
        while j < len(lines) and lines[j].strip().startswith(":") and _indent(lines[j]) > indent:
            j += 1
        body: List[str] = []
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
            body.append(lines[j])
            j += 1
        code = _dedent(body)
        if code.strip():
            blocks.append((start, code))
        i = j
    return blocks


def markdown_python_blocks(text: str) -> List[Tuple[int, str]]:
    """``(line number, code)`` of every fenced ```` ```python ```` block of a Markdown text."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```") and fence[3:].strip().lower() in ("python", "python3", "py"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            blocks.append((i + 2, "\n".join(lines[i + 1 : j])))
            i = j + 1
        else:
            i += 1
    return blocks


def _indent(line: str) -> int:
    return len(line.expandtabs()) - len(line.expandtabs().lstrip())


def _dedent(body: List[str]) -> str:
    nonblank = [_indent(line) for line in body if line.strip()]
    cut = min(nonblank) if nonblank else 0
    return "\n".join(line.expandtabs()[cut:] for line in body).strip("\n") + "\n"


def pages_with_code() -> Dict[str, List[Tuple[int, str]]]:
    pages = {}
    for path in sorted(DOCS.glob("*.rst")):
        blocks = rst_python_blocks(path.read_text())
        if blocks:
            pages[f"docs/{path.name}"] = blocks
    if README.is_file():
        blocks = markdown_python_blocks(README.read_text())
        if blocks:
            pages["README.md"] = blocks
    return pages


PAGES = pages_with_code()


def run_units() -> Dict[str, List[Tuple[int, str]]]:
    """What runs in one fresh process: each docs page (its blocks in order), each README block alone."""
    units = {page: blocks for page, blocks in PAGES.items() if page != "README.md"}
    for i, block in enumerate(PAGES.get("README.md", []), 1):
        units[f"README.md[{i}]"] = [block]
    return units


UNITS = run_units()

# Runs in the fresh process: refuses to start if escnn or flow_escnn is already imported (a
# sitecustomize, say), seeds torch (the pages draw random weights), then executes the blocks in
# one namespace; a failing block's traceback names ``page:line``.
_RUNNER = r"""
import json, sys
early = sorted(m for m in sys.modules if m.split(".")[0] in ("escnn", "flow_escnn"))
assert not early, f"not a fresh process: {early} imported before the first block"
page, blocks = json.load(sys.stdin)
import torch
torch.manual_seed(0)
namespace = {"__name__": "__docs__"}
for line, code in blocks:
    exec(compile(code, f"{page}:{line}", "exec"), namespace)
"""


def run_fresh(page: str, blocks: List[Tuple[int, str]], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``blocks`` in order in a new interpreter (this one's ``sys.executable``), in ``cwd``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps([page, blocks]), cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.subprocess
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_code_blocks_run_in_a_fresh_process(unit, tmp_path):
    proc = run_fresh(unit.split("[")[0], UNITS[unit], tmp_path)
    assert proc.returncode == 0, f"the code of {unit} failed in a fresh process:\n{proc.stderr[-6000:]}"


@pytest.mark.subprocess
def test_fresh_process_runner_reports_failures_and_is_fresh(tmp_path):
    """Control: the runner starts clean, runs blocks in order in one namespace and reports the failing line."""
    ok = run_fresh("page.rst", [(3, "import sys\nassert 'flow_escnn' not in sys.modules\nx = 1\n"), (9, "assert x == 1\n")],
                   tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = run_fresh("page.rst", [(3, "x = 1\n"), (9, "y = 2\nraise ValueError('the block broke')\n")], tmp_path)
    assert bad.returncode != 0 and "page.rst:9" in bad.stderr and "the block broke" in bad.stderr


_IMPORTS_ESCNN = re.compile(r"^\s*(?:from|import)\s+escnn\b", re.M)
_IMPORTS_FLOW_ESCNN = re.compile(r"^\s*(?:from|import)\s+flow_escnn\b", re.M)


def escnn_imported_before_flow_escnn(code: str) -> bool:
    """True when ``code`` imports escnn on a line before its first flow_escnn import (or without one)."""
    escnn = _IMPORTS_ESCNN.search(code)
    if escnn is None:
        return False
    flow = _IMPORTS_FLOW_ESCNN.search(code)
    return flow is None or flow.start() > escnn.start()


def test_documented_code_imports_flow_escnn_before_escnn():
    """Under numpy 2, escnn imported first fails (flow_escnn provides its lie_learn function; docs/install.rst)."""
    wrong = [unit for unit, blocks in UNITS.items()
             if escnn_imported_before_flow_escnn("\n".join(code for _, code in blocks))]
    assert not wrong, f"import flow_escnn before escnn in: {wrong}"
    # control: the check sees the wrong order, accepts the right one and code without escnn
    assert escnn_imported_before_flow_escnn("import torch\nfrom escnn import gspaces\nimport flow_escnn\n")
    assert escnn_imported_before_flow_escnn("import escnn.nn\n")
    assert not escnn_imported_before_flow_escnn("from flow_escnn.nn import FERNN\nfrom escnn import gspaces\n")
    assert not escnn_imported_before_flow_escnn("import torch\n")


def test_block_extraction_finds_the_documented_code():
    """Guard the extractor itself: the pages that teach by code must be seen as having code."""
    assert len(PAGES.get("docs/theory.rst", [])) >= 6, sorted(PAGES)
    assert "docs/index.rst" in PAGES
    sample = "Text\n\n.. code-block:: python\n   :caption: x\n\n   a = 1\n\n   b = a + 1\n\nAfter\n\n::\n\n   not run\n"
    assert rst_python_blocks(sample) == [(3, "a = 1\n\nb = a + 1\n")]
    assert rst_python_blocks(".. code-block:: bash\n\n   ls\n") == []
    assert markdown_python_blocks("x\n```python\nprint(1)\n```\n```bash\nls\n```\n") == [(3, "print(1)")]


def test_no_python_blocks_escape_the_convention():
    """``.. code::`` / ``.. sourcecode::`` python blocks would not be executed: use code-block."""
    for path in DOCS.glob("*.rst"):
        text = path.read_text()
        assert not re.search(r"^\s*\.\. (code|sourcecode)::\s*python", text, re.M), path.name


@pytest.mark.subprocess
def test_sphinx_build_with_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"sphinx-build -W failed:\n{proc.stdout}\n{proc.stderr}"
    for page in ("index", "install", "theory", "tutorials", "results", "troubleshooting", "api"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    assert (tmp_path / "html" / "api" / "nn.html").is_file()


def public_modules() -> List[str]:
    """The dotted names of flow_escnn's public modules and packages (no part starts with ``_``)."""
    names = []
    for path in sorted((ROOT / "flow_escnn").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            names.append(".".join(parts))
    return names


def undocumented(documented: Set[str]) -> List[str]:
    """The public modules no ``.. automodule::`` of ``documented`` covers."""
    return [name for name in public_modules() if name not in documented]


def test_every_public_module_is_in_the_api_reference():
    api = "\n".join(p.read_text() for p in sorted((DOCS / "api").glob("*.rst")))
    documented = set(re.findall(r"^\.\. automodule:: (\S+)", api, re.M))
    missing = undocumented(documented)
    assert not missing, f"add these modules to docs/api/*.rst (.. automodule::): {missing}"
    # control: the check sees a module the reference drops, in a sub-package too, and no private one
    assert undocumented(documented - {"flow_escnn.nn.cell_kinds.gru"}) == ["flow_escnn.nn.cell_kinds.gru"]
    everything = undocumented(set())
    assert "flow_escnn" in everything and "flow_escnn.lifted" in everything
    assert not [name for name in everything if "._" in name]


# -- statements that must live in one place (issue 25) ---------------------------------------------------------
_SPEED_FACTOR = re.compile(r"\d+(?:\.\d+)?(?:\s*-\s*\d+(?:\.\d+)?)?\s*x\s+\*?(?:faster|slower)\b")


def bf16_speed_claims(text: str) -> List[str]:
    """The sentences of ``text`` that give bf16 a speed factor ("1.43x faster", "9-11x *slower*")."""
    flat = re.sub(r"\s+", " ", text)
    return [s for s in re.split(r"(?<=[.;])\s", flat) if "bf16" in s and _SPEED_FACTOR.search(s)]


def test_bf16_speed_is_stated_in_one_place():
    """docs/results.rst ("bf16 autocast on a CPU") holds the bf16 figures; README and the other pages link there."""
    elsewhere = {str(path.relative_to(ROOT)): bf16_speed_claims(path.read_text())
                 for path in [README, *sorted(DOCS.glob("*.rst"))] if path.name != "results.rst"}
    assert not any(elsewhere.values()), elsewhere
    results = (DOCS / "results.rst").read_text()
    assert ".. _bf16-on-cpu:" in results and "python -m benchmarks.bench_fernn --threads 1" in results
    assert "bf16-on-cpu" in (DOCS / "experiments.rst").read_text() and "bf16 autocast on a CPU" in README.read_text()
    # control: the two statements the issue found contradicting each other are seen
    assert bf16_speed_claims("On our CPU bf16 made a FERNN step 1.43x faster (:doc:`results`).")
    assert bf16_speed_claims("so bf16 autocast ran 9x slower than float32")
    assert bf16_speed_claims("bf16 autocast: 9-11x *slower* (this CPU)")
    assert not bf16_speed_claims("Whether bf16 makes a CPU step faster depends on the CPU. It is 2x faster.")


def named_extras(text: str) -> Set[str]:
    """Extras named as ``flow_escnn[a,b]`` in ``text``."""
    return {e.strip() for group in re.findall(r"flow_escnn\[([^\]]+)\]", text) for e in group.split(",")}


def test_named_extras_exist():
    """Every ``flow_escnn[extra]`` in the README and docs is an extra of setup.cfg (there is no ``[so3]``)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    defined = set(cfg["options.extras_require"])
    assert {"experiments", "test", "docs"} <= defined
    named = set().union(*(named_extras(p.read_text()) for p in [README, *DOCS.glob("*.rst")]))
    assert "experiments" in named and named <= defined, named - defined
    assert named_extras("pip install 'flow_escnn[so3]' or flow_escnn[test, docs]") == {"so3", "test", "docs"}  # control


def test_rotation_accuracy_numbers_say_what_they_measure():
    """The 0.05x-escnn headline and study_flows' per-frame errors point to the one comparison of the two."""
    readme = re.sub(r"\s+", " ", README.read_text())
    headline = readme[readme.index("0.05x escnn"):][:900]
    assert "Two rotation-accuracy numbers" in headline and "docs/results.rst" in headline
    results = (DOCS / "results.rst").read_text()
    assert ".. _two-rotation-numbers:" in results and "Two rotation-accuracy numbers" in results
    assert "Two rotation-accuracy numbers" in (ROOT / "examples" / "study_flows.py").read_text()
