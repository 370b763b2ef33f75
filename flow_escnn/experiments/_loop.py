"""The optimisation loop every task trains with, and the checks of its config fields.

One step: the task's loss of the batch of step ``s`` (a pure function of ``(seed, s)``), a
finite-loss check, Adam's step after gradient-norm clipping, then the task's hook (evaluate,
checkpoint). Flowing-MNIST (:mod:`~flow_escnn.experiments._training`) and moving KTH
(:mod:`~flow_escnn.experiments._kth`) differ only in the loss and the hook.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from flow_escnn._validate import bounded_float, non_negative_int, one_of, optional_positive_int, positive_int

__all__ = [
    "Optimisation",
    "LoopState",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "StopRequest",
    "stop_on_signals",
    "optimise",
    "check_training",
    "no_progress",
    "AMP_MODES",
    "COMPILE_MODES",
    "SpeedSwitches",
    "SWITCH_FIELDS",
    "autocast_dtype",
]

#: ``--amp`` choices: no autocast, bfloat16 autocast, float16 autocast with a gradient scaler.
AMP_MODES = ("off", "bf16", "fp16")

#: ``--compile`` choices: eager, or ``torch.compile`` of the engine program with this mode.
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclasses.dataclass
class Optimisation:
    """The optimisation fields that every task config shares (mixed in as :class:`SpeedSwitches` is;
    the batch size, checkpoint interval and evaluation batch stay with each task, whose defaults differ)."""

    steps: Optional[int] = None  # optimisation steps (or epochs; not both)
    epochs: Optional[int] = None
    lr: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 100


@dataclasses.dataclass
class SpeedSwitches:
    """The config fields that change the cost of a step, or what a run reports, but not what the model
    computes (so they may change when a run is resumed: :data:`SWITCH_FIELDS`); mixed into the task
    configs, which have a ``device`` field."""

    amp: str = "off"  # off | bf16 | fp16 (fp16 with a gradient scaler)
    gradient_checkpointing: bool = False  # recompute the recurrence in the backward pass (less memory)
    deterministic: Optional[bool] = None  # deterministic algorithms; default: on for CPU, off for CUDA
    compile: str = "off"  # off | default | reduce-overhead | max-autotune: torch.compile of the engine program
    tensorboard: bool = False  # TensorBoard scalars beside metrics.csv (needs the tensorboard package)

    def check_switches(self) -> None:
        """Raise ``ValueError`` naming the switch with a bad value."""
        one_of(self.amp, AMP_MODES, "amp")
        one_of(self.compile, COMPILE_MODES, "compile")
        for name in ("gradient_checkpointing", "deterministic", "tensorboard"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (value is None and name == "deterministic")):
                raise ValueError(f"{name} must be True or False, got {value!r}")

    def fill_switch_defaults(self) -> None:
        """``deterministic``: on for the CPU, off for CUDA (where forced determinism costs speed)."""
        if self.deterministic is None:
            self.deterministic = not str(getattr(self, "device", "cpu")).startswith("cuda")

    def autocast(self, device: torch.device) -> Any:
        """The ``torch.autocast`` context of ``amp`` on ``device`` (disabled for ``"off"``)."""
        dtype = autocast_dtype(self.amp)
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def grad_scaler(self, device: torch.device) -> Optional[Any]:
        """The gradient scaler of ``amp="fp16"`` (None otherwise; bf16 needs none)."""
        return torch.amp.GradScaler(device.type) if self.amp == "fp16" else None


#: The :class:`SpeedSwitches` fields: every task config may change them when a run is resumed.
SWITCH_FIELDS = tuple(f.name for f in dataclasses.fields(SpeedSwitches))


class NonFiniteLossError(ValueError):
    """Training met a NaN or infinite loss; the run stopped and its last checkpoint was kept."""


class TrainingInterrupted(Exception):
    """A signal stopped the run after a step; its checkpoint was saved (``exit_code`` = 128 + signal)."""

    def __init__(self, signum: int, step: int, steps: int, checkpoint: Any) -> None:
        self.signum, self.step, self.steps, self.checkpoint = int(signum), int(step), int(steps), checkpoint
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        super().__init__(f"stopped by {name} after step {step} of {steps}; checkpoint saved to {checkpoint}")


@dataclasses.dataclass
class StopRequest:
    """Set by :func:`stop_on_signals`: the signal received, or None."""

    signum: Optional[int] = None


@contextlib.contextmanager
def stop_on_signals(signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """Turn ``signums`` into a :class:`StopRequest` that the training loop honours after the
    current step (it saves a checkpoint and raises :class:`TrainingInterrupted`). A second
    SIGINT (Ctrl-C) interrupts at once. Outside the main thread signals cannot be caught and
    the request is never set. The previous handlers come back on exit."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def autocast_dtype(amp: str) -> Optional[torch.dtype]:
    """The autocast dtype of an ``--amp`` mode (None: off)."""
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclasses.dataclass
class LoopState:
    """Where a run stands: optimisation steps done, seconds spent in them, the last loss."""

    step: int = 0
    train_time: float = 0.0
    last_loss: Optional[float] = None


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(**kwargs: Any) -> _NoProgress:
    """A progress factory that reports nothing."""
    return _NoProgress()


def optimise(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: LoopState,
    steps: int,
    loss_at: Callable[[int], torch.Tensor],
    grad_clip: float,
    after_step: Callable[[LoopState], None],
    bar: Any = None,
    stop_note: Callable[[], str] = lambda: "",
    scaler: Optional[Any] = None,
    sync: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
) -> None:
    """Run optimisation steps ``state.step + 1 .. steps`` (``state`` is updated in place).

    Args:
        model: the model (its parameters are clipped).
        optimizer: steps the parameters.
        state: the run's :class:`LoopState`.
        steps: the step to stop at.
        loss_at: the training loss of the batch of (0-based) step ``s``.
        grad_clip: gradient-norm clipping (0: off).
        after_step: called after every step (evaluate, checkpoint).
        bar: a progress bar (``update(n)``), or None.
        stop_note: what the error of a non-finite loss says about the kept checkpoint.
        scaler: a ``torch.amp.GradScaler`` (float16 autocast), or None.
        sync: the global loss from this process's (the mean over data-parallel processes), so
            every process logs the same loss and stops on a non-finite one together.

    Raises:
        NonFiniteLossError: on a NaN or infinite loss, before the step is taken.
    """
    while state.step < steps:
        t0 = time.perf_counter()
        loss = loss_at(state.step)
        value = float(sync(loss.detach()))
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training stopped at step {state.step + 1}: the loss is {value}. {stop_note()}"
                "Check the data for NaN/inf, lower --lr, or use a bounded nonlinearity (--nonlinearity tanh)"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        state.step += 1
        state.last_loss = value
        state.train_time += time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
        after_step(state)


def check_training(c: Any) -> None:
    """Validate the optimisation fields every task config has (``ValueError`` naming the field)."""
    for name in ("batch_size", "eval_every"):
        positive_int(getattr(c, name), name)
    for name in ("steps", "epochs", "eval_batch_size"):
        optional_positive_int(getattr(c, name), name)
    non_negative_int(c.seed, "seed")
    bounded_float(c.lr, "lr", low_open=True)
    bounded_float(c.grad_clip, "grad_clip (0 disables clipping)")
    if not (isinstance(c.device, str) and (c.device == "cpu" or c.device.startswith("cuda"))):
        raise ValueError(f"device must be 'cpu' or 'cuda' (or 'cuda:K'), got {c.device!r}")
