"""Moving KTH: KTH action clips with an imposed constant velocity per clip.

Preprocessing follows the paper: grayscale, resized to ``32 x 32``, clips of 16 frames
taken at stride 2, persons 1-16 / 17-20 / 21-25 for train / val / test, six action
classes, and a fixed integer velocity :math:`v = (v_x, v_y) \\in [-2, 2]^2` per clip
imposed with wrap-around:

.. math::
    \\text{clip}'_t = \\texttt{torch.roll}(\\text{clip}_t,\\ \\text{shifts}=(-t v_y,\\ t v_x),\\ \\text{dims}=(-2, -1)),

i.e. :math:`\\text{clip}'_t = \\psi_t(v)\\cdot\\text{clip}_t` in the package convention
(x along the last axis, y up), with ``t`` counting the clip's (strided) frames from 0.

Nothing is downloaded, and no video is decoded here. **Accepted layout** of ``root``
(searched recursively, so the per-action folders of the KTH archives may stay)::

    root/
      00sequences.txt                      optional: the KTH subsequence annotation file
      boxing/
        person01_boxing_d1_uncomp.npy      uint8 [T, H, W] (or [T, H, W, 3], or float in [0, 1])
        person01_boxing_d2_uncomp.npz      the same array under the key "frames"
        person01_boxing_d3/                a folder of frames 0001.pgm, 0002.pgm, ... (or .png/.jpg)
      walking/
        ...

Names are ``personPP_ACTION_dS`` with an optional ``_uncomp``; ``ACTION`` is one of
:data:`KTH_ACTIONS`. Frames may have any size (KTH's are 160 x 120); they are resized
to ``size x size`` by area averaging (the aspect ratio is not kept, as in the reference).
See :mod:`flow_escnn.data._clip_io` for the file formats. To produce them from the
original ``.avi`` files, where a decoder is available::

    # ffmpeg: one folder of 8-bit grayscale PGM frames per video
    for f in */*.avi; do d="${f%_uncomp.avi}"; mkdir -p "$d";
        ffmpeg -loglevel error -i "$f" -vf format=gray "$d/%04d.pgm"; done

    # or Python with OpenCV: one .npy per video
    cap, frames = cv2.VideoCapture(path), []
    ok, frame = cap.read()
    while ok:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        ok, frame = cap.read()
    np.save(path.replace(".avi", ".npy"), np.stack(frames))

Clips: with the annotation file ``00sequences.txt`` (1-based, inclusive frame ranges,
four subsequences per video) clips are cut from each subsequence, otherwise from the
whole video. A clip spans ``(num_frames - 1) * stride + 1`` frames; per subsequence
``hop=None`` takes one clip, centred, and ``hop=k`` every window starting ``k`` frames
apart. Subsequences shorter than the span are skipped. Everything is deterministic:
the velocity of a clip is a hash of ``(seed, video name, start frame)``, so a clip keeps
its velocity whatever else is in the folder. (The reference implementation instead
picks a random start per access and flips training clips horizontally at random; here
augmentation is left to the training loop: a horizontal flip also negates ``vx``.)
"""
from __future__ import annotations

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
from flow_escnn.data._clip_io import CLIP_SUFFIXES, clip_length, read_clip
from flow_escnn.data._digits import check_split
from flow_escnn.data._velocities import translation_velocities, velocity_array
from flow_escnn.flows.kinds import TRANSLATION

__all__ = [
    "KTH_ACTIONS",
    "KTH_PERSON_SPLITS",
    "KTHVideo",
    "KTHSample",
    "MovingKTH",
    "find_kth_videos",
    "read_kth_sequences",
]

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
        path: the ``.npy`` / ``.npz`` file or frame folder.
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
    """The video stem if ``p`` is a clip file or folder, else None."""
    if p.is_dir():
        return p.name
    if p.is_file() and p.suffix in CLIP_SUFFIXES:
        return p.stem
    return None


def find_kth_videos(root: Union[str, Path]) -> List[KTHVideo]:
    """All KTH clips under ``root`` (recursively), sorted by name.

    Raises:
        FileNotFoundError: when ``root`` is not a directory.
        ValueError: when no clip is found (the message says what was found instead and
            how to convert ``.avi`` files), or a video appears twice.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"KTH folder {root} does not exist; nothing is downloaded. Give a local folder of pre-extracted "
            "clips (see flow_escnn.data._kth for the layout)"
        )
    videos: Dict[str, KTHVideo] = {}
    avi = 0
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() == ".avi":
            avi += 1
            continue
        stem = _candidate(p)
        m = _NAME.match(stem) if stem else None
        if m is None:
            continue
        name = stem[: -len("_uncomp")] if stem.endswith("_uncomp") else stem
        if name in videos:
            raise ValueError(f"KTH video {name} appears twice: {videos[name].path} and {p}")
        videos[name] = KTHVideo(name, int(m.group(1)), m.group(2), int(m.group(3)), p)
    if not videos:
        hint = (
            f" It holds {avi} .avi file(s), which cannot be decoded here: convert them to .npy clips or "
            "folders of .pgm frames first (see flow_escnn.data._kth)."
            if avi
            else ""
        )
        raise ValueError(
            f"no KTH clips found under {root}: expected personPP_ACTION_dS[_uncomp].npy/.npz files or frame "
            f"folders with ACTION in {KTH_ACTIONS}.{hint}"
        )
    return [videos[k] for k in sorted(videos)]


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
        root: local folder of pre-extracted clips (layout in the module docstring).
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

    Attributes:
        clips: float32 ``[N, T, 1, size, size]``.
        labels: int64 ``[N]``.
        velocities: int64 ``[N, 2]`` imposed ``(vx, vy)``.
        videos: ``N`` video names; starts: ``N`` 0-based first frames.

    Raises:
        FileNotFoundError: when ``root`` (or a named annotation file) is missing.
        ValueError: when the split has no clip long enough, or a file is malformed.
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

        videos = find_kth_videos(root)
        annotations = self._annotations(root, sequences)
        span = (self.num_frames - 1) * self.stride + 1
        chosen = [v for v in videos if v.person in wanted]
        clip_frames: List[torch.Tensor] = []
        labels: List[int] = []
        names: List[str] = []
        starts: List[int] = []
        for video in chosen:
            length = clip_length(video.path)
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
            frames = _resize(read_clip(video.path, needed.tolist()), self.size)  # [len(needed), S, S]
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
