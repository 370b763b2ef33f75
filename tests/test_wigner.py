"""flow_escnn._wigner: SO(3) Wigner D-matrices with lie_learn's conventions, and escnn's 3D gspaces on them.

Three kinds of evidence:

* agreement with the real ``lie_learn`` (numpy 1.x leg only; skipped where it cannot be imported);
* properties that hold on both legs and pin the convention without lie_learn: the
  homomorphism for scipy's intrinsic ZYZ Euler angles (the parametrization escnn passes),
  orthogonality, the identity, ``l = 1`` being the rotation matrix in the order (y, z, x),
  and the transformation law of the real spherical harmonics; every check has a control
  (a wrong convention) that the same check flags;
* escnn with lie_learn blocked (as under numpy 2), in fresh subprocesses with a private
  escnn disk cache: octaOnR3 / rot3dOnR3 / icoOnR3 build and an R3Conv is equivariant; and
  escnn imported before flow_escnn is repaired.
"""
from __future__ import annotations

import collections
import collections.abc
import itertools
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from flow_escnn._wigner import (
    CS_PHASES,
    FIELDS,
    NORMALIZATIONS,
    ORDERS,
    wigner_D_matrix,
    wigner_d_matrix,
)

DEGREES = range(11)  # escnn's default maximum frequencies stay below 10
TOL = 1e-12
BASES = list(itertools.product(FIELDS, NORMALIZATIONS, ORDERS, CS_PHASES))


def _angles(seed: int, n: int = 4) -> np.ndarray:
    """Random ZYZ Euler angles, beta beyond [0, pi] and alpha/gamma beyond [0, 2 pi] included."""
    return np.random.default_rng(seed).uniform(-2 * np.pi, 2 * np.pi, size=(n, 3))


def _real_lie_learn():
    """lie_learn's wigner_d module, or skip (numpy 2 leg, or lie_learn absent or broken)."""
    mod = pytest.importorskip(
        "lie_learn.representations.SO3.wigner_d",
        reason="the real lie_learn cannot be imported here (numpy 2 or not installed)",
    )
    if getattr(mod, "_flow_escnn_stand_in_cause", None) is not None:
        pytest.skip(f"lie_learn is flow_escnn's stand-in here ({mod._flow_escnn_stand_in_cause})")
    return mod


# -- agreement with lie_learn (numpy 1.x) -----------------------------------------------------------


@pytest.mark.parametrize("l", DEGREES)
def test_matches_lie_learn_default_basis(l):
    ll = _real_lie_learn()
    for a, b, g in _angles(l):
        ours, ref = wigner_D_matrix(l, a, b, g), ll.wigner_D_matrix(l, a, b, g)
        assert ours.dtype == ref.dtype == np.float64 and ours.shape == ref.shape == (2 * l + 1, 2 * l + 1)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=TOL)
    # escnn passes 0-d arrays (`element[0, ...]`)
    a, b, g = (np.asarray(v) for v in _angles(99)[0])
    np.testing.assert_allclose(wigner_D_matrix(l, a, b, g), ll.wigner_D_matrix(l, a, b, g), rtol=0, atol=TOL)


def test_matches_lie_learn_in_every_basis(monkeypatch):
    ll = _real_lie_learn()
    # lie_learn's change_of_basis_matrix still uses collections.Iterable (removed in Python 3.10)
    monkeypatch.setattr(collections, "Iterable", collections.abc.Iterable, raising=False)
    worst = 0.0
    for basis in BASES:
        for l in DEGREES:
            a, b, g = _angles(100 + l, 1)[0]
            ours, ref = wigner_D_matrix(l, a, b, g, *basis), ll.wigner_D_matrix(l, a, b, g, *basis)
            assert ours.dtype == ref.dtype, basis
            worst = max(worst, np.abs(ours - ref).max())
            small, small_ref = wigner_d_matrix(l, b, *basis), ll.wigner_d_matrix(l, b, *basis)
            assert small.dtype == small_ref.dtype, basis
            worst = max(worst, np.abs(small - small_ref).max())
    assert worst < TOL


# -- properties (both legs), each with a control ----------------------------------------------------


