"""Turn an existing escnn CNN into a flow-equivariant recurrent encoder (FERNN).

You have a per-frame escnn model, ``R2Conv -> ReLU -> R2Conv -> ReLU -> GroupPooling`` on
``rot2dOnR2(4)``. Applied frame by frame to a video it has no memory. This script

1. replaces the CNN's first convolution + ReLU by a :class:`flow_escnn.nn.FERNN` with the same
   types, initialised from that convolution (``init_input_from``: so with ``W = 0`` the FERNN
   *is* the first conv + ReLU, frame by frame: checked below), and chains it with a max over
   the velocities ``V`` and the rest of the CNN applied per frame, in a type-checked
   :class:`flow_escnn.nn.FlowSequential`: four lines (:func:`flow_model`);
2. runs it on a moving sequence;
3. checks its equivariance (flows, static rotations, both) with the container's own types,
   exports it to plain PyTorch, and saves a figure of the input, the lifted state and the output.

Run::

    python examples/add_flow_layer.py --out figures/            # 24x24 grid, 8 frames
    python examples/add_flow_layer.py --smoke --out /tmp/figs   # tiny sizes, seconds
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import torch

import flow_escnn  # noqa: F401  (imports escnn and checks that it works)
from escnn import gspaces
from escnn import nn as enn
from flow_escnn import FlowSet
from flow_escnn.checks import check_equivariance
from flow_escnn.data import SyntheticDigits
from flow_escnn.flows import FlowGenerator, flow_sequence
from flow_escnn.nn import FERNN, FlowSequential, PerFrame, VelocityPool


def build_cnn(gspace, width: int) -> enn.SequentialModule:
    """The user's existing per-frame escnn model (circular padding: exact on the torus)."""
    t_in = enn.FieldType(gspace, [gspace.trivial_repr])
    t_1 = enn.FieldType(gspace, width * [gspace.regular_repr])
    t_2 = enn.FieldType(gspace, 2 * width * [gspace.regular_repr])
    return enn.SequentialModule(
        enn.R2Conv(t_in, t_1, kernel_size=3, padding=1, padding_mode="circular"),
        enn.ReLU(t_1),
        enn.R2Conv(t_1, t_2, kernel_size=3, padding=1, padding_mode="circular"),
        enn.ReLU(t_2),
        enn.GroupPooling(t_2),
    )


def flow_model(cnn: enn.SequentialModule, flows: FlowSet) -> FlowSequential:
    """The CNN with its first conv + ReLU replaced by a FERNN over ``flows`` (the whole model definition)."""
    first, _relu, *rest = cnn.children()
    fernn = FERNN(first.in_type, first.out_type, flows, kernel_size=first.kernel_size).init_input_from(first)
    return FlowSequential(fernn, VelocityPool("max"), PerFrame(enn.SequentialModule(*rest)))


def moving_digit(size: int, frames: int, velocity, gspace, seed: int = 0) -> torch.Tensor:
    """A synthetic digit moved by a flow: ``[1, T, 1, H, W]``."""
    img = torch.from_numpy(SyntheticDigits(1, 1, 1, size=size, seed=seed).load("train").images[0])
    x = img.expand(1, frames, 1, size, size).contiguous()
    in_type = enn.FieldType(gspace, [gspace.trivial_repr])
    return flow_sequence(x, in_type, FlowGenerator(gspace, velocity[:2], velocity[2]))


