"""The tiny experiment sizes the tests share (one place: a change of the CLI shows up once).

``TINY`` is an :class:`~flow_escnn.experiments.ExperimentConfig` keyword dictionary of a run
that trains in well under a second; :func:`cli` spells a config dictionary as CLI options
(a file that needs other sizes derives them: ``cli(grid_size=12)``, ``dict(TINY, steps=3)``).
:func:`write_tiny_kth` writes a minimal KTH folder of ``.npy`` clips.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

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
