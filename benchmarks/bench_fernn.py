"""Benchmark: a next-frame predictor's training step against its conv-only floor and a
straightforward implementation, plus determinism, mixed precision and memory.

Run from the repository root::

    python -m benchmarks.bench_fernn --threads 1                    # CPU targets (batch 8, 32 channels)
    python -m benchmarks.bench_fernn --quick --threads 1            # smaller, about a minute
    python -m benchmarks.bench_fernn --device cuda --batch 32 --hidden-channels 128

Every row trains a :class:`flow_escnn.models.NextFramePredictor` (``decoder_layers`` steerable
convs, max over V, 10 + 10 frames on a 28x28 torus, MSE on the predicted frames, Adam):

* ``fernn``: trivial fields, ``FlowSet.translations(gs, 2)`` (|V| = 25);
* ``grnn``: the same over ``FlowSet.identity`` (the G-RNN);
* ``rotation``: C8-regular fields, ``FlowSet.rotations(gs, [-2, -1, 0, 1, 2])`` (V = -90 .. 90
  degrees/frame in 45-degree steps, the configuration the rotation targets are set for;
  interpolated, co-moving mode);
  ``rotation-unbatched`` is the same step with all input frames convolved at once (the engine
  batches them by :data:`flow_escnn.nn._kernels.INPUT_BATCH_BYTES`);
* ``*-naive``: :class:`benchmarks.straightforward.StraightforwardPredictor` with the same weights
  (Python loop over V, escnn convs re-expanded every step);
* ``fernn-d1``, ``grnn-d1``, ``grnn-c8-d1``, ``rotation-d1``: the library configured as the paper's
  code for issue 26 (one decoder layer, no bias; ``grnn-c8``: C8-regular fields over
  ``FlowSet.identity``), each timed against its ``anchor-*`` row, a step of
  :mod:`benchmarks.paper_anchor` (the paper's own training step, re-implemented):
  ``vs_reference_translation``, ``vs_reference_rotation``, ``vs_reference_grnn``,
  ``vs_reference_grnn_c8``;
* ``world``: a :class:`flow_escnn.models.WorldModel` (FloWM: the fernn row's fields and V on a
  ``grid x grid`` map, a centred ``grid/2`` view, random moves of up to 2 pixels per sample and
  step, predictions fed back), its ``world_vs_floor`` measured like the others;
* ``volume``: the 3D FERNN (issue 24): the predictor on ``trivialOnR3`` with ``--volume-channels``
  trivial fields over ``FlowSet.translations(gs, 1)`` (|V| = 27) on a ``--volume-grid`` cube, blobs
  moving on the 3-torus, the same frames and decoder depth; ``volume_vs_floor`` against its
  ``conv3d`` floor.

For each model the *conv floor* is the same ``conv2d`` calls (recorded during one step)
timed alone, forward then backward (:class:`benchmarks.meters.ConvFloor`). Steps and
floors are timed round-robin (median of ``--repeats``), so load changes hit all alike.
The last line printed is machine readable::

    RATIOS fernn_vs_floor=<x> grnn_vs_floor=<x> rotation_vs_floor=<x> vs_straightforward_translation=<x> ...
        ... vs_reference_translation=<x> vs_reference_rotation=<x> vs_reference_grnn=<x> vs_reference_grnn_c8=<x>
        ... volume_vs_floor=<x>
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence
from unittest import mock

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import flow_escnn  # noqa: E402
from flow_escnn._compat import import_escnn  # noqa: E402
from flow_escnn.flows._flowset import FlowSet  # noqa: E402
from flow_escnn.flows._transport import GatherTransport  # noqa: E402
from flow_escnn.models import NextFramePredictor, WorldModel  # noqa: E402
from flow_escnn.nn import _kernels as nn_kernels  # noqa: E402

from benchmarks.meters import ConvFloor, ConvRecorder, LiveTensorMeter, SavedTensorMeter  # noqa: E402
from benchmarks.paper_anchor import AnchorStep, build_anchor  # noqa: E402
from benchmarks.straightforward import StraightforwardPredictor  # noqa: E402

escnn, _group, gspaces, enn = import_escnn()

__all__ = ["BenchConfig", "RATIO_KEYS", "TARGETS", "build_model", "make_data", "run_benchmark", "format_ratios", "main"]

MiB = 1024.0 ** 2
RATIO_KEYS = (
    "fernn_vs_floor",
    "grnn_vs_floor",
    "rotation_vs_floor",
    "vs_straightforward_translation",
    "vs_straightforward_rotation",
    "deterministic_vs_default",
    "amp_speedup",
    "checkpoint_memory",
    "rotation_transport_share",
    "bicubic_vs_bilinear_rotation",
    "cubic6_vs_bilinear_rotation",
    "unbatched_vs_batched_input_rotation",
    "world_vs_floor",
    "vs_reference_translation",
    "vs_reference_rotation",
    "vs_reference_grnn",
    "vs_reference_grnn_c8",
    "volume_vs_floor",
)
#: (ratio, comparison, threshold, device) ; device None = any
TARGETS = [
    ("fernn_vs_floor", "<=", 1.3, "cpu"),
    ("grnn_vs_floor", "<=", 1.2, "cpu"),
    ("fernn_vs_floor", "<=", 1.5, "cuda"),
    ("amp_speedup", ">=", 1.8, "cuda"),
    ("deterministic_vs_default", "<=", 1.2, "cuda"),
    ("vs_straightforward_rotation", "<=", 0.7, None),
    ("rotation_transport_share", "<=", 0.2, None),
    ("world_vs_floor", "<=", 1.3, "cpu"),
    # issue 26: this library's step / the paper's (benchmarks.paper_anchor), CPU
    ("vs_reference_translation", "<=", 0.45, "cpu"),
    ("vs_reference_rotation", "<=", 0.7, "cpu"),
    ("vs_reference_grnn", "<=", 0.95, "cpu"),
    ("vs_reference_grnn_c8", "<=", 0.95, "cpu"),
    # issue 24: the 3D FERNN step against its conv3d floor
    ("volume_vs_floor", "<=", 1.3, "cpu"),
]
#: each ``vs_reference_*`` ratio: (its library row, its anchor row), and the model kinds they build
#: (:func:`build_model`'s kind, :func:`benchmarks.paper_anchor.build_anchor`'s row)
REFERENCE_ROWS = {
    "vs_reference_translation": ("fernn-d1", "anchor-translation"),
    "vs_reference_rotation": ("rotation-d1", "anchor-rotation"),
    "vs_reference_grnn": ("grnn-d1", "anchor-grnn"),
    "vs_reference_grnn_c8": ("grnn-c8-d1", "anchor-grnn-c8"),
}
_REFERENCE_KINDS = {
    "vs_reference_translation": ("fernn", "translation"),
    "vs_reference_rotation": ("rotation", "rotation"),
    "vs_reference_grnn": ("grnn", "grnn"),
    "vs_reference_grnn_c8": ("grnn-c8", "grnn_c8"),
}
#: the paper's configuration of issue 26: one decoder layer, no bias
REFERENCE_DECODER_LAYERS = 1


@dataclass
class BenchConfig:
    device: str = "cpu"
    batch: int = 8
    hidden_channels: int = 32
    grid: int = 28
    t_in: int = 10
    t_out: int = 10
    decoder_layers: int = 4
    repeats: int = 3
    warmup: int = 1
    threads: Optional[int] = None
    seed: int = 0
    quick: bool = False
    json: Optional[str] = None
    volume_grid: int = 12
    volume_channels: int = 4


def build_model(kind: str, cfg: BenchConfig, **kwargs: Any) -> NextFramePredictor:
    """The predictor of a row, seeded.

    Args:
        kind: ``"fernn"`` (translations), ``"grnn"`` (trivial fields, ``FlowSet.identity``),
            ``"rotation"`` (C8-regular fields, rotations) or ``"grnn-c8"`` (C8-regular fields,
            ``FlowSet.identity``).
        cfg: the sizes (``decoder_layers`` unless given in ``kwargs``).
        **kwargs: passed to :class:`~flow_escnn.models.NextFramePredictor`; ``padding_mode`` is
            ``"circular"`` unless given, as the straightforward twins (:mod:`benchmarks.straightforward`)
            that these rows are compared with (the ``vs_reference_*`` rows pass the paper's padding).

    Returns:
        The model on ``cfg.device``.
    """
    kwargs.setdefault("decoder_layers", cfg.decoder_layers)
    kwargs.setdefault("padding_mode", "circular")
    if kind in ("rotation", "grnn-c8"):
        gs = gspaces.rot2dOnR2(8)
        hidden = enn.FieldType(gs, [gs.regular_repr] * max(1, cfg.hidden_channels // 8))
        if kind == "rotation":
            flows = FlowSet.rotations(gs, [-2, -1, 0, 1, 2])
            kwargs.setdefault("interpolation", "bilinear")  # the straightforward twin's and the paper's (grid_sample)
        else:
            flows = FlowSet.identity(gs)
    elif kind in ("fernn", "grnn"):
        gs = gspaces.trivialOnR2()
        hidden = enn.FieldType(gs, [gs.trivial_repr] * cfg.hidden_channels)
        flows = FlowSet.translations(gs, 2) if kind == "fernn" else FlowSet.identity(gs)
    else:
        raise ValueError(f"unknown row kind {kind!r}")
    torch.manual_seed(cfg.seed)
    model = NextFramePredictor(enn.FieldType(gs, [gs.trivial_repr]), hidden, flows, **kwargs)
    return model.to(cfg.device)


def reference_steps(cfg: BenchConfig, x: torch.Tensor, y: torch.Tensor,
                    keys: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The rows of the ``vs_reference_*`` ratios: the library configured as the paper's code (one
    decoder layer, no bias, the paper's padding: zeros in ``conv2d`` for the rotation and C8 G-RNN rows, as
    the library's default ``padding_mode="auto"`` for rotation flows and its experiment configs for a
    rotating task's G-RNN; circular for the translation rows) and the anchor (:mod:`benchmarks.paper_anchor`),
    per :data:`REFERENCE_ROWS` (``keys``: only those ratios' rows)."""
    steps: Dict[str, Any] = {}
    for key, (lib, anchor) in REFERENCE_ROWS.items():
        if keys is not None and key not in keys:
            continue
        kind, row = _REFERENCE_KINDS[key]
        padding = "zeros" if kind in ("rotation", "grnn-c8") else "circular"
        model = build_model(kind, cfg, decoder_layers=REFERENCE_DECODER_LAYERS, bias=False, padding_mode=padding)
        steps[lib] = Step(model, x, y)
        torch.manual_seed(cfg.seed)
        model = build_anchor(row, channels=cfg.hidden_channels, in_channels=x.shape[2],
                             decoder_layers=REFERENCE_DECODER_LAYERS).to(cfg.device)
        steps[anchor] = AnchorStep(model, x, y)
    return steps


def naive_twin(model: NextFramePredictor, cfg: BenchConfig) -> StraightforwardPredictor:
    twin = StraightforwardPredictor(model.in_type, model.hidden_type, model.flows.velocities, (cfg.grid, cfg.grid),
                                    decoder_layers=cfg.decoder_layers)
    return twin.load_from_predictor(model).to(cfg.device)


def make_data(cfg: BenchConfig) -> tuple:
    """Moving blobs on the torus: ``x [B, t_in, 1, H, W]``, ``y [B, t_out, 1, H, W]``."""
    g = torch.Generator().manual_seed(cfg.seed)
    b, n, t = cfg.batch, cfg.grid, cfg.t_in + cfg.t_out
    base = F.avg_pool2d(F.pad((torch.rand(b, 1, n, n, generator=g) < 0.08).float(), (1,) * 4, mode="circular"), 3, 1)
    vel = torch.randint(-2, 3, (b, 2), generator=g)
    frames = torch.stack([torch.stack([torch.roll(base[i] * 3, (-int(vel[i, 1]) * s, int(vel[i, 0]) * s), (-2, -1))
                                       for i in range(b)]) for s in range(t)], 1).clamp(0, 1)
    return frames[:, : cfg.t_in].contiguous().to(cfg.device), frames[:, cfg.t_in:].contiguous().to(cfg.device)


def build_volume_model(cfg: BenchConfig) -> NextFramePredictor:
    """The ``volume`` row's 3D FERNN predictor, seeded."""
    gs = gspaces.trivialOnR3()
    torch.manual_seed(cfg.seed)
    scalar = enn.FieldType(gs, [gs.trivial_repr])
    hidden = enn.FieldType(gs, [gs.trivial_repr] * cfg.volume_channels)
    model = NextFramePredictor(scalar, hidden, FlowSet.translations(gs, 1), decoder_layers=cfg.decoder_layers,
                               padding_mode="circular")
    return model.to(cfg.device)


def make_volume_data(cfg: BenchConfig) -> tuple:
    """Blobs moving on the 3-torus: ``x [B, t_in, 1, n, n, n]``, ``y [B, t_out, 1, n, n, n]`` (``n = volume_grid``)."""
    g = torch.Generator().manual_seed(cfg.seed)
    b, n, t = cfg.batch, cfg.volume_grid, cfg.t_in + cfg.t_out
    seeds = (torch.rand(b, 1, n, n, n, generator=g) < 0.05).float()
    base = F.avg_pool3d(F.pad(seeds, (1,) * 6, mode="circular"), 3, 1) * 3
    vel = torch.randint(-1, 2, (b, 3), generator=g)
    frames = torch.stack([torch.stack([torch.roll(base[i], tuple(int(s * v) for v in (-vel[i, 2], -vel[i, 1], vel[i, 0])),
                                                  (-3, -2, -1)) for i in range(b)]) for s in range(t)], 1).clamp(0, 1)
    return frames[:, : cfg.t_in].contiguous().to(cfg.device), frames[:, cfg.t_in:].contiguous().to(cfg.device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Step:
    """One training step (zero_grad, forward, MSE, backward, Adam) of a model, with options
    (``input_batch_bytes``: the engine's :data:`~flow_escnn.nn._kernels.INPUT_BATCH_BYTES` for this step)."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool = False,
                 deterministic: bool = False, input_batch_bytes: Optional[int] = None) -> None:
        self.model, self.x, self.y, self.amp, self.deterministic = model, x, y, amp, deterministic
        self.input_batch_bytes = input_batch_bytes
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.losses: List[float] = []

    def loss(self) -> torch.Tensor:
        dev = self.x.device.type
        ctx = torch.autocast(dev, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with ctx:
            pred = self.model(self.x, self.y.shape[1])
        return F.mse_loss(pred.float(), self.y)

    def __call__(self) -> None:
        prev = torch.are_deterministic_algorithms_enabled()
        batch_bytes = nn_kernels.INPUT_BATCH_BYTES if self.input_batch_bytes is None else self.input_batch_bytes
        torch.use_deterministic_algorithms(self.deterministic)
        try:
            with mock.patch.object(nn_kernels, "INPUT_BATCH_BYTES", batch_bytes):
                self.opt.zero_grad(set_to_none=True)
                loss = self.loss()
                loss.backward()
                self.opt.step()
                self.losses.append(float(loss.detach()))
        finally:
            torch.use_deterministic_algorithms(prev)


class WorldStep(Step):
    """A world model's training step: the views are the centred half of the frames, and every sample
    moves by its own random actions."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        v = model.view_size[0]
        o = (x.shape[-1] - v) // 2
        super().__init__(model, x[..., o : o + v, o : o + v].contiguous(), y[..., o : o + v, o : o + v].contiguous())
        g = torch.Generator().manual_seed(1)
        a = torch.randint(-2, 3, (x.shape[0], x.shape[1] + y.shape[1], 3), generator=g).double()
        a[..., 2] = 0
        self.actions = a.to(x.device)

    def loss(self) -> torch.Tensor:
        return F.mse_loss(self.model(self.x, self.actions, self.y.shape[1]), self.y)


def build_world_model(cfg: BenchConfig) -> WorldModel:
    """The ``world`` row's FloWM, seeded."""
    gs = gspaces.trivialOnR2()
    torch.manual_seed(cfg.seed)
    view = cfg.grid // 2 + (cfg.grid - cfg.grid // 2) % 2  # grid - view even: the view sits at the centre
    model = WorldModel(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.trivial_repr] * cfg.hidden_channels),
                       FlowSet.translations(gs, 2), cfg.grid, view, decoder_layers=cfg.decoder_layers)
    return model.to(cfg.device)


