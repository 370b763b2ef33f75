"""Flowing volumes (flow_escnn.data._flowing_volumes): shapes, determinism, exact motion, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flow_escnn._compat import gspaces
from flow_escnn.data import FlowingVolumes, SyntheticDigits, VolumeBatch, generate_volume_sequences, volume_velocities
from flow_escnn.flows._volume_flowset import VolumeFlowSet

SMALL_DIGITS = SyntheticDigits(num_train=12, num_val=6, num_test=6, size=12, seed=3)


def roll(f0: torch.Tensor, t: int, v) -> torch.Tensor:
    """psi_t of a translation (vx, vy, vz) in escnn's voxel convention: array axes (-z, -y, x)."""
    vx, vy, vz = v[:3]
    return torch.roll(f0, shifts=(-t * vz, -t * vy, t * vx), dims=(-3, -2, -1))


# -- shapes, dtypes, range ----------------------------------------------------------------------------------------
def test_shapes_dtypes_and_range():
    b = generate_volume_sequences(3, num_frames=4, grid_size=(6, 8, 10), seed=5)
    assert isinstance(b, VolumeBatch)
    assert b.frames.shape == (3, 4, 1, 6, 8, 10) and b.frames.dtype == torch.float32
    assert b.velocities.shape == (3, 2, 6) and b.velocities.dtype == torch.int64
    assert b.velocity_index.shape == (3, 2) and b.velocity_index.dtype == torch.int64
    assert b.labels.shape == (3, 2) and bool((b.labels == -1).all())  # blobs have no class
    assert b.offsets.shape == (3, 2, 3) and b.offsets.dtype == torch.int64
    assert float(b.frames.min()) >= 0.0 and float(b.frames.max()) <= 1.0
    assert float(b.frames[:, 0].amax(dim=(1, 2, 3, 4)).min()) > 0.5  # every sequence shows something
    vset = torch.tensor(volume_velocities(), dtype=torch.int64)
    assert torch.equal(b.velocities, vset[b.velocity_index])
    assert bool((b.offsets >= 0).all()) and bool((b.offsets < torch.tensor([10, 8, 6])).all())  # x < W, y < H, z < D


def test_the_draws_cover_the_velocity_set_and_the_torus():
    b = generate_volume_sequences(150, num_frames=1, grid_size=4, num_objects=2, seed=1)
    assert set(b.velocity_index.flatten().tolist()) == set(range(27))
    for axis in range(3):
        assert set(b.offsets[..., axis].flatten().tolist()) == {0, 1, 2, 3}


def test_digit_slabs():
    b = generate_volume_sequences(4, num_frames=2, grid_size=8, num_objects=1, shapes="digits", digits=SMALL_DIGITS,
                                  split="val", seed=2)
    labels = SMALL_DIGITS.load("val").labels
    assert set(b.labels.flatten().tolist()) <= set(labels.tolist()) and bool((b.labels >= 0).all())
    for i in range(4):
        f0 = b.frames[i, 0, 0]
        assert float(f0.max()) > 0.5
        depth = (f0.flatten(1).amax(dim=1) > 0).sum().item()  # a slab along z: the same plane on 2-4 slices
        assert 2 <= depth <= 4
        slices = [f0[j] for j in range(8) if float(f0[j].max()) > 0]
        assert all(torch.equal(s, slices[0]) for s in slices)


# -- determinism --------------------------------------------------------------------------------------------------
def test_same_seed_same_data_and_sequence_i_is_independent_of_n():
    kw = dict(num_frames=3, grid_size=8, seed=7)
    a = generate_volume_sequences(5, **kw)
    b = generate_volume_sequences(5, **kw)
    c = generate_volume_sequences(2, **kw)
    d = generate_volume_sequences(2, start=3, **kw)
    for field in VolumeBatch._fields:
        assert torch.equal(getattr(a, field), getattr(b, field)), field
        assert torch.equal(getattr(a, field)[:2], getattr(c, field)), field
        assert torch.equal(getattr(a, field)[3:], getattr(d, field)), field


def test_digits_are_deterministic_and_independent_of_n():
    kw = dict(num_frames=2, grid_size=8, shapes="digits", digits=SMALL_DIGITS, seed=4)
    a = generate_volume_sequences(4, **kw)
    b = generate_volume_sequences(1, start=2, **kw)
    assert torch.equal(a.frames[2:3], b.frames) and torch.equal(a.labels[2:3], b.labels)


