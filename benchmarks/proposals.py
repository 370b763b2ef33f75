"""Prototypes of proposed flow_escnn changes, measured against the library on the same weights.

Nothing here is imported by flow_escnn; it re-implements the one-layer FERNN recurrence of
``flow_escnn.nn.sequence.FlowRNN.forward_with_state`` (hidden mode, grid-exact flows) with
the changes proposed in benchmarks/README.md, reusing the library's cell, filters and
transport tables, and checks that it computes the same hidden states:

* **P1** ``u.unbind(1)`` instead of ``u[:, t]`` in the time loop: the backward of ``u[:, t]``
  fills a zero tensor of the *whole* ``u`` and adds it into ``u``'s gradient at every step,
  O(T^2) work (``u`` is ``[B, T, V, G*C, H, W]`` in comoving mode); ``unbind`` is O(T).
* **P2** transport and circular padding fused into one gather: the step plan's spatial table
  is re-indexed onto the padded grid and combined with the fiber permutation into one flat
  index over ``C*(H+2p)*(W+2p)``, so ``F.pad(mode="circular")`` (about 15 small ops forward
  and backward per step) disappears and the convolution runs with ``padding=0``.
* **P3** checkpointing segments of ``k`` steps instead of every step: only every k-th state
  is kept for backward (the per-step activations of this recurrence are only ~2.15 states,
  of which the state itself is one, so per-step checkpointing cannot save more than ~2x).
* **P5** an option to pool over V (max, the paper's readout) inside the time loop, so the
  lifted sequence ``[B, T, V, C, H, W]`` and its gradient are never materialised; with it the
  *live* peak (not only the saved activations) follows the checkpointing savings.
* **P4** inference (``return_sequence=False``) computes the input term ``U * f_t`` in chunks of
  frames, so memory no longer grows with T.

Run ``python -m benchmarks.proposals [--quick] [--threads 1]`` from the repository root.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.checkpoint import checkpoint as _checkpoint  # noqa: E402

from benchmarks.bench_fernn import (  # noqa: E402
    MiB,
    BenchConfig,
    LiveTensorMeter,
    Predictor,
    _module_tensors,
    _train_step,
    build_cases,
    build_model,
    make_data,
    measure_train_memory,
    time_train_steps_interleaved,
)

__all__ = ["FusedPadTransport", "ProposedFERNN", "compare", "main"]


class FusedPadTransport:
    """``F.pad(plan(h), p, mode="circular")`` as a single gather (exact permutation plans only).

    ``__call__(h [B, M, C, H, W])`` returns ``[B*M, C, H+2p, W+2p]``.
    """

    def __init__(self, plan: Any, pad: int) -> None:
        if not plan.exact or not plan.fiber_is_permutation:
            raise ValueError("FusedPadTransport needs a grid-exact plan with a permutation fiber action")
        m, c, (h, w) = plan.num_slices, plan.channels, plan.grid_shape
        hp, wp = h + 2 * pad, w + 2 * pad
        rows = (torch.arange(hp) - pad) % h
        cols = (torch.arange(wp) - pad) % w
        padmap = (rows[:, None] * w + cols[None, :]).reshape(-1).to(plan.idx.device)  # padded pixel -> pixel
        spatial = plan.idx.view(m, h * w)[:, padmap]  # [M, Hp*Wp] source pixel of each padded pixel
        if plan.fiber_identity:
            fiber = torch.arange(c, device=spatial.device).view(1, c).expand(m, c)
        else:
            fiber = plan.perm  # y[o] = x[perm[o]]
        # the fiber permutation acts after the spatial gather; both are per-slice gathers, so they
        # combine into one index over the flattened (C, H*W) axis
        self.index = (fiber.view(m, c, 1) * (h * w) + spatial.view(m, 1, hp * wp)).reshape(m, c * hp * wp)
        self.m, self.c, self.h, self.w, self.hp, self.wp = m, c, h, w, hp, wp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        idx = self.index.view(1, self.m, -1).expand(b, -1, -1)
        y = torch.gather(x.reshape(b, self.m, self.c * self.h * self.w), 2, idx)
        return y.view(b * self.m, self.c, self.hp, self.wp)


class ProposedFERNN(torch.nn.Module):
    """One-layer FERNN forward with proposals P1-P4, sharing ``fernn``'s parameters.

    Args:
        fernn: a one-layer ``flow_escnn.nn.FERNN`` (hidden mode, grid-exact flows, relu).
        segment: P3, checkpoint segments of this many steps (None: no checkpointing).
        fused_pad: P2 on/off (P1 is always on).
        chunk: P4, frames per input-term chunk when ``return_sequence=False``.
        pool_v: P5, return ``max over V`` of each step's state, ``[B, T, C, H, W]``, pooled inside
            the loop (the readout of the paper), instead of the lifted sequence ``[B, T, V, C, H, W]``.
    """

    def __init__(self, fernn: Any, segment: Optional[int] = None, fused_pad: bool = True, chunk: int = 32,
                 pool_v: bool = False) -> None:
        super().__init__()
        if fernn.num_layers != 1:
            raise ValueError("the prototype covers one layer")
        self.fernn = fernn
        self.segment = segment
        self.fused_pad = fused_pad
        self.chunk = chunk
        self.pool_v = pool_v
        self._fused: Dict[Tuple[Any, ...], FusedPadTransport] = {}

    def _transport_pad(self, grid: Tuple[int, int], device: torch.device) -> Any:
        cell = self.fernn.cells[0]
        plan = cell.step_plan(grid, device)
        p = cell.W.kernel_size // 2
        if self.fused_pad:
            key = (grid, str(device))
            if key not in self._fused:
                self._fused[key] = FusedPadTransport(plan, p)
            return self._fused[key]

        def unfused(h: torch.Tensor) -> torch.Tensor:
            b, v, c, hh, ww = h.shape
            return F.pad(plan(h).reshape(b * v, c, hh, ww), (p, p, p, p), mode="circular")

        return unfused

    def _step(self, tp: Any, wfilt: torch.Tensor, h: torch.Tensor, u_t: torch.Tensor) -> torch.Tensor:
        b, v, c, hh, ww = h.shape
        w = F.conv2d(tp(h), wfilt).view(b, v, -1, hh, ww)
        return torch.relu(w + u_t.unsqueeze(1))

    def _segment(self, tp: Any, wfilt: torch.Tensor, h: torch.Tensor, *us: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        outs = []
        for u_t in us:
            h = self._step(tp, wfilt, h, u_t)
            outs.append(h.max(dim=1).values if self.pool_v else h)
        return h, torch.stack(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.forward_with_state(x, return_sequence=True)
        return seq

    def forward_with_state(self, x: torch.Tensor, return_sequence: bool = True) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        cell = self.fernn.cells[0]
        if self.fernn.resolve_mode(tuple(x.shape[-2:]), x.device) != "hidden" or cell.nonlinearity != "relu":
            raise ValueError("the prototype covers hidden mode (grid-exact flows) with relu")
        b, t_len = x.shape[:2]
        grid = (x.shape[-2], x.shape[-1])
        ufilt, ubias = cell.U.expand()
        wfilt, _ = cell.W.expand()
        tp = self._transport_pad(grid, x.device)
        h = cell.zero_state(b, grid, x)[0]
        if not return_sequence:  # P4: chunked input term, nothing of size T kept
            for t0 in range(0, t_len, self.chunk):
                for u_t in cell.input_term(x[:, t0:t0 + self.chunk], ufilt, ubias).unbind(1):
                    h = self._step(tp, wfilt, h, u_t)
            return None, h
        us = cell.input_term(x, ufilt, ubias).unbind(1)  # P1
        if self.segment is None or not torch.is_grad_enabled():
            h, seq = self._segment(tp, wfilt, h, *us)
            return seq, h
        pieces = []
        for t0 in range(0, t_len, self.segment):  # P3
            h, piece = _checkpoint(self._segment, tp, wfilt, h, *us[t0:t0 + self.segment], use_reentrant=False)
            pieces.append(piece)
        return torch.cat(pieces, dim=1), h


# ------------------------------------------------------------------------------------------------
def _case(key: str, cfg: BenchConfig) -> Any:
    return next(c for c in build_cases(cfg) if c.key == key)


def _proposed_predictor(base: Predictor, cfg: BenchConfig, **kw: Any) -> Predictor:
    """A predictor sharing ``base``'s FERNN and readout weights (copied), with ProposedFERNN."""
    import copy

    model = Predictor(ProposedFERNN(copy.deepcopy(base.rnn), **kw), base.readout.in_channels, cfg.t_in, False)
    if kw.get("pool_v"):
        model.hidden = model.rnn  # type: ignore[method-assign]
        model.forward = lambda x: _pooled_readout(model, x)  # type: ignore[method-assign]
    model.readout.load_state_dict(base.readout.state_dict())
    return model.to(cfg.device)


