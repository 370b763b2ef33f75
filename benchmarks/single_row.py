"""One row of :mod:`benchmarks.bench_fernn` alone: its training step against its conv-only floor, or a
``vs_reference_*`` row against its anchor (the paper code's algorithm, :mod:`benchmarks.paper_anchor`).

The full benchmark times some thirty functions; on a shared machine a row's ratio is steadier when
only the row and its baseline alternate. This builds the row exactly as ``bench_fernn`` does (same
config, data, model, :class:`~benchmarks.meters.ConvFloor` or anchor) and times the two round-robin::

    python -m benchmarks.single_row --row world --threads 1        # world_vs_floor
    python -m benchmarks.single_row --row volume --threads 2       # volume_vs_floor
    python -m benchmarks.single_row --row rotation --threads 1     # vs_reference_rotation
    python -m benchmarks.single_row --row translation --threads 1  # vs_reference_translation

``--row volume --ncdhw`` adds the same step with its volume convolutions left NCDHW (no channels-last,
:data:`flow_escnn.nn._kernels.CHANNELS_LAST_3D_MAX_CHANNELS` emptied while it runs) to the rotation;
``--plain-layout`` (planar rows) the same step with its states in the plain ``[N, C, H, W]`` layout
(:data:`flow_escnn.nn._kernels.CHANNELS_LAST_2D` emptied while it runs)::

    python -m benchmarks.single_row --row translation --plain-layout   # channels-last states against plain
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable, Optional, Sequence
from unittest import mock

import torch

from benchmarks import bench_fernn as b
from flow_escnn.nn import _kernels

#: the rows timed against their conv-only floor
FLOOR_ROWS = ("world", "volume")
#: ``--row`` -> the ``vs_reference_*`` ratio timed against its anchor
REFERENCE = {k[len("vs_reference_"):]: k for k in b.REFERENCE_ROWS}
ROWS = FLOOR_ROWS + tuple(REFERENCE)


def main(argv: Optional[Sequence[str]] = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--row", choices=ROWS, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timed rounds, median reported (7)")
    p.add_argument("--ncdhw", action="store_true", help="--row volume: also time the step with NCDHW convolutions")
    p.add_argument("--plain-layout", action="store_true",
                   help="planar rows: also time the step with its states in the plain [N, C, H, W] layout")
    a = p.parse_args(argv)
    if a.ncdhw and a.row != "volume":
        p.error("--ncdhw applies to --row volume only")
    if a.plain_layout and a.row == "volume":
        p.error("--plain-layout applies to the planar rows (use --ncdhw for --row volume)")
    torch.set_num_threads(a.threads)
    cfg = b.BenchConfig(repeats=a.repeats, warmup=1, threads=a.threads)
    if a.row in REFERENCE:
        key = REFERENCE[a.row]
        lib, anchor = b.REFERENCE_ROWS[key]
        steps = b.reference_steps(cfg, *b.make_data(cfg), keys=[key])
        fns, name, base = {"step": steps[lib], "anchor": steps[anchor]}, key, "anchor"
    else:
        if a.row == "world":
            step = b.WorldStep(b.build_world_model(cfg), *b.make_data(cfg))
        else:
            step = b.Step(b.build_volume_model(cfg), *b.make_volume_data(cfg))
        fns, name, base = {"step": step, "floor": b.record_floor(step)}, f"{a.row}_vs_floor", "floor"
        if a.ncdhw:
            fns["ncdhw"] = _without_channels_last(step)
    if a.plain_layout:
        fns["plain"] = _plain_layout(fns["step"])
    times = b.time_round_robin(fns, cfg)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["step"] / med[base]
    print(f"{a.row}: step {1e3 * med['step']:.1f} ms, {base} {1e3 * med[base]:.1f} ms, "
          f"{name}={ratio:.3f} ({a.threads} thread(s), median of {a.repeats})")
    if a.ncdhw:
        print(f"volume: the step with NCDHW convolutions {1e3 * med['ncdhw']:.1f} ms, "
              f"ncdhw_vs_channels_last={med['ncdhw'] / med['step']:.3f}")
    if a.plain_layout:
        print(f"{a.row}: the step with plain-layout states {1e3 * med['plain']:.1f} ms "
              f"({med['plain'] / med[base]:.3f} of the {base}), plain_vs_channels_last={med['plain'] / med['step']:.3f}")
    return ratio


def _without_channels_last(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` run with every volume convolution NCDHW (the channels-last table emptied, then restored)."""
    return mock.patch.dict(_kernels.CHANNELS_LAST_3D_MAX_CHANNELS, clear=True)(step)


def _plain_layout(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` run with its planar states in the plain layout (the channels-last dtypes emptied, then restored)."""
    return mock.patch.object(_kernels, "CHANNELS_LAST_2D", frozenset())(step)


if __name__ == "__main__":
    main()

