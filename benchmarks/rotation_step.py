"""Benchmark: the rotation row of ``bench_fernn.py`` alone, against its straightforward twin,
alternating step by step in one process (for A/B runs of two checkouts of the library).

Run from the repository root of each checkout, alternating processes::

    python -m benchmarks.rotation_step --threads 1 --rounds 6

On our noisy 2-core VM a whole process can run 20% slower than the next one, so compare the
ratio of the two steps measured in the same process, over several processes. The last line is
machine readable::

    RATIOS step_s_min=<s> naive_s_min=<s> vs_straightforward_min=<x> vs_straightforward_median=<x>
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Dict, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.bench_fernn import BenchConfig, Step, build_model, make_data, naive_twin  # noqa: E402

__all__ = ["run", "main"]


def run(cfg: BenchConfig, rounds: int = 6, warmup: int = 2) -> Dict[str, float]:
    """Seconds per step (min) of the rotation row and its twin, and their ratios (min and median)."""
    x, y = make_data(cfg)
    model = build_model("rotation", cfg)
    steps = {"step": Step(model, x, y), "naive": Step(naive_twin(model, cfg), x, y)}
    times: Dict[str, list] = {k: [] for k in steps}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {
        "step_s_min": min(times["step"]), "naive_s_min": min(times["naive"]),
        "vs_straightforward_min": min(times["step"]) / min(times["naive"]),
        "vs_straightforward_median": statistics.median(times["step"]) / statistics.median(times["naive"]),
    }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--rounds", type=int, default=6, help="timed rounds after 2 warm-up rounds")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden-channels", type=int, default=32)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    res = run(BenchConfig(batch=a.batch, hidden_channels=a.hidden_channels), rounds=a.rounds)
    print("RATIOS " + " ".join(f"{k}={v:.4f}" for k, v in res.items()), flush=True)
    return res


if __name__ == "__main__":
    main()
