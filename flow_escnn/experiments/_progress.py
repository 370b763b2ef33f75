"""Progress reporting and the live metrics of a run.

Progress: tqdm bars on a terminal, plain lines elsewhere (logs, CI, ``nohup``). A
:class:`LineProgress` writes one line every ``every`` seconds (and one at the end): what it
counts (training steps, or the sequences of an evaluation), fraction done, rate, the last loss /
validation figures the training loop reported, and the estimated time left::

    train fernn: step 120/2000 (6%), 1.92 steps/s, loss 0.0123, val 0.0150, ETA 16m20s
    evaluate fernn: sequence 1280/3500 (37%), 45.1 sequences/s, ETA 49s

Live metrics: :class:`MetricsLog` appends one row per evaluation to ``metrics.csv`` in the run
folder as it happens (flushed at once, so ``tail -f`` and spreadsheets see it during the run),
and with ``tensorboard`` the same numbers as TensorBoard scalars in ``<run>/tensorboard/``.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

__all__ = ["LineProgress", "progress_factory", "logged_progress", "format_duration", "MetricsLog", "METRICS_CSV",
           "TENSORBOARD_DIR", "TensorBoardMissingError", "check_tensorboard"]

#: The live metrics file of a run folder (one row per evaluation).
METRICS_CSV = "metrics.csv"
#: The TensorBoard log folder inside a run folder (``--tensorboard``).
TENSORBOARD_DIR = "tensorboard"


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1h02m05s"``; ``65`` -> ``"1m05s"``; ``4.2`` -> ``"4s"``."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


class LineProgress:
    """The ``update`` / ``set_postfix`` / ``close`` subset of tqdm, as timed plain lines.

    Args:
        total: steps in all.
        initial: steps already done (a resumed run).
        desc: label at the start of each line.
        every: seconds between lines.
        stream: where to write (default ``sys.stderr``).
        clock: the time source (for tests).
        unit: what is counted (``"step"``; an evaluation counts ``"sequence"``).
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: float = 30.0,
                 stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic,
                 unit: str = "step") -> None:
        self.total, self.n, self.desc, self.every = int(total), int(initial), desc, float(every)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.start_n = self.n
        self.start = self.last = clock()
        self.postfix: Dict[str, Any] = {}

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.every:
            self._write()

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix.update(kwargs)

    def close(self) -> None:
        self._write()

    def line(self) -> str:
        elapsed = self.clock() - self.start
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.unit} {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)"]
        parts.append(f"{rate:.3g} {self.unit}s/s")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        if rate > 0 and self.n < self.total:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        elif self.n >= self.total:
            parts.append(f"done in {format_duration(elapsed)}")
        return ", ".join(parts)

    def _write(self) -> None:
        self.last = self.clock()
        print(self.line(), file=self.stream, flush=True)


def progress_factory(
    enabled: bool = True, every: float = 30.0, stream: Optional[TextIO] = None
) -> Optional[Callable[..., Any]]:
    """A progress-bar factory for the training loops: tqdm on a terminal, :class:`LineProgress` otherwise.

    The factory is called as ``factory(total=..., initial=..., desc=...)``, and by evaluations with
    ``unit="sequence"`` as well.

    Args:
        enabled: False gives None (no progress at all).
        every: seconds between plain lines.
        stream: the stream (default ``sys.stderr``); a terminal gets tqdm bars.
    """
    if not enabled:
        return None
    out = stream if stream is not None else sys.stderr
    if out.isatty():
        from tqdm.auto import tqdm

        def bar(total: int, initial: int = 0, desc: str = "", unit: str = "step") -> Any:
            return tqdm(total=total, initial=initial, desc=desc, file=out, dynamic_ncols=True, leave=True, unit=unit)

        return bar

    def lines(total: int, initial: int = 0, desc: str = "", unit: str = "step") -> LineProgress:
        return LineProgress(total, initial, desc, every=every, stream=out, unit=unit)

    return lines


