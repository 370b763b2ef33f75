"""Throughput of data-parallel training: N gloo processes against one, same global batch, 1 thread each.

Runs ``python -m flow_escnn.experiments train`` once in one process and once under
``torchrun --nproc_per_node N`` (CPU, gloo), both with ``OMP_NUM_THREADS=1`` and the same
config, and compares the training time rank 0 reports (``train_time_s``: the optimisation
steps, gradient all-reduces included; data generation and evaluation excluded). Prints
``RATIO speedup=<x>`` last (one process's time / N processes' time).

    python -m benchmarks.bench_distributed            # N = 2, about 30 s on 2 cores
    python -m benchmarks.bench_distributed --procs 4 --steps 40
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Sequence

ROOT = Path(__file__).resolve().parents[1]


def train_time(launcher: List[str], out: Path, args: List[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*launcher, "-m", "flow_escnn.experiments", "train", "--out", str(out), *args]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return float(json.loads((out / "metrics.json").read_text())["train_time_s"])


def main(argv: Sequence[str] = ()) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8, help="global batch (a multiple of --procs)")
    p.add_argument("--hidden-channels", type=int, default=16)
    p.add_argument("--grid-size", type=int, default=20)
    a = p.parse_args(list(argv) or None)
    args = ["--hidden-channels", str(a.hidden_channels), "--grid-size", str(a.grid_size), "--num-train", "64",
            "--num-val", "8", "--num-test", "8", "--num-per-velocity", "1", "--t-in", "5", "--t-out", "5",
            "--batch-size", str(a.batch_size), "--digits", "synthetic", "--steps", str(a.steps), "--flow-radius", "2",
            "--eval-every", str(10 * a.steps), "--checkpoint-every", str(10 * a.steps), "--no-progress", "--no-plots"]
    with tempfile.TemporaryDirectory() as tmp:
        one = train_time([sys.executable], Path(tmp) / "one", args)
        many = train_time([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(a.procs)], Path(tmp) / "many", args)
    print(f"FERNN V25, {a.hidden_channels} channels, {a.grid_size}x{a.grid_size}, T 5+5, global batch {a.batch_size}, "
          f"{a.steps} steps, 1 thread per process, {os.cpu_count()} cpus")
    print(f"1 process: {one:.2f} s | {a.procs} processes (gloo): {many:.2f} s")
    print(f"RATIO speedup={one / many:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