def _pooled_readout(model: Predictor, x: torch.Tensor) -> torch.Tensor:
    pooled = model.rnn(x)[:, model.t_in:]  # [B, t_out, C, H, W], already max over V
    b, t, c, hh, ww = pooled.shape
    return model.readout(pooled.reshape(b * t, c, hh, ww)).reshape(b, t, 1, hh, ww)


def _peak_inference(fn: Any, ignore: Sequence[torch.Tensor]) -> int:
    with torch.no_grad(), LiveTensorMeter(ignore) as live:
        fn()
    return int(live.peak)


def compare(cfg: BenchConfig, segments: Sequence[int] = (2, 4, 5), t_long: int = 1000, log: Any = print) -> Dict[str, Any]:
    """Library vs proposals: equality, step time, activation memory, inference memory."""
    out: Dict[str, Any] = {}
    x, y = make_data(cfg)
    for key in ("trans-C4-regular-V25-fernn",):
        base = build_model(_case(key, cfg), cfg)
        ckpt = build_model(_case(key + "-ckpt", cfg), cfg)
        p12 = _proposed_predictor(base, cfg)
        p1 = _proposed_predictor(base, cfg, fused_pad=False)
        with torch.no_grad():
            ref = base.hidden(x)
            err = max(float((m.hidden(x) - ref).abs().max()) for m in (p12, p1))
            pooled = _proposed_predictor(base, cfg, pool_v=True)
            err = max(err, float((pooled(x) - base(x)).abs().max()))
        log(f"# {key}: max |h_proposed - h_library| = {err:.2e}")
        models = {"library": base, "library ckpt/step": ckpt, "P1 unbind": p1, "P1+P2 unbind+fused pad": p12}
        for k in segments:
            models[f"P1+P2+P3 segment k={k}"] = _proposed_predictor(base, cfg, segment=k)
        models["P1+P2+P5 pool V in loop"] = _proposed_predictor(base, cfg, pool_v=True)
        for k in segments:
            models[f"P1+P2+P3+P5 k={k}"] = _proposed_predictor(base, cfg, segment=k, pool_v=True)
        timings = time_train_steps_interleaved(models, x, y, cfg)
        rows = {}
        for name, model in models.items():
            opt = timings[name].pop("optimizer")
            mem = measure_train_memory(model, x, y, cfg, opt)
            rows[name] = {**timings[name], **mem}
        lib = rows["library"]
        log(f"{'variant':30s} {'step ms':>8s} {'min ms':>8s} {'vs lib':>7s} {'saved MiB':>9s} {'live MiB':>9s} "
            f"{'saved x':>7s} {'live x':>7s}")
        for name, r in rows.items():
            log(f"{name:30s} {1e3 * r['step_s']:8.2f} {1e3 * r['step_min_s']:8.2f} {r['step_s'] / lib['step_s']:7.2f} "
                f"{r['saved_bytes'] / MiB:9.2f} {r['peak_live_bytes'] / MiB:9.2f} "
                f"{lib['saved_bytes'] / r['saved_bytes']:7.2f} {lib['peak_live_bytes'] / r['peak_live_bytes']:7.2f}")
        out[key] = {"max_abs_err": err, "rows": {n: {k: v for k, v in r.items()} for n, r in rows.items()}}

        # P4: inference memory, T = t_long // 10 vs t_long
        inf = {}
        for t_len in (max(1, t_long // 10), t_long):
            xl, _ = make_data(cfg, t_len=t_len, seed=cfg.seed + 7)
            ign = _module_tensors(base) + [xl]
            lib_peak = _peak_inference(lambda: base.rnn.forward_with_state(xl, return_sequence=False), ign)
            p4_peak = _peak_inference(lambda: p12.rnn.forward_with_state(xl, return_sequence=False), ign)
            with torch.no_grad():
                _, fl = base.rnn.forward_with_state(xl, return_sequence=False)
                _, fp = p12.rnn.forward_with_state(xl, return_sequence=False)
            d = float((fl[0].tensor - fp).abs().max() / fl[0].tensor.abs().max().clamp_min(1e-30))
            inf[t_len] = {"library_peak_bytes": lib_peak, "proposed_peak_bytes": p4_peak, "max_rel_err": d}
            log(f"inference T={t_len:5d}: library peak {lib_peak / MiB:8.2f} MiB, P4 chunked peak {p4_peak / MiB:8.2f} MiB "
                f"(final states: max |diff| / max |h| = {d:.1e})")
        out[key]["inference"] = inf
    return out


def _time(fn: Any, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def micro(cfg: BenchConfig, repeats: int = 15, log: Any = print) -> Dict[str, float]:
    """Isolated forward + backward timings of the pieces the proposals replace (median, seconds)."""
    from flow_escnn.flows.transport import TransportPlan

    from benchmarks.bench_fernn import field_types
    from benchmarks.straightforward import _rotation_grid
    from flow_escnn import FlowSet

    res: Dict[str, float] = {}
    b, n, t_len = cfg.batch, cfg.grid, cfg.t_total

    def fwd_bwd(f: Any, x: torch.Tensor) -> Any:
        g = torch.randn_like(f(x))
        return lambda: torch.autograd.grad(f(x), x, g)

    # translation step transport, |V| = 25, C4-regular
    gs, _, ht = field_types("C4-regular", cfg.hidden_channels)
    plan = TransportPlan(ht, FlowSet.translations(gs, 2).elements(1), (n, n))
    m, c = plan.num_slices, plan.channels
    x = torch.randn(b, m, c, n, n, requires_grad=True)
    fused = FusedPadTransport(plan, 1)
    res["trans_plan"] = _time(fwd_bwd(plan, x), repeats)
    res["trans_pad"] = _time(fwd_bwd(lambda z: F.pad(z.reshape(b * m, c, n, n), (1, 1, 1, 1), mode="circular"), x), repeats)
    res["trans_plan_then_pad"] = _time(fwd_bwd(
        lambda z: F.pad(plan(z).reshape(b * m, c, n, n), (1, 1, 1, 1), mode="circular"), x), repeats)
    res["trans_fused_pad_gather"] = _time(fwd_bwd(fused, x), repeats)

    # comoving input transport, C8-regular, 45 degrees, T * |V| slices
    gs8, _, ht8 = field_types("C8-regular", cfg.hidden_channels)
    fs = FlowSet.rotations(gs8, [-1, 0, 1])
    els = [g.psi(-t) for t in range(t_len) for g in fs]
    plan8 = TransportPlan(ht8, els, (n, n))
    m8, c8 = len(els), ht8.size
    x8 = torch.randn(b, m8, c8, n, n, requires_grad=True)
    angles = [math.atan2(e.matrix[1, 0], e.matrix[0, 0]) for e in els]
    pad = max(_rotation_grid(a, n, n)[0] for a in angles)
    # every slice's grid re-expressed on the input padded by the common `pad`: [M, H, W, 2]
    grid = torch.cat([((g_a + 1) * (n + 2 * p_a - 1) / 2.0 - p_a + pad) * 2.0 / (n + 2 * pad - 1) - 1
                      for p_a, g_a in (_rotation_grid(a, n, n) for a in angles)])
    perms = torch.stack([torch.as_tensor(np.argmax(np.round(np.asarray(ht8.representation(e.g))), 1)) for e in els])
    flat_perm = (torch.arange(m8).view(m8, 1) * c8 + perms).reshape(-1)

    def gs_transport(z: torch.Tensor) -> torch.Tensor:
        zp = F.pad(z.reshape(b * m8, c8, n, n), (pad,) * 4, mode="circular")
        y = F.grid_sample(zp, grid.repeat(b, 1, 1, 1), mode="bilinear", padding_mode="zeros", align_corners=True)
        return y.reshape(b, m8 * c8, n, n).index_select(1, flat_perm).reshape(b, m8, c8, n, n)

    with torch.no_grad():
        res["rot_grid_sample_max_abs_diff"] = float((gs_transport(x8) - plan8(x8)).abs().max())
    res["rot_comoving_plan"] = _time(fwd_bwd(plan8, x8), repeats)
    res["rot_comoving_grid_sample"] = _time(fwd_bwd(gs_transport, x8), repeats)

    # P1: the time loop's slicing of the (comoving) input term
    u = torch.randn(b, t_len, len(fs), c8, n, n, requires_grad=True)
    res["select_loop_bwd"] = _time(lambda: torch.autograd.grad(sum(u[:, t].sum() for t in range(t_len)), u), repeats)
    res["unbind_loop_bwd"] = _time(lambda: torch.autograd.grad(sum(s.sum() for s in u.unbind(1)), u), repeats)
    for k, v in res.items():
        log(f"micro {k:32s} {v * 1e3:9.3f} ms" if "diff" not in k else f"micro {k:32s} {v:9.2e}")
    return res


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description="flow_escnn proposals vs the library (same weights)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--hidden-channels", type=int, default=None)
    p.add_argument("--grid", type=int, default=28)
    p.add_argument("--t-in", type=int, default=10)
    p.add_argument("--t-out", type=int, default=10)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--t-long", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    d = dict(batch=1, hidden_channels=8, repeats=3) if a.quick else dict(batch=4, hidden_channels=16, repeats=5)
    cfg = BenchConfig(
        batch=a.batch or d["batch"], hidden_channels=a.hidden_channels or d["hidden_channels"], grid=a.grid,
        t_in=a.t_in, t_out=a.t_out, repeats=a.repeats or d["repeats"], warmup=1, quick=a.quick,
    )
    print(f"# torch {torch.__version__} | threads {torch.get_num_threads()} | batch {cfg.batch} C {cfg.hidden_channels} "
          f"grid {cfg.grid} T {cfg.t_in}+{cfg.t_out} repeats {cfg.repeats}")
    out = compare(cfg, t_long=a.t_long)
    out["micro"] = micro(cfg)
    return out


if __name__ == "__main__":
    main()