def _homomorphism_error(d: Callable[[int, float, float, float], np.ndarray], l: int, seed: int,
                        euler: str = "ZYZ") -> float:
    """max |D(g) D(h) - D(gh)| over random g, h, composed with scipy's ``euler`` convention."""
    err = 0.0
    for e1, e2 in zip(_angles(seed), _angles(seed + 1)):
        prod = (Rotation.from_euler(euler, e1) * Rotation.from_euler(euler, e2)).as_euler(euler)
        err = max(err, np.abs(d(l, *e1) @ d(l, *e2) - d(l, *prod)).max())
    return err


def _complex_basis(l: int, a: float, b: float, g: float) -> np.ndarray:
    return wigner_D_matrix(l, a, b, g, field="complex")


@pytest.mark.parametrize("l", DEGREES)
def test_homomorphism_for_intrinsic_zyz(l):
    assert _homomorphism_error(wigner_D_matrix, l, seed=l) < TOL
    assert _homomorphism_error(_complex_basis, l, seed=l) < TOL
    if l == 0:
        return  # 1 x 1: no convention to get wrong
    controls = {
        "transposed": lambda l, a, b, g: wigner_D_matrix(l, a, b, g).T,
        "alpha and gamma swapped": lambda l, a, b, g: wigner_D_matrix(l, g, b, a),
        "extrinsic zyz": lambda l, a, b, g: wigner_D_matrix(l, a, b, g),
    }
    for name, wrong in controls.items():
        euler = "zyz" if name == "extrinsic zyz" else "ZYZ"
        assert _homomorphism_error(wrong, l, seed=l, euler=euler) > 1e-3, name


@pytest.mark.parametrize("l", DEGREES)
def test_orthogonal_and_unitary(l):
    eye = np.eye(2 * l + 1)
    for a, b, g in _angles(20 + l):
        d = wigner_D_matrix(l, a, b, g)
        assert np.abs(d @ d.T - eye).max() < TOL
        c = wigner_D_matrix(l, a, b, g, field="complex")
        assert np.abs(c @ c.conj().T - eye).max() < TOL
        if l > 0:  # control: the real part of the complex-basis matrix is not orthogonal
            assert np.abs(c.real @ c.real.T - eye).max() > 1e-3


@pytest.mark.parametrize("l", DEGREES)
def test_identity(l):
    eye = np.eye(2 * l + 1)
    assert np.abs(wigner_D_matrix(l, 0.0, 0.0, 0.0) - eye).max() < TOL
    for a in np.random.default_rng(30 + l).uniform(0.1, 3.0, 3):
        assert np.abs(wigner_D_matrix(l, a, 0.0, -a) - eye).max() < TOL  # R_z(a) R_z(-a)
        assert np.abs(wigner_D_matrix(l, a, 2 * np.pi, -a) - eye).max() < TOL
        if l > 0:  # control: R_z(2a) is not the identity
            assert np.abs(wigner_D_matrix(l, a, 0.0, a) - eye).max() > 1e-3


def test_degree_one_is_the_rotation_matrix_in_yzx_order():
    yzx = [1, 2, 0]
    for e in _angles(40, 8):
        rot = Rotation.from_euler("ZYZ", e).as_matrix()[np.ix_(yzx, yzx)]
        assert np.abs(wigner_D_matrix(1, *e) - rot).max() < TOL
        assert np.abs(wigner_D_matrix(1, *e).T - rot).max() > 1e-3  # control: the inverse rotation


def _real_sph_harm(l: int, x: np.ndarray) -> np.ndarray:
    """Orthonormal real spherical harmonics with Condon-Shortley phase (Wikipedia's real form), m = -l..l."""
    special = pytest.importorskip("scipy.special")
    if not hasattr(special, "sph_harm_y"):
        pytest.skip("scipy < 1.15 has no sph_harm_y")
    x = x / np.linalg.norm(x)
    theta, phi = np.arccos(x[2]), np.arctan2(x[1], x[0])
    out = np.empty(2 * l + 1)
    for m in range(-l, l + 1):
        y = special.sph_harm_y(l, abs(m), theta, phi)
        sign = (-1.0) ** abs(m)
        out[m + l] = y.real if m == 0 else np.sqrt(2) * sign * (y.real if m > 0 else y.imag)
    return out


