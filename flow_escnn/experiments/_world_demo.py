"""The world-model demo: FloWM against its ablations on one MNIST World, small enough for a laptop CPU.

Every model sees the same world (:func:`world_demo_config`: a 24x24 torus of 3 moving digits of 10
pixels, a 16x16 window (the world-to-view ratio of the FloWM paper's 50 / 32), random-walk moves of
up to 4 pixels, which let the 10 given views cover about 90% of the world) and trains the same
number of steps on 10 given and 10 predicted views with GRU cells; each is then rolled out for 100
views past the given ones, the map carried by self-motion and flows (``imagine="carry"``):

* **FloWM**: velocity channels :math:`V = [-1, 1]^2` and self-motion;
* **no self-motion**: the same model with the actions ignored by the transport;
* **G-RNN + action input**: :math:`V = \\{0\\}`, no self-motion, the actions as input planes (the
  action-concat baseline of the FloWM paper).

``turns="90"`` runs the same comparison with an agent that also turns by quarter turns
(C4, exact). :func:`run_world_demo` trains them (in parallel processes when there are cores for
it), writes ``results.md`` (the table, a parameter-free reference row and observations computed
from the numbers), ``results.json``, ``rollout_mse.png`` (every model on one axis),
``rollout.png`` and each run's folder.
"""
from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from flow_escnn.experiments._plots import write_world_plots
from flow_escnn.experiments._run_folder import claim_run_folder
from flow_escnn.experiments._runtime import PathLike, versions, write_json
from flow_escnn.experiments._task import ProgressFactory
from flow_escnn.experiments._world import WorldData, WorldExperimentConfig, load_world_model, train_world

__all__ = ["WORLD_DEMO_MODELS", "world_demo_config", "run_world_demo", "world_results_table"]

logger = logging.getLogger(__name__)

#: label -> the config fields of each compared model.
WORLD_DEMO_MODELS: Dict[str, Dict[str, Any]] = {
    "FloWM": {"model": "fernn"},
    "no self-motion": {"model": "fernn", "self_motion": False},
    "G-RNN + action input": {"model": "grnn", "self_motion": False, "action_input": True},
}


def world_demo_config(digits: str = "mnist", turns: str = "none", **overrides: Any) -> WorldExperimentConfig:
    """The demo's shared config (the model fields are set per run); ``overrides`` change any field."""
    base = WorldExperimentConfig(
        digits=digits, world_size=24, view_size=16, num_digits=3, digit_size=10, velocities="1", max_step=4,
        cell="gru", hidden_channels=8, group=4 if turns != "none" else 1, turns=turns, imagine="carry",
        output_activation="clamp", t_in=10, t_out=10, rollout=100, num_train=2000, num_val=32, num_test=32,
        steps=800, batch_size=8, lr=3e-3, eval_every=200, checkpoint_every=400, eval_batch_size=32, seed=0,
    )
    return base.replace(**overrides)


def _train_one(config: WorldExperimentConfig, out: str, threads: int) -> Dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return train_world(config, out)


