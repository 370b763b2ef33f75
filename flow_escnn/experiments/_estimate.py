"""``train --estimate`` / ``world --estimate``: measure a few steps of a configured run and project its cost.

The projection is what a run of the config would take on this machine (device, threads,
speed switches included), from measured pieces:

* **training**: the median time of ``steps`` optimisation steps (after one warm-up step) times
  the run's number of steps;
* **compilation** (``--compile``): what the first training step and the first validation pass
  took beyond a later one, paid once by the run. The final evaluation's longer horizon may
  compile once more (not measured). With ``--compile`` the same steps and validation pass are
  timed eagerly too, and a fourth line says whether compilation pays off on this device (its
  step is not faster than eager, it is faster but this run is too short to repay compiling, or it
  pays off after N steps), with what the run would take without ``--compile``;
* **evaluation**: one validation pass (after a warm-up pass) on up to ``eval_batch_size`` sequences, scaled to
  every validation pass of the run plus the final test and per-velocity evaluation (in
  predicted frames);
* **data**: generating the timed batch (digits already loaded), scaled to every sequence the run
  generates;
* **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` of the timed steps (what the
  tensors need, not the caching allocator's reserve); on CPU the process's peak resident set
  (libraries and data included).

Nothing is written. The numbers are projections: they ignore data-loading stalls and
warm caches of a long run, and are as good as the step time is stable. :func:`project` is the
arithmetic, from the measured pieces alone.
"""
from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, Optional

import torch

from flow_escnn._validate import positive_int
from flow_escnn.experiments._distributed import World
from flow_escnn.experiments._loop import LoopState, optimise
from flow_escnn.experiments._runtime import deterministic_mode, resolve_device, seed_everything
from flow_escnn.experiments._task import Task, build_training

__all__ = ["estimate_training", "format_estimate", "project"]


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


def _time_model(task: Task, device: torch.device, compile: str, steps: int, batch: Any, val: Any,
                clock: Callable[[], float]) -> Dict[str, float]:
    """Time ``steps + 1`` training steps and two validation passes of a fresh model (``compile``: its mode).

    Returns ``first_step_s``, ``step_s`` (median of the ``steps`` after the first), ``eval_warmup_s``
    (what the first validation pass took beyond the second) and ``eval_sample_s`` (the second, per sample)."""
    c = task.config
    seed_everything(c.seed)
    net, model, optimizer, scaler = build_training(task, device, World(), compile=compile)
    times = []

    def after_step(s: LoopState) -> None:
        _sync(device)
        times.append(clock())

    def loss_at(step: int) -> torch.Tensor:
        with c.autocast(device):
            return task.loss(model, batch)

    model.train()
    start = clock()
    optimise(model, optimizer, LoopState(), steps + 1, loss_at, c.grad_clip, after_step, scaler=scaler)
    passes = []
    for _ in range(2):  # the first pass warms up (and compiles its graph)
        _sync(device)
        t0 = clock()
        task.validate(net, val, device)
        _sync(device)
        passes.append(clock() - t0)
    return {
        "first_step_s": times[0] - start,
        "step_s": statistics.median(b - a for a, b in zip(times[:-1], times[1:])),
        "eval_warmup_s": max(0.0, passes[0] - passes[1]),
        "eval_sample_s": passes[1] / _count(val),
    }


