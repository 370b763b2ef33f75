"""Accuracy of rotation flows that are not multiples of 90 degrees per frame, per interpolation.

The input is analytic: a sum of Gaussian blobs (sigma 2 px, band-limited to float precision)
inside the inscribed disc of a 41x41 grid, either still (``f``) or rotating by ``mu`` (45
degrees) per frame about the centre (``psi_t(mu) f``), evaluated exactly at every frame. A
C8 FERNN (2 regular hidden fields, V = rotations by {-1, 0, 1} x 45 degrees per frame,
float64, random weights) runs on both; at frames where ``t * mu`` is a multiple of 90
degrees the predicted output ``psi_t(mu) h_t(nu - mu)`` is an exact transport, so the
measured error is the model's own: the interpolated transports of its state (hidden mode)
or of its input frame (co-moving mode). Errors are ``max |h' - psi h|`` over the disc,
relative to ``max |psi h|``, on the slices with a prediction (``nu - mu`` in V).

The reference floor is escnn's own: one ``R2Conv`` (the FERNN's input convolution) on the
blob image rotated analytically by 45 degrees, against its output on the still image
rotated by an order-5 spline (``scipy.ndimage``), same disc and norm.

The co-moving rows over T = 4, 16, 64 are run twice: with the seeded weights, whose
recurrence amplifies any perturbation of its state over time (so the error grows with T
whatever caused it), and with the recurrent filter scaled by 0.5 (contractive), where the
transport error stays flat in T.

Run ``python -m benchmarks.rotation_accuracy`` (about 15 s on 2 cores).
"""
from __future__ import annotations

import argparse
import math
from typing import Dict, List, Sequence

import numpy as np
import scipy.ndimage as ndi
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowSet, TransportPlan
from flow_escnn.flows.tables import INTERPOLATIONS
from flow_escnn.nn import FERNN

SIZE = 41
N = 8


def blob_image(angle: float, seed: int = 0, size: int = SIZE, count: int = 60, sigma: float = 2.0) -> np.ndarray:
    """Gaussian blobs at seeded points of radius <= 12 px, rotated by ``angle`` (radians, counter-clockwise)."""
    rng = np.random.default_rng(seed)
    r, phase = rng.uniform(0, 12, count), rng.uniform(0, 2 * np.pi, count)
    amps = rng.normal(size=count)
    c = (size - 1) / 2
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    x, y = j - c, c - i
    px, py = r * np.cos(phase + angle), r * np.sin(phase + angle)
    d2 = (x[None] - px[:, None, None]) ** 2 + (y[None] - py[:, None, None]) ** 2
    return np.einsum("k,khw->hw", amps, np.exp(-d2 / (2 * sigma**2)))


def disc(size: int = SIZE) -> torch.Tensor:
    c = (size - 1) / 2
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return torch.from_numpy((j - c) ** 2 + (c - i) ** 2 <= c**2)


def rel_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b).abs()[..., mask].max() / b.abs()[..., mask].max())


def flow_errors(
    interpolation: str, mode: str, frames: int, seed: int = 0, recurrent_scale: float = 1.0
) -> Dict[int, float]:
    """Relative flow error at each frame ``t`` with ``t * 45`` degrees a multiple of 90.

    ``recurrent_scale`` multiplies the recurrent filter :math:`W` after the seeded
    initialisation (0.5 makes these random weights contractive: the recurrence then damps
    what any perturbation, interpolation error included, adds to its state).
    """
    gs = gspaces.rot2dOnR2(N)
    in_type = enn.FieldType(gs, [gs.trivial_repr])
    hidden = enn.FieldType(gs, 2 * [gs.regular_repr])
    flows = FlowSet.rotations(gs, [-1, 0, 1])
    torch.manual_seed(seed)
    model = FERNN(in_type, hidden, flows, interpolation=interpolation, mode=mode).double().eval()
    with torch.no_grad():
        model.cells[0].W.conv.weights.mul_(recurrent_scale)
    still = torch.from_numpy(blob_image(0.0, seed))
    x = still.expand(1, frames, 1, SIZE, SIZE).contiguous()
    moving = torch.stack([torch.from_numpy(blob_image(t * 2 * math.pi / N, seed)) for t in range(frames)])
    x_flow = moving[None, :, None]
    with torch.no_grad():
        h = model(x).tensor  # [1, T, V, C, H, W]
        h_flow = model(x_flow).tensor
    mask = disc()
    out = {}
    for t in range(2, frames, 2):  # t * 45 degrees is a multiple of 90: the output transport is exact
        element = flows[2].psi(t)
        plan = TransportPlan(hidden, [element], (SIZE, SIZE)).double()
        # nu = 0 reads nu - mu = -1; nu = +1 reads 0 (mu = +1 step); nu = -1 has no prediction
        expected = torch.stack([plan(h[:, t, i : i + 1])[:, 0] for i in (0, 1)], 1)
        out[t] = rel_error(h_flow[:, t, 1:3], expected, mask)
    return out


def escnn_static_error(seed: int = 0) -> float:
    """escnn's floor: one R2Conv at 45 degrees, analytic input rotation, order-5 spline output rotation."""
    gs = gspaces.rot2dOnR2(N)
    in_type = enn.FieldType(gs, [gs.trivial_repr])
    hidden = enn.FieldType(gs, 2 * [gs.regular_repr])
    torch.manual_seed(seed)
    conv = enn.R2Conv(in_type, hidden, 3, padding=1, padding_mode="circular").double().eval()
    f = torch.from_numpy(blob_image(0.0, seed))[None, None]
    f_rot = torch.from_numpy(blob_image(2 * math.pi / N, seed))[None, None]
    with torch.no_grad():
        y = conv(enn.GeometricTensor(f, in_type)).tensor[0].numpy()
        y_rot = torch.from_numpy(conv(enn.GeometricTensor(f_rot, in_type)).tensor[0].numpy())
    # rotate each channel by +45 degrees (array rows point down: scipy's angle is the same sign here)
    spatial = np.stack([ndi.rotate(ch, 45.0, reshape=False, order=5, mode="grid-wrap") for ch in y])
    rho = torch.from_numpy(np.asarray(hidden.representation(gs.fibergroup.element(1)), dtype=np.float64))
    expected = torch.einsum("oc,chw->ohw", rho, torch.from_numpy(spatial))
    return rel_error(y_rot, expected, disc())


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=9, help="frames of the hidden-mode runs (9)")
    parser.add_argument("--long", type=int, nargs="*", default=[4, 16, 64], help="co-moving run lengths")
    args = parser.parse_args(list(argv) or None)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    floor = escnn_static_error()
    print(f"escnn R2Conv static error at 45 degrees (order-5 spline reference): {floor:.4f}")
    rows: List[str] = []
    for interpolation in INTERPOLATIONS:
        for mode in ("hidden", "comoving"):
            errs = flow_errors(interpolation, mode, args.frames)
            worst = max(errs.values())
            rows.append(f"{interpolation:9s} {mode:9s} " + " ".join(f"t={t}:{e:.4f}" for t, e in errs.items())
                        + f" | worst {worst:.4f} = {worst / floor:.2f}x escnn")
        for scale in (1.0, 0.5):
            for t_len in args.long:
                errs = flow_errors(interpolation, "comoving", t_len + 1, recurrent_scale=scale)
                rows.append(f"{interpolation:9s} comoving T={t_len:<3d} W x {scale:g}: last {errs[max(errs)]:.4f} "
                            f"worst {max(errs.values()):.4f}")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
