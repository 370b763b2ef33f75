r"""Wigner D-matrices of SO(3) in numpy, with ``lie_learn``'s conventions.

escnn 1.0.11 builds every SO(3) / O(3) irrep from
``lie_learn.representations.SO3.wigner_d.wigner_D_matrix``. ``lie_learn`` ships compiled
modules built for numpy 1.x, so under numpy 2 :mod:`flow_escnn._compat` serves the
functions of this module in its place. They reproduce ``lie_learn`` 0.0.2 (to about
``1e-15``) for every basis convention ``lie_learn`` names; nothing here imports it.

**Conventions.** A rotation is given by intrinsic ZYZ Euler angles,

.. math::

    R(\alpha, \beta, \gamma) = R_z(\alpha)\, R_y(\beta)\, R_z(\gamma),

which is ``scipy.spatial.transform.Rotation.from_euler('ZYZ', [alpha, beta, gamma])``
(the parametrization escnn converts to before calling ``wigner_D_matrix``). Every matrix
returned is a representation, :math:`D(R_1) D(R_2) = D(R_1 R_2)`. In the complex, centered,
Condon-Shortley ("quantum") basis :math:`Y^{-l}, \dots, Y^{l}` it is

.. math::

    D^l_{m'm}(\alpha, \beta, \gamma) = e^{i m' \alpha}\, d^l_{m'm}(\beta)\, e^{i m \gamma},
    \qquad d^l(\beta) = \exp(-i \beta J_y),

the complex conjugate of the textbook :math:`e^{-i m' \alpha} d^l_{m'm}(\beta) e^{-i m \gamma}`
(``lie_learn``'s choice, kept here). The default, real basis is that of the real spherical
harmonics :math:`S = C Y` with ``lie_learn``'s unitary :math:`C` (:func:`complex_to_real`):
:math:`D_{\mathrm{real}} = C D C^\dagger`. For ``l = 1`` it is the rotation matrix itself in
the coordinate order :math:`(y, z, x)`.

**Method** (Pinchon & Hoggan's factorization). With :math:`P` the half-turn about
:math:`(0, 1, 1)/\sqrt{2}`, which swaps the y and z axes, :math:`R_y(\beta) = P R_z(\beta) P`,
hence in the real basis

.. math::

    D(\alpha, \beta, \gamma) = Z(\alpha)\, K\, Z(\beta)\, K\, Z(\gamma),

where :math:`Z(\theta)` (a z rotation) only has a diagonal :math:`\cos(m\theta)` and an
anti-diagonal :math:`-\sin(m\theta)`, and :math:`K = D(P)` is computed once per ``l`` from
:math:`d^l(\pi/2)` in exact integer arithmetic:

.. math::

    d^l_{m'm}(\pi/2) = \frac{(-1)^{m'-m}}{2^l}
        \sqrt{\frac{(l+m')!\,(l-m')!}{(l+m)!\,(l-m)!}}\; c^{(m)}_{l-m'},
    \qquad \sum_k c^{(m)}_k x^k = (1-x)^{l+m} (1+x)^{l-m},

so each entry of :math:`d^l(\pi/2)` is rounded once. Each call then costs one dense
product, and the result is accurate to a few ulps for any ``l``.
"""
from __future__ import annotations

import math
import operator
from functools import cache
from typing import Any

import numpy as np

__all__ = ["CS_PHASES", "FIELDS", "NORMALIZATIONS", "ORDERS", "complex_to_real", "wigner_D_matrix", "wigner_d_matrix"]

FIELDS = ("real", "complex")
NORMALIZATIONS = ("quantum", "seismology", "geodesy", "nfft")
ORDERS = ("centered", "block")
CS_PHASES = ("cs", "nocs")

_DEFAULT_BASIS = ("real", "quantum", "centered", "cs")


