"""Report objects of the commuting-diagram checks.

A check compares, frame by frame, the output of a model on a transformed input with
the *predicted* transformation of its output on the original input. Each compared
(transform, output frame) pair is one :class:`CheckRow`; an
:class:`EquivarianceReport` collects the rows, decides pass/fail and renders a table.

Pass criterion (per row), with :math:`y` the model's output on the transformed input
and :math:`\\hat y` the prediction, both restricted to the compared slices:

.. math::
    \\max |y - \\hat y| \\;\\le\\; \\text{atol} + \\text{rtol}\\cdot\\max|\\hat y| .

The relative error reported is :math:`\\max|y - \\hat y| / \\max|\\hat y|` (0 when both
are 0, ``inf`` when only the prediction is 0). Default tolerances depend on the
dtype the check ran in (:data:`DEFAULT_TOLERANCES`); they are meant for *exact*
transforms (integer translations, multiples of 90 degrees), where the only error is
floating-point rounding. Interpolated transforms are measured just the same but need
user-chosen tolerances.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

__all__ = [
    "EquivarianceError",
    "CheckRow",
    "EquivarianceReport",
    "DEFAULT_TOLERANCES",
    "default_tolerances",
]

DEFAULT_TOLERANCES: Dict[torch.dtype, Tuple[float, float]] = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
}
"""``dtype -> (atol, rtol)`` used when the caller gives no tolerance.