def test_another_seed_or_split_gives_other_data():
    kw = dict(num_frames=2, grid_size=8)
    base = generate_volume_sequences(3, seed=0, **kw)
    assert not torch.equal(base.frames, generate_volume_sequences(3, seed=1, **kw).frames)
    assert not torch.equal(base.frames, generate_volume_sequences(3, seed=0, split="val", **kw).frames)
    assert not torch.equal(base.frames, generate_volume_sequences(3, seed=0, start=1, **kw).frames)


# -- exact motion ---------------------------------------------------------------------------------------------------
def test_a_translating_object_is_rolled_exactly():
    v = (1, -2, 1)
    b = generate_volume_sequences(2, num_frames=5, grid_size=8, velocities=[v], num_objects=1, seed=3)
    for i in range(2):
        f0 = b.frames[i, 0]
        for t in range(5):
            assert torch.equal(b.frames[i, t], roll(f0, t, v)), t
        # control: the opposite sign is another motion, so the check above can fail
        assert not torch.equal(b.frames[i, 1], roll(f0, 1, (-1, 2, -1)))
        assert not torch.equal(b.frames[i, 1], roll(f0, -1, v))


def test_every_default_velocity_is_exact():
    b = generate_volume_sequences(40, num_frames=3, grid_size=6, num_objects=1, seed=9)
    for i in range(40):
        v = b.velocities[i, 0].tolist()
        for t in range(3):
            assert torch.equal(b.frames[i, t], roll(b.frames[i, 0], t, v)), (i, t, v)


def test_objects_sharing_a_velocity_move_the_whole_frame():
    v = (0, 1, -1)
    b = generate_volume_sequences(2, num_frames=4, grid_size=8, velocities=[v], num_objects=3, seed=6)
    for t in range(4):
        assert torch.equal(b.frames[:, t], roll(b.frames[:, 0], t, v))


@pytest.mark.parametrize("velocity, dims", [
    ((0, 0, 0, 0, 0, 1), (-2, -1)),   # about z: as in 2D
    ((0, 0, 0, 1, 0, 0), (-2, -3)),   # about x
    ((0, 0, 0, 0, 1, 0), (-1, -3)),   # about y
])
def test_a_quarter_turn_per_frame_is_rot90(velocity, dims):
    b = generate_volume_sequences(2, num_frames=5, grid_size=8, velocities=[velocity], num_objects=1, seed=11)
    axis = [i for i in range(3) if velocity[3 + i]][0]
    assert bool((b.offsets[..., [i for i in range(3) if i != axis]] == 0).all())  # centred across the axis
    for i in range(2):
        f0 = b.frames[i, 0]
        for t in range(5):
            assert torch.equal(b.frames[i, t], torch.rot90(f0, t, dims=dims)), t
        assert torch.equal(b.frames[i, 4], f0)  # four quarter turns
        assert not torch.equal(b.frames[i, 1], torch.rot90(f0, -1, dims=dims))  # control: the other way round


def test_a_screw_about_z_and_a_clockwise_spin():
    b = generate_volume_sequences(2, num_frames=4, grid_size=8, velocities=[(0, 0, 1, 0, 0, -1)], num_objects=1, seed=2)
    for t in range(4):
        assert torch.equal(b.frames[:, t], torch.rot90(roll(b.frames[:, 0], t, (0, 0, 1)), -t, dims=(-2, -1)))


def test_rotations_on_a_box_whose_rotation_plane_is_square():
    b = generate_volume_sequences(1, num_frames=3, grid_size=(4, 8, 8), velocities=[(0, 0, 0, 0, 0, 1)], num_objects=1)
    assert torch.equal(b.frames[0, 2], torch.rot90(b.frames[0, 0], 2, dims=(-2, -1)))


# -- velocity sets ----------------------------------------------------------------------------------------------------
def test_velocity_sets_in_every_form():
    default = volume_velocities()
    assert default == VolumeFlowSet.translations(gspaces.trivialOnR3(), 1).velocities
    assert volume_velocities("1") == default
    assert volume_velocities("1:0:0,0:0:-1") == [(1, 0, 0, 0, 0, 0), (0, 0, -1, 0, 0, 0)]
    assert volume_velocities(np.array([[1, 0, 0], [0, 2, 0]])) == [(1, 0, 0, 0, 0, 0), (0, 2, 0, 0, 0, 0)]
    assert volume_velocities([(0, 0, 0, 0, 0, 3), (2.0, 0, 0, 2, 0, 0)]) == [(0, 0, 0, 0, 0, -1), (2, 0, 0, 2, 0, 0)]
    assert volume_velocities(VolumeFlowSet.translations(gspaces.trivialOnR3(), 1)) == default
    static = generate_volume_sequences(1, num_frames=3, grid_size=6, velocities="0")
    assert torch.equal(static.frames[0, 2], static.frames[0, 0])


