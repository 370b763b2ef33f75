"""Benchmark: flow_escnn's FERNN vs a straightforward implementation vs |V| x G-RNN.

Run from the repository root::

    python -m benchmarks.bench_fernn --quick            # < 2 min on 2 CPU cores
    python benchmarks/bench_fernn.py --json out.json     # default sizes
    python -m benchmarks.bench_fernn --device cuda --batch 32 --hidden-channels 64

What is measured (see benchmarks/README.md for the exact definitions):

* the *training step* (forward + MSE loss + backward + Adam step) of a next-frame
  predictor = recurrent layer + the same readout for every model (max over V, then a
  3x3 circular conv to 1 channel), on T = t_in + t_out frames (inputs after t_in are
  zero, the loss is on the last t_out frames), median of ``--repeats`` after warm-up;
* for flow_escnn's ``FERNN``, translation flows ``|V| = 1, 9, 25`` on trivial and
  C4-regular hidden fields, and C8 rotation flows (45 degrees/frame, ``|V| = 3``) in
  ``mode="hidden"`` and ``mode="comoving"``;
* the straightforward implementation of :mod:`benchmarks.straightforward` on the same
  inputs and the same weights;
* ``|V| x`` the G-RNN step (``FERNN`` over ``FlowSet.identity``) at the same width;
* the transport share: every ``TransportPlan.forward`` call of one FERNN training step is
  recorded (plan and input shape) and replayed alone, forward + backward, on the same
  shapes; share = replay time / step time;
* activation memory = bytes of the distinct storages saved for backward
  (``saved_tensors_hooks``), with and without ``checkpoint=True``; plus the peak of
  live tensor bytes over forward + backward (tracked at the ATen level with a
  ``TorchDispatchMode``; includes the recomputation of checkpointing) and the growth of
  the process's max RSS (``resource.getrusage``, a high-water mark: a lower bound);
  on CUDA, ``torch.cuda.max_memory_allocated``;
* long inference (``torch.no_grad``, ``forward_with_state(return_sequence=False)``) at
  T = 100 and T = 1000: finiteness of the final state and peak live tensor memory.

The last line printed is machine readable::

    RATIOS vs_straightforward_translation=<x> vs_straightforward_rotation=<x> overhead_vs_floor=<x> checkpoint_memory=<x>
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

import flow_escnn  # noqa: E402  (imports escnn quietly, with the py3nj warning silenced)
from flow_escnn._compat import import_escnn  # noqa: E402
from flow_escnn.flows.flowset import FlowSet  # noqa: E402
from flow_escnn.flows.transport import TransportPlan  # noqa: E402
from flow_escnn.nn import FERNN  # noqa: E402

from benchmarks.straightforward import StraightforwardFERNN  # noqa: E402

escnn, _group, gspaces, enn = import_escnn()

__all__ = [
    "BenchConfig",
    "Case",
    "build_cases",
    "build_model",
    "make_data",
    "time_train_step",
    "time_train_steps_interleaved",
    "SavedTensorMeter",
    "LiveTensorMeter",
    "PlanRecorder",
    "measure_train_memory",
    "transport_share",
    "measure_inference",
    "run_benchmark",
    "format_ratios",
    "format_table",
    "parse_args",
    "main",
    "RATIO_KEYS",
    "TARGETS",
]

MiB = 1024.0 ** 2
RATIO_KEYS = (
    "vs_straightforward_translation",
    "vs_straightforward_rotation",
    "overhead_vs_floor",
    "checkpoint_memory",
)
# target name -> (metric: a RATIOS key or transport_share_v25, comparison, threshold)
TARGETS = {
    "translation |V|=25 step <= 0.8x straightforward": ("vs_straightforward_translation", "<=", 0.8),
    "rotation C8 45deg step <= 0.3x straightforward": ("vs_straightforward_rotation", "<=", 0.3),
    "transport <= 5% of step time at |V|=25": ("transport_share_v25", "<=", 0.05),
    "checkpointing cuts peak memory >= 3x at T=t_in+t_out": ("checkpoint_memory", ">=", 3.0),
}


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    device: str = "cpu"
    batch: int = 4
    hidden_channels: int = 16  # channels per V slice (trivial: C fields; C4: C/4 and C8: C/8 regular fields)
    grid: int = 28
    t_in: int = 10
    t_out: int = 10
    repeats: int = 5
    warmup: int = 2
    t_short: int = 100
    t_long: int = 1000
    threads: Optional[int] = None
    seed: int = 0
    quick: bool = False
    json: Optional[str] = None
    cases: Optional[str] = None  # regex filter on case keys (debugging)
    inference: bool = True

    @property
    def t_total(self) -> int:
        return self.t_in + self.t_out


QUICK = dict(batch=1, hidden_channels=8, repeats=3, warmup=1)


@dataclass
class Case:
    """One trained model configuration (a row of the table)."""

    key: str
    family: str  # "translation" | "rotation"
    field: str  # "trivial" | "C4-regular" | "C8-regular"
    impl: str  # "fernn" | "straightforward"
    v: int
    mode: str = "-"  # FERNN mode ("hidden" | "comoving" | "auto"), "-" for straightforward
    checkpoint: bool = False
    radius: Optional[int] = None
    rot_steps: Optional[Tuple[int, ...]] = None
    grnn: bool = False  # FlowSet.identity (the compute floor)
    memory: bool = True
    transport: bool = False


def build_cases(cfg: BenchConfig) -> List[Case]:
    """All rows, in table order."""
    cases: List[Case] = []
    for fld in ("trivial", "C4-regular"):
        for r in (0, 1, 2):
            v = (2 * r + 1) ** 2
            cases.append(Case(f"trans-{fld}-V{v}-fernn", "translation", fld, "fernn", v, "hidden", radius=r,
                              grnn=(r == 0), transport=(r == 2)))
            cases.append(Case(f"trans-{fld}-V{v}-naive", "translation", fld, "straightforward", v, radius=r))
    cases.append(Case("trans-C4-regular-V25-fernn-ckpt", "translation", "C4-regular", "fernn", 25, "hidden",
                      checkpoint=True, radius=2))
    steps = (-1, 0, 1)
    cases.append(Case("rot-C8-regular-V1-grnn", "rotation", "C8-regular", "fernn", 1, "hidden", grnn=True))
    for mode in ("hidden", "comoving"):
        cases.append(Case(f"rot-C8-regular-V3-fernn-{mode}", "rotation", "C8-regular", "fernn", 3, mode,
                          rot_steps=steps, transport=True))
    cases.append(Case("rot-C8-regular-V3-naive", "rotation", "C8-regular", "straightforward", 3, rot_steps=steps))
    for mode in ("hidden", "comoving"):
        cases.append(Case(f"rot-C8-regular-V3-fernn-{mode}-ckpt", "rotation", "C8-regular", "fernn", 3, mode,
                          checkpoint=True, rot_steps=steps))
    return cases


# ------------------------------------------------------------------------------------------------
# models and data
# ------------------------------------------------------------------------------------------------
def field_types(fld: str, hidden_channels: int) -> Tuple[Any, Any, Any]:
    """``(gspace, in_type, hidden_type)`` with ``hidden_type.size == hidden_channels``."""
    if fld == "trivial":
        gs = gspaces.trivialOnR2()
        reps = [gs.trivial_repr] * hidden_channels
    else:
        n = {"C4-regular": 4, "C8-regular": 8}[fld]
        if hidden_channels % n:
            raise ValueError(f"--hidden-channels must be a multiple of {n} for {fld} fields, got {hidden_channels}")
        gs = gspaces.rot2dOnR2(n)
        reps = [gs.regular_repr] * (hidden_channels // n)
    return gs, enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, reps)


def flows_for(case: Case, gs: Any) -> FlowSet:
    if case.grnn:
        return FlowSet.identity(gs)
    if case.family == "translation":
        return FlowSet.translations(gs, case.radius)
    return FlowSet.rotations(gs, list(case.rot_steps))


class Predictor(torch.nn.Module):
    """Recurrent layer + the shared readout (max over V, 3x3 circular conv to 1 channel).

    ``forward(x [B, T, 1, H, W])`` returns predictions ``[B, t_out, 1, H, W]`` for frames
    ``t_in .. T-1``, read out of the hidden state of the same step (the inputs at those steps
    are zero, so the model predicts from its memory).
    """

    def __init__(self, rnn: torch.nn.Module, channels: int, t_in: int, lifted_output: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.t_in = t_in
        self.lifted_output = lifted_output
        self.readout = torch.nn.Conv2d(channels, 1, 3, padding=1, padding_mode="circular")

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rnn(x)
        return out.tensor if self.lifted_output else out  # [B, T, V, C, H, W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        # torch.max(dim) saves only its int64 indices for backward (amax would keep all of h alive)
        pooled = h[:, self.t_in:].max(dim=2).values  # [B, t_out, C, H, W]
        b, t, c, hh, ww = pooled.shape
        return self.readout(pooled.reshape(b * t, c, hh, ww)).reshape(b, t, 1, hh, ww)


def build_model(case: Case, cfg: BenchConfig, seed: Optional[int] = None) -> Predictor:
    """The predictor of one case; the FERNN and straightforward models of one (family, field, V)
    share their weights (same seed), and every model gets the same readout initialisation."""
    seed = cfg.seed if seed is None else seed
    gs, in_type, hidden_type = field_types(case.field, cfg.hidden_channels)
    flows = flows_for(case, gs)
    torch.manual_seed(seed)
    fernn = FERNN(in_type, hidden_type, flows, kernel_size=3, mode=case.mode if case.impl == "fernn" else "hidden",
                  checkpoint=case.checkpoint)
    if case.impl == "fernn":
        rnn, lifted = fernn, True
    else:
        rnn = StraightforwardFERNN(in_type, hidden_type, flows.velocities, (cfg.grid, cfg.grid)).load_from_fernn(fernn)
        lifted = False
    torch.manual_seed(seed + 1)
    model = Predictor(rnn, hidden_type.size, cfg.t_in, lifted)
    return model.to(cfg.device)


def make_data(cfg: BenchConfig, t_len: Optional[int] = None, seed: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Moving blobs on the torus: ``(x [B, T, 1, H, W], y [B, t_out, 1, H, W])``.

    Each sample is a smoothed sparse random image moving with an integer velocity in
    ``[-2, 2]^2`` (``torch.roll``). ``x`` holds frames ``0 .. t_in-1`` followed by zeros,
    ``y`` the frames ``t_in .. T-1``. With ``t_len`` given (inference), all ``t_len`` frames are
    inputs and ``y`` is empty.
    """
    g = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
    t_total = cfg.t_total if t_len is None else t_len
    b, n = cfg.batch, cfg.grid
    base = (torch.rand(b, 1, n, n, generator=g) < 0.08).float()
    base = F.avg_pool2d(F.pad(base, (1, 1, 1, 1), mode="circular"), 3, stride=1) * 3.0
    base = base.clamp(0, 1)
    vel = torch.randint(-2, 3, (b, 2), generator=g)
    frames = torch.stack(
        [torch.stack([torch.roll(base[i], (-int(vel[i, 1]) * t, int(vel[i, 0]) * t), dims=(-2, -1)) for i in range(b)])
         for t in range(t_total)],
        dim=1,
    )  # [B, T, 1, H, W]
    if t_len is not None:
        return frames.to(cfg.device), frames[:, :0].to(cfg.device)
    x = frames.clone()
    x[:, cfg.t_in:] = 0
    return x.to(cfg.device), frames[:, cfg.t_in:].contiguous().to(cfg.device)


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _train_step(model: Predictor, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())


