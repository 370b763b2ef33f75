"""PNG figures of next-frame experiments (matplotlib's Agg canvas; no pyplot, no global backend).

* :func:`plot_mse_per_step` -- per-step MSE over the extended horizon (length generalisation);
* :func:`plot_mse_vs_velocity` -- MSE against speed, seen vs unseen velocities, plus a
  :math:`(v_x, v_y)` heat map per model for translations (velocity generalisation);
* :func:`plot_val_curves` -- validation MSE against optimisation step;
* :func:`plot_predictions` -- input / target / predicted frames of each model (the title names
  the predicted frames shown, computed from them);
* :func:`plot_moving_frame` -- hidden states in the frame moving with the input,
  :math:`\\psi_t(\\nu)^{-1} h_t(\\nu)` (as in the paper's figure): a FERNN slice whose
  :math:`\\nu` matches the input's velocity stays still, a G-RNN state does not;
* :func:`write_plots` -- all of the above for one or several trained models;
* :func:`plot_rollout` -- a world model's rollout: the world with the agent's window, the true
  view and each model's prediction at chosen steps;
* :func:`write_world_plots` -- the figures of world models (rollout MSE per step of every model on
  one axis, the rollout strip, validation curves).

Every ``plot_*`` function has a ``*_figure`` twin that returns the :class:`~matplotlib.figure.Figure`
unsaved. Image grids use constrained layout (row labels horizontal, left of each row, inside the
figure) and carry colour bars; a log axis whose range spans less than a decade gets plain-number
ticks instead of labels like :math:`1.6375\\times10^{-1}`.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from flow_escnn.experiments._config import ExperimentConfig, velocity_key, velocity_speed
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.flows._planar import steps_per_turn
from flow_escnn.flows._transport import TransportPlan

__all__ = [
    "plot_mse_per_step",
    "mse_per_step_figure",
    "plot_mse_vs_velocity",
    "mse_vs_velocity_figure",
    "plot_val_curves",
    "val_curves_figure",
    "plot_predictions",
    "predictions_figure",
    "frames_label",
    "prediction_columns",
    "moving_frame_states",
    "plot_moving_frame",
    "moving_frame_figure",
    "write_plots",
    "plot_rollout",
    "rollout_figure",
    "write_world_plots",
]

logger = logging.getLogger(__name__)

_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def _figure(figsize: Tuple[float, float]) -> Figure:
    """A figure with constrained layout: every label inside it, none overlapping another."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # a canvas of its own: draw() and text extents work without pyplot
    return fig


def _save(fig: Figure, path: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    logger.info("wrote %s", path)
    return path


def _positive(values: Sequence[float]) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float64), 1e-12)


def _plain(ticks: Sequence[float]) -> List[str]:
    """The shortest ``{:g}`` spelling (up to 6 digits) that keeps the ticks distinct and exact."""
    for digits in range(1, 7):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels) and all(np.isclose(float(a), t, rtol=1e-9, atol=0) for a, t in
                                                   zip(labels, ticks)):
            return labels
    return [f"{t:.6g}" for t in ticks]


def _log_y(ax: Any) -> None:
    """A log y axis; one that spans less than a decade gets a few plain-number ticks.

    Call it after the data is drawn (it reads the autoscaled limits). Over a narrow range the
    log locator falls back to linear ticks that the log formatter writes as ``1.6375x10^-1``;
    here they become ``0.16375`` and no minor ticks are labelled.
    """
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if not (0 < lo < hi) or hi / lo >= 10:
        return
    ticks = [t for t in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi and t > 0]
    if len(ticks) < 2:
        ticks = [lo, hi]
    labels = dict(zip(ticks, _plain(ticks)))
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: labels.get(v, f"{v:g}")))
    ax.set_ylim(lo, hi)


