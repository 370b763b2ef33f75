"""Check your own sequence model for flow equivariance with :mod:`flow_escnn.checks`.

The checks treat a model as a black box ``model(x)`` on a sequence ``x [B, T, C, H, W]``:
they move (or rotate) the input, call the model, and compare with the transformation
the theory predicts for the output. This script checks three models of the same kind:

* ``ConvGRU`` -- a plain-PyTorch convolutional GRU, the kind of model you may already have
  (circular padding, so it *is* equivariant to static translations of the torus);
* ``FlowGRU`` over ``V = {0}`` -- flow_escnn's GRU cell with C4-steerable convolutions but no
  flows: a G-equivariant GRU;
* ``FlowGRU`` over ``V = translations(1)`` -- the flow-equivariant GRU.

and prints each report with an interpretation: the plain ConvGRU fails the flow check from
frame 1 on (and the rotation check), the G-equivariant GRU passes rotations but fails flows,
and the FlowGRU passes everything. A figure of the per-frame flow errors is saved.

Run::

    python examples/check_your_model.py --out figures/            # 16x16 grid, 6 frames
    python examples/check_your_model.py --smoke --out /tmp/figs   # tiny sizes, seconds
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch

import flow_escnn  # noqa: F401  (imports escnn and checks that it works)
from escnn import gspaces
from escnn import nn as enn
from flow_escnn import FlowSet
from flow_escnn.checks import EquivarianceError, EquivarianceReport, check_equivariance, check_flow_equivariance
from flow_escnn.nn import FlowGRU


class ConvGRU(torch.nn.Module):
    """A user's convolutional GRU in plain PyTorch (not equivariant by construction).

    Shapes:
        ``forward(x)``: ``[B, T, C_in, H, W]`` -> ``(outputs [B, T, C, H, W], h_last [B, C, H, W])``,
        like ``torch.nn.GRU`` returns its outputs and last state.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.hidden_channels = hidden_channels
        self.gates = torch.nn.Conv2d(in_channels + hidden_channels, 2 * hidden_channels, kernel_size,
                                     padding=pad, padding_mode="circular")
        self.candidate = torch.nn.Conv2d(in_channels + hidden_channels, hidden_channels, kernel_size,
                                         padding=pad, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b, t_len, _, h, w = x.shape
        state = x.new_zeros(b, self.hidden_channels, h, w)
        outputs = []
        for t in range(t_len):
            z, r = torch.sigmoid(self.gates(torch.cat([x[:, t], state], 1))).chunk(2, dim=1)
            n = torch.tanh(self.candidate(torch.cat([x[:, t], r * state], 1)))
            state = (1 - z) * n + z * state  # the memory stays where it was written
            outputs.append(state)
        return torch.stack(outputs, 1), state


def interpret(name: str, report: EquivarianceReport, identity_label: str) -> str:
    """A few sentences on what a report says."""
    lines = [f"{name}: {'PASSED' if report.passed else 'FAILED'} "
             f"(max rel error {report.max_rel_error:.1e}, tolerance atol={report.atol:.0e}, rtol={report.rtol:.0e})"]
    skipped = [r for r in report.rows if r.skipped]
    if skipped:
        lines.append(f"  {len(skipped)} rows compared nothing (no V slice had a prediction): they verify nothing")
    for kind in ("flow", "static", "combined"):
        rows = [r for r in report.compared_rows if r.check == kind]
        if not rows:
            continue
        failed = [r for r in rows if not r.passed]
        if not failed:
            lines.append(f"  {kind}: all {len(rows)} rows pass")
            continue
        frames = sorted({r.t for r in failed})
        transforms = sorted({r.transform for r in failed})
        shown = ", ".join(transforms[:3]) + (f" and {len(transforms) - 3} more" if len(transforms) > 3 else "")
        lines.append(f"  {kind}: {len(failed)}/{len(rows)} rows fail, at frames {frames}, for {shown}")
        if kind == "flow" and 0 not in frames:
            lines.append("    frame 0 passes: with h_{-1} = 0 the first output is a convolution of f_0 alone, and "
                         "circular convolutions commute with translations. From frame 1 on, the state written at "
                         "t-1 stays where the content was while the input has moved on: the memory does not "
                         "move with the flow.")
        if kind == "static" and identity_label not in transforms:
            lines.append("    rotating the input does not rotate the output: the filters are not rotation-steerable "
                         "(the identity element passes, so the model is at least deterministic).")
    return "\n".join(lines)


def flow_errors(report: EquivarianceReport, frames: int) -> List[float]:
    """Worst relative flow error per output frame (over the checked flows)."""
    worst = [0.0] * frames
    for r in report.compared_rows:
        if r.check == "flow":
            worst[r.t] = max(worst[r.t], r.max_rel_error)
    return worst


def save_figure(path: str, curves: Dict[str, List[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (label, ys), style in zip(curves.items(), ("-o", "--s", ":^")):
        ax.semilogy(range(len(ys)), [max(y, 1e-17) for y in ys], style, label=label, markersize=4)
    ax.axhline(1e-10, color="gray", lw=0.8)
    last = max(len(ys) for ys in curves.values()) - 1
    ax.text(last, 2e-10, "float64 tolerance (rtol = 1e-10)", fontsize=7, color="gray", ha="right")
    ax.set_xlabel("output frame t")
    ax.set_ylabel("worst max-relative flow error")
    ax.set_title("flow check, input moving by mu = (1, 0) and (0, 1) px/frame", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (runs in seconds)")
    parser.add_argument("--out", default="figures", help="folder for the PNG files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    size, frames, width = (8, 4, 2) if args.smoke else (16, 6, 4)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)

    gs = gspaces.rot2dOnR2(4)
    in_type = enn.FieldType(gs, [gs.trivial_repr])  # one scalar channel per frame
    x = torch.rand(2, frames, 1, size, size, dtype=torch.float64)
    mus = [(1, 0), (0, 1)]  # input flows to check: 1 px/frame right, 1 px/frame up

    # 1. the user's model: plain tensors in and out. Tell the checks what the output channels are:
    #    here 4*width scalar (trivial) fields, so a rotation moves pixels but mixes no channels.
    user = ConvGRU(1, 4 * width).double().eval()
    user_out = enn.FieldType(gs, 4 * width * [gs.trivial_repr])
    # the model returns (outputs, h_last); the checks want the sequence only: wrap it
    user_report = check_equivariance(lambda seq: user(seq)[0], x, in_type, mus, out_type=user_out)

    # 2. a G-equivariant GRU (flow_escnn's GRU cell over V = {0}): same kind of model, steerable filters.
    #    Its output is lifted over V = {0}; as a lifted output it has no slice to compare under a flow
    #    (nu - mu = -mu is not in V), so check its plain output instead: drop the V axis of size 1.
    hidden_type = enn.FieldType(gs, width * [gs.regular_repr])  # 4*width channels, like the ConvGRU
    g_gru = FlowGRU(in_type, hidden_type, FlowSet.identity(gs)).double().eval()
    g_report = check_equivariance(lambda seq: g_gru(seq).tensor[:, :, 0], x, in_type, mus, out_type=hidden_type)

    # 3. the flow-equivariant GRU: the same cell lifted over V, each slice transported by psi_1(nu)
    flow_gru = FlowGRU(in_type, hidden_type, FlowSet.translations(gs, 1)).double().eval()
    flow_report = check_equivariance(flow_gru, x, in_type, mus)

    for name, report in (("ConvGRU (plain PyTorch)", user_report),
                         ("FlowGRU over V = {0} (G-equivariant GRU)", g_report),
                         ("FlowGRU over V = translations(1)", flow_report)):
        print("=" * 100)
        print(interpret(name, report, f"g={gs.fibergroup.identity}"))
    print("=" * 100)
    print("the flow check alone, as a table:")
    print(check_flow_equivariance(flow_gru, x, in_type, mus).summary())
    print("=" * 100)

    # in a test suite: raise_if_failed() raises EquivarianceError whose message is the table
    try:
        user_report.raise_if_failed()
    except EquivarianceError as err:
        first_lines = str(err).splitlines()[:2]
        print("user_report.raise_if_failed() raised EquivarianceError:", *first_lines, sep="\n  ")

    path = os.path.join(args.out, "check_your_model.png")
    save_figure(path, {
        "ConvGRU (plain PyTorch)": flow_errors(user_report, frames),
        "FlowGRU, V = {0}": flow_errors(g_report, frames),
        "FlowGRU, V = translations(1)": flow_errors(flow_report, frames),
    })
    print(f"wrote {path}")
    expected = flow_report.passed and not user_report.passed and not g_report.passed
    return 0 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
