"""MNIST-style idx files (``train-images-idx3-ubyte[.gz]`` ...), parsed with numpy.

The idx format (LeCun et al.): a big-endian header ``0x00 0x00 <type> <ndim>``, then
``ndim`` big-endian uint32 dimensions, then the data in C order. The type byte is
``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32,
``0x0E`` float64. MNIST images are ``0x00000803`` (uint8, 3 dims), labels
``0x00000801`` (uint8, 1 dim). The same files serve Fashion-MNIST (e.g. Debian's
``dataset-fashion-mnist`` package).

Splits of :class:`IdxMnistSource`: ``"train"`` is the first ``60000 - val_size``
training images, ``"val"`` the last ``val_size`` (default 6,000, giving the paper's
54k / 6k / 10k), ``"test"`` the ``t10k`` files.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from flow_escnn._validate import positive_int

from flow_escnn.data._digits import DataFileError, DigitSet, DigitSource, MnistNotFoundError, validate_digit_set

__all__ = ["read_idx", "IdxMnistSource", "find_idx_files", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC"]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Union[str, Path], expected_magic: Optional[int] = None) -> np.ndarray:
    """Read one idx file (plain, or gzip-compressed when the name ends in ``.gz``).

    Args:
        path: the file.
        expected_magic: if given, the 4-byte magic number the file must carry
            (:data:`IDX_IMAGES_MAGIC` or :data:`IDX_LABELS_MAGIC` for MNIST).

    Returns:
        The array in native byte order, shape given by the header.

    Raises:
        DataFileError: on an unreadable file, a bad or unexpected magic number, or a size that does not match
            the header (truncated file or trailing bytes).
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:  # includes gzip.BadGzipFile
        raise DataFileError(f"cannot read idx file {path}: {exc}") from exc
    if len(raw) < 4:
        raise DataFileError(f"{path}: too short for an idx header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataFileError(f"{path}: bad idx magic number 0x{magic:08X} (expected 0x0000TTNN with a known type TT)")
    if expected_magic is not None and magic != expected_magic:
        raise DataFileError(f"{path}: magic number 0x{magic:08X}, expected 0x{expected_magic:08X}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated idx header")
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFileError(
            f"{path}: header says shape {shape} ({expected} data bytes) but the file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


_PREFIXES = {"train": "train", "test": "t10k"}


def find_idx_files(folder: Union[str, Path], prefix: str) -> Tuple[Optional[Path], Optional[Path]]:
    """The ``(images, labels)`` files for ``prefix`` (``"train"`` or ``"t10k"``) in ``folder``.

    Accepts the names ``{prefix}-images-idx3-ubyte`` / ``{prefix}-labels-idx1-ubyte`` and the
    variants with ``.idx`` instead of ``-idx``, each optionally gzip-compressed (``.gz``).
    A missing file is returned as ``None``.
    """
    folder = Path(folder)
    found = []
    for kind, nd in (("images", 3), ("labels", 1)):
        hit = None
        for sep in ("-", "."):
            for suffix in ("", ".gz"):
                candidate = folder / f"{prefix}-{kind}{sep}idx{nd}-ubyte{suffix}"
                if candidate.is_file():
                    hit = candidate
                    break
            if hit is not None:
                break
        found.append(hit)
    return found[0], found[1]


class IdxMnistSource(DigitSource):
    """MNIST (or Fashion-MNIST) from a folder of the four standard idx files.

    Args:
        folder: directory holding ``train-images-idx3-ubyte[.gz]``,
            ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]`` and
            ``t10k-labels-idx1-ubyte[.gz]``.
        val_size: how many of the *last* training images form the ``"val"`` split.

    Raises:
        MnistNotFoundError: when the folder or one of the four files is missing.
    """

    def __init__(self, folder: Union[str, Path], val_size: int = 6000) -> None:
        super().__init__()
        self._folder = Path(folder).expanduser()
        if not self._folder.is_dir():
            raise MnistNotFoundError(f"MNIST folder {self._folder} does not exist or is not a directory")
        self._val_size = positive_int(val_size, "val_size")
        self._files: Dict[str, Tuple[Path, Path]] = {}
        missing = []
        for key, prefix in _PREFIXES.items():
            images, labels = find_idx_files(self._folder, prefix)
            if images is None:
                missing.append(f"{prefix}-images-idx3-ubyte[.gz]")
            if labels is None:
                missing.append(f"{prefix}-labels-idx1-ubyte[.gz]")
            if images is not None and labels is not None:
                self._files[key] = (images, labels)
        if missing:
            raise MnistNotFoundError(f"MNIST folder {self._folder} lacks {', '.join(missing)}")

    @property
    def name(self) -> str:
        return f"idx: {self._folder}"

    @property
    def folder(self) -> Path:
        return self._folder

    def _read(self, key: str) -> DigitSet:
        images_path, labels_path = self._files[key]
        images = read_idx(images_path, IDX_IMAGES_MAGIC)
        labels = read_idx(labels_path, IDX_LABELS_MAGIC)
        if labels.shape[0] != images.shape[0]:
            raise DataFileError(f"{images_path} holds {images.shape[0]} images but {labels_path} {labels.shape[0]} labels")
        return validate_digit_set(images, labels, str(images_path))

    def _load_all(self) -> Dict[str, DigitSet]:
        train, test = self._read("train"), self._read("test")
        n = train.images.shape[0]
        if self._val_size >= n:
            raise ValueError(f"val_size={self._val_size} leaves no training images (the train file holds {n})")
        cut = n - self._val_size
        return {
            "train": DigitSet(train.images[:cut], train.labels[:cut]),
            "val": DigitSet(train.images[cut:], train.labels[cut:]),
            "test": test,
        }
