"""Moving KTH: KTH action clips with an imposed constant velocity per clip.

Preprocessing follows the paper: grayscale, resized to ``32 x 32``, clips of 16 frames
taken at stride 2, persons 1-16 / 17-20 / 21-25 for train / val / test, six action
classes, and a fixed integer velocity :math:`v = (v_x, v_y) \\in [-2, 2]^2` per clip
imposed with wrap-around:

.. math::
    \\text{clip}'_t = \\texttt{torch.roll}(\\text{clip}_t,\\ \\text{shifts}=(-t v_y,\\ t v_x),\\ \\text{dims}=(-2, -1)),

i.e. :math:`\\text{clip}'_t = \\psi_t(v)\\cdot\\text{clip}_t` in the package convention
(x along the last axis, y up), with ``t`` counting the clip's (strided) frames from 0.

Nothing is downloaded: ``root`` is a local folder. **Accepted layout** of ``root``
(searched recursively; folders whose names start with ``.`` are skipped), the KTH archives
as downloaded and unzipped, or clips pre-extracted from them::

    root/
      00sequences.txt                      optional: the KTH subsequence annotation file
      boxing/
        person01_boxing_d1_uncomp.avi      a KTH video as distributed (decoded with imageio-ffmpeg)
        person01_boxing_d2_uncomp.npy      uint8 [T, H, W] (or [T, H, W, 3], or float in [0, 1])
        person01_boxing_d3_uncomp.npz      the same array under the key "frames"
        person01_boxing_d4/                a folder of frames 0001.pgm, 0002.pgm, ... (or .png/.jpg)
      walking/
        ...

Names are ``personPP_ACTION_dS`` with an optional ``_uncomp``; ``ACTION`` is one of
:data:`KTH_ACTIONS`. Frames may have any size (KTH's are 160 x 120); they are resized
to ``size x size`` by area averaging (the aspect ratio is not kept, as in the reference).
See :mod:`flow_escnn.data._clip_io` for the file formats.

Videos: an ``.avi`` is decoded once with imageio-ffmpeg (the extra ``kth``:
``pip install 'flow_escnn[kth]'``; without it, and with a video that is not cached yet, the
loader stops before decoding anything with a one-line message naming the extra) to
grayscale with OpenCV's weights, as the paper's scripts do. The decoded frames go to a
:class:`~flow_escnn.data._clip_io.FrameCache`, by default ``root/.flow_escnn_cache/`` (mirroring
the layout of ``root``), or the ``cache_dir`` given (for a read-only ``root``); a cached video is
decoded again only when its source's size or modification time changes. The cache holds the
frames at full resolution (about 5.6 GB for all of KTH), so one cache serves every ``size``,
``stride`` and ``num_frames``. A video given both as ``.avi`` and pre-extracted is read from
the pre-extracted clip (the ``.avi`` is then not decoded); the same video twice in
pre-extracted forms is an error.

Clips: with the annotation file ``00sequences.txt`` (1-based, inclusive frame ranges,
four subsequences per video) clips are cut from each subsequence, otherwise from the
whole video. A clip spans ``(num_frames - 1) * stride + 1`` frames; per subsequence
``hop=None`` takes one clip, centred, and ``hop=k`` every window starting ``k`` frames
apart. Subsequences shorter than the span are skipped. Everything is deterministic:
the velocity of a clip is a hash of ``(seed, video name, start frame)``, so a clip keeps
its velocity whatever else is in the folder. (The reference implementation instead
picks a random start per access and flips training clips horizontally at random; here
augmentation is left to the training loop, :func:`~flow_escnn.experiments._kth.train_kth`
flips training clips as the paper does: a horizontal flip also negates ``vx``.)
"""
from __future__ import annotations

import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from flow_escnn._validate import positive_int
from flow_escnn.data._hashrng import hashed_integers
from flow_escnn.data._resample import shift_periodic
from flow_escnn.data._sample_dataset import SampleDataset
from flow_escnn.data._clip_io import (
    CLIP_SUFFIXES,
    VIDEO_SUFFIXES,
    FrameCache,
    clip_length,
    read_clip,
    require_video_decoder,
)
from flow_escnn.data._digits import check_split
from flow_escnn.data._velocities import translation_velocities, velocity_array
from flow_escnn.flows.kinds import TRANSLATION

__all__ = [
    "KTH_ACTIONS",
    "KTH_PERSON_SPLITS",
    "KTHVideo",
    "KTHSample",
    "MovingKTH",
    "KTH_CACHE_DIRNAME",
    "find_kth_videos",
    "kth_frame_cache",
    "check_kth_decoder",
    "read_kth_sequences",
]

logger = logging.getLogger(__name__)

