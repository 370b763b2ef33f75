"""PNG figures of next-frame experiments (matplotlib's Agg canvas; no pyplot, no global backend).

* :func:`plot_mse_per_step` -- per-step MSE over the extended horizon (length generalisation);
* :func:`plot_mse_vs_velocity` -- MSE against speed, seen vs unseen velocities, plus a
  :math:`(v_x, v_y)` heat map per model for translations (velocity generalisation);
* :func:`plot_val_curves` -- validation MSE against optimisation step (training speed);
* :func:`plot_predictions` -- input / target / predicted frames of each model;
* :func:`plot_moving_frame` -- hidden states in the frame moving with the input,
  :math:`\\psi_t(\\nu)^{-1} h_t(\\nu)` (as in the paper's figure): a FERNN slice whose
  :math:`\\nu` matches the input's velocity stays still, a G-RNN state does not;
* :func:`write_plots` -- all of the above for one or several trained models;
* :func:`plot_rollout` -- a world model's rollout: the world with the agent's window, the true
  view and each model's prediction at chosen steps;
* :func:`write_world_plots` -- the figures of world models (rollout MSE per step of every model on
  one axis, the rollout strip, validation curves).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flow_escnn.experiments._config import ExperimentConfig, velocity_key, velocity_speed
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.flows._planar import steps_per_turn
from flow_escnn.flows._transport import TransportPlan

__all__ = [
    "plot_mse_per_step",
    "plot_mse_vs_velocity",
    "plot_val_curves",
    "plot_predictions",
    "moving_frame_states",
    "plot_moving_frame",
    "write_plots",
    "plot_rollout",
    "write_world_plots",
]

logger = logging.getLogger(__name__)

_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def _save(fig: Figure, path: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    logger.info("wrote %s", path)
    return path


def _positive(values: Sequence[float]) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float64), 1e-12)


def plot_mse_per_step(curves: Mapping[str, Sequence[float]], t_out: int, path: Any, title: Optional[str] = None) -> Path:
    """Per-step MSE curves ``{label: [MSE of predicted frame 1, 2, ...]}``, the training horizon marked."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, curve) in enumerate(curves.items()):
        ax.plot(np.arange(1, len(curve) + 1), _positive(curve), marker=".", color=_COLORS[i % len(_COLORS)], label=name)
    ax.axvline(t_out + 0.5, color="gray", linestyle="--", linewidth=1, label=f"training horizon ({t_out})")
    ax.set_yscale("log")
    ax.set_xlabel("predicted frame")
    ax.set_ylabel("MSE per pixel")
    ax.set_title(title or "Length generalisation")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


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
    rows = {velocity_key(r, config.flow): r for r in config.test_velocity_array()}
    seen = {velocity_key(r, config.flow) for r in config.train_velocity_array()}
    kind = config.kind
    heat = kind.heatmap
    n = 1 + (len(per_velocity) if heat else 0)
    fig = Figure(figsize=(5.5 + 3.2 * (n - 1), 3.8))
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
    ax.set_yscale("log")
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
    return _save(fig, path)


