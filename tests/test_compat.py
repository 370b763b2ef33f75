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