def record_floor(step: Step) -> ConvFloor:
    with ConvRecorder() as rec:
        step()
    return ConvFloor(rec.calls)


def time_round_robin(fns: Dict[str, Callable[[], None]], cfg: BenchConfig) -> Dict[str, List[float]]:
    """Seconds per call of every function, ``repeats`` rounds after ``warmup``, start rotating per round."""
    keys = list(fns)
    for k in keys:
        for _ in range(cfg.warmup):
            fns[k]()
    times: Dict[str, List[float]] = {k: [] for k in keys}
    for r in range(cfg.repeats):
        for i in range(len(keys)):
            k = keys[(i + r) % len(keys)]
            _sync(cfg.device)
            t0 = time.perf_counter()
            fns[k]()
            _sync(cfg.device)
            times[k].append(time.perf_counter() - t0)
    return times


def measure_memory(step: Step) -> Dict[str, int]:
    """Saved-for-backward bytes and the live peak (CPU: tracked storages; CUDA: max allocated)."""
    step.opt.zero_grad(set_to_none=True)
    cuda = step.x.is_cuda
    ignore = list(step.model.parameters()) + [step.x, step.y]
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    live = contextlib.nullcontext() if cuda else LiveTensorMeter(ignore)
    with live:
        with SavedTensorMeter() as saved:
            loss = step.loss()
        loss.backward()
        del loss
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else live.peak
    step.opt.zero_grad(set_to_none=True)
    return {"saved_bytes": saved.bytes, "peak_bytes": int(peak)}