def wigner_D_matrix(
    l: int,
    alpha: Any,
    beta: Any,
    gamma: Any,
    field: str = "real",
    normalization: str = "quantum",
    order: str = "centered",
    condon_shortley: str = "cs",
) -> np.ndarray:
    """The Wigner D-matrix of degree ``l`` at the ZYZ Euler angles ``(alpha, beta, gamma)``.

    Drop-in replacement for ``lie_learn.representations.SO3.wigner_d.wigner_D_matrix``
    (same arguments, conventions and dtypes; see the module docstring).

    Args:
        l: the degree, a non-negative integer; the matrix is ``(2l+1) x (2l+1)``.
        alpha: first (outer) z angle in radians, a scalar.
        beta: y angle in radians, a scalar.
        gamma: last (inner) z angle in radians, a scalar.
        field: ``'real'`` (real spherical harmonics) or ``'complex'``.
        normalization: ``'quantum'``, ``'seismology'``, ``'geodesy'`` or ``'nfft'``.
        order: ``'centered'`` (``m = -l..l``) or ``'block'`` (Pinchon-Hoggan block order).
        condon_shortley: ``'cs'`` or ``'nocs'`` (drop the phase :math:`(-1)^m`, ``m > 0``).

    Returns:
        ``float64`` array for ``field='real'``, ``complex128`` for ``field='complex'``.

    Raises:
        ValueError: for a negative or non-integer ``l``, a non-scalar or non-finite angle,
            or a basis name ``lie_learn`` does not know.
    """
    l = _check_degree(l)
    basis = _check_basis(field, normalization, order, condon_shortley)
    a, b, g = (_check_angle(name, v) for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)))
    m, k = _tables(l)
    # Z(a) K Z(b) K Z(g), with the sparse z rotations applied as row / column operations.
    d = _z_right(_z_left(m, a, _z_right(k, m, b) @ k), m, g)
    if basis == _DEFAULT_BASIS:
        return d
    to, back = _change_of_basis(l, basis)
    return to @ d @ back  # real matrices (float64) for field='real', complex128 otherwise


def wigner_d_matrix(
    l: int,
    beta: Any,
    field: str = "real",
    normalization: str = "quantum",
    order: str = "centered",
    condon_shortley: str = "cs",
) -> np.ndarray:
    r"""The Wigner small-d matrix :math:`D^l(0, \beta, 0)`, as ``lie_learn``'s ``wigner_d_matrix``.

    It is real in every basis (``lie_learn`` returns its real part), so the result is
    always ``float64``. Arguments and errors as in :func:`wigner_D_matrix`.
    """
    d = wigner_D_matrix(l, 0.0, beta, 0.0, field, normalization, order, condon_shortley)
    return np.ascontiguousarray(d.real)


def complex_to_real(l: int) -> np.ndarray:
    r"""``lie_learn``'s unitary :math:`C` with :math:`S = C Y` (real from complex harmonics).

    In the centered order, for :math:`m > 0`:
    :math:`S^m = ((-1)^m Y^m + Y^{-m})/\sqrt{2}`,
    :math:`S^{-m} = i (Y^{-m} - (-1)^m Y^m)/\sqrt{2}`, and :math:`S^0 = Y^0`.

    Args:
        l: the degree, a non-negative integer.

    Returns:
        A read-only ``complex128`` array of shape ``(2l+1, 2l+1)``.
    """
    return _complex_to_real(_check_degree(l))


# --------------------------------------------------------------------------- checks


def _check_degree(l: Any) -> int:
    try:
        degree = operator.index(l)
    except TypeError:
        raise ValueError(f"the degree l must be a non-negative integer; got {l!r} of type {type(l).__name__}") from None
    if degree < 0:
        raise ValueError(f"the degree l must be a non-negative integer; got {degree}")
    return degree


def _check_angle(name: str, value: Any) -> float:
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(
            f"{name} must be one real Euler angle in radians; got {type(value).__name__} with shape "
            f"{arr.shape} and dtype {arr.dtype}. Call wigner_D_matrix once per rotation."
        )
    angle = float(arr.reshape(()))
    if not math.isfinite(angle):
        raise ValueError(f"{name} must be a finite Euler angle in radians; got {angle}")
    return angle


def _check_basis(field: str, normalization: str, order: str, cs: str) -> tuple[str, str, str, str]:
    for arg, value, allowed in (
        ("field", field, FIELDS),
        ("normalization", normalization, NORMALIZATIONS),
        ("order", order, ORDERS),
        ("condon_shortley", cs, CS_PHASES),
    ):
        if value not in allowed:
            raise ValueError(f"{arg}={value!r} is not supported; use one of {allowed} (lie_learn's names)")
    return field, normalization, order, cs


# --------------------------------------------------------------------------- tables


@cache
def _tables(l: int) -> tuple[np.ndarray, np.ndarray]:
    """``(m, K)``: the orders ``-l..l`` and :math:`K = D(P)` in the real basis (read-only)."""
    m = np.arange(-l, l + 1)
    half_turn = _small_d_half_pi(l)
    # D(P) in the complex basis, P = R_z(pi/2) R_y(pi/2) R_z(pi/2): i^{m'} d(pi/2) i^{m}.
    phase = 1j ** (m % 4)
    dp = phase[:, None] * half_turn * phase[None, :]
    c = _complex_to_real(l)
    k = (c @ dp @ c.conj().T).real
    k = 0.5 * (k + k.T)  # P is an involution: K is symmetric; drop the rounding asymmetry
    m.setflags(write=False)
    k.setflags(write=False)
    return m, k


