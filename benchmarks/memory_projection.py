"""Activation memory of the paper's translating-MNIST training step, projected to batch 128.

The configuration of ``train --model fernn --flow translation --flow-radius 2 --hidden-channels
128 --grid-size 28 --t-in 10 --t-out 10 --decoder-layers 4`` (|V| = 25) runs one training step
(forward, MSE, backward) at a small batch on the CPU, three ways: fp32, gradient checkpointing
(``--grad-checkpoint``), and checkpointing under bf16 autocast (``--grad-checkpoint --amp bf16``). The peak
of live tensor bytes (parameters and inputs excluded; :class:`benchmarks.meters.LiveTensorMeter`)
is measured at two batch sizes; activations grow linearly in the batch, so the line through the
two points projects the peak at batch 128 (and 32). Tensor sizes do not depend on the device, so
this projects what the tensors of a GPU run need; the CUDA caching allocator and cuDNN workspaces
come on top and are not modelled.

Run ``python -m benchmarks.memory_projection`` (about 2 minutes on 2 cores at batches 1 and 2).

``--volume`` measures the 3D FERNN instead (issue 24): the predictor of ``bench_fernn``'s volume row
(``trivialOnR3``, ``--volume-channels`` trivial fields over the 27 velocities of ``[-1, 1]^3``) on a
``--volume-grid`` cube (default 16), 5 + 5 frames, two decoder layers, projected to batches 8 and 32.
Its hidden state alone is :math:`|V| C D H W` numbers per sample and layer (27 x 8 x 16^3 = 884,736:
3.4 MiB in float32), and a training step keeps one per time step for the backward pass.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, Sequence

import torch

from benchmarks.bench_fernn import (
    BenchConfig,
    Step,
    build_model,
    build_volume_model,
    make_data,
    make_volume_data,
    measure_memory,
)

GIB = 2.0**30
MODES = {"fp32": dict(checkpoint=False, amp=False), "checkpoint": dict(checkpoint=True, amp=False),
         "checkpoint+bf16": dict(checkpoint=True, amp=True)}


def peak_bytes(batch: int, checkpoint: bool, amp: bool, channels: int = 128, volume: int = 0) -> int:
    """Peak live tensor bytes of one training step of the paper configuration at ``batch`` (``volume``: the
    3D FERNN on a ``volume``-sided cube with ``channels`` trivial fields)."""
    if volume:
        cfg = BenchConfig(batch=batch, t_in=5, t_out=5, decoder_layers=2, volume_grid=volume, volume_channels=channels)
        x, y = make_volume_data(cfg)
        model = build_volume_model(cfg)
        if checkpoint:
            model.encoder.checkpoint = True
    else:
        cfg = BenchConfig(batch=batch, hidden_channels=channels, grid=28, t_in=10, t_out=10, decoder_layers=4)
        x, y = make_data(cfg)
        model = build_model("fernn", cfg, checkpoint=checkpoint)
    return int(measure_memory(Step(model, x, y, amp=amp))["peak_bytes"])


def project(batches: Sequence[int], targets: Sequence[int] = (32, 128), channels: int = 128,
            volume: int = 0) -> Dict[str, Dict[str, float]]:
    """``{mode: {"b<batch>": GiB measured, ..., "projected_b<target>": GiB}}`` (linear in the batch)."""
    lo, hi = batches
    out: Dict[str, Dict[str, float]] = {}
    for mode, kw in MODES.items():
        a = peak_bytes(lo, channels=channels, volume=volume, **kw)
        b = peak_bytes(hi, channels=channels, volume=volume, **kw)
        slope = (b - a) / (hi - lo)
        row = {f"b{lo}": a / GIB, f"b{hi}": b / GIB}
        row.update({f"projected_b{t}": (a + slope * (t - lo)) / GIB for t in targets})
        out[mode] = row
    return out


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 2], help="the two measured batch sizes (1 2)")
    parser.add_argument("--volume", action="store_true", help="the 3D FERNN (bench_fernn's volume row) instead")
    parser.add_argument("--volume-grid", type=int, default=16, help="side of the cube with --volume (16)")
    parser.add_argument("--volume-channels", type=int, default=8, help="trivial fields per V slice with --volume (8)")
    args = parser.parse_args(list(argv) or None)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    targets = (8, 32) if args.volume else (32, 128)
    if args.volume:
        rows = project(args.batches, targets, channels=args.volume_channels, volume=args.volume_grid)
    else:
        rows = project(args.batches, targets)
    lo, hi = args.batches
    print(f"{'mode':18s} {'b' + str(lo):>9s} {'b' + str(hi):>9s} {'proj b' + str(targets[0]):>9s} "
          f"{'proj b' + str(targets[1]):>10s}   (GiB of live tensors)")
    for mode, r in rows.items():
        print(f"{mode:18s} {r[f'b{lo}']:9.3f} {r[f'b{hi}']:9.3f} {r[f'projected_b{targets[0]}']:9.2f} "
              f"{r[f'projected_b{targets[1]}']:10.2f}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