def transport_share(step: Step, step_s: float, cfg: BenchConfig) -> float:
    """Replay every transport call of one step alone (forward + backward) / the step time."""
    calls = []
    orig = GatherTransport.forward

    def rec(self: GatherTransport, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append((self, torch.randn(x.shape, device=x.device, dtype=x.dtype).requires_grad_(x.requires_grad),
                      args, kwargs))
        return orig(self, x, *args, **kwargs)

    with mock.patch.object(GatherTransport, "forward", rec):
        step()

    def replay() -> None:
        for plan, x, args, kwargs in calls:
            y = plan(x, *args, **kwargs)
            if x.requires_grad:
                torch.autograd.grad(y, x, torch.ones_like(y))

    times = time_round_robin({"replay": replay}, cfg)["replay"]
    return statistics.median(times) / step_s


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    x, y = make_data(cfg)
    steps: Dict[str, Any] = {}  # Step, WorldStep, AnchorStep: callables with ``losses``
    for kind in ("fernn", "grnn", "rotation"):
        model = build_model(kind, cfg)
        steps[kind] = Step(model, x, y)
        if kind != "grnn":
            steps[f"{kind}-naive"] = Step(naive_twin(model, cfg), x, y)
    steps["fernn-deterministic"] = Step(build_model("fernn", cfg), x, y, deterministic=True)
    steps["fernn-amp"] = Step(build_model("fernn", cfg), x, y, amp=True)
    steps["fernn-checkpoint"] = Step(build_model("fernn", cfg, checkpoint=True), x, y)
    steps["rotation-bicubic"] = Step(build_model("rotation", cfg, interpolation="bicubic"), x, y)
    steps["rotation-cubic6"] = Step(build_model("rotation", cfg, interpolation="cubic6"), x, y)
    steps["rotation-unbatched"] = Step(build_model("rotation", cfg), x, y, input_batch_bytes=1 << 62)
    steps["world"] = WorldStep(build_world_model(cfg), x, y)
    steps.update(reference_steps(cfg, x, y))
    steps["volume"] = Step(build_volume_model(cfg), *make_volume_data(cfg))
    floors = {f"{k}-floor": record_floor(steps[k]) for k in ("fernn", "grnn", "rotation", "world", "volume")}
    fns: Dict[str, Callable[[], None]] = {**steps, **floors}
    log(f"# timing {len(fns)} functions x {cfg.repeats} repeats (+{cfg.warmup} warm-up) ...")
    times = time_round_robin(fns, cfg)
    med = {k: statistics.median(v) for k, v in times.items()}
    mem = {k: measure_memory(steps[k]) for k in ("fernn", "fernn-checkpoint")}
    share = transport_share(steps["rotation"], med["rotation"], cfg)
    ratios = {
        "fernn_vs_floor": med["fernn"] / med["fernn-floor"],
        "grnn_vs_floor": med["grnn"] / med["grnn-floor"],
        "rotation_vs_floor": med["rotation"] / med["rotation-floor"],
        "vs_straightforward_translation": med["fernn"] / med["fernn-naive"],
        "vs_straightforward_rotation": med["rotation"] / med["rotation-naive"],
        "deterministic_vs_default": med["fernn-deterministic"] / med["fernn"],
        "amp_speedup": med["fernn"] / med["fernn-amp"],
        "checkpoint_memory": mem["fernn"]["peak_bytes"] / mem["fernn-checkpoint"]["peak_bytes"],
        "rotation_transport_share": share,
        "bicubic_vs_bilinear_rotation": med["rotation-bicubic"] / med["rotation"],
        "cubic6_vs_bilinear_rotation": med["rotation-cubic6"] / med["rotation"],
        "unbatched_vs_batched_input_rotation": med["rotation-unbatched"] / med["rotation"],
        "world_vs_floor": med["world"] / med["world-floor"],
        "volume_vs_floor": med["volume"] / med["volume-floor"],
        **{key: med[lib] / med[anchor] for key, (lib, anchor) in REFERENCE_ROWS.items()},
    }
    dev = "cuda" if cfg.device.startswith("cuda") else "cpu"
    targets = []
    for key, op, thr, on in TARGETS:
        if on in (None, dev):
            v = ratios[key]
            targets.append({"ratio": key, "target": f"{op} {thr}", "value": v,
                            "pass": v <= thr if op == "<=" else v >= thr})
    return {
        "config": asdict(cfg), "env": environment(cfg), "times": times, "median_s": med, "memory": mem,
        "floor_convs": {k: len(f) for k, f in floors.items()}, "ratios": ratios, "targets": targets,
        "losses_finite": {k: all(l == l and abs(l) < float("inf") for l in s.losses) for k, s in steps.items()},
        "total_s": time.perf_counter() - t_start,
    }


def environment(cfg: BenchConfig) -> Dict[str, Any]:
    if cfg.device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(cfg.device))
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), name)
        except OSError:
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "summary": (f"torch {torch.__version__} | escnn {getattr(escnn, '__version__', '?')} | "
                    f"flow_escnn {flow_escnn.__version__} | python {platform.python_version()} | {cfg.device} ({name}) | "
                    f"torch threads {torch.get_num_threads()} of {os.cpu_count()} cpus | load avg {load:.2f} | "
                    f"batch {cfg.batch} C {cfg.hidden_channels} grid {cfg.grid} T {cfg.t_in}+{cfg.t_out} "
                    f"decoder {cfg.decoder_layers} repeats {cfg.repeats}{' (quick)' if cfg.quick else ''}"),
        "threads": torch.get_num_threads(),
        "device_name": name,
    }