float64 ``(1e-10, 1e-10)`` and float32 ``(1e-5, 1e-5)`` leave room for the rounding
of a few hundred re-ordered floating-point sums (a rotated input changes the order in
which a convolution adds its terms) while any genuine equivariance defect of a
non-degenerate model is orders of magnitude larger."""


def default_tolerances(
    dtype: torch.dtype, atol: Optional[float] = None, rtol: Optional[float] = None
) -> Tuple[float, float]:
    """Tolerances for ``dtype``, with explicit ``atol`` / ``rtol`` taking precedence.

    Raises:
        ValueError: for a non-floating dtype, or a negative / non-finite tolerance.
    """
    if not dtype.is_floating_point:
        raise ValueError(
            f"equivariance checks run in a floating dtype; got {dtype}. Convert the input, e.g. x.double()"
        )
    d_atol, d_rtol = DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES[torch.float32])
    a = d_atol if atol is None else float(atol)
    r = d_rtol if rtol is None else float(rtol)
    for name, v in (("atol", a), ("rtol", r)):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
    return a, r


class EquivarianceError(AssertionError):
    """A model failed an equivariance check; the message holds the report's table.

    Attributes:
        report: the :class:`EquivarianceReport` that failed.
    """

    def __init__(self, report: "EquivarianceReport") -> None:
        self.report = report
        super().__init__("equivariance check failed\n" + report.summary())


@dataclass(frozen=True)
class CheckRow:
    """One compared (transform, output frame) pair.

    Attributes:
        check: ``"flow"``, ``"static"`` or ``"combined"``.
        transform: readable name of the input transform (e.g. ``"mu=(1, 0, 0)"``).
        t: output frame index.
        max_abs_error: :math:`\\max|y - \\hat y|` over the compared slices.
        max_rel_error: ``max_abs_error / max_abs_expected`` (0 if both are 0, ``inf`` if only
            the expectation is 0).
        max_abs_expected: :math:`\\max|\\hat y|` over the compared slices.
        tolerance: the threshold ``atol + rtol * max_abs_expected``.
        compared_slices: number of V slices compared (1 for a plain output).
        total_slices: number of V slices in the output (1 for a plain output).
        exact: whether every transport involved maps the grid onto itself (no interpolation).
        passed: ``max_abs_error <= tolerance`` (always True when nothing was compared).
    """

    check: str
    transform: str
    t: int
    max_abs_error: float
    max_rel_error: float
    max_abs_expected: float
    tolerance: float
    compared_slices: int
    total_slices: int
    exact: bool
    passed: bool

    @property
    def skipped(self) -> bool:
        """True when no slice of this frame had a prediction (nothing was compared)."""
        return self.compared_slices == 0

    @property
    def status(self) -> str:
        """``"pass"``, ``"FAIL"`` or ``"skip"`` (no slice compared)."""
        if self.skipped:
            return "skip"
        return "pass" if self.passed else "FAIL"


@dataclass
class EquivarianceReport:
    """Result of one or several equivariance checks.

    Attributes:
        rows: one :class:`CheckRow` per compared (transform, output frame).
        atol: absolute tolerance used.
        rtol: relative tolerance used.
        dtype: the dtype the model ran in (as a string, e.g. ``"torch.float64"``).
        output_kind: ``"plain"`` (a field sequence) or ``"lifted"`` (a ``LiftedTensor``).
        time_offset: the ``time_offset`` used by flow-type checks.
        notes: free-text remarks (e.g. interpolated transports, excluded slices).
    """

    rows: List[CheckRow] = field(default_factory=list)
    atol: float = 0.0
    rtol: float = 0.0
    dtype: str = ""
    output_kind: str = ""
    time_offset: int = 0
    notes: List[str] = field(default_factory=list)

    # -- aggregates -------------------------------------------------------------------------------
    @property
    def compared_rows(self) -> List[CheckRow]:
        return [r for r in self.rows if not r.skipped]

    @property
    def failed_rows(self) -> List[CheckRow]:
        return [r for r in self.rows if not r.skipped and not r.passed]

    @property
    def unverified(self) -> List[str]:
        """``"check transform"`` labels for which no slice of any frame could be compared.

        E.g. a flow check of a lifted output over :math:`V = \\{0\\}` (a G-RNN): no
        :math:`\\nu \\ominus \\mu` lies in V, so nothing is predicted. Such a transform is not
        verified and the report does not pass; check a plain (e.g. V-pooled) output instead.
        """
        groups: Dict[Tuple[str, str], List[CheckRow]] = {}
        for r in self.rows:
            groups.setdefault((r.check, r.transform), []).append(r)
        return [f"{c} {t}" for (c, t), rows in groups.items() if all(r.skipped for r in rows)]

    @property
    def degenerate(self) -> List[str]:
        """``"check transform"`` labels whose compared outputs are all exactly zero.

        Zero maps to zero under every transform, so such a check verifies nothing (a freshly
        initialised ReLU model often outputs all zeros); the report does not pass.
        """
        groups: Dict[Tuple[str, str], List[CheckRow]] = {}
        for r in self.compared_rows:
            groups.setdefault((r.check, r.transform), []).append(r)
        return [f"{c} {t}" for (c, t), rows in groups.items() if all(r.max_abs_expected == 0.0 for r in rows)]

    @property
    def passed(self) -> bool:
        """True iff every transform had a compared, non-zero output and no compared row failed."""
        return bool(self.compared_rows) and not self.failed_rows and not self.unverified and not self.degenerate

    @property
    def max_abs_error(self) -> float:
        """Largest absolute error over all compared rows (0.0 when nothing was compared)."""
        return _nanmax(r.max_abs_error for r in self.compared_rows)

    @property
    def max_rel_error(self) -> float:
        """Largest relative error over all compared rows (0.0 when nothing was compared)."""
        return _nanmax(r.max_rel_error for r in self.compared_rows)

    @property
    def compared_slices(self) -> int:
        """Sum over rows of the V slices compared (one per frame for plain outputs)."""
        return sum(r.compared_slices for r in self.rows)

    @property
    def total_slices(self) -> int:
        """Sum over rows of the V slices in the output (compared or excluded)."""
        return sum(r.total_slices for r in self.rows)

    @property
    def excluded_slices(self) -> int:
        """Slices without an exact prediction (:math:`\\nu\\ominus\\mu \\notin V` or not commuting)."""
        return self.total_slices - self.compared_slices

    @property
    def exact(self) -> bool:
        """Whether every transport in every row was grid-exact."""
        return all(r.exact for r in self.rows)

    # -- combination ------------------------------------------------------------------------------
    @classmethod
    def combine(cls, reports: Iterable["EquivarianceReport"]) -> "EquivarianceReport":
        """Concatenate the rows of several reports made with the same tolerances and dtype.

        Raises:
            ValueError: when the reports are empty or disagree on tolerances / dtype / output kind.
        """
        reports = list(reports)
        if not reports:
            raise ValueError("combine needs at least one report")
        first = reports[0]
        for r in reports[1:]:
            if (r.atol, r.rtol, r.dtype, r.output_kind) != (first.atol, first.rtol, first.dtype, first.output_kind):
                raise ValueError("cannot combine reports made with different tolerances, dtypes or output kinds")
        notes: List[str] = []
        for r in reports:
            notes.extend(n for n in r.notes if n not in notes)
        return cls(
            rows=[row for r in reports for row in r.rows],
            atol=first.atol,
            rtol=first.rtol,
            dtype=first.dtype,
            output_kind=first.output_kind,
            time_offset=first.time_offset,
            notes=notes,
        )

    # -- rendering --------------------------------------------------------------------------------
    def summary(self) -> str:
        """A readable multi-line table of all rows, with a header and a totals line."""
        verdict = "PASSED" if self.passed else "FAILED"
        head = (
            f"Equivariance check {verdict}: {self.output_kind} output, {self.dtype}, "
            f"atol={self.atol:.1e}, rtol={self.rtol:.1e}, time_offset={self.time_offset}"
        )
        cols = ("check", "transform", "t", "max_abs_err", "max_rel_err", "tolerance", "slices", "exact", "result")
        body = [
            (
                r.check,
                r.transform,
                str(r.t),
                f"{r.max_abs_error:.3e}",
                f"{r.max_rel_error:.3e}",
                f"{r.tolerance:.3e}",
                f"{r.compared_slices}/{r.total_slices}",
                "yes" if r.exact else "no",
                r.status,
            )
            for r in self.rows
        ]
        widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
        fmt = lambda cells: "  ".join(s.ljust(w) for s, w in zip(cells, widths)).rstrip()  # noqa: E731
        lines = [head, fmt(cols), fmt(tuple("-" * w for w in widths))]
        lines += [fmt(b) for b in body]
        n_fail, n_skip = len(self.failed_rows), len(self.rows) - len(self.compared_rows)
        lines.append(
            f"{len(self.rows)} rows: {len(self.compared_rows) - n_fail} passed, {n_fail} failed, {n_skip} skipped; "
            f"{self.compared_slices}/{self.total_slices} slices compared ({self.excluded_slices} excluded: no exact "
            f"prediction); max abs error {self.max_abs_error:.3e}, max rel error {self.max_rel_error:.3e}"
        )
        if not self.compared_rows:
            lines.append("nothing was compared: the check verified nothing and counts as failed")
        elif self.unverified:
            lines.append(
                "not verified (no slice had a prediction), counted as failed: " + ", ".join(self.unverified)
            )
        if self.degenerate:
            lines.append(
                "vacuous (the output is all zeros, which every transform preserves), counted as failed: "
                + ", ".join(self.degenerate)
                + "; give the model weights or inputs that make its output non-zero"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> Dict[str, Any]:
        """Plain-Python form (``json.dumps`` works; infinite/NaN errors become ``Infinity``/``NaN``).

        Returns:
            Aggregates, tolerances, notes, and ``rows`` as a list of dicts with the
            :class:`CheckRow` fields.
        """
        return {
            "passed": self.passed,
            "unverified": self.unverified,
            "degenerate": self.degenerate,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "atol": self.atol,
            "rtol": self.rtol,
            "dtype": self.dtype,
            "output_kind": self.output_kind,
            "time_offset": self.time_offset,
            "exact": self.exact,
            "compared_slices": self.compared_slices,
            "total_slices": self.total_slices,
            "excluded_slices": self.excluded_slices,
            "num_rows": len(self.rows),
            "num_failed": len(self.failed_rows),
            "notes": list(self.notes),
            "rows": [asdict(r) for r in self.rows],
        }

    def raise_if_failed(self) -> "EquivarianceReport":
        """Return ``self`` if :attr:`passed`, else raise.

        Raises:
            EquivarianceError: with the report's table as message.
        """
        if not self.passed:
            raise EquivarianceError(self)
        return self


def _nanmax(values: Iterable[float]) -> float:
    """Max that propagates NaN (a NaN error must never look small)."""
    out = 0.0
    for v in values:
        if math.isnan(v):
            return math.nan
        out = max(out, v)
    return out
