"""Reading pre-extracted grayscale video clips: ``.npy`` / ``.npz`` arrays or frame folders.

flow_escnn decodes no video formats (that needs a video library). A clip is one of

* ``NAME.npy``: an array ``[T, H, W]`` (grayscale), ``[T, H, W, 1]`` or ``[T, H, W, 3]``
  (RGB, converted with the ITU-R BT.601 weights 0.299 / 0.587 / 0.114, as OpenCV's
  ``COLOR_BGR2GRAY`` does for BGR input); ``uint8`` (0..255), ``uint16`` (0..65535) or
  float in :math:`[0, 1]`. Read memory-mapped, so only the frames used are loaded.
* ``NAME.npz``: the same array under the key ``"frames"`` (or as the archive's only array).
* a folder ``NAME/`` of frame images, ordered by the numbers in their names (``1.pgm,
  2.pgm, ..., 10.pgm`` or ``0001.pgm``...): binary PGM (``P5``, what
  ``ffmpeg ... %04d.pgm`` writes) is read with numpy; ``.png`` / ``.jpg`` / ``.bmp`` need
  Pillow (imported only then).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from flow_escnn.data._digits import DataFileError

__all__ = ["FRAME_EXTENSIONS", "CLIP_SUFFIXES", "read_pgm", "list_frame_files", "clip_length", "read_clip"]

#: Frame-image suffixes accepted inside a frame folder.
FRAME_EXTENSIONS = (".pgm", ".png", ".jpg", ".jpeg", ".bmp")
#: Suffixes of single-file clips.
CLIP_SUFFIXES = (".npy", ".npz")

_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_PGM_TOKEN = re.compile(rb"\s*(#[^\n]*\n\s*)*([^\s#]+)")


def read_pgm(path: Union[str, Path]) -> np.ndarray:
    """Read a binary PGM (``P5``) image: ``uint8`` (maxval < 256) or ``uint16`` ``[H, W]``.

    Raises:
        ValueError: on anything but a well-formed binary PGM.
    """
    path = Path(path)
    data = path.read_bytes()
    tokens: List[bytes] = []
    pos = 0
    while len(tokens) < 4:
        m = _PGM_TOKEN.match(data, pos)
        if m is None:
            raise DataFileError(f"{path}: malformed PGM header")
        tokens.append(m.group(2))
        pos = m.end()
    if tokens[0] != b"P5":
        raise DataFileError(f"{path}: not a binary PGM (magic {tokens[0][:8]!r}, expected b'P5')")
    try:
        w, h, maxval = (int(t) for t in tokens[1:])
    except ValueError:
        raise DataFileError(f"{path}: malformed PGM header {tokens!r}") from None
    if w < 1 or h < 1 or not 0 < maxval < 65536:
        raise DataFileError(f"{path}: bad PGM size {w}x{h} or maxval {maxval}")
    pos += 1  # exactly one whitespace byte after maxval
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    need = w * h * dtype.itemsize
    if len(data) - pos < need:
        raise DataFileError(f"{path}: truncated PGM ({len(data) - pos} of {need} pixel bytes)")
    img = np.frombuffer(data, dtype=dtype, count=w * h, offset=pos).reshape(h, w)
    if dtype.itemsize == 2:
        img = img.astype(np.uint16)
    if int(img.max(initial=0)) > maxval:
        raise DataFileError(f"{path}: pixel values exceed maxval {maxval}")
    return img


def _natural_key(p: Path) -> Tuple:
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.stem)) + (p.suffix,)


def list_frame_files(folder: Union[str, Path]) -> List[Path]:
    """The frame images of a frame folder, in natural (numeric) order.

    Raises:
        ValueError: when the folder holds no frame images or mixes image formats.
    """
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS]
    if not files:
        raise DataFileError(f"frame folder {folder} holds no frame images ({', '.join(FRAME_EXTENSIONS)})")
    suffixes = {p.suffix.lower() for p in files}
    if len(suffixes) > 1:
        raise DataFileError(f"frame folder {folder} mixes image formats {sorted(suffixes)}")
    return sorted(files, key=_natural_key)


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".pgm":
        return read_pgm(path)
    try:
        from PIL import Image  # optional dependency, only for png/jpg/bmp frames
    except ImportError:
        raise ImportError(
            f"reading {path.suffix} frames needs Pillow (`pip install pillow`); or extract frames as .pgm "
            "(ffmpeg ... %04d.pgm) or save clips as .npy"
        ) from None
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def _to_unit_gray(arr: np.ndarray, where: str) -> np.ndarray:
    """``[T, H, W(, C)]`` of uint8 / uint16 / float -> float32 ``[T, H, W]`` in [0, 1]."""
    if arr.ndim == 4 and arr.shape[-1] in (1, 3):
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        else:
            scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(arr.dtype, 1.0)
            arr = (np.asarray(arr, dtype=np.float64) / scale) @ _RGB_WEIGHTS
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise DataFileError(f"{where}: expected a clip [T, H, W], [T, H, W, 1] or [T, H, W, 3], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.asarray(arr, dtype=np.float32) / np.float32(255.0)
    if arr.dtype == np.uint16:
        return np.asarray(arr, dtype=np.float32) / np.float32(65535.0)
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataFileError(f"{where}: expected uint8, uint16 or float frames, got dtype {arr.dtype}")
    out = np.asarray(arr, dtype=np.float32)
    lo, hi = float(out.min()), float(out.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0 + 1e-6:
        raise DataFileError(f"{where}: float frames must lie in [0, 1], found range [{lo}, {hi}]")
    return np.clip(out, 0.0, 1.0)


def _open_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "frames" in keys:
                return z["frames"]
            if len(keys) == 1:
                return z[keys[0]]
            raise DataFileError(f"{path}: an .npz clip needs a 'frames' array (or exactly one array), found {keys}")
    except (OSError, EOFError, ValueError) as exc:  # numpy says "Cannot load file containing pickled data" on garbage
        if isinstance(exc, DataFileError):
            raise
        raise DataFileError(f"cannot read clip {path}: {exc} (expected an .npy / .npz clip [T, H, W(, C)])") from exc


def clip_length(path: Union[str, Path]) -> int:
    """Number of frames of a clip (``.npy`` / ``.npz`` file or frame folder)."""
    path = Path(path)
    if path.is_dir():
        return len(list_frame_files(path))
    arr = _open_array(path)
    if arr.ndim not in (3, 4):
        raise DataFileError(f"{path}: expected a clip [T, H, W(, C)], got shape {arr.shape}")
    return int(arr.shape[0])


def read_clip(path: Union[str, Path], frames: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read (some frames of) a clip as float32 grayscale in [0, 1].

    Args:
        path: an ``.npy`` / ``.npz`` file or a frame folder (see the module docstring).
        frames: 0-based frame indices to read (default: all), in the order wanted.

    Returns:
        ``[len(frames), H, W]`` float32.

    Raises:
        ValueError: on malformed files, mixed frame sizes, or out-of-range frame indices.
    """
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        idx = range(len(files)) if frames is None else list(frames)
        if any(not 0 <= i < len(files) for i in idx):
            raise DataFileError(f"{path}: frame index out of range for a clip of {len(files)} frames")
        images = [_read_image(files[i]) for i in idx]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DataFileError(f"{path}: frames have different sizes {sorted(shapes)}")
        dtypes = {im.dtype for im in images}
        if len(dtypes) > 1:
            raise DataFileError(f"{path}: frames have different bit depths {sorted(map(str, dtypes))}")
        return _to_unit_gray(np.stack(images), str(path))
    arr = _open_array(path)
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise DataFileError(f"{path}: expected a clip [T, H, W(, C)] with T >= 1, got shape {arr.shape}")
    if frames is not None:
        idx = np.asarray(list(frames), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= arr.shape[0]):
            raise DataFileError(f"{path}: frame index out of range for a clip of {arr.shape[0]} frames")
        arr = arr[idx]
    return _to_unit_gray(np.asarray(arr), str(path))