def save_figure(path: str, x: torch.Tensor, lifted, y: torch.Tensor, flows: FlowSet, row_vy: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_len = x.shape[1]
    last = t_len - 1
    radius = max(abs(v[0]) for v in flows.velocities)
    side = 2 * radius + 1
    fig, axes = plt.subplots(3, max(t_len, side), figsize=(1.6 * max(t_len, side), 5.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for t in range(t_len):
        axes[0, t].imshow(x[0, t, 0], cmap="gray")
        axes[0, t].set_title(f"input t={t}", fontsize=7)
        axes[2, t].imshow(y[0, t].norm(dim=0), cmap="magma")
        axes[2, t].set_title(f"output t={t}", fontsize=7)
    # the lifted state at the last frame: the slices nu = (vx, row_vy), channel norm
    h = lifted.tensor[0, last].norm(dim=1).detach()  # [V, H, W]
    for i, (vx, vy, _) in enumerate(flows.velocities):
        if vy == row_vy:
            axes[1, vx + radius].imshow(h[i], cmap="viridis")
            axes[1, vx + radius].set_title(f"|h_{last}(nu=({vx},{vy}))|", fontsize=7)
    fig.suptitle(
        f"FERNN encoder: input frames; lifted state, slices nu = (vx, {row_vy}); output channel norm", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (runs in seconds)")
    parser.add_argument("--out", default="figures", help="folder for the PNG files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size, frames, width, radius = (10, 4, 2, 1) if args.smoke else (24, 8, 4, 2)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)

    gs = gspaces.rot2dOnR2(4)
    # float64 throughout, so that the checks below can use tight tolerances
    cnn = build_cnn(gs, width).double().eval()
    flows = FlowSet.translations(gs, radius)  # V_r^T, closed under C4
    encoder = flow_model(cnn, flows).double().eval()
    fernn = encoder[0]
    print(f"CNN: {[type(m).__name__ for m in cnn.children()]}")
    print(f"flow model: {' -> '.join(type(m).__name__ for m in encoder.layers)}; {encoder.in_type} -> {encoder.out_type}")

    velocity = (1, -1, 0)  # the digit moves 1 px right and 1 px down per frame (y points up)
    x = moving_digit(size, frames, velocity, gs, seed=args.seed).double()
    with torch.no_grad():
        lifted = fernn(x)
        y = encoder(x).tensor
    print(f"input {tuple(x.shape)} -> lifted state {tuple(lifted.shape)} -> output {tuple(y.shape)}")

    # sanity: with W = 0 the FERNN is the CNN's first conv + ReLU applied frame by frame
    with torch.no_grad():
        w = fernn.cells[0].W.conv.weights
        saved = w.clone()
        w.zero_()
        memoryless = fernn(x).tensor  # [B, T, V, C, H, W]
        w.copy_(saved)
        first = list(cnn.children())[0]
        frames_in = enn.GeometricTensor(x.reshape(-1, 1, size, size), first.in_type)
        per_frame = torch.relu(first(frames_in).tensor).reshape(1, frames, 1, -1, size, size)
    gap = (memoryless - per_frame).abs().max().item()
    print(f"W = 0: FERNN vs the CNN's first conv + ReLU per frame, max abs difference {gap:.1e} "
          "(escnn's float32-sampled filter vs flow_escnn's symmetrised copy of it)")

    failures = 0
    # 1. the lifted encoder: flows, static C4 and both (FERNN theorem; V closed under C4)
    report = check_equivariance(fernn, x, fernn.in_type, [(1, 0), (0, 1)])
    print(f"\nlifted FERNN state: {'PASSED' if report.passed else 'FAILED'} "
          f"({len(report.rows)} rows, max rel error {report.max_rel_error:.1e}, "
          f"{report.excluded_slices} V slices excluded: nu - mu outside V)")
    failures += not report.passed

    # 2. the whole encoder (FERNN, max over V, rest of the CNN): plain output
    mu = (1, 0)
    full = encoder.check_equivariance(x, [mu], static=False, combined=False)
    covers = (flows.shift_indices(mu, (size, size)) >= 0).all()
    print(f"encoder output, flow mu={mu}: max rel error {full.max_rel_error:.1e} "
          f"({'exact: V covers the torus' if covers else 'approximate: V is truncated at its border'})")
    # on a (2r+1) x (2r+1) torus, V_r^T holds every velocity modulo the grid: the max over V is then
    # invariant to the V shift and the pooled output is exactly flow-equivariant
    side = 2 * radius + 1
    small = torch.rand(1, frames, 1, side, side, dtype=torch.float64)
    torus = encoder.check_equivariance(small, [mu], static=False, combined=False)
    print(f"encoder output on a {side}x{side} torus (V covers it), flow mu={mu}: "
          f"{'PASSED' if torus.passed else 'FAILED'} (max rel error {torus.max_rel_error:.1e})")
    failures += not torus.passed
    # escnn's R2Conv samples its filter basis in float32, so the CNN layers kept from `cnn` are
    # rotation-equivariant to about 1e-7 (relative) even in float64: loosen rtol accordingly
    # (flow_escnn's own SteerableConv symmetrises its filters and is exact to 1e-16)
    full_static = encoder.check_equivariance(x, None, atol=1e-10, rtol=1e-6)
    print(f"encoder output, static C4 (rtol=1e-6): {'PASSED' if full_static.passed else 'FAILED'} "
          f"(max rel error {full_static.max_rel_error:.1e})")
    failures += not full_static.passed

    # plain PyTorch, no escnn inside (circular padding kept): the same outputs
    twin = encoder.export(grid_shape=(size, size))
    with torch.no_grad():
        print(f"export: max abs difference to the model {(twin(x) - y).abs().max().item():.1e} "
              "(escnn's GroupPooling returns float32 even for float64 input; its export does not)")

    path = os.path.join(args.out, "add_flow_layer.png")
    save_figure(path, x, lifted, y, flows, row_vy=velocity[1])
    print(f"\nwrote {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