def _box(vx: float, vy: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((vx - 0.5, vy - 0.5), 1, 1, fill=False, edgecolor="white", linewidth=0.8)


def plot_val_curves(curves: Mapping[str, Sequence[Mapping[str, float]]], path: Any, title: Optional[str] = None) -> Path:
    """Validation MSE against step (``{label: val_curve}`` as in ``metrics.json``)."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, curve) in enumerate(curves.items()):
        if not curve:
            continue
        ax.plot([p["step"] for p in curve], _positive([p["val_mse"] for p in curve]), marker=".",
                color=_COLORS[i % len(_COLORS)], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("validation MSE")
    ax.set_title(title or "Training speed")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


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

    Args:
        inputs: ``[T_in, 1, H, W]``; target and predictions ``[P, 1, H, W]`` (first channel shown).
        target_times: frame index of each target column (default ``T_in, T_in + 1, ...``).
    """
    cols = min(max(inputs.shape[0], target.shape[0]), max_columns)
    t_in = inputs.shape[0]
    times = list(target_times) if target_times is not None else list(range(t_in, t_in + target.shape[0]))
    in_times = list(range(t_in - min(cols, t_in), t_in))
    rows: List[Tuple[str, torch.Tensor, List[int]]] = [
        ("input", inputs[-cols:], in_times),
        ("target", target[:cols], times),
    ]
    rows += [(name, p[:cols], times) for name, p in predictions.items()]
    fig = Figure(figsize=(1.1 * cols + 0.8, 1.15 * len(rows) + 0.3))
    for r, (name, frames, frame_times) in enumerate(rows):
        for j in range(cols):
            ax = fig.add_subplot(len(rows), cols, r * cols + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j < frames.shape[0]:
                ax.imshow(frames[j, 0].detach().cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
                ax.set_title(f"t={frame_times[j]}", fontsize=6)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


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
    """
    cols = min(frames.shape[0], max_columns)
    ts = np.linspace(0, frames.shape[0] - 1, cols).round().astype(int)
    rows: List[Tuple[str, torch.Tensor]] = [("input f_t", frames[:, 0])]
    for name, (h, k, nu) in states.items():
        ch = int(k.abs().mean(dim=(0, 2, 3)).argmax())
        nu_s = "({},{})".format(*nu.translation) + (f"r{nu.rotation}" if nu.rotation else "")
        rows.append((f"{name} h_t(nu={nu_s})", h[:, ch]))
        rows.append((f"{name} psi_t(v)^-1 h_t", k[:, ch]))
    fig = Figure(figsize=(1.1 * cols + 1.8, 1.15 * len(rows) + 0.5))
    for r, (name, img) in enumerate(rows):
        vmax = float(img.abs().max()) or 1.0
        for j, t in enumerate(ts):
            ax = fig.add_subplot(len(rows), cols, r * cols + j + 1)
            ax.imshow(img[t].numpy(), cmap="gray" if r == 0 else "magma", vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t={t}", fontsize=6)
            if j == 0:
                ax.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
    v = "({},{})".format(*velocity.translation) + (f", {np.degrees(velocity.angle):g} deg" if velocity.rotation else "")
    fig.suptitle(f"Hidden state in the frame moving with the input (v = {v} per frame)", fontsize=9)
    return _save(fig, path)


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
    step = max(1, horizon // 10)
    pick = slice(step - 1, horizon, step)
    times = list(range(c.t_in, c.t_in + horizon))[pick]
    paths.append(plot_predictions(seq[: c.t_in], seq[c.t_in :][pick], {k: p[pick] for k, p in preds.items()},
                                  out / "predictions.png", target_times=times,
                                  title=f"test sequence {i} (training velocities): predicted frames {times[0]}-{times[-1]}"
                                  f" in steps of {step} (trained to predict {c.t_out})"))
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
    rows: List[Tuple[str, torch.Tensor]] = [("world", worlds), ("true view", target)]
    rows += list(predictions.items())
    cols = len(times)
    fig = Figure(figsize=(1.3 * cols + 1.4, 1.3 * len(rows) + 0.4))
    image = None
    for r, (name, frames) in enumerate(rows):
        for j in range(cols):
            ax = fig.add_subplot(len(rows), cols, r * cols + j + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.imshow(frames[j].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_title(f"t={times[j]}", fontsize=7)
            else:
                image = ax.imshow(frames[j, 0].detach().cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=fig.axes, fraction=0.02, pad=0.01, label="pixel value")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


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
        plot_val_curves({k: m["val_curve"] for k, (_, m) in runs.items()}, out / "val_curve.png",
                        title="Validation MSE during training"),
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
                              title=f"test episode {i}: views {c.t_in} .. {frames - 1} predicted "
                              f"(first column: the last given view)"))
    return paths