def project(measured: Dict[str, float], work: Dict[str, float], compiled: bool,
            eager: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """The projected seconds of a run from measured pieces (no timing here).

    Args:
        measured: of the run's own mode (:func:`_time_model`): ``first_step_s``, ``step_s``,
            ``eval_warmup_s``, ``eval_sample_s``, and ``data_sample_s``.
        work: ``steps`` (the run's), ``eval_samples`` (validation samples of every validation pass and
            the final evaluation) and ``generated`` (samples the run generates).
        compiled: the run uses ``--compile``: its first step's and first validation pass's extra time is
            compilation, paid once (``compile_s``); without it the warm-up is not projected.
        eager: the same measurements of the eager model (with ``compiled``), for the comparison.

    Returns:
        ``train_s``, ``compile_s``, ``eval_s``, ``data_s``, ``total_s`` (their sum) and, with ``eager``:
        ``eager_step_s``, ``eager_total_s`` (the run without ``--compile``), ``compile_pays_off``
        (``total_s < eager_total_s``) and ``break_even_steps`` (steps after which the faster compiled
        step has repaid the compilation; None when the compiled step is not faster).
    """
    steps = work["steps"]
    train_s = measured["step_s"] * steps
    eval_s = measured["eval_sample_s"] * work["eval_samples"]
    data_s = measured["data_sample_s"] * work["generated"]
    compile_s = 0.0
    if compiled:
        compile_s = max(0.0, measured["first_step_s"] - measured["step_s"]) + measured["eval_warmup_s"]
    out: Dict[str, Any] = {"train_s": train_s, "compile_s": compile_s, "eval_s": eval_s, "data_s": data_s,
                           "total_s": train_s + compile_s + eval_s + data_s}
    if compiled and eager is not None:
        eager_total = eager["step_s"] * steps + eager["eval_sample_s"] * work["eval_samples"] + data_s
        gain = eager["step_s"] - measured["step_s"]
        out.update(
            eager_step_s=eager["step_s"],
            eager_total_s=eager_total,
            compile_pays_off=out["total_s"] < eager_total,
            break_even_steps=math.ceil(compile_s / gain) if gain > 0 else None,
        )
    return out


def estimate_training(task: Task, steps: int = 5, clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    """Time ``steps`` training steps of a task (plus one warm-up) and project the whole run.

    Args:
        task: the run's task (:class:`~flow_escnn.experiments._task.Task`); its config's device, ``amp``,
            ``compile``, ``gradient_checkpointing`` and ``deterministic`` switches apply.
        steps: timed steps (>= 1).
        clock: the time source (seconds).

    Returns:
        A dict: ``device``, ``timed_steps``, ``step_s`` (median), ``first_step_s``, ``steps``
        (the run's), ``compiled``, the projection of :func:`project` (``train_s``, ``compile_s``,
        ``eval_s``, ``data_s``, ``total_s``; with ``--compile`` also ``eager_step_s``,
        ``eager_total_s``, ``compile_pays_off``, ``break_even_steps``), ``peak_memory_bytes`` and
        ``memory_kind`` (of the run's own mode).
    """
    positive_int(steps, "estimate steps")
    c = task.config
    device = resolve_device(c.device)
    small = task.sized(c.batch_size, min(c.num_val, c.eval_batch_size))
    train, val = small.train_data(), small.val_data()  # loads the digits
    t0 = clock()
    small.sized(c.batch_size, 1).train_data()  # timed again, digits loaded
    data_sample_s = (clock() - t0) / c.batch_size

    compiled = c.compile != "off"
    eager = None
    with deterministic_mode(c.deterministic):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        batch = _first(train, c.batch_size, device)
        measured = _time_model(task, device, c.compile, steps, batch, val, clock)
        if device.type == "cuda":
            peak, kind = int(torch.cuda.max_memory_allocated(device)), "CUDA memory (torch max allocated)"
        else:
            peak, kind = _peak_rss_bytes(), "process peak resident memory"
        if compiled:  # the same steps eagerly: does compilation pay off here?
            eager = _time_model(task, device, "off", steps, batch, val, clock)

    num_evals = c.steps // c.eval_every + (1 if c.steps % c.eval_every else 0)
    load = task.workload()
    work = {"steps": c.steps, "eval_samples": num_evals * c.num_val + load["final"], "generated": load["generated"]}
    return {
        "device": _device_name(device),
        "timed_steps": int(steps),
        "step_s": measured["step_s"],
        "first_step_s": measured["first_step_s"],
        "steps": int(c.steps),
        "compiled": compiled,
        **project({**measured, "data_sample_s": data_sample_s}, work, compiled, eager),
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


def _compile_verdict(est: Dict[str, Any]) -> str:
    """One line: whether ``--compile`` pays off on this device, from :func:`project`'s comparison."""
    compiled, eager = est["step_s"], est["eager_step_s"]
    without = f"without --compile the run projects to {_duration(est['eager_total_s'])}"
    if est["break_even_steps"] is None:
        return (f"--compile does not pay off on this device: a compiled step takes {compiled:.3g} s, an eager one "
                f"{eager:.3g} s, and compiling took {_duration(est['compile_s'])}; {without}")
    if not est["compile_pays_off"]:
        return (f"--compile does not pay off for this run: a compiled step saves {eager - compiled:.3g} s of "
                f"{eager:.3g} s, which repays the {_duration(est['compile_s'])} of compiling after "
                f"{est['break_even_steps']} steps (the run has {est['steps']}); {without}")
    return (f"--compile pays off: {eager / compiled:.2f}x faster steps than eager ({eager:.3g} s/step), the "
            f"compilation repaid after {est['break_even_steps']} steps; {without}")


def format_estimate(est: Dict[str, Any]) -> str:
    """Three lines for the terminal (four with ``--compile``: whether it pays off)."""
    gib = est["peak_memory_bytes"] / 2**30
    hours = est["total_s"] / 3600
    compiled = est.get("compiled", False)
    first = f"first step {est['first_step_s']:.1f} s" + (
        f"; compiling took {_duration(est['compile_s'])} (first step and first validation pass, beyond later ones)"
        if compiled else " incl. warm-up")
    parts = ([f"compilation {_duration(est['compile_s'])}"] if compiled else []) + [
        f"training {_duration(est['train_s'])}", f"evaluation {_duration(est['eval_s'])}",
        f"data {_duration(est['data_s'])}"]
    lines = [
        f"estimate on {est['device']}: {est['step_s']:.3f} s/step{' compiled' if compiled else ''} (median of "
        f"{est['timed_steps']}; {first})",
        f"projected for {est['steps']} steps: {' + '.join(parts)} = {_duration(est['total_s'])} "
        f"({hours:.2f} device-hours)",
    ]
    if compiled and "eager_step_s" in est:
        lines.append(_compile_verdict(est))
    lines.append(f"peak memory: {gib:.2f} GiB ({est['memory_kind']})")
    return "\n".join(lines)
