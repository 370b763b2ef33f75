"""Commuting-diagram checks for any sequence model: flows, static G, and both.

The model :math:`\\Phi` is a black box ``model(x)`` mapping a sequence
``x: [B, T, C, H, W]`` whose channels follow an escnn ``in_type`` to either

* a *plain* field sequence ``[B, T', C', H, W]`` whose channels follow ``out_type``, or
* a *lifted* sequence, a :class:`~flow_escnn.lifted.LiftedTensor`
  ``[B, T', V, C', H, W]`` (its type, including the flow set V, comes with it).

On a 3D gspace (``in_type.gspace`` one of escnn's gspaces on :math:`\\mathbb{R}^3` that act on
the voxel grid exactly, e.g. ``octaOnR3()`` or ``rot2dOnR3(4)``) the sequences are volumes:
``x: [B, T, C, D, H, W]``, plain outputs ``[B, T', C', D, H, W]``, lifted outputs
``[B, T', V, C', D, H, W]``; flows are :class:`~flow_escnn.flows._volume.VolumeGenerator` s or
velocities ``(vx, vy, vz)`` / ``(vx, vy, vz, kx, ky, kz)``, and the voxel convention is that of
:mod:`flow_escnn.flows._volume`.

Output frame ``t`` is taken to belong to input time :math:`t + \\delta` with
:math:`\\delta` = ``time_offset`` (0 for sequence-to-sequence encoders, 1 for a
next-frame predictor whose frame ``t`` predicts input frame ``t + 1``). Each check
transforms the input, calls the model once per transform (plus once on the original
input), and compares with the transformation its theory predicts for the output:

.. math::
    \\begin{array}{ccc}
    f & \\xrightarrow{\\;\\Phi\\;} & \\Phi(f)\\\\
    \\big\\downarrow{\\scriptstyle \\tau} & & \\big\\downarrow{\\scriptstyle \\tau_{\\text{out}}}\\\\
    \\tau\\cdot f & \\xrightarrow{\\;\\Phi\\;} & \\Phi(\\tau\\cdot f)
        \\overset{?}{=} \\tau_{\\text{out}}\\cdot\\Phi(f)
    \\end{array}

Conventions
-----------
* The checks never change the model's train/eval mode. A ``torch.nn.Module`` in
  training mode is refused (``ValueError``) unless ``allow_training=True``: call
  ``model.eval()`` first. The model runs under ``torch.no_grad()``, in the dtype and
  on the device of ``x``.
* Tolerances default to :data:`~flow_escnn.checks._report.DEFAULT_TOLERANCES` of the
  input dtype (float32: ``atol=rtol=1e-5``; float64: ``atol=rtol=1e-10``); a row
  passes when ``max|y - y_hat| <= atol + rtol * max|y_hat|``.
* Transports are exact for integer translations and multiples of 90 degrees on a
  square grid. Anything else is resampled with ``interpolation`` (bilinear, periodic):
  the report marks such rows ``exact = no`` and still measures them; pick tolerances
  that suit the resampling error. On volumes every transport is an exact voxel
  permutation and ``interpolation`` is never used; a rotation that would exchange axes
  of different sizes (a quarter turn about x on a grid with ``D != H``) is refused with
  a ``ValueError`` rather than resampled.
* For lifted outputs, V slices without an exact prediction (:math:`\\nu\\ominus\\mu`
  outside V, or :math:`g_\\nu` not commuting with :math:`g_\\mu`) are excluded; each
  row says how many slices were compared.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

import flow_escnn.checks._predict as predict
from flow_escnn.checks._context import CheckContext, Model, compare_rows, make_context
from flow_escnn.checks._inputs import FlowsLike, coerce_elements, coerce_flows, validate_input
from flow_escnn.checks._report import CheckRow, EquivarianceReport
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION

__all__ = [
    "check_flow_equivariance",
    "check_static_equivariance",
    "check_combined_equivariance",
    "check_equivariance",
]

def _flow_rows(ctx: CheckContext, mus: Sequence[Any]) -> List[CheckRow]:
    ctx.require_same_grid("a flow check")
    rows: List[CheckRow] = []
    for mu in mus:
        label = f"mu={mu.velocity}"
        x_in, exact_in = predict.input_flow(ctx.x, ctx.in_type, mu, ctx.interpolation)
        expected, exact_out, valid = predict.output_flow(
            ctx.base, mu, ctx.time_offset, ctx.interpolation, ctx.periodic_velocities
        )
        actual = ctx.call(x_in)
        if ctx.base.is_lifted and not ctx.base.lifted_type.flows.exact_for(mu):
            ctx.note(f"{label} does not commute with every flow in V: only commuting slices are compared")
        rows += compare_rows(ctx, "flow", label, actual, expected, exact_in and exact_out, valid)
    return rows


def _static_rows(ctx: CheckContext, elements: Sequence[Any]) -> List[CheckRow]:
    rows: List[CheckRow] = []
    for g in elements:
        label = f"g={g}"
        x_in, exact_in = predict.input_static(ctx.x, ctx.in_type, g, ctx.interpolation)
        expected, exact_out, valid = predict.output_static(ctx.base, g, ctx.interpolation)
        actual = ctx.call(x_in)
        rows += compare_rows(ctx, "static", label, actual, expected, exact_in and exact_out, valid)
    return rows


def _combined_rows(ctx: CheckContext, elements: Sequence[Any], mus: Sequence[Any]) -> List[CheckRow]:
    ctx.require_same_grid("a combined check")
    rows: List[CheckRow] = []
    for g in elements:
        for mu in mus:
            label = f"g={g} mu={mu.velocity}"
            x_in, exact_in = predict.input_combined(ctx.x, ctx.in_type, g, mu, ctx.interpolation)
            expected, exact_out, valid = predict.output_combined(
                ctx.base, g, mu, ctx.time_offset, ctx.interpolation, ctx.periodic_velocities
            )
            actual = ctx.call(x_in)
            rows += compare_rows(ctx, "combined", label, actual, expected, exact_in and exact_out, valid)
    return rows


def check_equivariance(
    model: Model,
    x: torch.Tensor,
    in_type: Any,
    flows: Optional[FlowsLike] = None,
    *,
    elements: Optional[Sequence[Any]] = None,
    out_type: Any = None,
    flow: bool = True,
    static: bool = True,
    combined: bool = True,
    time_offset: int = 0,
    interpolation: str = DEFAULT_INTERPOLATION,
    periodic_velocities: bool = False,
    atol: Optional[float] = None,
    rtol: Optional[float] = None,
    allow_training: bool = False,
) -> EquivarianceReport:
    """Run the flow, static and combined checks in one report (one base model call).

    The one signature of the checks: :func:`check_flow_equivariance`,
    :func:`check_static_equivariance` and :func:`check_combined_equivariance` are this function
    with one kind of row switched on, and take the keyword options that apply to it.

    Args:
        model: any callable ``model(x)``; an ``nn.Module`` must be in eval mode.
        x: input sequence ``[B, T, C, H, W]`` (``[B, T, C, D, H, W]`` when ``in_type`` lives on a 3D
            gspace), channels following ``in_type``; its dtype and device are the ones the model runs in.
        in_type: escnn ``FieldType`` of the input channels.
        flows: input flows :math:`\\mu`: one flow (a ``FlowGenerator`` or a velocity ``(vx, vy)`` /
            ``(vx, vy, k)``; on volumes a ``VolumeGenerator`` or ``(vx, vy, vz)`` /
            ``(vx, vy, vz, kx, ky, kz)``), a ``FlowSet``, or a list of flows, on ``in_type.gspace``;
            None skips the flow and combined checks.
        elements: fiber elements :math:`g` (default: the whole fiber group, the identity
            included, which checks determinism).
        out_type: escnn ``FieldType`` of a plain output's channels (required for plain
            outputs, ignored if equal to a lifted output's type).
        flow: run the flow check (when ``flows`` is given).
        static: run the static check.
        combined: run the combined check (when ``flows`` is given).
        time_offset: :math:`\\delta`, the input time of output frame 0.
        interpolation: resampling for planar transports that are not grid-exact (e.g. 45 degrees);
            unused on volumes, whose transports are all exact.
        periodic_velocities: lifted outputs only: match :math:`\\nu\\ominus\\mu` to V modulo the
            ``H x W`` grid (``D x H x W`` on volumes; on a torus the flows of ``(vx, vy)`` and
            ``(vx + W, vy + H)`` coincide), so
            a V covering the torus compares every slice. Only for models whose state lives on a torus.
        atol: absolute tolerance (default by dtype, see :func:`~flow_escnn.checks._report.default_tolerances`).
        rtol: relative tolerance (default by dtype).
        allow_training: accept a module in training mode (its mode is never changed).

    Returns:
        One :class:`EquivarianceReport` whose rows are labelled by check kind.

    Raises:
        TypeError, ValueError: when nothing is to be checked, or on invalid inputs, flows,
            elements, tolerances or model outputs (the message says what to fix).
    """
    mus_wanted = flows is not None and (flow or combined)
    if not (mus_wanted or static):
        raise ValueError("nothing to check: give flows, or leave static=True")
    validate_input(x, in_type)
    mus = coerce_flows(in_type.gspace, flows) if flows is not None else []
    gs = coerce_elements(in_type.gspace, elements) if (static or (combined and mus)) else []
    ctx = make_context(
        model, x, in_type, out_type, time_offset, interpolation, periodic_velocities, atol, rtol, allow_training
    )
    rows: List[CheckRow] = []
    if flow and mus:
        rows += _flow_rows(ctx, mus)
    if static:
        rows += _static_rows(ctx, gs)
    if combined and mus:
        rows += _combined_rows(ctx, gs, mus)
    return ctx.report(rows)


def _one_check(name: str, allowed: Tuple[str, ...], options: Dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{name}() got unexpected keyword argument(s) {unknown}; it takes {list(allowed)} "
                        "(see check_equivariance)")


_FLOW_OPTIONS = ("out_type", "time_offset", "interpolation", "periodic_velocities", "atol", "rtol", "allow_training")


def check_flow_equivariance(model: Model, x: torch.Tensor, in_type: Any, flows: FlowsLike,
                            **options: Any) -> EquivarianceReport:
    """Check flow equivariance :math:`\\Phi(\\mu\\cdot f) = \\mu\\cdot\\Phi(f)` for each input flow.

    The input is moved frame by frame, :math:`f'_t = \\psi_t(\\mu)\\, f_t` (frames
    0-indexed, so frame 0 is unchanged). The prediction for output frame ``t``
    (input time :math:`t+\\delta`, :math:`\\delta` = ``time_offset``) is

    .. math::
        y'_t = \\psi_{t+\\delta}(\\mu)\\, y_t \\quad\\text{(plain)}, \\qquad
        h'_t(\\nu) = \\psi_{t+\\delta}(\\mu)\\, h_t(\\nu\\ominus\\mu) \\quad\\text{(lifted)},

    the lifted case being the FERNN theorem, compared only on slices where
    :math:`\\nu\\ominus\\mu \\in V` and :math:`g_\\mu` commutes with :math:`g_\\nu`.

    Args:
        model, x, in_type, flows: as in :func:`check_equivariance`.
        **options: ``out_type``, ``time_offset``, ``interpolation``, ``periodic_velocities``,
            ``atol``, ``rtol``, ``allow_training``, as in :func:`check_equivariance`.

    Returns:
        An :class:`EquivarianceReport` with one row per (flow, output frame).

    Raises:
        TypeError, ValueError: on invalid inputs, flows, tolerances or model outputs
            (the message says what to fix).

    Example:
        A FERNN with circular padding is exactly equivariant to integer translation flows:

        >>> import torch, flow_escnn
        >>> from escnn import gspaces, nn as enn
        >>> from flow_escnn.checks import check_flow_equivariance
        >>> _ = torch.manual_seed(0)  # some initialisations of one ReLU field output zeros: "degenerate"
        >>> gs = gspaces.rot2dOnR2(4)
        >>> in_type = enn.FieldType(gs, [gs.trivial_repr])
        >>> model = flow_escnn.nn.FERNN(in_type, enn.FieldType(gs, [gs.regular_repr]),
        ...                             flow_escnn.FlowSet.translations(gs, 1)).eval()
        >>> report = check_flow_equivariance(model, torch.rand(1, 4, 1, 8, 8), in_type, flows=[(1, 0), (0, -1)])
        >>> report.passed, report.max_abs_error
        (True, 0.0)
    """
    _one_check("check_flow_equivariance", _FLOW_OPTIONS, options)
    return check_equivariance(model, x, in_type, flows, flow=True, static=False, combined=False, **options)


_STATIC_OPTIONS = ("elements", "out_type", "interpolation", "atol", "rtol", "allow_training")


def check_static_equivariance(model: Model, x: torch.Tensor, in_type: Any, **options: Any) -> EquivarianceReport:
    """Check static equivariance :math:`\\Phi(g\\cdot f) = g\\cdot\\Phi(f)` for fiber elements ``g``.

    Every input frame is transformed by :math:`g` (space about the grid centre and
    fibers, :math:`(g f_t)(x) = \\rho_{\\text{in}}(g) f_t(g^{-1}x)`); the prediction is

    .. math::
        y'_t = g\\, y_t \\quad\\text{(plain)}, \\qquad
        h'_t(\\nu) = g\\, h_t(g^{-1}\\cdot\\nu) \\quad\\text{(lifted: also permutes V)},

    the lifted case needing V closed under :math:`g` (``ValueError`` otherwise).

    Args:
        model, x, in_type: as in :func:`check_equivariance`.
        **options: ``elements``, ``out_type``, ``interpolation``, ``atol``, ``rtol``,
            ``allow_training``, as in :func:`check_equivariance`.

    Returns:
        An :class:`EquivarianceReport` with one row per (element, output frame).

    Raises:
        TypeError, ValueError: on invalid inputs, elements, tolerances or model outputs.
    """
    _one_check("check_static_equivariance", _STATIC_OPTIONS, options)
    return check_equivariance(model, x, in_type, None, flow=False, static=True, combined=False, **options)


def check_combined_equivariance(model: Model, x: torch.Tensor, in_type: Any, flows: FlowsLike,
                                **options: Any) -> EquivarianceReport:
    """Check equivariance to a rotated *and* moving input, for each pair (``g``, ``mu``).

    The input is rotated by :math:`g` and moved by the rotated flow
    :math:`g\\cdot\\mu` (the generator of :math:`g\\, g_\\mu\\, g^{-1}`); since
    :math:`\\psi_t(g\\cdot\\mu) = g\\,\\psi_t(\\mu)\\,g^{-1}`, this is the same as moving
    by :math:`\\mu` and then rotating by :math:`g`:

    .. math::
        f''_t = \\psi_t(g\\cdot\\mu)\\,(g f_t) = g\\,\\psi_t(\\mu)\\, f_t .

    A model equivariant to both actions maps it to
    :math:`\\Phi(g\\cdot(\\mu\\cdot f)) = g\\cdot(\\mu\\cdot\\Phi(f))`, so the prediction is

    .. math::
        y''_t = g\\,\\psi_{t+\\delta}(\\mu)\\, y_t \\quad\\text{(plain)}, \\qquad
        h''_t(\\nu) = g\\,\\psi_{t+\\delta}(\\mu)\\, h_t(g^{-1}\\nu\\ominus\\mu) \\quad\\text{(lifted)},

    which equals :math:`(g\\cdot\\mu)\\cdot(g\\cdot h)`. Lifted slices are compared where
    :math:`g^{-1}\\nu\\ominus\\mu` has an exact prediction.

    Args:
        model, x, in_type, flows: as in :func:`check_equivariance`.
        **options: ``elements`` and the options of :func:`check_flow_equivariance`, as in
            :func:`check_equivariance`.

    Returns:
        An :class:`EquivarianceReport` with one row per (element, flow, output frame).

    Raises:
        TypeError, ValueError: on invalid inputs, flows, elements, tolerances or outputs.
    """
    _one_check("check_combined_equivariance", ("elements", *_FLOW_OPTIONS), options)
    return check_equivariance(model, x, in_type, flows, flow=False, static=False, combined=True, **options)