def _small_d_half_pi(l: int) -> np.ndarray:
    r""":math:`d^l(\pi/2)` (rows ``m'``, columns ``m``, centered), each entry rounded once."""
    size = 2 * l + 1
    fact = [math.factorial(i) for i in range(size)]
    out = np.empty((size, size))
    # Coefficients of (1-x)^(l+m) (1+x)^(l-m), column by column: start at m = -l with
    # (1+x)^(2l), then P_{m+1} = P_m (1-x) / (1+x), all in exact integers.
    poly = [math.comb(2 * l, i) for i in range(size)]
    for j in range(size):
        mm = j - l
        if j > 0:
            times = [poly[i] - (poly[i - 1] if i else 0) for i in range(size)]
            quotient = []
            for i in range(size):
                quotient.append(times[i] - (quotient[i - 1] if i else 0))
            poly = quotient
        den = fact[l + mm] * fact[l - mm] * 4**l
        for i in range(size):
            mp = i - l
            coeff = poly[l - mp]
            if coeff == 0:
                out[i, j] = 0.0
                continue
            value = math.sqrt(coeff * coeff * fact[l + mp] * fact[l - mp] / den)  # correctly rounded int division
            sign = -1.0 if ((mp - mm) % 2) != (coeff < 0) else 1.0
            out[i, j] = sign * value
    return out


@cache
def _complex_to_real(l: int) -> np.ndarray:
    size = 2 * l + 1
    c = np.zeros((size, size), dtype=complex)
    r = 1.0 / math.sqrt(2.0)
    c[l, l] = 1.0
    for m in range(1, l + 1):
        sign = -1.0 if m % 2 else 1.0
        c[l + m, l + m] = sign * r
        c[l + m, l - m] = r
        c[l - m, l - m] = 1j * r
        c[l - m, l + m] = -1j * sign * r
    c.setflags(write=False)
    return c


def _z_left(m: np.ndarray, theta: float, mat: np.ndarray) -> np.ndarray:
    r""":math:`Z(\theta) M`; :math:`Z` has :math:`\cos(m\theta)` on the diagonal, :math:`-\sin(m\theta)` anti."""
    ang = m * theta
    return np.cos(ang)[:, None] * mat - np.sin(ang)[:, None] * mat[::-1]


def _z_right(mat: np.ndarray, m: np.ndarray, theta: float) -> np.ndarray:
    r""":math:`M Z(\theta)`."""
    ang = m * theta
    return mat * np.cos(ang)[None, :] + mat[:, ::-1] * np.sin(ang)[None, :]


@cache
def _change_of_basis(l: int, basis: tuple[str, str, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """``(B, B^-1)`` taking real-quantum-centered-cs coordinates to ``basis`` and back.

    Composed as in ``lie_learn.representations.SO3.irrep_bases.change_of_basis_matrix``:
    field change, then the normalization's diagonal scaling, then the Condon-Shortley phase,
    then the block reordering.
    """
    field, normalization, order, cs = basis
    size = 2 * l + 1
    m = np.arange(-l, l + 1)
    to = np.eye(size, dtype=complex)
    back = np.eye(size, dtype=complex)
    if field == "complex":
        c = _complex_to_real(l)
        to = c.conj().T @ to
        back = back @ c
    if normalization != "quantum":
        parity = np.where(m % 2 == 0, 1.0, -1.0)
        scale = {
            "seismology": parity,
            "geodesy": parity / math.sqrt(4.0 * math.pi),
            "nfft": parity * math.sqrt(size / (4.0 * math.pi)),
        }[normalization]  # coordinates in that normalization are (quantum) / scale
        to = to / scale[:, None]
        back = back * scale[None, :]
    if cs == "nocs":
        flip = np.where((m > 0) & (m % 2 == 1), -1.0, 1.0)
        to = flip[:, None] * to
        back = back * flip[None, :]
    if order == "block":
        perm = np.concatenate([np.arange(1, size, 2), np.arange(0, size, 2)])
        to = to[perm]
        back = back[:, perm]
    if field == "real":
        to, back = to.real.copy(), back.real.copy()
    to.setflags(write=False)
    back.setflags(write=False)
    return to, back