class _LogStream:
    """A text stream whose lines go to a logger at INFO level."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        if text.strip():
            self.logger.info("%s", text.rstrip("\n"))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def logged_progress(logger: logging.Logger, every: float = 30.0) -> Callable[..., LineProgress]:
    """A progress factory whose :class:`LineProgress` lines go to ``logger`` at INFO level (shown with ``-v``):
    the default of library calls that run for minutes without a progress factory of their own."""

    def lines(total: int, initial: int = 0, desc: str = "", unit: str = "step") -> LineProgress:
        return LineProgress(total, initial, desc, every=every, stream=_LogStream(logger), unit=unit)  # type: ignore[arg-type]

    return lines


# -- live metrics -----------------------------------------------------------------------------------------------
class TensorBoardMissingError(ImportError, ValueError):
    """``tensorboard`` was asked for, and ``torch.utils.tensorboard`` cannot be imported."""


def check_tensorboard() -> None:
    """Import ``torch.utils.tensorboard`` (what ``--tensorboard`` writes with), before any work starts.

    Raises:
        TensorBoardMissingError: one line naming the fix (``pip install tensorboard``).
    """
    try:
        import torch.utils.tensorboard  # noqa: F401 - imported to see that it can be
    except Exception as exc:  # noqa: BLE001 - not installed, or installed but broken: both are reported
        cause = (str(exc).strip().splitlines() or [""])[0]
        raise TensorBoardMissingError(
            f"--tensorboard writes TensorBoard scalars with torch.utils.tensorboard, which cannot be imported "
            f"({type(exc).__name__}: {cause}): pip install tensorboard, or leave out --tensorboard ({METRICS_CSV} in "
            "the run folder has the same numbers)"
        ) from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class MetricsLog:
    """``metrics.csv`` of a run folder (and TensorBoard scalars): one row per evaluation, written as it happens.

    Columns: ``step``, ``wall_time`` (Unix seconds, as TensorBoard's), ``train_time_s`` (seconds in
    optimisation steps so far), ``train_loss`` (of the last step), the task's validation metric
    (``val_mse``; KTH: ``val_accuracy``), ``lr``, ``eval_time_s`` (seconds this validation took).
    Every row is flushed when written.

    Args:
        folder: the run folder.
        val_name: the column of the validation metric.
        resume_step: the step a resumed run continues from: rows past it (written after that
            checkpoint by a run that was then stopped) are dropped, so no step appears twice. A run
            folder without ``metrics.csv`` (written before the file existed) gets the rows of
            ``history``. None: a fresh run (a new file).
        history: the validation curve of the checkpoint (``[{"step", "train_loss", val_name,
            "train_time_s"}, ...]``), for that case.
        tensorboard: also write the scalars to ``folder/tensorboard`` (needs the tensorboard package:
            :func:`check_tensorboard`); on resume TensorBoard drops its events past ``resume_step``.
    """

    def __init__(self, folder: Any, val_name: str = "val_mse", resume_step: Optional[int] = None,
                 history: Sequence[Dict[str, Any]] = (), tensorboard: bool = False) -> None:
        self.path = Path(folder) / METRICS_CSV
        self.columns = ["step", "wall_time", "train_time_s", "train_loss", val_name, "lr", "eval_time_s"]
        self.val_name = val_name
        kept: List[Dict[str, Any]] = []
        if resume_step is not None:
            kept = self._rows_up_to(resume_step, history)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:  # the kept rows, then os.replace: never a half-written file
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({k: _cell(row.get(k)) for k in self.columns} for row in kept)
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", newline="")
        self._csv = csv.writer(self._file)
        self._writer: Any = None
        if tensorboard:
            check_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                log_dir=str(Path(folder) / TENSORBOARD_DIR),
                purge_step=None if resume_step is None else int(resume_step) + 1,
            )

    def _rows_up_to(self, step: int, history: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return [dict(h) for h in history if int(h.get("step", 0)) <= step]
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = []
        for row in rows:
            try:
                row_step = int(row.get("step") or "")
            except ValueError:
                continue  # a line cut short by a killed process
            if row_step <= step:
                kept.append(row)
        return kept

    def write(self, step: int, train_loss: Optional[float], val: float, lr: Optional[float],
              train_time_s: float, eval_time_s: float) -> None:
        """Append (and flush) the row of one evaluation; TensorBoard gets ``train_loss``, the
        validation metric and ``lr`` at ``step``."""
        wall = time.time()
        row = {"step": int(step), "wall_time": round(wall, 3), "train_time_s": float(train_time_s),
               "train_loss": None if train_loss is None else float(train_loss), self.val_name: float(val),
               "lr": None if lr is None else float(lr), "eval_time_s": float(eval_time_s)}
        self._csv.writerow([_cell(row[k]) for k in self.columns])
        self._file.flush()
        if self._writer is not None:
            for name in ("train_loss", self.val_name, "lr"):
                if row[name] is not None:
                    self._writer.add_scalar(name, row[name], int(step), walltime=wall)
            self._writer.flush()

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