def plot_mse_per_step(curves: Mapping[str, Sequence[float]], t_out: int, path: Any, title: Optional[str] = None) -> Path:
    """Per-step MSE curves ``{label: [MSE of predicted frame 1, 2, ...]}``, the training horizon marked."""
    return _save(mse_per_step_figure(curves, t_out, title), path)


def mse_per_step_figure(curves: Mapping[str, Sequence[float]], t_out: int, title: Optional[str] = None) -> Figure:
    """The figure of :func:`plot_mse_per_step`, unsaved."""
    fig = _figure((6, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, curve) in enumerate(curves.items()):
        ax.plot(np.arange(1, len(curve) + 1), _positive(curve), marker=".", color=_COLORS[i % len(_COLORS)], label=name)
    ax.axvline(t_out + 0.5, color="gray", linestyle="--", linewidth=1, label=f"training horizon ({t_out})")
    _log_y(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # frames: no tick at 1.5
    ax.set_xlabel("predicted frame")
    ax.set_ylabel("MSE per pixel")
    ax.set_title(title or "Length generalisation")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_mse_vs_velocity(
    per_velocity: Mapping[str, Mapping[str, float]],
    config: ExperimentConfig,
    path: Any,
    title: Optional[str] = None,
) -> Path:
    """MSE per test velocity of each model (``{label: {velocity key: MSE}}``).

    Left: MSE against speed, filled markers for training velocities and hollow ones for unseen
    ones, a line through the mean per speed. For translations, one :math:`(v_x, v_y)` heat map
    per model follows (log colour scale shared by all, training velocities boxed).
    """
    return _save(mse_vs_velocity_figure(per_velocity, config, title), path)


def mse_vs_velocity_figure(per_velocity: Mapping[str, Mapping[str, float]], config: ExperimentConfig,
                           title: Optional[str] = None) -> Figure:
    """The figure of :func:`plot_mse_vs_velocity`, unsaved."""
    rows = {velocity_key(r, config.flow): r for r in config.test_velocity_array()}
    seen = {velocity_key(r, config.flow) for r in config.train_velocity_array()}
    kind = config.kind
    heat = kind.heatmap
    n = 1 + (len(per_velocity) if heat else 0)
    fig = _figure((5.5 + 3.2 * (n - 1), 3.8))
    ax = fig.add_subplot(1, n, 1)
    for i, (name, mses) in enumerate(per_velocity.items()):
        color = _COLORS[i % len(_COLORS)]
        keys = [k for k in mses if k in rows]
        speed = np.array([velocity_speed(rows[k], config.flow) for k in keys])
        val = _positive([mses[k] for k in keys])
        is_seen = np.array([k in seen for k in keys])
        jitter = (i - (len(per_velocity) - 1) / 2) * 0.06 * (1 if kind.translates else 5)
        ax.scatter(speed[is_seen] + jitter, val[is_seen], color=color, s=18, label=f"{name} (seen)")
        ax.scatter(speed[~is_seen] + jitter, val[~is_seen], facecolors="none", edgecolors=color, s=18,
                   label=f"{name} (unseen)")
        levels = np.unique(speed)
        ax.plot(levels, [val[speed == s].mean() for s in levels], color=color, linewidth=1)
    _log_y(ax)
    ax.set_xlabel(kind.speed_label)
    ax.set_ylabel("MSE per pixel")
    ax.set_title(title or "Velocity generalisation")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if heat:
        every = [v for m in per_velocity.values() for v in m.values()]
        lo, hi = np.log10(max(min(every), 1e-12)), np.log10(max(max(every), 1e-12))
        r = int(max(max(abs(row[0]), abs(row[1])) for row in rows.values()))
        for j, (name, mses) in enumerate(per_velocity.items()):
            grid = np.full((2 * r + 1, 2 * r + 1), np.nan)
            for k, m in mses.items():
                if k in rows:
                    vx, vy = int(rows[k][0]), int(rows[k][1])
                    grid[r - vy, vx + r] = np.log10(max(m, 1e-12))  # y up
            hx = fig.add_subplot(1, n, 2 + j)
            im = hx.imshow(grid, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1,
                           extent=(-r - 0.5, r + 0.5, -r - 0.5, r + 0.5))
            for k in seen & set(mses):
                if k in rows:
                    vx, vy = rows[k][0], rows[k][1]
                    hx.add_patch(_box(vx, vy))
            hx.set_title(f"{name}: log10 MSE", fontsize=9)
            hx.set_xlabel("vx")
            hx.set_ylabel("vy")
            fig.colorbar(im, ax=hx, fraction=0.046)
    return fig


def _box(vx: float, vy: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((vx - 0.5, vy - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=0.8)


#: The default title of ``val_curve.png``: what it shows (not how fast a model learns).
VAL_CURVE_TITLE = "Validation MSE during training"


def plot_val_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Any, title: Optional[str] = None) -> Path:
    """Validation MSE against optimisation step (``{label: val_curve}`` as in ``metrics.json``)."""
    return _save(val_curves_figure(curves, title), path)


def val_curves_figure(curves: Mapping[str, Sequence[Mapping[str, float]]], title: Optional[str] = None) -> Figure:
    """The figure of :func:`plot_val_curves`, unsaved (title :data:`VAL_CURVE_TITLE` by default)."""
    fig = _figure((6, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, curve) in enumerate(curves.items()):
        if not curve:
            continue
        ax.plot([p["step"] for p in curve], _positive([p["val_mse"] for p in curve]), marker=".",
                color=_COLORS[i % len(_COLORS)], label=name)
    _log_y(ax)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("validation MSE")
    ax.set_title(title or VAL_CURVE_TITLE)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def frames_label(times: Sequence[int]) -> str:
    """Frame indices in words: ``"t=4..13"``, ``"t=5..15 every 2"`` or ``"t=3, 5, 9"``."""
    times = [int(t) for t in times]
    if not times:
        return "none"
    if len(times) == 1:
        return f"t={times[0]}"
    gaps = {b - a for a, b in zip(times, times[1:])}
    if gaps == {1}:
        return f"t={times[0]}..{times[-1]}"
    if len(gaps) == 1 and len(times) > 2 and min(gaps) > 1:
        return f"t={times[0]}..{times[-1]} every {min(gaps)}"
    return "t=" + ", ".join(str(t) for t in times)


def prediction_columns(horizon: int, max_columns: int = 10) -> List[int]:
    """Which of ``horizon`` predicted frames a grid of at most ``max_columns`` shows.

    Evenly spaced (every ``ceil(horizon / max_columns)``-th) and ending at the last one.
    """
    step = max(1, math.ceil(horizon / max_columns))
    return list(range(horizon - 1, -1, -step))[::-1]


def _row_label(ax: Any, text: str, fontsize: float = 7) -> None:
    """A row's name, horizontal, left of the row's first image (constrained layout makes room)."""
    ax.set_ylabel(text, fontsize=fontsize, rotation=0, ha="right", va="center")


def _extend(values: Sequence[torch.Tensor], vmin: float, vmax: float) -> str:
    """The colour bar's ``extend``: which ends of ``[vmin, vmax]`` some value lies beyond (clipped)."""
    lo = min(float(v.min()) for v in values)
    hi = max(float(v.max()) for v in values)
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (lo < vmin, hi > vmax)]


def plot_predictions(
    inputs: torch.Tensor,
    target: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    path: Any,
    title: Optional[str] = None,
    max_columns: int = 10,
    target_times: Optional[Sequence[int]] = None,
) -> Path:
    """A frame grid: the last input frames, the target frames, then each model's predictions.

    The title names the predicted frames shown (from the frames the grid has room for), after
    ``title`` when given; one colour bar gives the pixel values.

    Args:
        inputs: ``[T_in, 1, H, W]``; target and predictions ``[P, 1, H, W]`` (first channel shown).
        target_times: frame index of each target column (default ``T_in, T_in + 1, ...``).
    """
    return _save(predictions_figure(inputs, target, predictions, title, max_columns, target_times), path)


def predictions_figure(
    inputs: torch.Tensor,
    target: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    title: Optional[str] = None,
    max_columns: int = 10,
    target_times: Optional[Sequence[int]] = None,
) -> Figure:
    """The figure of :func:`plot_predictions`, unsaved."""
    cols = min(max(inputs.shape[0], target.shape[0]), max_columns)
    t_in = inputs.shape[0]
    times = list(target_times) if target_times is not None else list(range(t_in, t_in + target.shape[0]))
    if len(times) != target.shape[0]:
        raise ValueError(f"target_times has {len(times)} entries for {target.shape[0]} target frames")
    shown = times[: min(cols, target.shape[0])]
    in_times = list(range(t_in - min(cols, t_in), t_in))
    rows: List[Tuple[str, torch.Tensor, List[int]]] = [
        ("input", inputs[-cols:], in_times),
        ("target", target[:cols], shown),
    ]
    rows += [(name, p[:cols], shown) for name, p in predictions.items()]
    fig = _figure((1.1 * cols + 2.0, 1.15 * len(rows) + 0.9))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    image = None
    for r, (name, frames, frame_times) in enumerate(rows):
        for j in range(cols):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < frames.shape[0]:
                image = ax.imshow(frames[j, 0].detach().cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_title(f"t={frame_times[j]}", fontsize=6)
            else:
                ax.set_axis_off()
            if j == 0:
                _row_label(ax, name)
    if image is not None:
        shown_frames = [f[:cols].detach().cpu() for _, f, _ in rows]
        # beside the last column (a bar of the whole grid, with a suptitle, drifts the layout on redraws)
        fig.colorbar(image, ax=axes[:, -1], aspect=40, label="pixel value", extend=_extend(shown_frames, 0.0, 1.0))
    caption = f"predicted frames {frames_label(shown)}"
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=10)
    return fig


def data_generator(row: Sequence[float], gspace: Any) -> Optional[FlowGenerator]:
    """The flow generator of a data velocity ``(vx, vy, deg)`` on ``gspace``, or None if not representable."""
    n = steps_per_turn(gspace)
    steps = float(row[2]) * n / 360.0
    if abs(steps - round(steps)) > 1e-9:
        return None
    return FlowGenerator(gspace, (int(row[0]), int(row[1])), int(round(steps)))


@torch.no_grad()
def moving_frame_states(
    model: torch.nn.Module, x: torch.Tensor, velocity: FlowGenerator
) -> Tuple[torch.Tensor, torch.Tensor, Any]:
    """Hidden states of one sequence in the stationary and in the co-moving frame.

    The slice :math:`\\nu` is ``velocity`` when it is in the model's V, else the V slice 0 (the
    G-RNN's only one). Returns ``(h [T, C, H, W], k [T, C, H, W], nu)`` with
    :math:`k_t = \\psi_t(v)^{-1} h_t(\\nu)`, ``v = velocity`` (the input's flow).
    """
    was_training = model.training
    model.eval()
    try:
        seq = model.encoder(x[None]).tensor[0]  # [T, V, C, H, W]
    finally:
        model.train(was_training)
    flows = model.flows
    nu = velocity if velocity in flows else flows[0]
    h = seq[:, flows.index(nu)].cpu()
    t_len = h.shape[0]
    plan = TransportPlan(model.hidden_type, [velocity.psi(-t) for t in range(t_len)], tuple(h.shape[-2:]))
    return h, plan(h[None])[0], nu


def plot_moving_frame(
    frames: torch.Tensor,
    states: Mapping[str, Tuple[torch.Tensor, torch.Tensor, Any]],
    velocity: FlowGenerator,
    path: Any,
    max_columns: int = 10,
) -> Path:
    """Input frames, then per model its state :math:`h_t(\\nu)` and :math:`\\psi_t(v)^{-1} h_t(\\nu)`.

    One channel per model is shown: the one with the largest mean activation in the co-moving
    frame. ``frames`` is ``[T, 1, H, W]``; ``states`` as returned by :func:`moving_frame_states`.
    A model's two rows share one colour scale and colour bar (a diverging map centred on 0 when
    the channel has negative values), the input rows have their own.
    """
    return _save(moving_frame_figure(frames, states, velocity, max_columns), path)


def moving_frame_figure(
    frames: torch.Tensor,
    states: Mapping[str, Tuple[torch.Tensor, torch.Tensor, Any]],
    velocity: FlowGenerator,
    max_columns: int = 10,
) -> Figure:
    """The figure of :func:`plot_moving_frame`, unsaved."""
    cols = min(frames.shape[0], max_columns)
    ts = np.linspace(0, frames.shape[0] - 1, cols).round().astype(int)
    # (label, images [T, H, W], group): the rows of one group share a colour scale and bar
    rows: List[Tuple[str, torch.Tensor, str]] = [("input f_t", frames[:, 0].detach().cpu(), "input")]
    for name, (h, k, nu) in states.items():
        ch = int(k.abs().mean(dim=(0, 2, 3)).argmax())
        nu_s = "({},{})".format(*nu.translation) + (f"r{nu.rotation}" if nu.rotation else "")
        rows.append((f"{name} h_t(nu={nu_s})", h[:, ch].detach().cpu(), f"{name}, channel {ch}"))
        rows.append((f"{name} psi_t(v)^-1 h_t", k[:, ch].detach().cpu(), f"{name}, channel {ch}"))
    groups: Dict[str, List[int]] = {}
    for r, (_, _, group) in enumerate(rows):
        groups.setdefault(group, []).append(r)
    fig = _figure((1.1 * cols + 3.0, 1.15 * len(rows) + 0.7))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for group, members in groups.items():
        shown = [rows[r][1][ts] for r in members]
        if group == "input":
            cmap, vmin, vmax = "gray", 0.0, 1.0
        else:
            vmax = max(float(img.abs().max()) for img in shown) or 1.0
            negative = min(float(img.min()) for img in shown) < 0
            cmap, vmin = ("RdBu_r", -vmax) if negative else ("magma", 0.0)
        image = None
        for r in members:
            name, img, _ = rows[r]
            for j, t in enumerate(ts):
                ax = axes[r, j]
                image = ax.imshow(img[t].numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"t={t}", fontsize=6)
                if j == 0:
                    _row_label(ax, name, fontsize=6)
        fig.colorbar(image, ax=axes[members[0] : members[-1] + 1, -1], aspect=12 * len(members),
                     extend=_extend(shown, vmin, vmax)).set_label("pixel value" if group == "input" else group,
                                                                  fontsize=7)
    v = "({},{})".format(*velocity.translation) + (f", {np.degrees(velocity.angle):g} deg" if velocity.rotation else "")
    fig.suptitle(f"Hidden state in the frame moving with the input (v = {v} per frame)", fontsize=9)
    return fig


def _pick_velocity(config: ExperimentConfig, models: Sequence[torch.nn.Module]) -> Optional[Tuple[str, FlowGenerator]]:
    """A nonzero training velocity that is in the V of the first model with a nontrivial V."""
    gspace = models[0].in_type.gspace
    lifted = [m for m in models if len(m.flows) > 1] or list(models)
    best = None
    for row in config.train_velocity_array():
        gen = data_generator(row, gspace)
        if gen is None or gen.is_identity or gen not in lifted[0].flows:
            continue
        speed = velocity_speed(row, config.flow)
        if best is None or speed < best[0]:
            best = (speed, velocity_key(row, config.flow), gen)
    return None if best is None else (best[1], best[2])


def write_plots(out: Any, runs: Mapping[str, Tuple[torch.nn.Module, Dict[str, Any]]], config: ExperimentConfig,
                data: Any, example: int = 0) -> List[Path]:
    """All figures for one or more trained models of one data config.

    Args:
        out: folder for the PNGs.
        runs: ``{label: (model, metrics)}``.
        config: a resolved config (data, velocities and horizons are read from it).
        data: the :class:`~flow_escnn.experiments._datasets.ExperimentData` of ``config``.
        example: index of the test sequence shown in the frame grids.

    Returns:
        The written paths: ``mse_per_step.png``, ``mse_vs_velocity.png``, ``val_curve.png``,
        ``predictions.png``, ``predictions_unseen.png`` (when there are unseen velocities) and
        ``hidden_moving_frame.png`` (when a training velocity is in a model's V).
    """
    out = Path(out)
    c = config
    paths = [
        plot_mse_per_step({k: m["mse_per_step"] for k, (_, m) in runs.items()}, c.t_out, out / "mse_per_step.png"),
        plot_mse_vs_velocity({k: m["mse_per_velocity"] for k, (_, m) in runs.items()}, c, out / "mse_vs_velocity.png"),
        plot_val_curves({k: m["val_curve"] for k, (_, m) in runs.items()}, out / "val_curve.png"),
    ]
    test = data.test()
    i = min(example, test.shape[0] - 1)
    seq = test[i]
    horizon = c.extended_horizon
    preds = {}
    for name, (model, _) in runs.items():
        device = next(model.parameters()).device
        with torch.no_grad():
            model.eval()
            preds[name] = model(seq[None, : c.t_in].to(device), horizon)[0].cpu()
    pick = prediction_columns(horizon)  # every frame up to 10, else evenly spaced up to the last
    times = [c.t_in + j for j in pick]  # plot_predictions names the frames it shows in the title
    paths.append(plot_predictions(seq[: c.t_in], seq[c.t_in :][pick], {k: p[pick] for k, p in preds.items()},
                                  out / "predictions.png", target_times=times,
                                  title=f"test sequence {i} (training velocities), trained to predict {c.t_out} "
                                  f"frames, {horizon} predicted"))
    unseen = next(iter(runs.values()))[1].get("velocities_unseen") or []
    if unseen:
        rows = {velocity_key(r, c.flow): r for r in c.test_velocity_array()}
        key = max(unseen, key=lambda k: (velocity_speed(rows[k], c.flow), k))
        seq = data.per_velocity()[key][min(example, c.num_per_velocity - 1)]
        upreds = {}
        for name, (model, _) in runs.items():
            device = next(model.parameters()).device
            with torch.no_grad():
                upreds[name] = model(seq[None, : c.t_in].to(device), c.t_out)[0].cpu()
        paths.append(plot_predictions(seq[: c.t_in], seq[c.t_in :], upreds, out / "predictions_unseen.png",
                                      title=f"unseen velocity {key}"))
    models = [m for m, _ in runs.values()]
    picked = _pick_velocity(c, models)
    if picked is not None:
        key, gen = picked
        seq = data.per_velocity().get(key)
        if seq is None:  # a training velocity missing from the test set
            seq = data.test()
        x = seq[min(example, seq.shape[0] - 1), : c.t_in + c.t_out]
        states = {}
        for name, (model, _) in runs.items():
            device = next(model.parameters()).device
            states[name] = moving_frame_states(model, x.to(device), gen)
        paths.append(plot_moving_frame(x, states, gen, out / "hidden_moving_frame.png"))
    return paths


def plot_rollout(worlds: torch.Tensor, target: torch.Tensor, predictions: Mapping[str, torch.Tensor],
                 times: Sequence[int], path: Any, title: Optional[str] = None) -> Path:
    """A world model's rollout at chosen steps: the world (RGB, the window drawn), the true view and
    each model's prediction, one column per step (with a colour bar of the views' values).

    Args:
        worlds: ``[S, 3, N, N]`` RGB worlds at the shown steps (:func:`~flow_escnn.data._mnist_world.draw_window`).
        target: ``[S, 1, h, w]`` the true views; ``predictions``: ``{label: [S, 1, h, w]}``.
        times: the frame index of each column.
    """
    return _save(rollout_figure(worlds, target, predictions, times, title), path)


def rollout_figure(worlds: torch.Tensor, target: torch.Tensor, predictions: Mapping[str, torch.Tensor],
                   times: Sequence[int], title: Optional[str] = None) -> Figure:
    """The figure of :func:`plot_rollout`, unsaved."""
    rows: List[Tuple[str, torch.Tensor]] = [("world", worlds), ("true view", target)]
    rows += list(predictions.items())
    cols = len(times)
    fig = _figure((1.3 * cols + 2.4, 1.3 * len(rows) + 0.8))
    axes = fig.subplots(len(rows), cols, squeeze=False)
    image = None
    for r, (name, frames) in enumerate(rows):
        for j in range(cols):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.imshow(frames[j].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_title(f"t={times[j]}", fontsize=7)
            else:
                image = ax.imshow(frames[j, 0].detach().cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            if j == 0:
                _row_label(ax, name)
    if image is not None:
        views = [frames[:, 0].detach().cpu() for _, frames in rows[1:]]
        fig.colorbar(image, ax=axes[1:, -1], aspect=40, label="pixel value", extend=_extend(views, 0.0, 1.0))
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def write_world_plots(out: Any, runs: Mapping[str, Tuple[torch.nn.Module, Dict[str, Any]]], config: Any, data: Any,
                      example: int = 0, columns: int = 8) -> List[Path]:
    """The figures of one or more trained world models of one data config.

    Args:
        out: folder for the PNGs.
        runs: ``{label: (model, metrics)}``; every model sees the same test episode.
        config: a resolved :class:`~flow_escnn.experiments._world.WorldExperimentConfig`.
        data: its :class:`~flow_escnn.experiments._world.WorldData`.
        example: which test episode the strip shows.
        columns: steps shown in the strip (the last given view, then spread over the rollout).

    Returns:
        ``rollout_mse.png`` (every model on one axis, the training horizon marked), ``rollout.png``,
        ``val_curve.png``.
    """
    from flow_escnn.data._mnist_world import draw_window

    out = Path(out)
    c = config
    paths = [
        plot_mse_per_step({k: m["rollout_mse_per_step"] for k, (_, m) in runs.items()}, c.t_out,
                          out / "rollout_mse.png", title=f"Rollout MSE per step (trained on {c.t_out})"),
        plot_val_curves({k: m["val_curve"] for k, (_, m) in runs.items()}, out / "val_curve.png"),
    ]
    frames = c.t_in + c.rollout
    episode = data.episodes("test", example + 1, frames, keep_worlds=True)
    views, actions = data.test()
    i = min(example, views.shape[0] - 1)
    steps = sorted({c.t_in - 1, *np.linspace(c.t_in, frames - 1, max(1, columns - 1)).round().astype(int).tolist()})
    preds = {}
    for name, (model, _) in runs.items():
        device = next(model.parameters()).device
        with torch.no_grad():
            model.eval()
            rollout = model(views[i : i + 1, : c.t_in].to(device), actions[i : i + 1].to(device), c.rollout)[0].cpu()
        full = torch.cat([views[i, : c.t_in], rollout])  # given views, then predictions
        preds[name] = full[steps]
    worlds = draw_window(episode.worlds[i, steps], episode.poses[i, steps], c.view_size)
    paths.append(plot_rollout(worlds, views[i, steps], preds, steps, out / "rollout.png",
                              title=f"test episode {i}: the last given view (t={steps[0]}), then predicted views "
                              f"(rollout of t={c.t_in}..{frames - 1})"))
    return paths
