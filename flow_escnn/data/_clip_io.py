"""Reading grayscale video clips: ``.npy`` / ``.npz`` arrays, frame folders, and ``.avi`` videos.

A pre-extracted clip is one of

* ``NAME.npy``: an array ``[T, H, W]`` (grayscale), ``[T, H, W, 1]`` or ``[T, H, W, 3]``
  (RGB, converted with the ITU-R BT.601 weights 0.299 / 0.587 / 0.114, as OpenCV's
  ``COLOR_BGR2GRAY`` does for BGR input); ``uint8`` (0..255), ``uint16`` (0..65535) or
  float in :math:`[0, 1]`. Read memory-mapped, so only the frames used are loaded.
* ``NAME.npz``: the same array under the key ``"frames"`` (or as the archive's only array).
* a folder ``NAME/`` of frame images, ordered by the numbers in their names (``1.pgm,
  2.pgm, ..., 10.pgm`` or ``0001.pgm``...): binary PGM (``P5``, what
  ``ffmpeg ... %04d.pgm`` writes) is read with numpy; ``.png`` / ``.jpg`` / ``.bmp`` need
  Pillow (imported only then).

Videos (``.avi``, or any container ffmpeg reads) are decoded by :func:`decode_video` with
`imageio-ffmpeg <https://pypi.org/project/imageio-ffmpeg/>`_, the optional extra ``kth``
(``pip install 'flow_escnn[kth]'``; it ships its own ffmpeg binary), to ``rgb24`` and then
to grayscale with OpenCV's fixed-point ``COLOR_BGR2GRAY`` formula (what the paper's scripts
do through ``cv2``). Decoding is slow, so :class:`FrameCache` keeps each decoded video as a
``uint8 [T, H, W]`` ``.npy`` (read memory-mapped like any clip, about 19 KB per 160 x 120
frame: some 5.6 GB for all of KTH) beside a ``.json`` that records the source's size and
modification time: a video is decoded again only when that record no longer matches
(or the cache file is missing or not the size recorded). Both files are written atomically
(a temporary file, then a rename), the record last.
"""
from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from flow_escnn.data._digits import DataFileError

__all__ = [
    "FRAME_EXTENSIONS",
    "CLIP_SUFFIXES",
    "VIDEO_SUFFIXES",
    "VIDEO_EXTRA",
    "MissingExtraError",
    "CacheWriteError",
    "FrameCache",
    "read_pgm",
    "list_frame_files",
    "clip_length",
    "read_clip",
    "require_video_decoder",
    "decode_video",
]

logger = logging.getLogger(__name__)

#: Frame-image suffixes accepted inside a frame folder.
FRAME_EXTENSIONS = (".pgm", ".png", ".jpg", ".jpeg", ".bmp")
#: Suffixes of single-file clips.
CLIP_SUFFIXES = (".npy", ".npz")
#: Suffixes of videos, decoded with imageio-ffmpeg (:func:`decode_video`).
VIDEO_SUFFIXES = (".avi",)
#: The extra of this package that installs the video decoder.
VIDEO_EXTRA = "kth"

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


# -- videos -------------------------------------------------------------------------------------------------------
class MissingExtraError(ValueError, ImportError):
    """An optional dependency is not installed; the message is one line naming the extra to install.

    Both an ``ImportError`` (what it is) and a ``ValueError`` (so that the command line reports
    it in one line, like every other unusable input)."""


class CacheWriteError(OSError):
    """The decoded-frame cache could not be written; the message names the folder and the fix."""


def require_video_decoder() -> Any:
    """The ``imageio_ffmpeg`` module.

    Raises:
        MissingExtraError: when it is not installed (``pip install 'flow_escnn[kth]'``).
    """
    try:
        import imageio_ffmpeg  # optional dependency: the extra "kth"
    except ImportError:
        raise MissingExtraError(
            f"decoding .avi videos needs imageio-ffmpeg: pip install 'flow_escnn[{VIDEO_EXTRA}]' (or convert the "
            "videos to .npy clips or frame folders yourself, see flow_escnn.data._kth)"
        ) from None
    return imageio_ffmpeg


