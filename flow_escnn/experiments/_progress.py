"""Progress reporting: tqdm bars on a terminal, plain lines elsewhere (logs, CI, ``nohup``).

A :class:`LineProgress` writes one line every ``every`` seconds (and one at the end):
step, fraction done, steps per second, the last loss / validation figures the training loop
reported, and the estimated time left::

    train fernn: step 120/2000 (6%), 1.92 steps/s, loss 0.0123, val 0.0150, ETA 16m20s
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Optional, TextIO

__all__ = ["LineProgress", "progress_factory", "format_duration"]


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
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", every: float = 30.0,
                 stream: Optional[TextIO] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.n, self.desc, self.every = int(total), int(initial), desc, float(every)
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
        parts = [f"{self.desc}: step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f}%)"]
        parts.append(f"{rate:.3g} steps/s")
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

        def bar(total: int, initial: int = 0, desc: str = "") -> Any:
            return tqdm(total=total, initial=initial, desc=desc, file=out, dynamic_ncols=True, leave=True)

        return bar

    def lines(total: int, initial: int = 0, desc: str = "") -> LineProgress:
        return LineProgress(total, initial, desc, every=every, stream=out)

    return lines
