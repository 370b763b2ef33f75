"""One row of :mod:`benchmarks.bench_fernn` alone: its training step against its conv-only floor.

The full benchmark times some thirty functions; on a shared machine a row's ratio is steadier when
only the row and its floor alternate. This builds the row exactly as ``bench_fernn`` does (same
config, data, model and :class:`~benchmarks.meters.ConvFloor`) and times the two round-robin::

    python -m benchmarks.single_row --row world --threads 1      # world_vs_floor
    python -m benchmarks.single_row --row volume --threads 2     # volume_vs_floor
"""
from __future__ import annotations

import argparse
import statistics
from typing import Optional, Sequence

import torch

from benchmarks import bench_fernn as b

ROWS = ("world", "volume")


def main(argv: Optional[Sequence[str]] = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--row", choices=ROWS, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timed rounds, median reported (7)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = b.BenchConfig(repeats=a.repeats, warmup=1, threads=a.threads)
    if a.row == "world":
        step = b.WorldStep(b.build_world_model(cfg), *b.make_data(cfg))
    else:
        step = b.Step(b.build_volume_model(cfg), *b.make_volume_data(cfg))
    floor = b.record_floor(step)
    times = b.time_round_robin({"step": step, "floor": floor}, cfg)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["step"] / med["floor"]
    print(f"{a.row}: step {1e3 * med['step']:.1f} ms, floor {1e3 * med['floor']:.1f} ms, "
          f"{a.row}_vs_floor={ratio:.3f} ({a.threads} thread(s), median of {a.repeats})")
    return ratio


if __name__ == "__main__":
    main()
