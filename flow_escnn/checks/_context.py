"""What one commuting-diagram check run shares, and how it turns errors into report rows.

A :class:`CheckContext` holds the model, the input, the base output :math:`\\Phi(f)` and the
tolerances; :func:`compare_rows` compares :math:`\\Phi(\\tau \\cdot f)` with the predicted
:math:`\\tau_{\\text{out}} \\cdot \\Phi(f)` frame by frame, over the V slices that have an
exact prediction. The checks of :mod:`flow_escnn.checks._diagrams` are built from these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import torch

from flow_escnn._validate import one_of
from flow_escnn.checks._inputs import ModelOutput, check_model_mode, run_model, validate_input
from flow_escnn.checks._report import CheckRow, EquivarianceReport, default_tolerances
from flow_escnn.flows._plans import spatial_dims
from flow_escnn.flows._tables import INTERPOLATIONS

__all__ = ["Model", "CheckContext", "make_context", "compare_rows", "relative_error"]

#: A model under test: ``model(x)`` -> a plain tensor or a LiftedTensor.
Model = Callable[[torch.Tensor], Any]


@dataclass
class CheckContext:
    """Everything one check run shares: the model, the input, the base output, tolerances."""

    model: Model
    x: torch.Tensor
    in_type: Any
    out_type: Any
    time_offset: int
    interpolation: str
    periodic_velocities: bool
    atol: float
    rtol: float
    base: ModelOutput
    notes: List[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def call(self, x: torch.Tensor) -> ModelOutput:
        out = run_model(self.model, x, self.in_type, self.out_type)
        if out.tensor.shape != self.base.tensor.shape or out.lifted_type != self.base.lifted_type:
            raise ValueError(
                f"the model's output on a transformed input has shape {tuple(out.tensor.shape)} "
                f"(type {out.lifted_type or out.field_type}) but {tuple(self.base.tensor.shape)} on the original "
                "input; an equivariant model must return the same shape and type for both"
            )
        return out

    @property
    def spatial_dims(self) -> int:
        """2 for planar sequences ``[B, T, C, H, W]``, 3 for volumes ``[B, T, C, D, H, W]``."""
        return spatial_dims(self.in_type.gspace)

    def require_same_grid(self, what: str) -> None:
        nd = self.spatial_dims
        grid, out = tuple(self.x.shape[-nd:]), tuple(self.base.tensor.shape[-nd:])
        if out != grid:
            if nd == 3:
                raise ValueError(
                    f"{what} needs the model's output on the input's volume (D, H, W) = {grid}, got {out}: "
                    "a flow moves by input voxels per frame"
                )
            raise ValueError(
                f"{what} needs the model's output on the input's grid {grid}, got "
                f"{out}: a flow moves by input pixels per frame"
            )

    def report(self, rows: List[CheckRow]) -> EquivarianceReport:
        return EquivarianceReport(
            rows=rows,
            atol=self.atol,
            rtol=self.rtol,
            dtype=str(self.x.dtype),
            output_kind=self.base.kind,
            time_offset=self.time_offset,
            notes=list(self.notes),
        )


def make_context(
    model: Model,
    x: torch.Tensor,
    in_type: Any,
    out_type: Any,
    time_offset: int,
    interpolation: str,
    periodic_velocities: bool,
    atol: Optional[float],
    rtol: Optional[float],
    allow_training: bool,
) -> CheckContext:
    validate_input(x, in_type)
    if isinstance(time_offset, bool) or int(time_offset) != time_offset:
        raise ValueError(f"time_offset must be an integer number of frames, got {time_offset!r}")
    one_of(interpolation, INTERPOLATIONS, "interpolation")
    a, r = default_tolerances(x.dtype, atol, rtol)
    check_model_mode(model, allow_training)
    base = run_model(model, x, in_type, out_type)
    return CheckContext(model, x, in_type, out_type, int(time_offset), interpolation, bool(periodic_velocities), a, r, base)


def compare_rows(
    ctx: CheckContext,
    check: str,
    label: str,
    actual: ModelOutput,
    expected: torch.Tensor,
    exact: bool,
    valid: Optional[torch.Tensor],
) -> List[CheckRow]:
    """One row per output frame: errors over the valid V slices of that frame."""
    total = ctx.base.num_slices
    a, e = actual.tensor, expected
    if valid is not None:
        idx = torch.nonzero(valid.to(a.device), as_tuple=False).flatten()
        a, e = a.index_select(2, idx), e.index_select(2, idx)
        compared = int(idx.numel())
        if compared < total:
            ctx.note(
                "V slices whose nu - mu is outside V (or does not commute with mu) carry no exact prediction "
                "and are excluded; the slices column counts the compared ones"
            )
    else:
        compared = total
    if not exact:
        ctx.note(
            f"rows with exact=no were transported by {ctx.interpolation} interpolation (not grid-exact): their "
            "errors include resampling error, so set atol/rtol to suit it"
        )
    rows = []
    for t in range(a.shape[1]):
        if compared == 0:
            err = ref = rel = 0.0
        else:
            diff = (a[:, t].double() - e[:, t].double()).abs()
            err = float(diff.max())
            ref = float(e[:, t].double().abs().max())
            rel = relative_error(err, ref)
        tol = ctx.atol + ctx.rtol * ref
        rows.append(
            CheckRow(
                check=check,
                transform=label,
                t=t,
                max_abs_error=err,
                max_rel_error=rel,
                max_abs_expected=ref,
                tolerance=tol,
                compared_slices=compared,
                total_slices=total,
                exact=exact,
                passed=bool(err <= tol),
            )
        )
    return rows


def relative_error(err: float, ref: float) -> float:
    if ref > 0:
        return err / ref
    return 0.0 if err == 0 else float("inf")