@pytest.mark.parametrize("velocities, match", [
    ([(0.5, 0, 0)], "vx must be an integer"),
    ([(0, 0, 0, 0, 0, 0.5)], "kz must be an integer"),
    ([(True, 0, 0)], "vx must be an integer"),
    ([(0, 0, 0, 1, 0, 1)], "turns about 2 axes"),
    ([(1, 0, 0, 0, 0, 1)], "not along the rotation axis"),
    ([(1, 0)], "got 2 entries"),
    ([(1, 0, 0), (1, 0, 0)], "duplicate velocity"),
    ([(0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 5)], "duplicate velocity"),
    ([], "empty"),
    ("1:x:0", "translation3d"),
    ("1.5", "translation3d"),
    (3, "collection of velocities"),
])
def test_bad_velocities_are_refused(velocities, match):
    with pytest.raises(ValueError, match=match):
        generate_volume_sequences(1, num_frames=2, grid_size=4, velocities=velocities)


@pytest.mark.parametrize("kwargs, match", [
    (dict(grid_size=0), "grid_size must be a positive integer"),
    (dict(grid_size=(4, 4)), r"grid_size must be a positive integer \(a cube\) or a triple"),
    (dict(grid_size=(4, 0, 4)), "grid_size"),
    (dict(grid_size=(4, 4, 6), velocities=[(0, 0, 0, 0, 0, 1)]), "H == W"),
    (dict(grid_size=(6, 4, 4), velocities=[(0, 0, 0, 1, 0, 0)]), "D == H"),
    (dict(grid_size=(6, 4, 4), velocities=[(0, 0, 0, 0, 1, 0)]), "D == W"),
    (dict(shapes="cubes"), r"shapes must be one of \('blobs', 'digits'\)"),
    (dict(num_sequences=0), "num_sequences must be a positive integer"),
    (dict(num_frames=0), "num_frames"),
    (dict(num_objects=0), "num_objects"),
    (dict(seed=-1), "seed"),
    (dict(start=-1), "start"),
    (dict(split="training"), "split must be one of"),
    (dict(shapes="digits", digits=np.zeros((0, 8, 8))), r"digits must be images \[M, h, w\]"),
])
def test_bad_arguments_are_refused(kwargs, match):
    kw = dict(num_sequences=1, num_frames=2, grid_size=4)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate_volume_sequences(**kw)


# -- the dataset --------------------------------------------------------------------------------------------------------
def test_the_dataset_items_repr_and_collate():
    ds = FlowingVolumes("val", num_sequences=3, num_frames=2, grid_size=6, seed=1)
    assert len(ds) == 3
    item = ds[1]
    assert item.frames.shape == (2, 1, 6, 6, 6) and item.velocities.shape == (2, 6)
    assert torch.equal(item.frames, ds.frames[1]) and torch.equal(item.velocity_index, ds.velocity_index[1])
    assert repr(ds) == "FlowingVolumes(split='val', N=3, T=2, grid=6x6x6, shapes='blobs', K=2, |V|=27)"
    same = generate_volume_sequences(3, num_frames=2, grid_size=6, split="val", seed=1)
    assert torch.equal(ds.frames, same.frames) and torch.equal(ds.offsets, same.offsets)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch.frames.shape == (2, 2, 1, 6, 6, 6) and batch.velocities.shape == (2, 2, 6)


def test_the_test_split_takes_test_velocities():
    kw = dict(num_sequences=2, num_frames=2, grid_size=4, velocities="1", test_velocities=[(2, 0, 0), (0, 0, 2)])
    test = FlowingVolumes("test", **kw)
    train = FlowingVolumes("train", **kw)
    assert test.velocity_set.tolist() == [[2, 0, 0, 0, 0, 0], [0, 0, 2, 0, 0, 0]] and len(train.velocity_set) == 27
    assert set(map(tuple, test.velocities.flatten(0, 1).tolist())) <= {(2, 0, 0, 0, 0, 0), (0, 0, 2, 0, 0, 0)}


def test_a_digit_dataset_names_its_source():
    ds = FlowingVolumes("train", num_sequences=2, num_frames=2, grid_size=8, shapes="digits", digits=SMALL_DIGITS)
    assert "shapes='digits'" in repr(ds) and "synthetic 12x12" in repr(ds)
    assert bool((ds.labels >= 0).all()) and ds[0].labels.shape == (2,)