def world_results_table(metrics: Dict[str, Dict[str, Any]]) -> str:
    """A markdown table of rollout MSEs (``{label: metrics}``; the reference row lacks training keys)."""
    lines = [
        "| model | parameters | V | test MSE (views 1-10) | rollout MSE 20-100 | MSE view 20 | MSE view 100 "
        "| view 100 / view 20 | train time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in metrics.items():
        s = m["rollout_mse_per_step"]
        train = f"{m['train_time_s']:.0f} s" if "train_time_s" in m else "-"
        lines.append(
            f"| {name} | {m.get('num_parameters', '-')} | {m.get('num_flows', '-')} | {m['test_mse']:.2e} "
            f"| {m['rollout_mse_20_100']:.2e} | {s[19]:.2e} | {s[99]:.2e} | {s[99] / s[19]:.2f} | {train} |"
        )
    return "\n".join(lines)


def _observations(metrics: Dict[str, Dict[str, Any]], black: Dict[str, Any]) -> List[str]:
    names = list(metrics)
    lead, others = names[0], names[1:]
    a = metrics[lead]["rollout_mse_20_100"]
    lines = []
    for other in others:
        b = metrics[other]["rollout_mse_20_100"]
        lines.append(f"- Rollout MSE over views 20-100: {lead} {a:.3g}, {other} {b:.3g} "
                     f"({b / a:.2f}x the {lead} error).")
    s = metrics[lead]["rollout_mse_per_step"]
    lines.append(f"- Stability of {lead}: MSE at view 100 is {s[99] / s[19]:.2f}x its MSE at view 20; predicting black "
                 f"views gives {black['rollout_mse_20_100']:.3g} over views 20-100.")
    return lines


def run_world_demo(
    out: PathLike,
    digits: str = "mnist",
    turns: str = "none",
    progress: Optional[ProgressFactory] = None,
    plots: bool = True,
    overwrite: bool = False,
    workers: Optional[int] = None,
    **overrides: Any,
) -> Dict[str, Any]:
    """Train FloWM and its ablations on one world, roll them out and compare (module docstring).

    Args:
        out: output folder (one sub-folder per model).
        digits: ``"mnist"``, ``"synthetic"`` or an idx folder.
        turns: ``"none"`` or ``"90"`` (an agent that also turns; C4 models).
        progress: unused when models train in parallel processes (their logs say where they are).
        plots: write the PNGs.
        overwrite: move an earlier demo's files to ``out/replaced-<time>/`` first.
        workers: processes training at once (default: as many cores as there are, up to the models).
        **overrides: config fields to change (e.g. ``steps=100`` for a quick look).

    Returns:
        ``{"table", "observations", "metrics", "wall_time_s", "files", "markdown"}``.
    """
    with claim_run_folder(out, "demo", replace=overwrite) as folder:
        return _run(folder, digits, turns, plots, workers, overrides)


def _run(out: Path, digits: str, turns: str, plots: bool, workers: Optional[int],
         overrides: Dict[str, Any]) -> Dict[str, Any]:
    start = time.perf_counter()
    base = world_demo_config(digits, turns, **overrides)
    configs = {label: base.replace(**fields).resolve() for label, fields in WORLD_DEMO_MODELS.items()}
    cores = os.cpu_count() or 1
    workers = max(1, min(len(configs), cores if workers is None else int(workers)))
    threads = max(1, cores // workers)
    metrics: Dict[str, Dict[str, Any]] = {}
    folders = {label: str(out / _slug(label)) for label in configs}
    if workers == 1:
        for label, c in configs.items():
            metrics[label] = _train_one(c, folders[label], threads)
    else:
        spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no forked OpenMP state
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=spawn) as pool:
            futures = {label: pool.submit(_train_one, c, folders[label], threads) for label, c in configs.items()}
            metrics = {label: f.result() for label, f in futures.items()}
    resolved = base.resolve()
    views, _ = WorldData(resolved).test()
    t = views[:, resolved.t_in : resolved.t_in + resolved.rollout].double()
    black_steps = t.pow(2).mean(dim=(0, 2, 3, 4)).numpy()
    black = {"test_mse": float(black_steps[: resolved.t_out].mean()), "rollout_mse_per_step": black_steps.tolist(),
             "rollout_mse_20_100": float(np.mean(black_steps[19:100]))}
    files: List[Path] = []
    if plots:
        runs = {label: (load_world_model(Path(folders[label]) / "checkpoint.pt")[0], metrics[label])
                for label in configs}
        files = write_world_plots(out, runs, resolved, WorldData(resolved))
    table = world_results_table({**metrics, "(reference: predict black views)": black})
    notes = _observations(metrics, black)
    wall = time.perf_counter() - start
    c = resolved
    text = "\n".join([
        "# flow_escnn world-model demo: FloWM and its ablations on MNIST World",
        "",
        f"World {c.world_size}x{c.world_size} torus, {c.num_digits} digits of {c.digit_size} px moving at velocities "
        f"in [-1,1]^2, a {c.view_size}x{c.view_size} window, random-walk moves up to {c.max_step} px"
        + (f", quarter turns with probability {c.turn_probability}" if c.turns != "none" else "")
        + f"; {c.cell} cells, {c.hidden_fields} hidden fields, {c.steps} steps of batch {c.batch_size} on {c.t_in} given "
        f"+ {c.t_out} predicted views, rollout of {c.rollout} views on {c.num_test} test episodes.",
        "",
        table,
        "",
        *notes,
        "",
        f"MSE per pixel. Wall time of the whole demo: {wall:.0f} s ({workers} processes of {threads} thread(s)).",
        "",
    ])
    (out / "results.md").write_text(text)
    write_json(out / "results.json", {"metrics": metrics, "reference_black": black, "wall_time_s": wall,
                                      "versions": versions()})
    return {"table": table, "observations": notes, "metrics": metrics, "wall_time_s": wall, "files": files,
            "markdown": text}


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_")
