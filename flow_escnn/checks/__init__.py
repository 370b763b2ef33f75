"""Commuting-diagram checks for sequence models, and their reports.

The checks only call the model: they work for any callable mapping a sequence
``[B, T, C, H, W]`` to a plain field sequence or a :class:`~flow_escnn.lifted.LiftedTensor`, and, when
``in_type`` lives on one of escnn's 3D gspaces, for volumes ``[B, T, C, D, H, W]`` (volume flows are
exact: integer translations of the 3-torus, quarter turns about the coordinate axes; docs/volumes.rst).

* :func:`check_flow_equivariance`: moving inputs, :math:`f'_t = \\psi_t(\\mu) f_t`.
* :func:`check_static_equivariance`: rotated/reflected inputs, :math:`f'_t = g f_t`.
* :func:`check_combined_equivariance`: both, :math:`f'_t = g\\,\\psi_t(\\mu) f_t`.
* :func:`check_equivariance`: all of the above in one report.
* :func:`check_world_equivariance`: world models, episodes of views and actions (turned agents,
  self-motion, world shifts, object flows).

Each returns an :class:`EquivarianceReport`; ``report.raise_if_failed()`` raises
:class:`EquivarianceError` with the table.
"""
from flow_escnn.checks._diagrams import (
    check_combined_equivariance,
    check_equivariance,
    check_flow_equivariance,
    check_static_equivariance,
)
from flow_escnn.checks._world import WORLD_CHECKS, check_world_equivariance
from flow_escnn.checks._report import (
    DEFAULT_TOLERANCES,
    CheckRow,
    EquivarianceError,
    EquivarianceReport,
    default_tolerances,
)

__all__ = [
    "check_flow_equivariance",
    "check_static_equivariance",
    "check_combined_equivariance",
    "check_equivariance",
    "check_world_equivariance",
    "WORLD_CHECKS",
    "CheckRow",
    "EquivarianceReport",
    "EquivarianceError",
    "DEFAULT_TOLERANCES",
    "default_tolerances",
]
