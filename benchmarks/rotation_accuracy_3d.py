"""Accuracy of volume rotations about a coordinate axis by any angle, per interpolation.

The 3D counterpart of ``benchmarks/rotation_accuracy.py`` for
:class:`~flow_escnn.flows.AxisRotationPlan`. The input is analytic: a sum of 40 Gaussian blobs
(sigma 2 voxels, seeded amplitudes, centres uniform in the ball of radius 6 about the centre of a
25^3 grid, so inside the inscribed cylinder about every axis), either still (``f``) or rotated by
``theta`` about the axis through the grid centre (``R f``), evaluated exactly. Errors are
``max |a - b|`` over the inscribed cylinder about the rotation axis (all of its length), relative to
``max |b|`` there, as the 2D disc.

The reference floor is escnn's own static error at the same angle, as in 2D: one ``R3Conv``
(kernel 3, circular padding) on ``R f`` against its output on ``f`` rotated by the same angle with an
order-5 spline (``scipy.ndimage.rotate``, wrap-around), fiber action ``rho(g)`` applied. Our rows, per
interpolation ``T``:

* ``transport``: ``T f`` against ``R f`` (the interpolated rotation alone, scalar field);
* ``conv``: ``SteerableConv(R f)`` against ``T SteerableConv(f)``: escnn's measurement with our
  transport in place of the spline (the 2D benchmark's comparison);
* ``equivariance``: ``SteerableConv(T f)`` against ``T SteerableConv(f)`` (no analytic input at all).

``SteerableConv`` (flow_escnn's, symmetrised over the cube rotations) and escnn's ``R3Conv`` are seeded
alike, so their filters agree to about 5e-9 (SO(3)) / 3e-16 (SO(2)). Configurations: ``so3``
(``rot3dOnR3()``, scalar in, 2 x (irreps 0, 1, 2) = 18 channels out, about z and x) and ``so2``
(``rot2dOnR3(-1)``, scalar in, 2 x (irreps 0..3) = 14 channels out, about z), at 10 and 45 degrees. The
``spline`` line is the order-5 spline's own transport error on ``f``, for scale.

Run ``python -m benchmarks.rotation_accuracy_3d [--config so3|so2|all] [--angles 10 45]`` (about 20 s
for ``all`` on 2 shared cores; each configuration prints its time).
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
import scipy.ndimage as ndi
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import AxisRotationPlan
from flow_escnn.flows._axis_rotation import axis_rotation_element, axis_rotation_matrix
from flow_escnn.flows._tables import INTERPOLATIONS
from flow_escnn.nn import SteerableConv

SIZE = 25
COUNT = 40
RADIUS = 6.0
SIGMA = 2.0
#: ``scipy.ndimage.rotate`` (which sorts its two axes) as a right-handed rotation about each coordinate
#: axis of a ``[D, H, W] = (-z, -y, x)`` array: (axes, sign of the angle)
SPLINE_AXES: Dict[str, Tuple[Tuple[int, int], int]] = {"z": ((1, 2), 1), "x": ((0, 1), -1), "y": ((0, 2), -1)}


class Config(NamedTuple):
    """A gspace and the axes its rotations are measured about."""

    gspace: str
    axes: Tuple[str, ...]


CONFIGS: Dict[str, Config] = {"so3": Config("rot3dOnR3()", ("z", "x")), "so2": Config("rot2dOnR3(-1)", ("z",))}


def setup(name: str) -> Tuple[Any, Any, Any]:
    """``(gspace, in_type, out_type)`` of a configuration: a scalar field in, irreps fields out."""
    if name == "so3":
        gs = gspaces.rot3dOnR3()
        irreps = [gs.irrep(0), gs.irrep(1), gs.irrep(2)]
    elif name == "so2":
        gs = gspaces.rot2dOnR3(-1)
        irreps = [gs.irrep(k) for k in range(4)]
    else:
        raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {name!r}")
    return gs, enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, 2 * irreps)


def points(size: int = SIZE) -> np.ndarray:
    """Centred coordinates ``(x, y, z)`` of the voxels, ``[D, H, W, 3]`` (escnn's ``(-z, -y, x)`` array axes)."""
    c = (size - 1) / 2
    i, j, k = np.meshgrid(*[np.arange(size)] * 3, indexing="ij")
    return np.stack([k - c, c - j, c - i], axis=-1).astype(np.float64)


def blob_volume(axis: str = "z", angle: float = 0.0, seed: int = 0, size: int = SIZE, count: int = COUNT,
                radius: float = RADIUS, sigma: float = SIGMA) -> np.ndarray:
    """Gaussian blobs at seeded points of the ball of ``radius``, rotated by ``angle`` degrees about ``axis``."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(count, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    centres = v * (radius * rng.uniform(0, 1, count) ** (1 / 3))[:, None]
    amps = rng.normal(size=count)
    centres = centres @ axis_rotation_matrix(axis, angle).T
    d2 = ((points(size)[None] - centres[:, None, None, None]) ** 2).sum(-1)
    return np.einsum("n,ndhw->dhw", amps, np.exp(-d2 / (2 * sigma**2)))


def cylinder(axis: str, size: int = SIZE) -> torch.Tensor:
    """Boolean mask ``[D, H, W]`` of the cylinder inscribed in the cube about ``axis``."""
    p, a = points(size), "xyz".index(axis)
    r2 = sum(p[..., b] ** 2 for b in range(3) if b != a)
    return torch.from_numpy(r2 <= ((size - 1) / 2) ** 2)


def rel_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """``max |a - b|`` over ``mask`` relative to ``max |b|`` over ``mask`` (leading axes: all channels)."""
    return float((a - b).abs()[..., mask].max() / b.abs()[..., mask].max())


def spline_rotate(volume: np.ndarray, axis: str, angle: float) -> np.ndarray:
    """Rotate every channel of ``[C, D, H, W]`` by ``angle`` degrees about ``axis`` (order-5 spline, wrap)."""
    axes, sign = SPLINE_AXES[axis]
    return np.stack([ndi.rotate(ch, sign * angle, axes=axes, reshape=False, order=5, mode="grid-wrap")
                     for ch in volume])


def measure(name: str, cases: Sequence[Tuple[str, float]], interpolations: Sequence[str] = INTERPOLATIONS,
            seed: int = 0) -> Dict[Tuple[str, float], Dict[str, Any]]:
    """The errors of one configuration at every ``(axis, angle)`` of ``cases``.

    Returns:
        ``{(axis, angle): {"escnn": floor, "spline": spline transport error,
        interpolation: {"transport": e, "conv": e, "equivariance": e}}}``.
    """
    gs, in_type, out_type = setup(name)
    torch.manual_seed(seed)
    conv = enn.R3Conv(in_type, out_type, 3, padding=1, padding_mode="circular").double().eval()
    torch.manual_seed(seed)
    ours = SteerableConv(in_type, out_type, 3).double().eval()
    with torch.no_grad():
        filt, bias = ours.expand()  # expanded once: SO(3)'s symmetrisation over the cube rotations is dense

        def steerable(x: torch.Tensor) -> torch.Tensor:
            return ours.apply_expanded(x, filt, bias)

        f = torch.from_numpy(blob_volume(seed=seed))[None, None]
        y_escnn = conv(enn.GeometricTensor(f, in_type)).tensor[0].numpy()
        y_ours = steerable(f)
        out: Dict[Tuple[str, float], Dict[str, Any]] = {}
        for axis, angle in cases:
            mask = cylinder(axis)
            f_rot = torch.from_numpy(blob_volume(axis, angle, seed))[None, None]
            rho = torch.from_numpy(np.asarray(out_type.representation(axis_rotation_element(gs, axis, angle)),
                                              dtype=np.float64))
            y_rot = conv(enn.GeometricTensor(f_rot, in_type)).tensor[0]
            expected = torch.einsum("oc,cdhw->odhw", rho, torch.from_numpy(spline_rotate(y_escnn, axis, angle)))
            row: Dict[str, Any] = {
                "escnn": rel_error(y_rot, expected, mask),
                "spline": rel_error(torch.from_numpy(spline_rotate(f[0].numpy(), axis, angle)), f_rot[0], mask),
            }
            ours_rot = steerable(f_rot)[0]
            for interpolation in interpolations:
                scalar = AxisRotationPlan(in_type, axis, [angle], (SIZE,) * 3, interpolation)
                field = AxisRotationPlan(out_type, axis, [angle], (SIZE,) * 3, interpolation)
                t_f = scalar(f[:, None])[:, 0]
                t_y = field(y_ours[:, None])[0, 0]
                row[interpolation] = {
                    "transport": rel_error(t_f[0], f_rot[0], mask),
                    "conv": rel_error(t_y, ours_rot, mask),
                    "equivariance": rel_error(steerable(t_f)[0], t_y, mask),
                }
            out[(axis, angle)] = row
    return out


def run_config(name: str, angles: Sequence[float], interpolations: Sequence[str] = INTERPOLATIONS) -> List[str]:
    """The printed rows of one configuration."""
    _, in_type, out_type = setup(name)
    cases = [(axis, angle) for axis in CONFIGS[name].axes for angle in angles]
    results = measure(name, cases, interpolations)
    rows = [f"== {name}: {CONFIGS[name].gspace}, {in_type.size} -> {out_type.size} channels, {SIZE}^3, "
            f"{COUNT} blobs sigma {SIGMA:g} in radius {RADIUS:g} =="]
    for (axis, angle), row in results.items():
        floor = row["escnn"]
        rows.append(f"about {axis} by {angle:g} deg: escnn R3Conv static error {floor:.5f} "
                    f"(order-5 spline transport {row['spline']:.5f})")
        for interpolation in interpolations:
            e = row[interpolation]
            rows.append("  " + f"{interpolation:9s}" + " ".join(
                f"{key} {e[key]:.5f} = {e[key] / floor:5.2f}x" for key in ("transport", "conv", "equivariance")))
    return rows


def main(argv: Sequence[str] = ()) -> int:
    """Command-line entry point: prints the rows of the selected configurations."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--angles", type=float, nargs="+", default=[10.0, 45.0], help="degrees")
    args = parser.parse_args(list(argv) or None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratios are x escnn's static error")
    for name in CONFIGS if args.config == "all" else [args.config]:
        start = time.perf_counter()
        print("\n".join(run_config(name, args.angles)))
        print(f"({name}: {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
