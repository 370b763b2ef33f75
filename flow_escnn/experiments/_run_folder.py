"""Run folders: one process owns a folder at a time, and nothing an earlier run wrote is lost.

Every command that writes a folder (``train``, ``evaluate``, ``demo``, ``kth``, and their
Python functions) claims it with :func:`claim_run_folder` for as long as it writes there:

* **Ownership.** The claim is an exclusive ``flock`` on ``<folder>/.flow_escnn-run``, a small
  file that records the owner (process id, host, command, start time). The operating system
  drops the lock when its process ends, ``kill -9`` included, so a killed run never leaves the
  folder stuck; a second process that asks for a folder in use is refused with
  :class:`RunFolderBusy`, naming the owner. Claims are re-entrant within one process (the CLI
  claims before it validates the data, the training function claims again). Under
  ``torchrun`` only rank 0 writes files, and only rank 0 claims.
* **Nothing replaced.** A *fresh* run (not ``--resume``) needs a folder that holds no run:
  anything in it but the lock file and ``replaced-*`` folders makes it a run's, so the new run
  refuses (:class:`RunFolderError`). With ``replace=True`` (``--overwrite``) the earlier files
  move to ``<folder>/replaced-<time>/`` *before* anything new is written, so a run killed
  part-way never leaves two runs' files side by side. ``--overwrite`` moves only what a
  flow_escnn command wrote: a folder with neither the lock file nor a run's first file
  (``config.json``, ``checkpoint.pt``, ``results.json``, ``metrics.json``) is refused, so a
  mistyped ``--out ~`` moves nothing. A sub-folder that another process owns (an evaluation in
  progress) is never moved.

The lock is advisory: it protects against flow_escnn commands, not against other programs.
``flock`` works on local file systems; on NFS it depends on the server (Linux maps it to
``fcntl`` byte-range locks, which NFSv4 supports).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

__all__ = [
    "LOCK_NAME",
    "RUN_MARKERS",
    "RunFolderError",
    "RunFolderBusy",
    "claim_run_folder",
    "folder_owner",
    "run_files",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: The lock file of a run folder (it stays in the folder; the lock is released, not the file).
LOCK_NAME = ".flow_escnn-run"

#: The first files a command writes to a folder: a folder holding one of them is a flow_escnn run's,
#: even without the lock file (runs written before it existed).
RUN_MARKERS = ("config.json", "checkpoint.pt", "results.json", "metrics.json")

_REPLACED = "replaced-"

# folder (resolved) -> [file descriptor, claim count] of the claims this process holds
_HELD: Dict[str, List[int]] = {}

if sys.platform == "win32":  # pragma: no cover - the test machines run Linux
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (it holds another run, it is a file, it is not writable)."""


class RunFolderBusy(RunFolderError):
    """Another process owns the run folder right now."""


