"""Run-time plumbing shared by the commands: seeding, determinism, checkpoints, versions, JSON.

Checkpoints are plain ``torch.save`` dictionaries that load with ``weights_only=True`` (RNG
states are stored as tensors and lists, the config as a dict), written atomically (a
temporary file, then ``os.replace``), so an interrupted run never leaves a torn file. A
write that fails (a full disk, a file-size limit) removes its partial file, keeps the
previous version and raises :class:`OutputWriteError` naming the path.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import platform
import random
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import numpy as np
import torch

__all__ = [
    "seed_everything",
    "deterministic_mode",
    "batch_indices",
    "rng_state",
    "set_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "load_run_model",
    "CheckpointError",
    "OutputWriteError",
    "versions",
    "write_json",
    "resolve_device",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Use deterministic algorithms inside the block (``warn_only``: ops without one warn), then restore.

    On CUDA this also needs ``CUBLAS_WORKSPACE_CONFIG`` set before cuBLAS starts; it is set to
    ``:4096:8`` here unless already defined. cuDNN autotuning is switched off in the block.
    """
    if not enabled:
        yield
        return
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)
        torch.backends.cudnn.benchmark = was_benchmark


def batch_indices(num_items: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the mini-batch of optimisation step ``step`` (0-based).

    Epoch ``e = step // ceil(N / batch_size)`` visits a permutation of ``range(N)`` drawn from a
    generator seeded with ``(seed, e)``; the last batch of an epoch may be smaller. A pure
    function of its arguments, so a resumed run sees exactly the batches it would have seen.
    """
    per_epoch = max(1, math.ceil(num_items / batch_size))
    epoch, k = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(num_items, generator=gen)
    return perm[k * batch_size : (k + 1) * batch_size]


def rng_state() -> Dict[str, Any]:
    """The global RNG states (Python, numpy, torch CPU and CUDA), ``weights_only``-loadable."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: Dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class OutputWriteError(OSError):
    """A file of a run could not be written (full disk, file-size limit, I/O error); the partial
    file was removed and the previous version of the file, if any, kept."""


def _write_atomically(path: Path, write: Callable[[Path], None], what: str) -> None:
    """``write(tmp)`` then ``os.replace(tmp, path)``; on failure remove ``tmp`` and raise
    :class:`OutputWriteError` saying why (full disk, size limit, ...) and what was kept."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink()
        kept = f"the previous {what} at {path} is kept" if path.exists() else f"no earlier {what} was there"
        raise OutputWriteError(f"could not write {path}: {_why_write_failed(path, exc)}; {kept}") from exc


def _file_size_limit() -> Optional[int]:
    """The soft ``RLIMIT_FSIZE`` (``ulimit -f``) in bytes, or None when unlimited (or not POSIX)."""
    if sys.platform == "win32":
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _why_write_failed(path: Path, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    limit = _file_size_limit()
    if code == errno.EFBIG or limit is not None:
        return f"the file-size limit was reached (ulimit -f: {limit} bytes)"
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if code in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < 1 << 20):
        return f"the disk is full ({free} bytes free)" if free is not None else "the disk is full"
    detail = (getattr(exc, "strerror", None) or str(exc)).strip().splitlines()
    return f"the write failed ({type(exc).__name__}: {detail[0] if detail else '?'}; a full disk or a file-size " \
           "limit gives this too)"


def save_checkpoint(path: PathLike, payload: Dict[str, Any]) -> None:
    """``torch.save`` to ``path`` atomically.

    Raises:
        OutputWriteError: the write failed; ``path`` holds the previous checkpoint, if any, and no
            partial file is left.
    """
    path = Path(path)
    _write_atomically(path, lambda tmp: torch.save(payload, tmp), "checkpoint")
    logger.info("checkpoint written: %s (step %s)", path, payload.get("step"))


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: naming the path when it does not exist.
        CheckpointError: when the file is truncated, empty or not a flow_escnn checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises OSError, EOFError, KeyError, RuntimeError, ...
        raise CheckpointError(
            f"{path} is not a readable flow_escnn checkpoint ({type(exc).__name__}: {exc}); it may be truncated "
            "(a run killed while writing it) or another file: point to a checkpoint.pt written by `train`, or retrain"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "config" not in payload:
        raise CheckpointError(f"{path} is a torch file but not a flow_escnn checkpoint (no model/config inside)")
    return payload


def load_run_model(checkpoint: PathLike, config_class: Any, build: Callable[[Any], torch.nn.Module],
                   device: Any = "cpu") -> Any:
    """``(model, config, payload)`` of a run checkpoint: its config read as ``config_class`` and resolved,
    the model built by ``build(config)`` with the checkpoint's weights, in eval mode on ``device``."""
    payload = load_checkpoint(checkpoint)
    config = config_class.from_dict(payload["config"]).resolve()
    model = build(config)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), config, payload


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as a flow_escnn checkpoint."""


def versions() -> Dict[str, str]:
    """Versions of Python, torch, numpy, escnn and flow_escnn, and the platform."""
    import escnn

    import flow_escnn

    return {
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": str(np.__version__),
        "escnn": str(getattr(escnn, "__version__", "unknown")),
        "flow_escnn": str(flow_escnn.__version__),
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
    }


def write_json(path: PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (atomically; NaN/inf become null).

    Raises:
        OutputWriteError: the write failed (the previous file, if any, is kept).
    """

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return float(x) if math.isfinite(float(x)) else None
        if isinstance(x, np.integer):
            return int(x)
        return x

    text = json.dumps(clean(data), indent=2) + "\n"
    _write_atomically(Path(path), lambda tmp: tmp.write_text(text), "file")


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)``, with a clear error when CUDA is asked for but not available."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch.cuda.is_available() is False (torch {torch.__version__})")
    return torch.device(name)