def format_report(res: Dict[str, Any]) -> str:
    lines = [f"# {res['env']['summary']}", f"{'row':24s} {'median ms':>10s} {'min ms':>9s}", "-" * 45]
    for k, v in res["times"].items():
        lines.append(f"{k:24s} {1e3 * res['median_s'][k]:10.1f} {1e3 * min(v):9.1f}")
    for k, m in res["memory"].items():
        lines.append(f"memory {k}: saved {m['saved_bytes'] / MiB:.1f} MiB, peak {m['peak_bytes'] / MiB:.1f} MiB")
    for t in res["targets"]:
        lines.append(f"target {'PASS' if t['pass'] else 'FAIL'}: {t['ratio']} {t['target']} (measured {t['value']:.3f})")
    lines.append(f"# total {res['total_s']:.1f} s")
    return "\n".join(lines)


def format_ratios(ratios: Dict[str, float]) -> str:
    """The final machine-readable line."""
    return "RATIOS " + " ".join(f"{k}={ratios[k]:.4f}" for k in RATIO_KEYS)


def parse_args(argv: Optional[Sequence[str]] = None) -> BenchConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 8; quick 2)")
    p.add_argument("--hidden-channels", type=int, default=None,
                   help="channels per V slice, a multiple of 8 (default 32; quick 16)")
    p.add_argument("--grid", type=int, default=28)
    p.add_argument("--t-in", type=int, default=10)
    p.add_argument("--t-out", type=int, default=10)
    p.add_argument("--decoder-layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="timed rounds, median reported (default 3)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (use 1 on a shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="batch 2, 16 channels")
    p.add_argument("--json", default=None, metavar="PATH", help="dump all results as JSON")
    p.add_argument("--volume-grid", type=int, default=None, help="side of the volume row's cube (default 12; quick 8)")
    p.add_argument("--volume-channels", type=int, default=4, help="trivial fields per V slice of the volume row")
    a = p.parse_args(argv)
    cfg = BenchConfig(
        device=a.device, batch=a.batch or (2 if a.quick else 8),
        hidden_channels=a.hidden_channels or (16 if a.quick else 32),
        grid=a.grid, t_in=a.t_in, t_out=a.t_out, decoder_layers=a.decoder_layers, repeats=a.repeats, warmup=a.warmup,
        threads=a.threads, seed=a.seed, quick=a.quick, json=a.json,
        volume_grid=a.volume_grid or (8 if a.quick else 12), volume_channels=a.volume_channels,
    )
    if cfg.hidden_channels % 8:
        p.error(f"--hidden-channels must be a multiple of 8 (C8-regular fields), got {cfg.hidden_channels}")
    if min(cfg.t_in, cfg.t_out, cfg.batch, cfg.repeats, cfg.volume_channels) < 1 or min(cfg.grid, cfg.volume_grid) < 3 \
            or cfg.warmup < 0 or cfg.decoder_layers < 0:
        p.error("sizes must be positive (warmup, decoder layers >= 0, grid and volume grid >= 3)")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda requested but torch.cuda.is_available() is False")
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    cfg = parse_args(argv)
    res = run_benchmark(cfg)
    print(format_report(res))
    if cfg.json:
        with open(cfg.json, "w") as fh:
            json.dump({k: v for k, v in res.items()}, fh, indent=1, default=str)
        print(f"# wrote {cfg.json}")
    print(format_ratios(res["ratios"]), flush=True)
    return res


if __name__ == "__main__":
    main()
