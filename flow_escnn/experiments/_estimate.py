"""``train --estimate`` / ``world --estimate``: measure a few steps of a configured run and project its cost.

The projection is what a run of the config would take on this machine (device, threads,
speed switches included), from measured pieces:

* **training**: the median time of ``steps`` optimisation steps (after one warm-up step, which
  also pays for ``--compile``) times the run's number of steps;
* **evaluation**: one validation pass (after a warm-up pass) on up to ``eval_batch_size`` sequences, scaled to
  every validation pass of the run plus the final test and per-velocity evaluation (in
  predicted frames);
* **data**: generating the timed batch (digits already loaded), scaled to every sequence the run
  generates;
* **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` of the timed steps (what the
  tensors need, not the caching allocator's reserve); on CPU the process's peak resident set
  (libraries and data included).

Nothing is written. The numbers are projections: they ignore data-loading stalls and
warm caches of a long run, and are as good as the step time is stable.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any, Dict

import torch

from flow_escnn._validate import positive_int
from flow_escnn.experiments._distributed import World
from flow_escnn.experiments._loop import LoopState, optimise
from flow_escnn.experiments._runtime import deterministic_mode, resolve_device, seed_everything
from flow_escnn.experiments._task import Task, build_training

__all__ = ["estimate_training", "format_estimate"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    return f"CPU, {torch.get_num_threads()} threads"


def estimate_training(task: Task, steps: int = 5) -> Dict[str, Any]:
    """Time ``steps`` training steps of a task (plus one warm-up) and project the whole run.

    Args:
        task: the run's task (:class:`~flow_escnn.experiments._task.Task`); its config's device, ``amp``,
            ``compile``, ``gradient_checkpointing`` and ``deterministic`` switches apply.
        steps: timed steps (>= 1).

    Returns:
        A dict: ``device``, ``timed_steps``, ``step_s`` (median), ``first_step_s``, ``steps``
        (the run's), ``train_s``, ``eval_s``, ``data_s``, ``total_s`` (projected seconds),
        ``peak_memory_bytes`` and ``memory_kind``.
    """
    positive_int(steps, "estimate steps")
    c = task.config
    device = resolve_device(c.device)
    small = task.sized(c.batch_size, min(c.num_val, c.eval_batch_size))
    train, val = small.train_data(), small.val_data()  # loads the digits
    t0 = time.perf_counter()
    small.sized(c.batch_size, 1).train_data()  # timed again, digits loaded
    data_per_sample = (time.perf_counter() - t0) / c.batch_size

    times = []
    with deterministic_mode(c.deterministic):
        seed_everything(c.seed)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        net, model, optimizer, scaler = build_training(task, device, World())
        batch = _first(train, c.batch_size, device)

        def after_step(s: LoopState) -> None:
            _sync(device)
            times.append(time.perf_counter())

        def loss_at(step: int) -> torch.Tensor:
            with c.autocast(device):
                return task.loss(model, batch)

        model.train()
        start = time.perf_counter()
        optimise(model, optimizer, LoopState(), steps + 1, loss_at, c.grad_clip, after_step, scaler=scaler)
        task.validate(net, val, device)  # warm-up (compiles its graph)
        _sync(device)
        t_eval = time.perf_counter()
        task.validate(net, val, device)
        _sync(device)
        eval_per_sample = (time.perf_counter() - t_eval) / _count(val)
    if device.type == "cuda":
        peak, kind = int(torch.cuda.max_memory_allocated(device)), "CUDA memory (torch max allocated)"
    else:
        peak, kind = _peak_rss_bytes(), "process peak resident memory"

    step_s = statistics.median(b - a for a, b in zip(times[:-1], times[1:]))
    num_evals = c.steps // c.eval_every + (1 if c.steps % c.eval_every else 0)
    work = task.workload()
    train_s = step_s * c.steps
    eval_s = eval_per_sample * (num_evals * c.num_val + work["final"])
    data_s = data_per_sample * work["generated"]
    return {
        "device": _device_name(device),
        "timed_steps": int(steps),
        "step_s": step_s,
        "first_step_s": times[0] - start,
        "steps": int(c.steps),
        "train_s": train_s,
        "eval_s": eval_s,
        "data_s": data_s,
        "total_s": train_s + eval_s + data_s,
        "peak_memory_bytes": peak,
        "memory_kind": kind,
    }


def _first(data: Any, n: int, device: torch.device) -> Any:
    if isinstance(data, torch.Tensor):
        return data[:n].to(device)
    return tuple(d[:n].to(device) for d in data)


def _count(data: Any) -> int:
    return (data if isinstance(data, torch.Tensor) else data[0]).shape[0]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_estimate(est: Dict[str, Any]) -> str:
    """Three lines for the terminal."""
    gib = est["peak_memory_bytes"] / 2**30
    hours = est["total_s"] / 3600
    return "\n".join([
        f"estimate on {est['device']}: {est['step_s']:.3f} s/step (median of {est['timed_steps']}; "
        f"first step {est['first_step_s']:.1f} s incl. warm-up/compilation)",
        f"projected for {est['steps']} steps: training {_duration(est['train_s'])} + evaluation "
        f"{_duration(est['eval_s'])} + data {_duration(est['data_s'])} = {_duration(est['total_s'])} "
        f"({hours:.2f} device-hours)",
        f"peak memory: {gib:.2f} GiB ({est['memory_kind']})",
    ])
