"""The escnn import guard fails loudly, naming the cause and the fix."""
import importlib

import pytest

from flow_escnn import _compat


def _failing_import(broken: str):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == broken:
            raise ImportError(f"simulated failure of {name}")
        return real(name, *args, **kwargs)

    return fake


def test_guard_returns_escnn_modules():
    escnn, group, gspaces, enn = _compat.import_escnn()
    assert enn.GeometricTensor is not None and gspaces.rot2dOnR2 is not None and group.CyclicGroup is not None


def test_missing_escnn_nn_raises_with_fix(monkeypatch):
    monkeypatch.setattr(_compat.importlib, "import_module", _failing_import("escnn.nn"))
    with pytest.raises(_compat.EscnnImportError, match=r"import escnn.nn` failed.*numpy.*bootstrap\.sh"):
        _compat.import_escnn()


def test_missing_escnn_raises_with_fix(monkeypatch):
    monkeypatch.setattr(_compat.importlib, "import_module", _failing_import("escnn"))
    with pytest.raises(_compat.EscnnImportError, match=r"escnn is not installed.*--no-deps escnn==1\.0\.11"):
        _compat.import_escnn()


def test_escnn_nn_without_expected_names_raises(monkeypatch):
    real = importlib.import_module

    class Hollow:
        pass

    def fake(name, *args, **kwargs):
        return Hollow() if name == "escnn.nn" else real(name, *args, **kwargs)

    monkeypatch.setattr(_compat.importlib, "import_module", fake)
    with pytest.raises(_compat.EscnnImportError, match="has no attribute 'GeometricTensor'"):
        _compat.import_escnn()


def test_error_is_an_import_error():
    assert issubclass(_compat.EscnnImportError, ImportError)


# -- numpy 2: the lie_learn stand-in -------------------------------------------------------------------
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402


def _run(code: str, extra_path: str = "") -> subprocess.CompletedProcess:
    env_path = f"import sys; sys.path.insert(0, {extra_path!r})\n" if extra_path else ""
    return subprocess.run([sys.executable, "-c", env_path + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def _broken_lie_learn(tmp_path) -> str:
    """A lie_learn whose compiled module fails to import, as lie_learn 0.0.2 does under numpy 2."""
    pkg = tmp_path / "lie_learn" / "representations" / "SO3"
    pkg.mkdir(parents=True)
    for d in (tmp_path / "lie_learn", tmp_path / "lie_learn" / "representations", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "wigner_d.py").write_text("raise ImportError('numpy.core.multiarray failed to import (simulated)')\n")
    return str(tmp_path)


@pytest.mark.subprocess
def test_broken_lie_learn_gets_a_stand_in_and_2d_escnn_works(tmp_path):
    proc = _run("""
        import logging
        logging.basicConfig(level=logging.INFO)
        import flow_escnn
        from flow_escnn._compat import EscnnImportError, lie_learn_stand_in
        from escnn import gspaces, nn
        import torch
        assert lie_learn_stand_in() is not None
        gs = gspaces.rot2dOnR2(4)
        conv = nn.R2Conv(nn.FieldType(gs, [gs.trivial_repr]), nn.FieldType(gs, [gs.regular_repr]), 3)
        conv(nn.GeometricTensor(torch.zeros(1, 1, 5, 5), conv.in_type))
        from lie_learn.representations.SO3.wigner_d import wigner_D_matrix
        import numpy as np
        from flow_escnn._wigner import wigner_D_matrix as ours
        assert wigner_D_matrix is ours  # the stand-in serves flow_escnn's own Wigner D matrices
        assert np.abs(wigner_D_matrix(1, 0.0, 0.0, 0.0) - np.eye(3)).max() < 1e-15
        print("stand-in cause:", lie_learn_stand_in())
    """, _broken_lie_learn(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # the cause: the import error, or (numpy 2 with lie_learn installed) its numpy<2 metadata
    assert "simulated" in proc.stdout or "is built for numpy<2" in proc.stdout
    assert proc.stderr.count("cannot be imported under numpy") == 1  # logged once, at INFO


@pytest.mark.subprocess
def test_escnn_imported_first_is_repaired(tmp_path):
    proc = _run("""
        import escnn
        broken = not hasattr(escnn, "nn")
        import flow_escnn
        import escnn
        from escnn import nn
        print("broken before:", broken, "nn after:", hasattr(escnn, "nn"))
    """, _broken_lie_learn(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "broken before: True nn after: True" in proc.stdout  # control: escnn alone comes up without nn


@pytest.mark.subprocess
def test_a_working_lie_learn_is_left_alone():
    """With a lie_learn that imports (numpy 1.x), no stand-in; under numpy 2 the stand-in is used."""
    proc = _run("""
        import importlib, numpy
        try:
            importlib.import_module("lie_learn.representations.SO3.wigner_d")
            works = int(numpy.__version__.split(".")[0]) < 2
        except Exception:
            works = False
        import flow_escnn
        print("works:", works, "stand-in:", flow_escnn._compat.lie_learn_stand_in() is not None)
    """)
    assert proc.returncode == 0, proc.stderr
    works = "works: True" in proc.stdout
    assert ("stand-in: False" in proc.stdout) == works, proc.stdout
