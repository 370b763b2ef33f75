"""Nonlinearities for lifted states, and the field types they are equivariant on.

A pointwise function :math:`\\sigma` commutes with :math:`\\rho(g)` exactly when
:math:`\\rho(g)` is a permutation matrix, i.e. for trivial, regular and quotient
(permutation) representations: escnn marks them with ``'pointwise'`` in
``Representation.supported_nonlinearities``. It also commutes with the V-index
shift, and with exact spatial transport (see the note).

.. note::
    Exact transport (integer translations, 90-degree rotations) permutes pixels, so it
    commutes with any pointwise :math:`\\sigma`. Bilinear transport is a convex
    combination of pixels, which commutes with linear maps only: one more reason the
    interpolated rotation flows are approximate.

Fields whose representation is not a permutation (the irreps of SO(2) / O(2), or of
:math:`C_N` with frequency > 0) need a nonlinearity that acts on whole fields, as escnn's
``NormNonLinearity`` and ``GatedNonLinearity1`` do. The FERNN cell offers two
(:data:`FIELD_NONLINEARITIES`; :func:`field_nonlinearity`), equivariant
for every orthogonal fiber representation because they only rescale a field by a function
of an invariant:

.. math::
    \\text{squash:}\\quad & \\sigma(x)_f = \\frac{x_f}{1 + \\lVert x_f\\rVert_\\epsilon},
        \\qquad \\lVert x\\rVert_\\epsilon = \\sqrt{\\lVert x\\rVert^2 + \\epsilon^2},\\ \\epsilon = 10^{-6}\\\\
    \\text{gated:}\\quad & \\sigma(x, \\gamma)_f = \\mathrm{sigmoid}(\\gamma_f)\\, x_f

with one extra trivial (invariant) gate channel :math:`\\gamma_f` per hidden field computed by
the same convolutions :math:`U, W` (so their output type is the hidden type plus one trivial
field per hidden field).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List

import torch

__all__ = [
    "field_nonlinearity",
    "NONLINEARITIES",
    "FIELD_NONLINEARITIES",
    "CELL_NONLINEARITIES",
    "get_nonlinearity",
    "apply_nonlinearity",
    "nonlinearity_backward",
    "check_pointwise",
    "non_pointwise",
    "check_cell_nonlinearity",
]


def apply_nonlinearity(x: torch.Tensor, name: str, inplace: bool = False) -> torch.Tensor:
    """Apply the pointwise nonlinearity called ``name`` (TorchScript-compatible dispatch).

    With ``inplace=True`` ``x`` is overwritten (it must be a fresh tensor nothing else reads).
    Every function here saves its *output* for the backward pass, so the in-place form is
    autograd-safe and saves one allocation and one memory pass. Unknown names are rejected at
    construction by :func:`get_nonlinearity`; here they fall through to the identity, which
    only ``"identity"`` should reach.
    """
    if name == "relu":
        return torch.relu_(x) if inplace else torch.relu(x)
    if name == "tanh":
        return torch.tanh_(x) if inplace else torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid_(x) if inplace else torch.sigmoid(x)
    if name == "elu":
        return torch.nn.functional.elu_(x) if inplace else torch.nn.functional.elu(x)
    return x


def nonlinearity_backward(grad: torch.Tensor, out: torch.Tensor, name: str) -> torch.Tensor:
    """The gradient of :func:`apply_nonlinearity` at its *output* ``out`` (each is a function of it)."""
    if name == "relu":
        return torch.ops.aten.threshold_backward(grad, out, 0)
    if name == "tanh":
        return torch.ops.aten.tanh_backward(grad, out)
    if name == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, out)
    if name == "elu":
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)
    return grad


NONLINEARITIES: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    name: functools.partial(apply_nonlinearity, name=name) for name in ("relu", "tanh", "sigmoid", "elu", "identity")
}


#: Nonlinearities of whole fields (any orthogonal fiber representation), for the FERNN cell.
FIELD_NONLINEARITIES = ("norm_squash", "gated")

#: Every ``nonlinearity=`` a FERNN cell accepts.
CELL_NONLINEARITIES = tuple(NONLINEARITIES) + FIELD_NONLINEARITIES


def get_nonlinearity(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pointwise function called ``name``.

    Raises:
        ValueError: for an unknown name (lists the known ones).
    """
    try:
        return NONLINEARITIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown nonlinearity {name!r}; choose one of {sorted(NONLINEARITIES)}") from None


def non_pointwise(field_type: Any) -> List[str]:
    """The (sorted, distinct) names of ``field_type``'s representations that do not commute with pointwise
    functions (everything but permutation representations); empty when all do."""
    return sorted({r.name for r in field_type.representations if "pointwise" not in r.supported_nonlinearities})


def check_pointwise(field_type: Any, what: str = "hidden_type") -> None:
    """Raise ``ValueError`` unless every field of ``field_type`` supports pointwise nonlinearities."""
    bad = non_pointwise(field_type)
    if bad:
        hint = (
            ", or keep these fields and choose a field nonlinearity: nonlinearity='norm_squash' or 'gated' "
            "(as escnn's NormNonLinearity / GatedNonLinearity1)" if what == "hidden_type" else ""
        )
        raise ValueError(
            f"{what} contains representations {bad} that do not support pointwise nonlinearities, so the "
            f"result would not be equivariant; use trivial, regular or quotient representations "
            f"(e.g. gspace.regular_repr; on SO(2) / O(2) trivial fields){hint}"
        )


def check_cell_nonlinearity(name: str, hidden_type: Any) -> None:
    """Raise unless ``name`` is a FERNN cell nonlinearity that is equivariant on ``hidden_type``.

    Raises:
        ValueError: for an unknown name, or a pointwise one on fields that are not permutation
            representations (the message names the field nonlinearities).
    """
    if name not in CELL_NONLINEARITIES:
        raise ValueError(f"unknown nonlinearity {name!r}; choose one of {sorted(CELL_NONLINEARITIES)}")
    if name not in FIELD_NONLINEARITIES:
        check_pointwise(hidden_type)


def field_nonlinearity(s: torch.Tensor, fields: torch.Tensor, num_fields: int, name: str) -> torch.Tensor:
    """A FERNN update's field nonlinearity (:mod:`flow_escnn.nn._nonlinearity`) of ``s = a + b``.

    Args:
        s: ``[B, V, G, H, W]`` (or ``[B, V, G, D, H, W]``): the hidden channels ``C`` first, then (``"gated"``)
            one gate per field.
        fields: ``[C]`` long: the field of each hidden channel.
        num_fields: the number of hidden fields.
        name: ``"norm_squash"`` or ``"gated"``.
    """
    c = fields.shape[0]
    if name == "gated":
        return s[:, :, :c] * torch.sigmoid(s[:, :, c:]).index_select(2, fields)
    shape = (s.shape[0], s.shape[1], num_fields, *s.shape[3:])
    squares = torch.zeros(shape, dtype=s.dtype, device=s.device).index_add_(2, fields, s * s)
    norms = (squares + 1e-12).sqrt()  # epsilon 1e-6: a finite gradient at x = 0
    return s / (1 + norms).index_select(2, fields)