def _rgb_to_gray_u8(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [..., 3]`` RGB -> ``uint8 [...]`` with OpenCV's fixed-point BT.601 weights (``COLOR_BGR2GRAY``)."""
    a = rgb.astype(np.uint32)
    return ((a[..., 0] * 4899 + a[..., 1] * 9617 + a[..., 2] * 1868 + 8192) >> 14).astype(np.uint8)


def _ffmpeg_reason(exc: BaseException) -> str:
    """The informative line of an imageio-ffmpeg error (its message carries ffmpeg's whole banner)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "invalid" in ln.lower() or "no such file" in ln.lower()]
    return (errors[0] if errors else lines[0] if lines else type(exc).__name__)[:300]


def decode_video(path: Union[str, Path]) -> np.ndarray:
    """Decode every frame of a video file to grayscale ``uint8 [T, H, W]`` (see the module docstring).

    Raises:
        MissingExtraError: when imageio-ffmpeg is not installed.
        DataFileError: when ffmpeg cannot read the file or it holds no frame.
    """
    path = Path(path)
    ffmpeg = require_video_decoder()
    frames: List[np.ndarray] = []
    reader = None
    try:
        reader = ffmpeg.read_frames(str(path), pix_fmt="rgb24", bits_per_pixel=24)
        meta = next(reader)
        width, height = (int(v) for v in meta["size"])
        for buf in reader:
            frames.append(_rgb_to_gray_u8(np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)))
    except (OSError, RuntimeError, StopIteration, KeyError, ValueError) as exc:
        raise DataFileError(
            f"cannot decode the video {path}: {_ffmpeg_reason(exc)}. Re-download it, or convert it yourself to "
            "an .npy clip or a frame folder (see flow_escnn.data._kth)"
        ) from exc
    finally:
        if reader is not None:
            reader.close()
    if not frames:
        raise DataFileError(f"the video {path} holds no frame; re-download it")
    expected = float(meta.get("fps") or 0) * float(meta.get("duration") or 0)
    if expected and len(frames) < 0.9 * expected - 1:
        logger.warning("%s: decoded %d frames where its header announces about %.0f; the file may be truncated",
                       path, len(frames), expected)
    return np.stack(frames)


def _source_record(source: Path) -> Dict[str, int]:
    st = source.stat()
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    """``write(file object)`` to a temporary file beside ``path``, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


class FrameCache:
    """A folder of decoded videos, each ``KEY.npy`` (``uint8 [T, H, W]``) with its record ``KEY.json``.

    ``KEY`` is the video's path relative to the data folder without its suffix (so the cache
    mirrors the data's layout). A cached video is valid while its record says the same cache
    version, the source's size and modification time (ns) are unchanged, and the ``.npy``
    has the size recorded; :meth:`frames` decodes the source again otherwise.

    Args:
        folder: the cache folder (created on the first write).
        decode: the decoder, ``path -> uint8 [T, H, W]`` (default :func:`decode_video`).
    """

    VERSION = 1

    def __init__(self, folder: Union[str, Path], decode: Optional[Callable[[Path], np.ndarray]] = None) -> None:
        self.folder = Path(folder).expanduser()
        self.decode = decode_video if decode is None else decode

    def __repr__(self) -> str:
        return f"FrameCache({str(self.folder)!r})"

    def paths(self, key: str) -> Tuple[Path, Path]:
        """``(KEY.npy, KEY.json)`` in the cache folder."""
        base = self.folder / key
        return base.with_name(base.name + ".npy"), base.with_name(base.name + ".json")

    def lookup(self, source: Union[str, Path], key: str) -> Optional[Path]:
        """The cached ``.npy`` of ``source`` if it is valid (see the class docstring), else None."""
        frames_path, record_path = self.paths(key)
        try:
            record = json.loads(record_path.read_text())
            valid = (
                isinstance(record, dict)
                and record.get("version") == self.VERSION
                and record.get("source") == _source_record(Path(source))
                and frames_path.stat().st_size == record.get("npy_size")
            )
        except (OSError, ValueError):
            return None
        return frames_path if valid else None

    def frames(self, source: Union[str, Path], key: str) -> Path:
        """The cached ``.npy`` of ``source``: looked up, or decoded and written now.

        Raises:
            MissingExtraError: when the video must be decoded and imageio-ffmpeg is missing.
            DataFileError: when the video cannot be decoded.
            CacheWriteError: when the cache folder cannot be written.
        """
        source = Path(source)
        found = self.lookup(source, key)
        if found is not None:
            return found
        before = _source_record(source)
        logger.info("decoding %s into %s", source, self.folder)
        frames = self.decode(source)
        frames_path, record_path = self.paths(key)
        try:
            frames_path.parent.mkdir(parents=True, exist_ok=True)
            if record_path.exists():
                record_path.unlink()  # never a record beside frames it does not describe
            _write_atomically(frames_path, lambda fh: np.save(fh, np.ascontiguousarray(frames, dtype=np.uint8)))
            record = {
                "version": self.VERSION,
                "source": before,
                "source_name": source.name,
                "shape": list(frames.shape),
                "npy_size": frames_path.stat().st_size,
            }
            _write_atomically(record_path, lambda fh: fh.write(json.dumps(record, indent=1).encode()))
        except OSError as exc:
            raise CacheWriteError(
                f"cannot write the decoded-frame cache {self.folder} ({exc.strerror or exc}): give a writable "
                "folder (cache_dir=..., or --cache-dir on the command line)"
            ) from exc
        return frames_path
