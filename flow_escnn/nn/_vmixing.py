"""V-mixing: a small learned convolution over neighbouring velocities.

.. math::
    (M h)(\\nu) = \\sum_{\\delta \\in D} a_{[\\delta]}\\, h(\\nu \\oplus \\delta),
    \\qquad D = \\{\\delta : \\|u_\\delta\\|_\\infty \\le r,\\ |k_\\delta| \\le r\\},

where :math:`\\nu \\oplus \\delta` is the generator of :math:`g_\\nu g_\\delta` (slices outside
:math:`V` count as zero) and :math:`a_{[\\delta]}` is one scalar per orbit of :math:`\\delta`
under the fiber group (conjugation), shared by all channels. The flow cells apply it to the
transported state, :math:`\\tilde h = M(\\psi_1(\\nu)\\cdot h_{t-1}(\\nu))`, before the update.

When it keeps equivariance:

* **Static G**: exactly, when :math:`V` is closed under :math:`G` (the weights are
  constant on :math:`G`-orbits of :math:`\\delta` and scalar across the fiber, so
  :math:`M` commutes with the space + fiber + V-permutation action).
* **Flows**: :math:`M` is a convolution over the velocity lattice and a scalar map per
  slice, so it commutes with the flow action's V shift and transport wherever every
  neighbour :math:`\\nu \\oplus \\delta` and :math:`\\nu \\oplus \\delta \\ominus \\mu` stays in V.
  At the border of a finite V the zero padding breaks that, and the inexact band widens by :math:`r` velocities per time
  step; the tests measure it. Only slices deep inside V (or every slice, if V were
  periodic) stay exact.
* It mixes slices that live in different frames in the co-moving formulation, so it is
  defined in the stationary frame only: layers with V-mixing run in ``mode="hidden"``.

Initialised to the identity (:math:`a_{[0]} = 1`, others 0), a cell with V-mixing starts
as the plain cell.
"""
from __future__ import annotations

from typing import Dict

import torch

from flow_escnn._validate import positive_int
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._generator import FlowGenerator

__all__ = ["VelocityMixing"]


class VelocityMixing(torch.nn.Module):
    """Learned mixing of each V slice with its neighbours (see the module docstring).

    Args:
        flows: the flow set V.
        radius: neighbourhood radius :math:`r \\ge 1` (in pixels per frame and rotation steps).

    Shapes:
        ``forward(h)``: ``h`` is ``[B, V, C, H, W]``; returns the same shape.
    """

    def __init__(self, flows: FlowSet, radius: int = 1) -> None:
        super().__init__()
        positive_int(radius, "V-mixing radius")
        gs = flows.gspace
        if gs.fibergroup.continuous:
            raise ValueError(
                f"V-mixing mixes neighbouring velocities one rotation step apart; {gs.fibergroup} has no step: "
                "use a finite group (rot2dOnR2(N)) or velocity_mixing=0"
            )
        offsets = {
            (dx, dy, dk)
            for dx in range(-radius, radius + 1)
            for dy in range(-radius, radius + 1)
            for dk in range(-radius, radius + 1)
        }
        # keep only the offset kinds V uses (no rotation offsets for pure-translation sets, ...)
        uses_t = any(nu.translation != (0, 0) for nu in flows)
        uses_k = any(nu.rotation != 0 for nu in flows)
        offsets = sorted(o for o in offsets if (uses_t or o[:2] == (0, 0)) and (uses_k or o[2] == 0))
        gens = [FlowGenerator(gs, o[:2], o[2]) for o in offsets]
        orbit_of: Dict[FlowGenerator, int] = {}
        for g in gens:
            if g in orbit_of:
                continue
            label = len(set(orbit_of.values()))
            for e in gs.fibergroup.elements:
                try:
                    orbit_of.setdefault(flows.act(e, g), label)
                except ValueError:
                    continue
        num_orbits = len(set(orbit_of.values()))
        adjacency = torch.zeros(num_orbits, len(flows), len(flows), dtype=torch.float64)
        for i, nu in enumerate(flows):
            for d in gens:
                target = FlowGenerator.from_element(nu.element() @ d.element())
                if target in flows:
                    adjacency[orbit_of[d], i, flows.index(target)] = 1.0
        self.radius = radius
        self.num_flows = len(flows)
        self.register_buffer("adjacency", adjacency, persistent=False)
        weight = torch.zeros(num_orbits)
        weight[orbit_of[FlowGenerator(gs, (0, 0), 0)]] = 1.0  # identity at initialisation
        self.weight = torch.nn.Parameter(weight)

    def matrix(self) -> torch.Tensor:
        """The ``[V, V]`` mixing matrix :math:`M_{ij} = a_{[\\nu_j \\ominus \\nu_i]}`."""
        return torch.einsum("o,oij->ij", self.weight, self.adjacency.to(self.weight.dtype))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() != 5 or h.shape[1] != self.num_flows:
            raise ValueError(f"expected a lifted state [B, V={self.num_flows}, C, H, W], got {tuple(h.shape)}")
        return torch.einsum("ij,bjchw->bichw", self.matrix().to(h.dtype), h)

    def extra_repr(self) -> str:
        return f"|V|={self.num_flows}, radius={self.radius}, orbits={self.weight.numel()}"