def run_files(folder: PathLike) -> List[str]:
    """The names in ``folder`` that belong to a run: everything but the lock file and ``replaced-*``
    folders (sorted; empty when the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME and not p.name.startswith(_REPLACED))


def folder_owner(folder: PathLike) -> Optional[str]:
    """Who owns ``folder`` now (``"pid 12 on host, train, since 2026-12-07 10:00:00"``), or None
    when no process holds its lock (or it has none); this process counts as an owner too."""
    path = Path(folder) / LOCK_NAME
    if str(Path(folder).resolve()) in _HELD:
        return _describe(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None
        return _describe(path)
    finally:
        os.close(fd)


def _describe(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return f"pid {info.get('pid')} on {info.get('host')}, {info.get('command')}, since {info.get('since')}"


def check_run_path(out: PathLike, flag: str = "--out") -> Path:
    """``out`` as a path, refused when it is empty or lies under a file (what :func:`claim_run_folder`
    checks first, for commands that must check it before other work)."""
    if isinstance(out, str) and not out.strip():
        raise RunFolderError(f"{flag} is empty; give a folder for the run's files, e.g. {flag} runs/first")
    out = Path(out)
    for p in [out, *out.parents]:
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"{flag} {out}: {p} is a file, not a folder; choose another output folder")
    return out


def _os_problem(out: Path, flag: str, exc: OSError) -> RunFolderError:
    reason = exc.strerror or str(exc)
    return RunFolderError(f"cannot write {flag} {out}: {reason} ({exc.filename or out}); choose a folder you can write to")


@contextlib.contextmanager
def claim_run_folder(
    out: PathLike, command: str, fresh: bool = True, replace: bool = False, flag: str = "--out",
) -> Iterator[Path]:
    """Own the run folder ``out`` for the block (module docstring): create it, lock it, and for a
    ``fresh`` run make sure it holds no earlier run (``replace``: move that run aside first).

    Args:
        out: the folder.
        command: what the owner is doing (shown to a process that is refused).
        fresh: a new run (``False`` for ``--resume``, which continues the run in the folder).
        replace: move the files of an earlier run to ``out/replaced-<time>/`` (``--overwrite``).
        flag: the option that named the folder, for messages.

    Yields:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        RunFolderBusy: another process owns the folder.
        RunFolderError: ``out`` is empty or a file, cannot be created or written, holds an earlier
            run (``fresh`` without ``replace``), or holds files that no run wrote (``replace``).
    """
    out = check_run_path(out, flag)
    key = str(out.resolve())
    held = _HELD.get(key)
    if held is not None:  # this process owns it already: nothing to check again
        held[1] += 1
        try:
            yield out
        finally:
            held[1] -= 1
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _os_problem(out, flag, exc) from None
    try:
        if not _try_lock(fd):
            raise RunFolderBusy(
                f"{flag} {out} is in use by another run ({_describe(out / LOCK_NAME)}); wait for it to end, "
                f"or choose another {flag}"
            )
        _HELD[key] = [fd, 1]
        try:
            try:
                _write_owner(fd, command)
                if fresh:
                    _make_room(out, replace, flag)
            except OSError as exc:
                raise _os_problem(out, flag, exc) from None
            yield out
        finally:
            del _HELD[key]
            _unlock(fd)
    finally:
        os.close(fd)


def _write_owner(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")}
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _make_room(out: Path, replace: bool, flag: str) -> None:
    names = run_files(out)
    if not names:
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if not replace:
        raise RunFolderError(
            f"{flag} {out} already holds a run ({shown}); pass --overwrite to move its files to "
            f"{out / (_REPLACED + '<time>')}, --resume to continue it (train), or choose another {flag}"
        )
    if not _was_run_folder(out, names):
        raise RunFolderError(
            f"{flag} {out} holds files that no flow_escnn run wrote ({shown}); --overwrite moves only a run's "
            f"files: choose an empty or new {flag}"
        )
    busy = [n for n in names if (out / n).is_dir() and folder_owner(out / n) is not None]
    if busy:
        raise RunFolderBusy(
            f"{flag} {out}: {busy[0]} is in use by another run ({folder_owner(out / busy[0])}); "
            "wait for it to end before --overwrite moves it"
        )
    keep = _replaced_folder(out)
    for name in names:
        os.replace(out / name, keep / name)
    logger.warning("moved the earlier run's %d files to %s", len(names), keep)


def _was_run_folder(out: Path, names: List[str]) -> bool:
    """Whether a flow_escnn command wrote ``names``: one of them is a run's first file."""
    return any(n in RUN_MARKERS for n in names) or any(
        (out / n).is_dir() and any((out / n / m).exists() for m in (LOCK_NAME, *RUN_MARKERS)) for n in names
    )


def _replaced_folder(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in [""] + [f"-{i}" for i in range(1, 1000)]:
        keep = out / f"{_REPLACED}{stamp}{suffix}"
        try:
            keep.mkdir()
        except FileExistsError:
            continue
        return keep
    raise RunFolderError(f"{out} holds 1000 replaced-{stamp}* folders; clean them up")

