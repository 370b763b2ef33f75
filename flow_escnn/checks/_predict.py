"""The two sides of each commuting diagram: transformed inputs and predicted outputs.

For a transform :math:`\\tau` of the input sequence, the checks compare
:math:`\\Phi(\\tau\\cdot f)` with :math:`\\tau_{\\text{out}}\\cdot\\Phi(f)`. This module
builds :math:`\\tau\\cdot f` and :math:`\\tau_{\\text{out}}\\cdot\\Phi(f)` for the three
kinds of transform. With :math:`f_t` the input frame ``t``, :math:`g` a fiber element
acting on space and fibers, :math:`\\mu` a flow and :math:`\\delta` the ``time_offset``
(output frame ``t`` belongs to input time :math:`t+\\delta`):

.. math::
    \\begin{array}{lll}
    \\text{kind} & \\text{input frame } t & \\text{predicted output frame } t\\\\
    \\text{flow} & \\psi_t(\\mu) f_t & \\psi_{t+\\delta}(\\mu)\\, y_t
        \\;\\text{ or }\\; \\psi_{t+\\delta}(\\mu)\\, h_t(\\nu\\ominus\\mu)\\\\
    \\text{static} & g f_t & g\\, y_t \\;\\text{ or }\\; g\\, h_t(g^{-1}\\nu)\\\\
    \\text{combined} & g\\,\\psi_t(\\mu) f_t & g\\,\\psi_{t+\\delta}(\\mu)\\, y_t
        \\;\\text{ or }\\; g\\,\\psi_{t+\\delta}(\\mu)\\, h_t(g^{-1}\\nu\\ominus\\mu)
    \\end{array}

for a plain output :math:`y` and a lifted output :math:`h`. Each function returns the
tensor, whether every transport was grid-exact, and (lifted outputs) the ``[V]`` mask
of slices that carry a prediction.

The same code serves planes (``[B, T, C, H, W]``, :class:`~flow_escnn.flows._transport.TransportPlan`)
and volumes (``[B, T, C, D, H, W]``, :class:`~flow_escnn.flows._volume_transport.VolumeTransportPlan`),
picked by the gspace (:mod:`flow_escnn.flows._plans`). Volume elements always map the voxel grid onto
itself, so the ``interpolation`` argument is only forwarded on planar gspaces; on a volume an element that
would not map the grid onto itself (a rotation exchanging axes of different sizes) is refused up front
(:func:`require_volume_grid`) instead of being resampled.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch

from flow_escnn.checks._inputs import ModelOutput
from flow_escnn.flows._plans import fiber_element, spatial_dims, transport_plan
from flow_escnn.flows._volume import AXES
from flow_escnn.flows._volume_transport import mismatched_axes

__all__ = [
    "input_flow",
    "input_static",
    "input_combined",
    "output_flow",
    "output_static",
    "output_combined",
]

Prediction = Tuple[torch.Tensor, bool, Optional[torch.Tensor]]


def _is_volume(field_type: Any) -> bool:
    return spatial_dims(field_type.gspace) == 3


def _transport_frames(
    x: torch.Tensor, field_type: Any, elements: Sequence[Any], interpolation: str
) -> Tuple[torch.Tensor, bool]:
    """Frame ``t`` of ``x [B, T, C, H, W]`` (``[B, T, C, D, H, W]``) transported by ``elements[t]``."""
    nd = spatial_dims(field_type.gspace)
    grid = tuple(x.shape[-nd:])
    if nd == 3:  # exact voxel permutations: no interpolation to pass
        require_volume_grid(elements, grid)
        plan = transport_plan(field_type, list(elements), grid).to(x.device)
    else:
        plan = transport_plan(field_type, list(elements), grid, interpolation).to(x.device)
    return plan(x), bool(plan.exact)


def _flow_exact(mu: Any, times: Sequence[int], g: Any = None) -> bool:
    gel = fiber_element(mu.gspace, g)
    return all((gel @ mu.psi(t)).is_integral for t in times)


def require_volume_grid(elements: Sequence[Any], grid_shape: Tuple[int, ...]) -> None:
    """Refuse volume elements whose rotation maps an axis onto one of another size of ``grid_shape``.

    On a plane such an element is resampled (and its rows marked inexact); on a volume there is no
    resampling, so the check asks for a grid the transform maps onto itself.

    Raises:
        ValueError: naming the element, the ``(D, H, W)`` grid and the axes that would need equal sizes.
    """
    d, h, w = grid_shape
    sizes = (w, h, d)  # along x, y, z
    for e in elements:
        bad = mismatched_axes(e.integer_matrix, grid_shape)
        if bad is not None:
            i, j = bad
            raise ValueError(
                f"{e} maps the {AXES[j]} axis of the volume onto its {AXES[i]} axis, but the grid (D, H, W) = "
                f"{tuple(grid_shape)} has sizes {sizes[j]} and {sizes[i]} there (x: W, y: H, z: D); volume "
                "transports are exact voxel permutations and are never interpolated: check on a cube (or "
                "H == W for rotations about z), or pass elements / flows that map this grid onto itself"
            )


# -- inputs ----------------------------------------------------------------------------------------
def input_flow(x: torch.Tensor, in_type: Any, mu: Any, interpolation: str) -> Tuple[torch.Tensor, bool]:
    """:math:`f'_t = \\psi_t(\\mu)\\, f_t` (frames 0-indexed)."""
    out, _ = _transport_frames(x, in_type, [mu.psi(t) for t in range(x.shape[1])], interpolation)
    return out, _flow_exact(mu, range(x.shape[1]))


def input_static(x: torch.Tensor, in_type: Any, g: Any, interpolation: str) -> Tuple[torch.Tensor, bool]:
    """:math:`f'_t = g\\, f_t` (space and fibers, every frame)."""
    return _transport_frames(x, in_type, [fiber_element(in_type.gspace, g)] * x.shape[1], interpolation)


def input_combined(
    x: torch.Tensor, in_type: Any, g: Any, mu: Any, interpolation: str
) -> Tuple[torch.Tensor, bool]:
    """:math:`f'_t = g\\,\\psi_t(\\mu)\\, f_t = \\psi_t(g\\cdot\\mu)\\,(g f_t)`, one resampling per frame."""
    gel = fiber_element(in_type.gspace, g)
    return _transport_frames(x, in_type, [gel @ mu.psi(t) for t in range(x.shape[1])], interpolation)


# -- predicted outputs -------------------------------------------------------------------------------
def output_flow(
    y: ModelOutput, mu: Any, time_offset: int, interpolation: str, periodic_velocities: bool = False
) -> Prediction:
    """Plain: :math:`\\psi_{t+\\delta}(\\mu)\\, y_t`; lifted: :math:`\\psi_{t+\\delta}(\\mu)\\, h_t(\\nu\\ominus\\mu)`.

    ``periodic_velocities`` (lifted only) matches :math:`\\nu\\ominus\\mu` to V modulo the grid
    (see :meth:`~flow_escnn.lifted.LiftedTensor.transform_flow`).
    """
    times = [t + time_offset for t in range(y.num_frames)]
    if y.is_lifted:
        out, valid = _lifted_flow(y, mu, time_offset, interpolation, periodic_velocities)
        return out.tensor, _flow_exact(mu, times), valid
    out, exact = _transport_frames(y.tensor, y.field_type, [mu.psi(t) for t in times], interpolation)
    return out, exact, None


def output_static(y: ModelOutput, g: Any, interpolation: str) -> Prediction:
    """Plain: :math:`g\\, y_t`; lifted: :math:`(g\\cdot h)_t(\\nu) = g\\, h_t(g^{-1}\\cdot\\nu)`."""
    gel = fiber_element(y.field_type.gspace, g)
    if y.is_lifted:
        out = _lifted_static(y.as_lifted(), g, interpolation)
        return out.tensor, gel.is_integral, _all_valid(y)
    out, exact = _transport_frames(y.tensor, y.field_type, [gel] * y.num_frames, interpolation)
    return out, exact, None


def output_combined(
    y: ModelOutput, g: Any, mu: Any, time_offset: int, interpolation: str, periodic_velocities: bool = False
) -> Prediction:
    """Plain: :math:`g\\,\\psi_{t+\\delta}(\\mu)\\, y_t`; lifted: :math:`g\\cdot(\\mu\\cdot h)`.

    For a lifted output, :math:`[g\\cdot(\\mu\\cdot h)]_t(\\nu) = g\\,\\psi_{t+\\delta}(\\mu)\\,
    h_t(g^{-1}\\nu\\ominus\\mu)`; the slice ``nu`` has a prediction iff slice
    :math:`g^{-1}\\nu` has one for the flow :math:`\\mu` alone.
    """
    times = [t + time_offset for t in range(y.num_frames)]
    exact = _flow_exact(mu, times, g)
    if y.is_lifted:
        flowed, valid = _lifted_flow(y, mu, time_offset, interpolation, periodic_velocities)
        out = _lifted_static(flowed, g, interpolation)
        src = torch.as_tensor(y.lifted_type.flows.action_permutation(~g), dtype=torch.long, device=valid.device)
        return out.tensor, exact, valid.index_select(0, src)
    gel = fiber_element(y.field_type.gspace, g)
    out, exact = _transport_frames(y.tensor, y.field_type, [gel @ mu.psi(t) for t in times], interpolation)
    return out, exact, None


def _lifted_flow(
    y: ModelOutput, mu: Any, time_offset: int, interpolation: str, periodic_velocities: bool
) -> Tuple[Any, torch.Tensor]:
    h = y.as_lifted()
    if _is_volume(y.field_type):
        times = range(time_offset, time_offset + y.num_frames)
        require_volume_grid([mu.psi(t) for t in times], h.grid_shape)
        return h.transform_flow(mu, start=time_offset, periodic_velocities=periodic_velocities)
    return h.transform_flow(mu, start=time_offset, interpolation=interpolation, periodic_velocities=periodic_velocities)


def _lifted_static(h: Any, g: Any, interpolation: str) -> Any:
    volume = h.type.spatial_dims == 3
    if volume:
        require_volume_grid([fiber_element(h.type.gspace, g)], h.grid_shape)
    try:
        return h.transform(g) if volume else h.transform(g, interpolation=interpolation)
    except ValueError as exc:
        raise ValueError(
            f"cannot predict the static action of {g} on the model's lifted output: {exc} "
            "(pass elements=[...] restricted to a subgroup that maps V onto itself)"
        ) from None


def _all_valid(y: ModelOutput) -> torch.Tensor:
    return torch.ones(y.num_slices, dtype=torch.bool, device=y.tensor.device)

