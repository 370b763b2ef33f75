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
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, Sequence

import torch

from benchmarks.bench_fernn import BenchConfig, Step, build_model, make_data, measure_memory

GIB = 2.0**30
MODES = {"fp32": dict(checkpoint=False, amp=False), "checkpoint": dict(checkpoint=True, amp=False),
         "checkpoint+bf16": dict(checkpoint=True, amp=True)}


def peak_bytes(batch: int, checkpoint: bool, amp: bool, channels: int = 128) -> int:
    """Peak live tensor bytes of one training step of the paper configuration at ``batch``."""
    cfg = BenchConfig(batch=batch, hidden_channels=channels, grid=28, t_in=10, t_out=10, decoder_layers=4)
    x, y = make_data(cfg)
    model = build_model("fernn", cfg, checkpoint=checkpoint)
    return int(measure_memory(Step(model, x, y, amp=amp))["peak_bytes"])


def project(batches: Sequence[int], targets: Sequence[int] = (32, 128), channels: int = 128) -> Dict[str, Dict[str, float]]:
    """``{mode: {"b<batch>": GiB measured, ..., "projected_b<target>": GiB}}`` (linear in the batch)."""
    lo, hi = batches
    out: Dict[str, Dict[str, float]] = {}
    for mode, kw in MODES.items():
        a, b = peak_bytes(lo, channels=channels, **kw), peak_bytes(hi, channels=channels, **kw)
        slope = (b - a) / (hi - lo)
        row = {f"b{lo}": a / GIB, f"b{hi}": b / GIB}
        row.update({f"projected_b{t}": (a + slope * (t - lo)) / GIB for t in targets})
        out[mode] = row
    return out


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs=2, default=[1, 2], help="the two measured batch sizes (1 2)")
    args = parser.parse_args(list(argv) or None)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    rows = project(args.batches)
    lo, hi = args.batches
    print(f"{'mode':18s} {'b' + str(lo):>9s} {'b' + str(hi):>9s} {'proj b32':>9s} {'proj b128':>10s}"
          "   (GiB of live tensors)")
    for mode, r in rows.items():
        print(f"{mode:18s} {r[f'b{lo}']:9.3f} {r[f'b{hi}']:9.3f} {r['projected_b32']:9.2f} {r['projected_b128']:10.2f}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
