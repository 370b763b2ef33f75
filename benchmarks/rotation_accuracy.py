"""Accuracy of rotation flows that are not multiples of 90 degrees per frame, per interpolation.

The input is analytic: a sum of Gaussian blobs (sigma 2 px, band-limited to float precision)
inside the inscribed disc of a 41x41 grid, either still (``f``) or rotating by ``mu`` (one
step of ``360 / N`` degrees) per frame about the centre (``psi_t(mu) f``), evaluated exactly
at every frame. A C_N FERNN (regular hidden fields, V = rotations by {-1, 0, 1} steps per
frame, float64, random weights) runs on both; at frames where ``t * mu`` is a multiple of 90
degrees the predicted output ``psi_t(mu) h_t(nu - mu)`` is an exact transport, so the
measured error is the model's own: the interpolated transports of its state (hidden mode)
or of its input frame (co-moving mode). Errors are ``max |h' - psi h|`` over the disc,
relative to ``max |psi h|``, on the slices with a prediction (``nu - mu`` in V).

Two configurations (``--config c8|c36|all``, default ``c8``):

* ``c8``: C8, 2 regular fields, 45 degrees per frame; exact frames t = 2, 4, 6, 8 (hidden-
  and co-moving rows over 9 frames).
* ``c36``: C36, 1 regular field (36 channels), 10 degrees per frame; the first exact frames
  are t = 9 and 18 (90 and 180 degrees), so these rows run 19 frames; a co-moving run of
  length T < 9 has no frame to measure and is reported as such.

The reference floor is escnn's own: one ``R2Conv`` (the FERNN's input convolution) on the
blob image rotated analytically by one step (45 or 10 degrees), against its output on the
still image rotated by the same angle with an order-5 spline (``scipy.ndimage``), same disc
and norm.

The co-moving rows over T = 4, 16, 64 are run twice: with the seeded weights, whose
recurrence amplifies any perturbation of its state over time (so the error grows with T
whatever caused it), and with the recurrent filter scaled by 0.5 (contractive), where the
transport error stays flat in T. The model is causal, so one run of ``max(T) + 1`` frames
gives every shorter T as a prefix.

Run ``python -m benchmarks.rotation_accuracy [--config c8|c36|all]`` (each configuration
under 2 minutes on 2 shared cores, c36 about 15 s when idle; each prints its time).
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import scipy.ndimage as ndi
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowSet, TransportPlan
from flow_escnn.flows._tables import INTERPOLATIONS
from flow_escnn.nn import FERNN

SIZE = 41
N = 8


class Config(NamedTuple):
    """One benchmark configuration: rotation order, hidden regular fields, hidden-mode frames."""

    n: int
    fields: int
    frames: int


#: ``n = -1``: SO(2) (``rot2dOnR2(-1)``) with ``fields`` x (irreps 0..3) hidden fields and the
#: ``norm_squash`` field nonlinearity, flows and input at 10 degrees per frame (as C36).
CONFIGS: Dict[str, Config] = {"c8": Config(8, 2, 9), "c36": Config(36, 1, 19), "so2": Config(-1, 4, 19)}
SO2_STEP = 36  # steps per turn of the SO(2) configuration (10 degrees per frame)


def exact_period(n: int = N) -> int:
    """Smallest ``t > 0`` with ``t`` steps of ``360 / n`` degrees a multiple of 90 (2 for C8, 9 for C36 and SO(2))."""
    n = SO2_STEP if n == -1 else n
    return n // math.gcd(n, 4)


def setup(n: int, fields: int) -> tuple:
    """``(gspace, in_type, hidden_type, flows, step angle in radians, one-step fiber element, nonlinearity)``."""
    if n == -1:
        gs = gspaces.rot2dOnR2(-1, maximum_frequency=4)
        hidden = enn.FieldType(gs, fields * [gs.irrep(k) for k in range(4)])
        step = 360 / SO2_STEP
        flows = FlowSet.rotations(gs, [-step, 0, step])
        angle = math.radians(step)
        return gs, enn.FieldType(gs, [gs.trivial_repr]), hidden, flows, angle, gs.fibergroup.element(angle), "norm_squash"
    gs = gspaces.rot2dOnR2(n)
    hidden = enn.FieldType(gs, fields * [gs.regular_repr])
    flows = FlowSet.rotations(gs, [-1, 0, 1])
    return gs, enn.FieldType(gs, [gs.trivial_repr]), hidden, flows, 2 * math.pi / n, gs.fibergroup.element(1), "relu"


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
    """Boolean mask of the inscribed disc of a ``size x size`` grid."""
    c = (size - 1) / 2
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return torch.from_numpy((j - c) ** 2 + (c - i) ** 2 <= c**2)


def rel_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """``max |a - b|`` over ``mask`` relative to ``max |b|`` over ``mask``."""
    return float((a - b).abs()[..., mask].max() / b.abs()[..., mask].max())


def flow_errors(
    interpolation: str,
    mode: str,
    frames: int,
    seed: int = 0,
    recurrent_scale: float = 1.0,
    n: int = N,
    fields: int = 2,
) -> Dict[int, float]:
    """Relative flow error at each frame ``t < frames`` with ``t * 360 / n`` degrees a multiple of 90.

    Args:
        interpolation: One of ``INTERPOLATIONS``.
        mode: The FERNN's ``mode`` (``"hidden"`` or ``"comoving"``).
        frames: Sequence length (exact frames are multiples of :func:`exact_period`).
        seed: Seeds the blobs and the weights.
        recurrent_scale: Multiplies the recurrent filter :math:`W` after the seeded
            initialisation (0.5 makes these random weights contractive: the recurrence then
            damps what any perturbation, interpolation error included, adds to its state).
        n: Rotation order of the gspace ``rot2dOnR2(n)``; the input rotates one step per frame
            (-1: SO(2) at 10 degrees per frame, see :data:`CONFIGS`).
        fields: Number of regular hidden fields (SO(2): groups of irreps 0..3).

    Returns:
        ``{t: error}`` for the exact frames (empty if ``frames <= exact_period(n)``).
    """
    gs, in_type, hidden, flows, angle, _, nonlinearity = setup(n, fields)
    torch.manual_seed(seed)
    model = FERNN(in_type, hidden, flows, interpolation=interpolation, mode=mode,
                  nonlinearity=nonlinearity).double().eval()
    with torch.no_grad():
        model.cells[0].W.conv.weights.mul_(recurrent_scale)
    still = torch.from_numpy(blob_image(0.0, seed))
    x = still.expand(1, frames, 1, SIZE, SIZE).contiguous()
    moving = torch.stack([torch.from_numpy(blob_image(t * angle, seed)) for t in range(frames)])
    x_flow = moving[None, :, None]
    with torch.no_grad():
        h = model(x).tensor  # [1, T, V, C, H, W]
        h_flow = model(x_flow).tensor
    mask = disc()
    out = {}
    period = exact_period(n)
    for t in range(period, frames, period):  # t steps are a multiple of 90 degrees: the output transport is exact
        element = flows[2].psi(t)
        plan = TransportPlan(hidden, [element], (SIZE, SIZE)).double()
        # nu = 0 reads nu - mu = -1; nu = +1 reads 0 (mu = +1 step); nu = -1 has no prediction
        expected = torch.stack([plan(h[:, t, i : i + 1])[:, 0] for i in (0, 1)], 1)
        out[t] = rel_error(h_flow[:, t, 1:3], expected, mask)
    return out


def escnn_static_error(seed: int = 0, n: int = N, fields: int = 2) -> float:
    """escnn's floor at one step (``360 / n`` degrees): one R2Conv, analytic input rotation,
    order-5 spline output rotation.

    Args:
        seed: Seeds the blobs and the weights.
        n: Rotation order of the gspace ``rot2dOnR2(n)``.
        fields: Number of regular output fields.

    Returns:
        The relative error over the inscribed disc.
    """
    gs, in_type, hidden, _, angle, element, _ = setup(n, fields)
    torch.manual_seed(seed)
    conv = enn.R2Conv(in_type, hidden, 3, padding=1, padding_mode="circular").double().eval()
    f = torch.from_numpy(blob_image(0.0, seed))[None, None]
    f_rot = torch.from_numpy(blob_image(angle, seed))[None, None]
    with torch.no_grad():
        y = conv(enn.GeometricTensor(f, in_type)).tensor[0].numpy()
        y_rot = torch.from_numpy(conv(enn.GeometricTensor(f_rot, in_type)).tensor[0].numpy())
    # rotate each channel by one step (array rows point down: scipy's angle is the same sign here)
    spatial = np.stack([ndi.rotate(ch, math.degrees(angle), reshape=False, order=5, mode="grid-wrap") for ch in y])
    rho = torch.from_numpy(np.asarray(hidden.representation(element), dtype=np.float64))
    expected = torch.einsum("oc,chw->ohw", rho, torch.from_numpy(spatial))
    return rel_error(y_rot, expected, disc())


def _frames(errs: Dict[int, float]) -> str:
    """``t=...:error`` pairs of the exact frames, for one row."""
    return " ".join(f"t={t}:{e:.4f}" for t, e in errs.items()) or "no exact frame"


def run_config(name: str, frames: Optional[int], lengths: Sequence[int]) -> List[str]:
    """All rows of one configuration: escnn's floor, hidden and co-moving worst frames, T sweep.

    Args:
        name: A key of ``CONFIGS``.
        frames: Frames of the hidden- and co-moving rows (``None``: the configuration's default).
        lengths: Co-moving run lengths T (a run of T steps has frames 0..T).

    Returns:
        The printed lines.
    """
    cfg = CONFIGS[name]
    frames = frames or cfg.frames
    kw = dict(n=cfg.n, fields=cfg.fields)
    step = 360 / (SO2_STEP if cfg.n == -1 else cfg.n)
    floor = escnn_static_error(**kw)
    group = "SO(2) irreps 0..3 x" if cfg.n == -1 else f"C{cfg.n}, regular x"
    rows = [f"== {name}: {group} {cfg.fields}, {step:g} degrees per frame, exact frames "
            f"t = multiples of {exact_period(cfg.n)} ==",
            f"escnn R2Conv static error at {step:g} degrees (order-5 spline reference): {floor:.4f}"]
    longest = max([frames - 1, *lengths])
    for interpolation in INTERPOLATIONS:
        sweep = {scale: flow_errors(interpolation, "comoving", longest + 1, recurrent_scale=scale, **kw)
                 for scale in (1.0, 0.5)}
        for mode in ("hidden", "comoving"):
            if mode == "hidden":
                errs = flow_errors(interpolation, mode, frames, **kw)
            else:
                errs = {t: e for t, e in sweep[1.0].items() if t < frames}
            worst = max(errs.values(), default=math.nan)
            rows.append(f"{interpolation:9s} {mode:9s} T={frames - 1:<3d} {_frames(errs)} | worst {worst:.4f} "
                        f"= {worst / floor:.2f}x escnn")
        for scale in (1.0, 0.5):
            for t_len in lengths:
                errs = {t: e for t, e in sweep[scale].items() if t <= t_len}
                if not errs:
                    rows.append(f"{interpolation:9s} comoving T={t_len:<3d} W x {scale:g}: no exact frame "
                                f"(first at t = {exact_period(cfg.n)})")
                    continue
                rows.append(f"{interpolation:9s} comoving T={t_len:<3d} W x {scale:g}: last {errs[max(errs)]:.4f} "
                            f"worst {max(errs.values()):.4f}")
    return rows


def main(argv: Sequence[str] = ()) -> int:
    """Command-line entry point: prints the rows of the selected configurations."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="c8",
                        help="c8 (45 degrees per frame, default), c36 or so2 (10 degrees per frame) or all")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames of the hidden/co-moving rows (default: 9 for c8, 19 for c36)")
    parser.add_argument("--long", type=int, nargs="*", default=[4, 16, 64], help="co-moving run lengths")
    args = parser.parse_args(list(argv) or None)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in CONFIGS if args.config == "all" else [args.config]:
        start = time.perf_counter()
        print("\n".join(run_config(name, args.frames, args.long)))
        print(f"({name}: {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