@pytest.mark.parametrize("l", DEGREES)
def test_real_spherical_harmonics_transform_with_d(l):
    """S(R x) = D(R) S(x): fixes the real basis for every l, independently of lie_learn."""
    rng = np.random.default_rng(50 + l)
    for e in _angles(50 + l, 3):
        rot = Rotation.from_euler("ZYZ", e).as_matrix()
        d = wigner_D_matrix(l, *e)
        x = rng.normal(size=3)
        s, s_rot = _real_sph_harm(l, x), _real_sph_harm(l, rot @ x)
        assert np.abs(s_rot - d @ s).max() < TOL * (2 * l + 1)
        if l > 0:  # control: the transposed (inverse) matrix
            assert np.abs(s_rot - d.T @ s).max() > 1e-3


def test_default_basis_is_the_identity_change_of_basis():
    a, b, g = _angles(60, 1)[0]
    np.testing.assert_array_equal(
        wigner_D_matrix(3, a, b, g), wigner_D_matrix(3, a, b, g, "real", "quantum", "centered", "cs")
    )
    # the other real bases are signed permutations of it (same spectrum up to reordering)
    for basis in BASES:
        if basis[0] == "real":
            m = wigner_D_matrix(3, a, b, g, *basis)
            assert m.dtype == np.float64 and np.abs(m @ m.T - np.eye(7)).max() < TOL


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l": -1}, "non-negative integer; got -1"),
        ({"l": 1.5}, "non-negative integer; got 1.5"),
        ({"alpha": np.zeros(2)}, r"alpha must be one real Euler angle.*shape \(2,\)"),
        ({"beta": float("nan")}, "beta must be a finite Euler angle"),
        ({"gamma": 1j}, "gamma must be one real Euler angle"),
        ({"field": "quaternionic"}, r"field='quaternionic' is not supported; use one of \('real', 'complex'\)"),
        ({"normalization": "schmidt"}, "normalization='schmidt' is not supported"),
        ({"order": "reversed"}, "order='reversed' is not supported"),
        ({"condon_shortley": True}, "condon_shortley=True is not supported"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    args = {"l": 2, "alpha": 0.1, "beta": 0.2, "gamma": 0.3, **kwargs}
    with pytest.raises(ValueError, match=message):
        wigner_D_matrix(**args)


def test_results_are_fresh_arrays():
    d = wigner_D_matrix(2, 0.1, 0.2, 0.3)
    d[:] = 0.0  # callers may write into the result without touching the cached tables
    assert np.abs(wigner_D_matrix(2, 0.1, 0.2, 0.3)).max() > 0.1


# -- escnn on the stand-in (lie_learn blocked), in fresh processes ---------------------------------

_PRELUDE = """
import sys

class _BlockLieLearn:
    # lie_learn fails to import, as its compiled modules do under numpy 2
    def find_spec(self, name, path=None, target=None):
        if name == "lie_learn" or name.startswith("lie_learn."):
            raise ImportError(f"{name} blocked by the test (simulating numpy 2)")
        return None

sys.meta_path.insert(0, _BlockLieLearn())

import joblib

class _PrivateCache(joblib.Memory):
    # escnn's disk caches go to the test's folder: nothing is read from or written to the install
    def __init__(self, location=None, *args, **kwargs):
        super().__init__(CACHE, *args, **kwargs)

joblib.Memory = _PrivateCache
"""


def _run(code: str, cache: Path) -> subprocess.CompletedProcess:
    script = f"CACHE = {str(cache)!r}\n" + _PRELUDE + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def escnn_cache(tmp_path_factory) -> Path:
    """One private escnn cache for this module's subprocesses (the first one fills it)."""
    return tmp_path_factory.mktemp("escnn_cache")


@pytest.mark.subprocess
def test_stand_in_builds_3d_gspaces_and_an_equivariant_r3conv(escnn_cache):
    proc = _run("""
        import flow_escnn
        from flow_escnn import _wigner
        from flow_escnn._compat import lie_learn_stand_in
        from escnn import gspaces, nn
        from escnn.group.groups import so3_utils
        import numpy as np
        import torch
        from scipy.spatial.transform import Rotation

        assert lie_learn_stand_in() is not None, "lie_learn was not blocked"
        assert so3_utils.wigner_D_matrix is _wigner.wigner_D_matrix, "escnn does not use the stand-in"

        so3 = gspaces.rot3dOnR3()
        conv = nn.R3Conv(nn.FieldType(so3, [so3.trivial_repr]), nn.FieldType(so3, [so3.irrep(1), so3.irrep(2)]), 3)
        print("rot3dOnR3", type(conv).__name__)

        gs = gspaces.octaOnR3()
        fi = nn.FieldType(gs, [gs.trivial_repr])
        fo = nn.FieldType(gs, [gs.regular_repr])
        conv = nn.R3Conv(fi, fo, kernel_size=3).eval()
        x = nn.GeometricTensor(torch.randn(2, 1, 7, 7, 7, generator=torch.Generator().manual_seed(0)), fi)

        def quarter_turn(axis):
            return gs.fibergroup.element(Rotation.from_rotvec(np.pi / 2 * np.eye(3)[axis]).as_quat(), "Q")

        g, h = quarter_turn(2), quarter_turn(0)
        with torch.no_grad():
            y = conv(x)
            gy = conv(x.transform(g)).tensor
            err = (gy - y.transform(g).tensor).abs().max().item()
            control = (gy - y.transform(h).tensor).abs().max().item()
            moved = (x.transform(g).tensor - x.tensor).abs().max().item()
        print(f"equivariance error {err:.3e} control {control:.3e} moved {moved:.3e}")
        assert y.shape == (2, 24, 5, 5, 5), y.shape
        assert err < 1e-4, err
        assert control > 1e-2 and moved > 1e-2, (control, moved)  # the check can fail
        print("octaOnR3 OK")
    """, escnn_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rot3dOnR3 R3Conv" in proc.stdout and "octaOnR3 OK" in proc.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_stand_in_builds_ico(escnn_cache):
    """icoOnR3 too (slow: escnn computes the icosahedral irreps numerically, ~8 s on a cold cache)."""
    proc = _run("""
        import flow_escnn
        from escnn import gspaces, nn
        gs = gspaces.icoOnR3()
        conv = nn.R3Conv(nn.FieldType(gs, [gs.trivial_repr]), nn.FieldType(gs, [gs.regular_repr]), 3)
        print("icoOnR3", gs.fibergroup.order(), type(conv).__name__)
    """, escnn_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "icoOnR3 60 R3Conv" in proc.stdout


@pytest.mark.subprocess
def test_escnn_imported_first_is_repaired_in_place(escnn_cache):
    """Without flow_escnn nothing can stand in for lie_learn: ``from escnn import gspaces`` fails.
    Importing flow_escnn afterwards repairs the module object that ``import escnn`` bound."""
    proc = _run("""
        import escnn
        print("escnn alone has", [a for a in ("group", "gspaces", "nn") if hasattr(escnn, a)])
        try:
            from escnn import gspaces
        except ImportError as exc:
            print("escnn-first import fails:", "blocked by the test" in str(exc))
        else:
            raise SystemExit("escnn imported without lie_learn: the documented limitation is gone")
        bound = escnn
        import flow_escnn
        from escnn import gspaces, nn
        assert sys.modules["escnn"] is bound and bound.nn is nn and bound.gspaces is gspaces
        gs = bound.gspaces.octaOnR3()
        conv = bound.nn.R3Conv(nn.FieldType(gs, [gs.trivial_repr]), nn.FieldType(gs, [gs.regular_repr]), 3)
        print("repaired:", type(conv).__name__, gs.fibergroup.order())
    """, escnn_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "escnn alone has []" in proc.stdout  # control: escnn alone is broken
    assert "escnn-first import fails: True" in proc.stdout
    assert "repaired: R3Conv 24" in proc.stdout
    assert "re-executing it in place" in proc.stderr  # logged as a warning