#: The default decoded-frame cache of the ``.avi`` videos: this folder inside the KTH folder.
KTH_CACHE_DIRNAME = ".flow_escnn_cache"

#: Action classes, in label order (the order of the KTH web page).
KTH_ACTIONS: Tuple[str, ...] = ("walking", "jogging", "running", "boxing", "handwaving", "handclapping")
#: Persons of each split (the paper's split).
KTH_PERSON_SPLITS: Dict[str, Tuple[int, ...]] = {
    "train": tuple(range(1, 17)),
    "val": tuple(range(17, 21)),
    "test": tuple(range(21, 26)),
}

_NAME = re.compile(r"^person(\d+)_(" + "|".join(KTH_ACTIONS) + r")_d(\d+)(?:_uncomp)?$")
_SEQ_LINE = re.compile(r"^\s*(person\d+_[a-z]+_d\d+)\s+frames\s+(.+?)\s*$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


@dataclass(frozen=True)
class KTHVideo:
    """One KTH video found on disk.

    Attributes:
        name: ``personPP_ACTION_dS`` (without ``_uncomp``).
        person: person id ``PP``.
        action: the action name.
        scenario: scenario ``S`` (1-4).
        path: the ``.avi`` video, ``.npy`` / ``.npz`` file or frame folder.
    """

    name: str
    person: int
    action: str
    scenario: int
    path: Path

    @property
    def label(self) -> int:
        """Index of :attr:`action` in :data:`KTH_ACTIONS`."""
        return KTH_ACTIONS.index(self.action)

    @property
    def is_video(self) -> bool:
        """Whether :attr:`path` is a video to decode (``.avi``), not a pre-extracted clip."""
        return self.path.suffix.lower() in VIDEO_SUFFIXES


class KTHSample(NamedTuple):
    """One item of :class:`MovingKTH`.

    Attributes:
        clip: float32 ``[T, 1, size, size]`` in [0, 1].
        label: int64 scalar, index into :data:`KTH_ACTIONS`.
        velocity: int64 ``[2]``, the imposed ``(vx, vy)`` in pixels per clip frame.
    """

    clip: torch.Tensor
    label: torch.Tensor
    velocity: torch.Tensor


def _candidate(p: Path) -> Optional[str]:
    """The video stem if ``p`` is a video, clip file or frame folder, else None."""
    if p.is_dir():
        return p.name
    if p.is_file() and (p.suffix in CLIP_SUFFIXES or p.suffix.lower() in VIDEO_SUFFIXES):
        return p.stem
    return None


def _walk(root: Path, skip: Optional[Path]) -> List[Path]:
    """Every file and folder under ``root``, not descending into hidden folders or ``skip``."""
    found: List[Path] = []
    skip_resolved = skip.resolve() if skip is not None else None
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        keep = []
        for d in sorted(dirs):
            p = base / d
            if d.startswith(".") or (skip_resolved is not None and p.resolve() == skip_resolved):
                continue
            keep.append(d)
            found.append(p)
        dirs[:] = keep
        found.extend(base / f for f in sorted(files))
    return sorted(found)


def find_kth_videos(root: Union[str, Path], skip: Union[str, Path, None] = None) -> List[KTHVideo]:
    """All KTH videos and clips under ``root`` (recursively, not in hidden folders nor ``skip``), sorted by name.

    A video found both as ``.avi`` and pre-extracted is listed once, as the pre-extracted clip.

    Raises:
        FileNotFoundError: when ``root`` is not a directory.
        ValueError: when nothing is found (the message says what was expected), or a video
            appears twice in pre-extracted forms.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"KTH folder {root} does not exist; nothing is downloaded. Give a local folder of the KTH videos "
            "(the .avi files as distributed) or of pre-extracted clips (see flow_escnn.data._kth for the layout)"
        )
    videos: Dict[str, KTHVideo] = {}
    for p in _walk(root, None if skip is None else Path(skip).expanduser()):
        stem = _candidate(p)
        m = _NAME.match(stem) if stem else None
        if m is None:
            continue
        name = stem[: -len("_uncomp")] if stem.endswith("_uncomp") else stem
        video = KTHVideo(name, int(m.group(1)), m.group(2), int(m.group(3)), p)
        if name in videos:
            other = videos[name]
            if video.is_video != other.is_video:  # the pre-extracted clip wins over the .avi
                videos[name] = other if video.is_video else video
                continue
            raise ValueError(f"KTH video {name} appears twice: {other.path} and {p}; remove one")
        videos[name] = video
    if not videos:
        raise ValueError(
            f"no KTH videos found under {root}: expected personPP_ACTION_dS_uncomp.avi videos (the KTH archives "
            f"unzipped), or personPP_ACTION_dS[_uncomp].npy/.npz clips or frame folders, with ACTION in "
            f"{KTH_ACTIONS}"
        )
    return [videos[k] for k in sorted(videos)]


def kth_frame_cache(root: Union[str, Path], cache_dir: Union[str, Path, None] = None) -> FrameCache:
    """The decoded-frame cache of the KTH folder ``root``: ``cache_dir``, or ``root/.flow_escnn_cache``."""
    folder = Path(root).expanduser() / KTH_CACHE_DIRNAME if cache_dir is None else Path(cache_dir).expanduser()
    return FrameCache(folder)


def _cache_key(root: Path, video: KTHVideo) -> str:
    return video.path.relative_to(root).with_suffix("").as_posix()


def check_kth_decoder(
    root: Union[str, Path], cache_dir: Union[str, Path, None] = None, persons: Optional[Iterable[int]] = None
) -> List[KTHVideo]:
    """Check, before any work, that the videos of ``persons`` (default: all) can be read: every ``.avi``
    is cached (:func:`kth_frame_cache`) or imageio-ffmpeg is installed. Returns the videos found.

    Raises:
        MissingExtraError: a one-line message naming the extra ``kth``.
        FileNotFoundError, ValueError: as :func:`find_kth_videos`.
    """
    root = Path(root).expanduser()
    cache = kth_frame_cache(root, cache_dir)
    videos = find_kth_videos(root, skip=cache.folder)
    wanted = None if persons is None else set(int(p) for p in persons)
    if any(v.is_video and (wanted is None or v.person in wanted) and cache.lookup(v.path, _cache_key(root, v)) is None
           for v in videos):
        require_video_decoder()
    return videos


def read_kth_sequences(path: Union[str, Path]) -> Dict[str, List[Tuple[int, int]]]:
    """Parse KTH's ``00sequences.txt``: ``{video name: [(first, last), ...]}``, 0-based inclusive.

    Lines that are not ``personPP_ACTION_dS  frames  a-b, c-d, ...`` are ignored.

    Raises:
        ValueError: on a malformed frame range in an annotation line.
    """
    path = Path(path)
    out: Dict[str, List[Tuple[int, int]]] = {}
    for lineno, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        m = _SEQ_LINE.match(line)
        if m is None:
            continue
        ranges = []
        for part in m.group(2).split(","):
            part = part.strip()
            if not part:
                continue
            r = _RANGE.match(part)
            if r is None or int(r.group(1)) < 1 or int(r.group(2)) < int(r.group(1)):
                raise ValueError(f"{path}:{lineno}: malformed frame range {part!r}")
            ranges.append((int(r.group(1)) - 1, int(r.group(2)) - 1))
        out[m.group(1)] = ranges
    return out


def _resize(frames: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(frames))[:, None]  # [T, 1, H, W]
    if tuple(x.shape[-2:]) == (size, size):
        return x[:, 0]
    if min(x.shape[-2:]) >= size:
        return F.interpolate(x, size=(size, size), mode="area")[:, 0]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp_(0.0, 1.0)


class MovingKTH(SampleDataset):
    """KTH action clips with a fixed imposed velocity per clip (see the module docstring).

    All clips of the split are read, resized and moved once, at construction.

    Args:
        root: local KTH folder: the ``.avi`` videos as distributed, or pre-extracted clips
            (layout in the module docstring).
        split: ``"train"``, ``"val"`` or ``"test"``.
        num_frames: frames per clip ``T``.
        stride: temporal stride between clip frames.
        size: output side in pixels.
        velocities: integer velocities ``(vx, vy)`` drawn uniformly per clip; default
            :math:`[-2, 2]^2` (25 velocities, including rest). ``[(0, 0)]`` gives the
            unmoved clips.
        test_velocities: if given, the velocity set of the ``"test"`` split.
        hop: ``None`` for one centred clip per subsequence, or the start-to-start distance
            of consecutive clips.
        sequences: ``"auto"`` uses ``root/00sequences.txt`` when it exists; a path names
            the annotation file; ``None`` ignores it (whole videos).
        persons: override the persons of the split (default :data:`KTH_PERSON_SPLITS`).
        seed: non-negative seed of the velocity draws.
        cache_dir: the decoded-frame cache of the ``.avi`` videos (default
            ``root/.flow_escnn_cache``; see the module docstring).

    Attributes:
        clips: float32 ``[N, T, 1, size, size]``.
        labels: int64 ``[N]``.
        velocities: int64 ``[N, 2]`` imposed ``(vx, vy)``.
        videos: ``N`` video names; starts: ``N`` 0-based first frames.

    Raises:
        FileNotFoundError: when ``root`` (or a named annotation file) is missing.
        ValueError: when the split has no clip long enough, or a file is malformed.
        MissingExtraError: when a video of the split must be decoded and imageio-ffmpeg is not
            installed (raised before anything is decoded).
        CacheWriteError: when the cache folder cannot be written.
    """

    sample_type = KTHSample
    sample_fields = ("clips", "labels", "velocities")


    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        *,
        num_frames: int = 16,
        stride: int = 2,
        size: int = 32,
        velocities: Optional[Iterable[Sequence[int]]] = None,
        test_velocities: Optional[Iterable[Sequence[int]]] = None,
        hop: Optional[int] = None,
        sequences: Union[str, Path, None] = "auto",
        persons: Optional[Iterable[int]] = None,
        seed: int = 0,
        cache_dir: Union[str, Path, None] = None,
    ) -> None:
        super().__init__()
        self.split = check_split(split)
        self.num_frames = positive_int(num_frames, "num_frames")
        self.stride = positive_int(stride, "stride")
        self.size = positive_int(size, "size")
        if hop is not None:
            hop = positive_int(hop, "hop")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        vels = test_velocities if (split == "test" and test_velocities is not None) else velocities
        vset = velocity_array(translation_velocities(2) if vels is None else vels, TRANSLATION)
        self.velocity_set = vset[:, :2].astype(np.int64)
        root = Path(root).expanduser()
        self.root = root
        wanted = set(KTH_PERSON_SPLITS[split] if persons is None else (int(p) for p in persons))

        self.cache = kth_frame_cache(root, cache_dir)
        videos = check_kth_decoder(root, cache_dir, wanted)  # no decoder and a video to decode: stop now
        annotations = self._annotations(root, sequences)
        span = (self.num_frames - 1) * self.stride + 1
        chosen = [v for v in videos if v.person in wanted]
        clip_frames: List[torch.Tensor] = []
        labels: List[int] = []
        names: List[str] = []
        starts: List[int] = []
        for video in chosen:
            source = self.cache.frames(video.path, _cache_key(root, video)) if video.is_video else video.path
            length = clip_length(source)
            segments = annotations.get(video.name, [(0, length - 1)]) if annotations else [(0, length - 1)]
            video_starts = []
            for first, last in segments:
                last = min(last, length - 1)
                if last - first + 1 < span:
                    continue
                if hop is None:
                    video_starts.append(first + (last - first + 1 - span) // 2)
                else:
                    video_starts.extend(range(first, last - span + 2, hop))
            if not video_starts:
                continue
            index = np.asarray(video_starts)[:, None] + self.stride * np.arange(self.num_frames)[None, :]
            needed = np.unique(index)
            frames = _resize(read_clip(source, needed.tolist()), self.size)  # [len(needed), S, S]
            clip_frames.append(frames[torch.from_numpy(np.searchsorted(needed, index))])  # [n, T, S, S]
            labels.extend([video.label] * len(video_starts))
            names.extend([video.name] * len(video_starts))
            starts.extend(video_starts)
        if not clip_frames:
            found = sorted({v.person for v in videos})
            raise ValueError(
                f"no {split!r} clips of {self.num_frames} frames at stride {stride} (span {span}) under {root}: "
                f"persons wanted {sorted(wanted)}, persons found {found}"
                + (f", {len(chosen)} matching video(s) all shorter than the span" if chosen else "")
            )
        clips = torch.cat(clip_frames)  # [N, T, S, S]
        n = clips.shape[0]
        streams = [zlib.crc32(name.encode()) for name in names]
        vidx = np.array(
            [hashed_integers(len(vset), seed, s, np.array([st]), 1)[0, 0] for s, st in zip(streams, starts)],
            dtype=np.int64,
        )
        vel = torch.from_numpy(self.velocity_set[vidx])  # [N, 2]
        t = torch.arange(self.num_frames).view(1, -1, 1)
        shifts = (t * vel[:, None, :]).reshape(n * self.num_frames, 1, 2)
        moved = shift_periodic(clips.reshape(n * self.num_frames, self.size, self.size), shifts)
        self.clips = moved.reshape(n, self.num_frames, 1, self.size, self.size).contiguous()
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.velocities = vel
        self.videos = names
        self.starts = starts

    @staticmethod
    def _annotations(root: Path, sequences: Union[str, Path, None]) -> Dict[str, List[Tuple[int, int]]]:
        if sequences is None:
            return {}
        if isinstance(sequences, str) and sequences == "auto":
            path = root / "00sequences.txt"
            return read_kth_sequences(path) if path.is_file() else {}
        path = Path(sequences)
        if not path.is_file():
            raise FileNotFoundError(f"KTH annotation file {path} does not exist")
        return read_kth_sequences(path)

    def describe(self) -> str:
        return f"stride={self.stride}, |V|={len(self.velocity_set)}, root={str(self.root)!r}"