def time_fn(fn: Callable[[], Any], warmup: int, repeats: int, device: str) -> List[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` calls (perf_counter, synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def time_train_step(model: Predictor, x: torch.Tensor, y: torch.Tensor, cfg: BenchConfig) -> Dict[str, Any]:
    """Median / min / all of the training-step time (forward + loss + backward + Adam step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses: List[float] = []
    times = time_fn(lambda: losses.append(_train_step(model, opt, x, y)), cfg.warmup, cfg.repeats, cfg.device)
    return {
        "step_s": statistics.median(times),
        "step_min_s": min(times),
        "step_all_s": times,
        "loss_finite": bool(all(math.isfinite(l) for l in losses)),
        "optimizer": opt,
    }


def time_train_steps_interleaved(models: Dict[str, Predictor], x: torch.Tensor, y: torch.Tensor,
                                 cfg: BenchConfig) -> Dict[str, Dict[str, Any]]:
    """:func:`time_train_step` for several models, their repeats interleaved round-robin (the
    start rotating every round) so that load fluctuations on a shared machine hit all alike."""
    keys = list(models)
    opts = {k: torch.optim.Adam(models[k].parameters(), lr=1e-3) for k in keys}
    losses: Dict[str, List[float]] = {k: [] for k in keys}
    times: Dict[str, List[float]] = {k: [] for k in keys}
    for k in keys:
        for _ in range(cfg.warmup):
            losses[k].append(_train_step(models[k], opts[k], x, y))
    for r in range(cfg.repeats):
        for i in range(len(keys)):
            k = keys[(i + r) % len(keys)]
            _sync(cfg.device)
            t0 = time.perf_counter()
            losses[k].append(_train_step(models[k], opts[k], x, y))
            _sync(cfg.device)
            times[k].append(time.perf_counter() - t0)
    return {
        k: {
            "step_s": statistics.median(times[k]),
            "step_min_s": min(times[k]),
            "step_all_s": times[k],
            "loss_finite": bool(all(math.isfinite(l) for l in losses[k])),
            "optimizer": opts[k],
        }
        for k in keys
    }


# ------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------
class SavedTensorMeter:
    """Bytes of the distinct storages saved for backward while active (deduplicated by data_ptr)."""

    def __init__(self) -> None:
        self.storages: Dict[Tuple[str, int], int] = {}
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            st = t.untyped_storage()
            key = (str(t.device), st.data_ptr())
            self.storages[key] = max(self.storages.get(key, 0), st.nbytes())
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            pass
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    @property
    def bytes(self) -> int:
        return int(sum(self.storages.values()))

    def __enter__(self) -> "SavedTensorMeter":
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


class LiveTensorMeter(TorchDispatchMode):
    """Peak of the live bytes of tensor storages produced by ATen ops while active.

    Every op output's storage is counted once, from its first appearance until it is freed
    (a weakref finalizer on the storage, whose Python object torch keeps alive as long as the
    storage lives). Storages given to :meth:`ignore` (parameters, inputs) are never counted.
    Kernel-internal scratch buffers are not seen.
    """

    def __init__(self, ignore: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self._live: Dict[int, int] = {}
        self._ignored: Dict[int, Any] = {}
        self.current = 0
        self.peak = 0
        for t in ignore:
            st = t.untyped_storage()
            self._ignored[id(st)] = st  # strong reference: the id cannot be reused meanwhile

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = id(st)
        if key in self._live or key in self._ignored:
            return
        nb = int(st.nbytes())
        if nb == 0:
            return
        self._live[key] = nb
        self.current += nb
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)


def _max_rss_bytes() -> Optional[int]:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) * (1 if sys.platform == "darwin" else 1024)


def _module_tensors(model: torch.nn.Module) -> List[torch.Tensor]:
    return [p for p in model.parameters()] + [b for b in model.buffers()]


def measure_train_memory(model: Predictor, x: torch.Tensor, y: torch.Tensor, cfg: BenchConfig,
                         opt: Optional[torch.optim.Optimizer] = None) -> Dict[str, Any]:
    """Activation memory of one forward + backward (after the optimizer state exists).

    Returns ``saved_bytes`` (distinct storages saved for backward during the forward),
    ``peak_live_bytes`` (CPU: :class:`LiveTensorMeter` over forward + backward; CUDA:
    ``max_memory_allocated`` above the memory allocated before), ``rss_growth_bytes``.
    """
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)
    ignore = _module_tensors(model) + [x, y]
    if opt is not None:
        ignore += [s for st in opt.state.values() for s in st.values() if isinstance(s, torch.Tensor)]
    rss0 = _max_rss_bytes()
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    live = None if cuda else LiveTensorMeter(ignore)
    if live is not None:
        live.__enter__()
    try:
        with SavedTensorMeter() as saved:
            loss = F.mse_loss(model(x), y)
        loss.backward()
        del loss
    finally:
        if live is not None:
            live.__exit__(None, None, None)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = live.peak
    rss1 = _max_rss_bytes()
    model.zero_grad(set_to_none=True)
    return {
        "saved_bytes": saved.bytes,
        "peak_live_bytes": int(peak),
        "rss_growth_bytes": None if rss0 is None else rss1 - rss0,
    }


# ------------------------------------------------------------------------------------------------
# transport share
# ------------------------------------------------------------------------------------------------
class PlanRecorder:
    """Records every ``TransportPlan.forward`` call (plan, input shape, requires_grad) and its
    in-situ forward time while active (patches the class attribute; restored on exit)."""

    def __init__(self, device: str) -> None:
        self.calls: List[Tuple[TransportPlan, Tuple[int, ...], torch.dtype, bool, Optional[int]]] = []
        self.forward_s = 0.0
        self._device = device
        self._orig = None

    def __enter__(self) -> "PlanRecorder":
        orig = TransportPlan.forward
        self._orig = orig
        rec = self

        def forward(plan: TransportPlan, x: torch.Tensor, start: Optional[int] = None) -> torch.Tensor:
            _sync(rec._device)
            t0 = time.perf_counter()
            y = orig(plan, x, start)
            _sync(rec._device)
            rec.forward_s += time.perf_counter() - t0
            rec.calls.append((plan, tuple(x.shape), x.dtype, bool(x.requires_grad and torch.is_grad_enabled()), start))
            return y

        TransportPlan.forward = forward  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        TransportPlan.forward = self._orig  # type: ignore[method-assign]


def transport_share(model: Predictor, x: torch.Tensor, y: torch.Tensor, cfg: BenchConfig, step_s: float,
                    opt: torch.optim.Optimizer) -> Dict[str, Any]:
    """Replay the plan calls of one training step, forward + backward, on the same shapes."""
    with PlanRecorder(cfg.device) as rec:
        _train_step(model, opt, x, y)
    calls = rec.calls
    g = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    inputs = [torch.randn(shape, generator=g, device=cfg.device, dtype=dt).requires_grad_(rg)
              for _, shape, dt, rg, _ in calls]
    grads = [torch.randn(shape, generator=g, device=cfg.device, dtype=dt) for _, shape, dt, _, _ in calls]

    def replay() -> None:
        for (plan, _, _, rg, start), inp, gout in zip(calls, inputs, grads):
            out = plan(inp, start)
            if rg:  # the backward a training step runs through this call (no grad accumulation)
                torch.autograd.grad(out, inp, gout)

    times = time_fn(replay, cfg.warmup, cfg.repeats, cfg.device)
    t = statistics.median(times)
    return {
        "transport_calls": len(calls),
        "transport_s": t,
        "transport_share": t / step_s if step_s > 0 else float("nan"),
        "transport_fwd_insitu_s": rec.forward_s,
    }


# ------------------------------------------------------------------------------------------------
# long inference
# ------------------------------------------------------------------------------------------------
def measure_inference(case: Case, cfg: BenchConfig, t_len: int, timed: bool = True) -> Dict[str, Any]:
    """``forward_with_state(x, return_sequence=False)`` under ``torch.no_grad`` for ``t_len`` frames."""
    model = build_model(case, cfg)
    rnn = model.rnn
    x, _ = make_data(cfg, t_len=t_len, seed=cfg.seed + 7)
    cuda = cfg.device.startswith("cuda")
    ignore = _module_tensors(model) + [x]
    res: Dict[str, Any] = {"case": case.key, "T": t_len, "mode": rnn.resolve_mode((cfg.grid, cfg.grid), cfg.device)}
    rss0 = _max_rss_bytes()
    with torch.no_grad():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            _, finals = rnn.forward_with_state(x, return_sequence=False)
            torch.cuda.synchronize()
            res["first_call_s"] = time.perf_counter() - t0
            res["peak_live_bytes"] = int(torch.cuda.max_memory_allocated() - base)
        else:
            t0 = time.perf_counter()
            with LiveTensorMeter(ignore) as live:
                _, finals = rnn.forward_with_state(x, return_sequence=False)
            res["first_call_s"] = time.perf_counter() - t0  # includes building the plans (and the meter)
            res["peak_live_bytes"] = int(live.peak)
        rss1 = _max_rss_bytes()
        h = finals[0].tensor
        res["finite"] = bool(torch.isfinite(h).all())
        res["state_bytes"] = int(h.numel() * h.element_size())
        res["input_bytes"] = int(x.numel() * x.element_size())
        res["rss_growth_bytes"] = None if rss0 is None else rss1 - rss0
        if timed:
            _sync(cfg.device)
            t0 = time.perf_counter()
            rnn.forward_with_state(x, return_sequence=False)
            _sync(cfg.device)
            res["warm_call_s"] = time.perf_counter() - t0
            res["ms_per_step"] = 1e3 * res["warm_call_s"] / t_len
    return res


# ------------------------------------------------------------------------------------------------
# the whole benchmark
# ------------------------------------------------------------------------------------------------
def _ratio(a: Optional[float], b: Optional[float]) -> float:
    if a is None or b is None or not b:
        return float("nan")
    return a / b


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run every case; returns a JSON-serialisable dict (rows, inference, ratios, targets, env)."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    env = environment(cfg)
    log(f"# {env['summary']}")
    x, y = make_data(cfg)
    rows: Dict[str, Dict[str, Any]] = {}
    cases = [c for c in build_cases(cfg) if cfg.cases is None or re.search(cfg.cases, c.key)]
    groups: Dict[Tuple[str, str], List[Case]] = {}
    for c in cases:
        groups.setdefault((c.family, c.field), []).append(c)
    for (family, fld), group in groups.items():
        t0 = time.perf_counter()
        models = {c.key: build_model(c, cfg) for c in group}
        timings = time_train_steps_interleaved(models, x, y, cfg)
        for c in group:
            model = models[c.key]
            timing = timings[c.key]
            opt = timing.pop("optimizer")
            row: Dict[str, Any] = {"case": asdict(c), **timing}
            row["resolved_mode"] = (model.rnn.resolve_mode((cfg.grid, cfg.grid), cfg.device)
                                    if c.impl == "fernn" else "-")
            if c.transport:
                row.update(transport_share(model, x, y, cfg, timing["step_s"], opt))
            if c.memory:
                row.update(measure_train_memory(model, x, y, cfg, opt))
            rows[c.key] = row
            log(f"#   {c.key:38s} step {1e3 * row['step_s']:9.2f} ms")
        log(f"# group {family}/{fld}: {len(group)} models, {time.perf_counter() - t0:.1f}s")
        del models, timings

    # derived per-row ratios
    for key, row in rows.items():
        c = row["case"]
        fam_fld = f"{'trans' if c['family'] == 'translation' else 'rot'}-{c['field']}"
        if c["impl"] == "fernn" and not c["grnn"] and not c["checkpoint"]:
            naive = rows.get(f"{fam_fld}-V{c['v']}-naive")
            row["vs_straightforward"] = _ratio(row["step_s"], naive["step_s"] if naive else None)
            row["vs_straightforward_min"] = _ratio(row["step_min_s"], naive["step_min_s"] if naive else None)
        if c["impl"] == "fernn" and not c["checkpoint"]:
            floor_key = f"{fam_fld}-V1-fernn" if c["family"] == "translation" else f"{fam_fld}-V1-grnn"
            floor = rows.get(floor_key)
            row["floor_s"] = floor["step_s"] * c["v"] if floor else None
            row["vs_floor"] = _ratio(row["step_s"], row["floor_s"])
            row["vs_floor_min"] = _ratio(row["step_min_s"], floor["step_min_s"] * c["v"] if floor else None)
        if c["checkpoint"]:
            base = rows.get(key[: -len("-ckpt")])
            if base is not None:
                row["ckpt_time_ratio"] = _ratio(row["step_s"], base["step_s"])
                base["checkpoint_memory_saved"] = _ratio(base.get("saved_bytes"), row.get("saved_bytes"))
                base["checkpoint_memory_live"] = _ratio(base.get("peak_live_bytes"), row.get("peak_live_bytes"))

    # long inference: T = t_short vs t_long
    inference = []
    inf_cases = [c for c in cases if cfg.inference and c.impl == "fernn" and not c.checkpoint and not c.grnn
                 and ((c.family == "translation" and c.field == "C4-regular" and c.v == 25) or c.family == "rotation")]
    for case in inf_cases:
        for t_len in (cfg.t_short, cfg.t_long):
            t0 = time.perf_counter()
            res = measure_inference(case, cfg, t_len, timed=(t_len == cfg.t_long))
            inference.append(res)
            log(f"#   inference {case.key:28s} T={t_len:5d} peak {res['peak_live_bytes'] / MiB:8.2f} MiB "
                f"({time.perf_counter() - t0:.1f}s)")

    tr = rows.get("trans-C4-regular-V25-fernn", {})
    ratios = {
        "vs_straightforward_translation": tr.get("vs_straightforward", float("nan")),
        # the default mode="auto" resolves to "comoving" for 45-degree (interpolated) rotations
        "vs_straightforward_rotation": rows.get(_auto_rotation_key(cfg), {}).get("vs_straightforward", float("nan")),
        "overhead_vs_floor": tr.get("vs_floor", float("nan")),
        "checkpoint_memory": tr.get("checkpoint_memory_saved", float("nan")),
    }
    metrics = dict(ratios)
    metrics["transport_share_v25"] = tr.get("transport_share", float("nan"))
    targets = {}
    for name, (metric, op, thr) in TARGETS.items():
        val = metrics.get(metric, float("nan"))
        ok = (val <= thr) if op == "<=" else (val >= thr)
        targets[name] = {"metric": metric, "value": val, "op": op, "threshold": thr, "pass": bool(ok)}
    return {
        "config": {k: v for k, v in asdict(cfg).items()},
        "env": env,
        "rows": rows,
        "inference": inference,
        "ratios": ratios,
        "transport_share_v25": metrics["transport_share_v25"],
        "targets": targets,
        "total_s": time.perf_counter() - t_start,
    }


def _auto_rotation_key(cfg: BenchConfig) -> str:
    """The rotation row of the mode ``mode="auto"`` picks for C8 45-degree flows."""
    gs, _, hidden_type = field_types("C8-regular", cfg.hidden_channels)
    rnn = FERNN(enn.FieldType(gs, [gs.trivial_repr]), hidden_type, FlowSet.rotations(gs, [-1, 0, 1]), mode="auto")
    return f"rot-C8-regular-V3-fernn-{rnn.resolve_mode((cfg.grid, cfg.grid), cfg.device)}"


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def environment(cfg: BenchConfig) -> Dict[str, Any]:
    dev = cfg.device
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev_name = torch.cuda.get_device_name(torch.device(dev))
    else:
        dev_name = _cpu_model() or platform.processor() or platform.machine()
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "escnn": getattr(escnn, "__version__", "?"),
        "numpy": np.__version__,
        "flow_escnn": getattr(flow_escnn, "__version__", "?"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": dev,
        "device_name": dev_name,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    env["summary"] = (
        f"torch {env['torch']} | escnn {env['escnn']} | numpy {env['numpy']} | python {env['python']} | "
        f"{dev} ({dev_name}) | torch threads {env['threads']} of {env['cpu_count']} cpus | "
        f"load avg {_fmt(env['loadavg'][0] if env['loadavg'] else None)} | "
        f"batch {cfg.batch} C {cfg.hidden_channels} grid {cfg.grid} T {cfg.t_in}+{cfg.t_out} "
        f"repeats {cfg.repeats} warmup {cfg.warmup}{' (quick)' if cfg.quick else ''}"
    )
    return env


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = ".2f", none: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return format(v, spec)


def format_table(res: Dict[str, Any]) -> str:
    hdr = (f"{'case':38s} {'mode':13s} {'|V|':>3s} {'step ms':>9s} {'min ms':>9s} {'/naive':>7s} {'(min)':>6s} "
           f"{'/|V|xGRNN':>9s} {'(min)':>6s} {'transp%':>7s} {'saved MiB':>9s} {'live MiB':>9s} {'RSS+ MiB':>8s}")
    lines = [hdr, "-" * len(hdr)]
    for key, r in res["rows"].items():
        c = r["case"]
        mode = r["resolved_mode"] + ("+ckpt" if c["checkpoint"] else "") if c["impl"] == "fernn" else "naive"
        share = r.get("transport_share")
        rss = r.get("rss_growth_bytes")
        lines.append(
            f"{key:38s} {mode:13s} {c['v']:3d} {1e3 * r['step_s']:9.2f} {1e3 * r['step_min_s']:9.2f} "
            f"{_fmt(r.get('vs_straightforward')):>7s} {_fmt(r.get('vs_straightforward_min')):>6s} "
            f"{_fmt(r.get('vs_floor')):>9s} {_fmt(r.get('vs_floor_min')):>6s} "
            f"{_fmt(None if share is None else 100 * share, '.1f'):>7s} "
            f"{_fmt(None if r.get('saved_bytes') is None else r['saved_bytes'] / MiB):>9s} "
            f"{_fmt(None if r.get('peak_live_bytes') is None else r['peak_live_bytes'] / MiB):>9s} "
            f"{_fmt(None if rss is None else rss / MiB, '.1f'):>8s}"
        )
    lines.append("")
    hdr2 = f"{'inference (no_grad, return_sequence=False)':44s} {'mode':9s} {'T':>5s} {'finite':>6s} {'peak MiB':>9s} {'state MiB':>9s} {'1st call s':>10s} {'ms/step':>8s}"
    lines += [hdr2, "-" * len(hdr2)]
    for r in res["inference"]:
        lines.append(
            f"{r['case']:44s} {r['mode']:9s} {r['T']:5d} {str(r['finite']):>6s} {r['peak_live_bytes'] / MiB:9.2f} "
            f"{r['state_bytes'] / MiB:9.3f} {r['first_call_s']:10.2f} {_fmt(r.get('ms_per_step')):>8s}"
        )
    lines.append("")
    for key, r in res["rows"].items():
        if "checkpoint_memory_saved" in r:
            ck = res["rows"][key + "-ckpt"]
            lines.append(
                f"checkpoint {key}: saved-for-backward {r['saved_bytes'] / MiB:.2f} -> {ck['saved_bytes'] / MiB:.2f} MiB "
                f"({r['checkpoint_memory_saved']:.2f}x), live peak {r['peak_live_bytes'] / MiB:.2f} -> "
                f"{ck['peak_live_bytes'] / MiB:.2f} MiB ({r['checkpoint_memory_live']:.2f}x), "
                f"step time x{ck['ckpt_time_ratio']:.2f}"
            )
    for key, r in res["rows"].items():
        if "transport_s" in r:
            lines.append(
                f"transport {key}: {r['transport_calls']} plan calls, replay fwd+bwd {1e3 * r['transport_s']:.2f} ms "
                f"= {100 * r['transport_share']:.1f}% of the step (in-situ fwd {1e3 * r['transport_fwd_insitu_s']:.2f} ms)"
            )
    lines.append("")
    for name, t in res["targets"].items():
        lines.append(f"target {'PASS' if t['pass'] else 'FAIL'}: {name} (measured {_fmt(t['value'], '.3f')})")
    lines.append(f"# total {res['total_s']:.1f}s")
    return "\n".join(lines)


def format_ratios(ratios: Dict[str, float]) -> str:
    """The final machine-readable line."""
    return "RATIOS " + " ".join(f"{k}={_fmt(ratios.get(k), '.4f', 'nan')}" for k in RATIO_KEYS)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def parse_args(argv: Optional[Sequence[str]] = None) -> BenchConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 4; quick 2)")
    p.add_argument("--hidden-channels", type=int, default=None,
                   help="channels per V slice, a multiple of 8 (default 16; quick 8)")
    p.add_argument("--grid", type=int, default=28, help="square grid size (default 28)")
    p.add_argument("--t-in", type=int, default=10, help="input frames (default 10)")
    p.add_argument("--t-out", type=int, default=10, help="predicted frames (default 10)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats, median reported (default 5; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 2; quick 1)")
    p.add_argument("--t-short", type=int, default=100, help="short inference length (default 100)")
    p.add_argument("--t-long", type=int, default=1000, help="long inference length (default 1000)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small batch/width, few repeats (< 2 min on 2 cores)")
    p.add_argument("--json", default=None, metavar="PATH", help="dump all results as JSON")
    p.add_argument("--cases", default=None, metavar="REGEX",
                   help="only run the training cases whose key matches (debugging; missing ratios print nan)")
    p.add_argument("--no-inference", action="store_true", help="skip the T=100/T=1000 inference rows")
    a = p.parse_args(argv)
    defaults = dict(batch=4, hidden_channels=16, repeats=5, warmup=2)
    if a.quick:
        defaults.update(QUICK)
    cfg = BenchConfig(
        device=a.device, grid=a.grid, t_in=a.t_in, t_out=a.t_out, t_short=a.t_short, t_long=a.t_long,
        threads=a.threads, seed=a.seed, quick=a.quick, json=a.json, cases=a.cases,
        inference=not a.no_inference,
        **{k: (getattr(a, k) if getattr(a, k) is not None else v) for k, v in defaults.items()},
    )
    if cfg.hidden_channels % 8:
        p.error(f"--hidden-channels must be a multiple of 8 (C4 and C8 regular fields), got {cfg.hidden_channels}")
    if cfg.t_in < 1 or cfg.t_out < 1 or cfg.batch < 1 or cfg.grid < 3 or cfg.repeats < 1 or cfg.warmup < 0:
        p.error("sizes must be positive (warmup >= 0)")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    cfg = parse_args(argv)
    res = run_benchmark(cfg)
    print(format_table(res))
    if cfg.json:
        with open(cfg.json, "w") as fh:
            json.dump(_jsonable(res), fh, indent=1)
        print(f"# wrote {cfg.json}")
    print(format_ratios(res["ratios"]), flush=True)
    return res


if __name__ == "__main__":
    main()
