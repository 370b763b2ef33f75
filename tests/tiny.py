"""The tiny experiment sizes the tests share (one place: a change of the CLI shows up once).

``TINY`` is an :class:`~flow_escnn.experiments.ExperimentConfig` keyword dictionary of a run
that trains in well under a second; :func:`cli` spells a config dictionary as CLI options
(a file that needs other sizes derives them: ``cli(grid_size=12)``, ``dict(TINY, steps=3)``).
:func:`write_tiny_kth` writes a minimal KTH folder of ``.npy`` clips, :func:`write_tiny_kth_avi` one of
``.avi`` videos in the layout of the KTH download (needs imageio-ffmpeg).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

TINY: Dict[str, Any] = dict(
    digits="synthetic", grid_size=10, num_train=12, num_val=4, num_test=4, num_per_velocity=2, t_in=3, t_out=2,
    batch_size=4, hidden_channels=3, decoder_layers=1, eval_every=1, checkpoint_every=2, train_velocities="1",
    test_velocities="2",
)


def cli(config: Dict[str, Any] = TINY, *, progress: bool = False, plots: bool = False, **changes: Any) -> List[str]:
    """``config`` (with ``changes``) as ``train`` options, plus ``--no-progress`` unless ``progress``
    and ``--no-plots`` unless ``plots`` (an option set to None or False is left out)."""
    args: List[str] = []
    for name, value in {**config, **changes}.items():
        if value is True:
            args.append("--" + name.replace("_", "-"))
        elif value is not None and value is not False:
            args += ["--" + name.replace("_", "-"), str(value)]
    return args + ([] if progress else ["--no-progress"]) + ([] if plots else ["--no-plots"])


def write_tiny_kth(root: Path) -> Path:
    """Two actions for persons 1, 2 (train), 17 (val) and 21 (test): 12x12 clips of 10 frames, seeded."""
    rng = np.random.default_rng(0)
    for person in (1, 2, 17, 21):
        for action in ("walking", "boxing"):
            folder = root / action
            folder.mkdir(parents=True, exist_ok=True)
            clip = np.zeros((10, 12, 12), dtype=np.uint8)
            for t in range(10):
                if action == "walking":
                    clip[t, 4:8, t % 12] = 255  # a bar moving right
                else:
                    clip[t, 3:9, 5:7] = 255 if t % 2 else 80  # a flickering block
            clip = np.clip(clip + rng.integers(0, 20, clip.shape), 0, 255).astype(np.uint8)
            np.save(folder / f"person{person:02d}_{action}_d1_uncomp.npy", clip)
    return root


#: The persons of the tiny KTH folders: two of the training split, one each of validation and test.
TINY_KTH_PERSONS: Tuple[int, ...] = (1, 2, 17, 21)


def tiny_kth_video(person: int, action: str, num_frames: int = 10, height: int = 12, width: int = 16) -> "np.ndarray":
    """uint8 ``[T, H, W]``: a 4x4 square on a dark background, moving one pixel per frame (right for
    walking, down for boxing, with wrap-around), its brightness set by the person."""
    frames = np.full((num_frames, height, width), 10, dtype=np.uint8)
    level = 150 + 4 * person
    for t in range(num_frames):
        y0, x0 = (2, 1 + t) if action == "walking" else (1 + t, 6)
        ys, xs = np.arange(y0, y0 + 4) % height, np.arange(x0, x0 + 4) % width
        frames[t][np.ix_(ys, xs)] = level
    return frames


def write_avi(path: Path, frames: "np.ndarray", codec: str = "rawvideo") -> Path:
    """Write uint8 grayscale ``[T, H, W]`` frames as a video with imageio-ffmpeg's writer (``rawvideo``:
    lossless, so decoding gives the frames back exactly; ``mpeg4``: lossy, like KTH's own files)."""
    import imageio_ffmpeg

    t, h, w = frames.shape
    pix_fmt_out = "gray" if codec == "rawvideo" else "yuv420p"
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), pix_fmt_in="gray", pix_fmt_out=pix_fmt_out, codec=codec,
                                         fps=25, quality=None, macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def write_tiny_kth_avi(root: Path, persons: Sequence[int] = TINY_KTH_PERSONS,
                       actions: Sequence[str] = ("walking", "boxing"), **size: int) -> Path:
    """The KTH download's layout (``root/ACTION/personPP_ACTION_d1_uncomp.avi``) with :func:`tiny_kth_video`
    clips: persons 1, 2 (train), 17 (val) and 21 (test) by default, 10 frames of 16x12."""
    for person in persons:
        for action in actions:
            folder = root / action
            folder.mkdir(parents=True, exist_ok=True)
            write_avi(folder / f"person{person:02d}_{action}_d1_uncomp.avi", tiny_kth_video(person, action, **size))
    return root
