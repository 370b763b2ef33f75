"""MNIST World data (flow_escnn.data._mnist_world): views, poses, digit motion, actions, determinism.

Every property is checked against an oracle written here with plain torch.roll / torch.rot90 /
numpy (never the library's own helpers), and every check is shown to flag a wrong variant (the
"control"), so that a check that cannot fail does not pass for a test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flow_escnn.data import (
    WORLD_SPLITS,
    MNISTWorld,
    SyntheticDigits,
    WorldSample,
    actions_to_steps,
    draw_window,
    generate_world_episodes,
    inspection_episode,
)

SOURCE = SyntheticDigits(num_train=40, num_val=10, num_test=10, size=8, seed=3)
DIGITS = SOURCE.load("train")
SMALL = dict(world_size=14, view_size=8, num_digits=2)


def gen(num_episodes=6, num_frames=8, **kw):
    opts = dict(SMALL, keep_worlds=True)
    opts.update(kw)
    return generate_world_episodes(DIGITS, num_episodes, num_frames, **opts)


# -- oracles (independent of the library) ----------------------------------------------------------------
def crop_oracle(world, pose, w, move_sign=1, turn_sign=1):
    """view(x) = world(R x + p): translate the world by -p, rotate it by -heading, take the centre."""
    n = world.shape[-1]
    px, py, deg = (float(v) for v in pose)
    assert px == round(px) and py == round(py) and deg % 90 == 0
    q = int(round(deg / 90.0))
    moved = torch.roll(world, shifts=(move_sign * int(py), -move_sign * int(px)), dims=(-2, -1))
    turned = torch.rot90(moved, -turn_sign * q, dims=(-2, -1))
    o = (n - w) // 2
    return turned[..., o : o + w, o : o + w]


def bilinear_oracle(world, pose, w, turn_sign=1):
    """view(x) = world(R x + p) by periodic bilinear interpolation, pixel by pixel in numpy."""
    f = world.reshape(world.shape[-2:]).double().numpy()
    n = f.shape[-1]
    px, py, deg = (float(v) for v in pose)
    th = math.radians(turn_sign * deg)
    c, s = math.cos(th), math.sin(th)
    cw, cn = (w - 1) / 2.0, (n - 1) / 2.0
    out = np.empty((w, w))
    for i in range(w):
        for j in range(w):
            x, y = j - cw, cw - i
            col, row = c * x - s * y + px + cn, cn - (s * x + c * y + py)
            r0, c0 = math.floor(row), math.floor(col)
            fr, fc = row - r0, col - c0
            at = lambda r, cc: f[r % n, cc % n]  # noqa: E731
            out[i, j] = ((1 - fr) * ((1 - fc) * at(r0, c0) + fc * at(r0, c0 + 1))
                         + fr * ((1 - fc) * at(r0 + 1, c0) + fc * at(r0 + 1, c0 + 1)))
    return torch.from_numpy(out)


def poses_oracle(actions, start, n):
    """P_t = P_{t-1} a_t written out: p_t = p_{t-1} + R(theta_{t-1}) u_t mod N, theta_t = theta_{t-1} + r_t."""
    out = [np.asarray(start, dtype=np.float64)]
    for a in np.asarray(actions, dtype=np.float64)[1:]:
        x, y, th = out[-1]
        c, s = math.cos(math.radians(th)), math.sin(math.radians(th))
        out.append(np.array([(x + c * a[0] - s * a[1]) % n, (y + s * a[0] + c * a[1]) % n, (th + a[2]) % 360.0]))
    return np.stack(out)


def torus_close(a, b, n, atol=1e-7):
    d = np.abs(np.asarray(a) - np.asarray(b))
    return bool(np.all(np.minimum(d, n - d) < atol))


def grid_aligned(pose):
    return all(abs(float(v) - round(float(v))) < 1e-9 for v in pose[:2]) and float(pose[2]) % 90 == 0


# -- views are the world pulled back by the pose ----------------------------------------------------------
@pytest.mark.parametrize("world_size,view_size", [(14, 8), (13, 7)])
def test_views_are_world_crops_at_the_poses(world_size, view_size):
    b = gen(world_size=world_size, view_size=view_size, turns=90, random_heading=True, max_step=3, seed=5)
    w = view_size
    ok = wrong_move = wrong_turn = True
    odd_turns = 0
    for e in range(b.views.shape[0]):
        for t in range(b.views.shape[1]):
            world, pose, view = b.worlds[e, t, 0], b.poses[e, t], b.views[e, t, 0]
            assert view.shape == (w, w)
            ok &= torch.equal(view, crop_oracle(world, pose, w))
            wrong_move &= torch.equal(view, crop_oracle(world, pose, w, move_sign=-1))
            wrong_turn &= torch.equal(view, crop_oracle(world, pose, w, turn_sign=-1))
            odd_turns += int(round(float(pose[2]) / 90)) % 2
    assert ok
    assert odd_turns > 0
    assert not wrong_move, "control: the oracle with the wrong sign of the move must fail"
    assert not wrong_turn, "control: the oracle with the wrong sign of the turn must fail"
    assert b.views.dtype == torch.float32 and b.views.shape == (6, 8, 1, w, w)


def test_views_match_the_world_models_transport():
    """Fully observed, static: view_t = a_t^{-1} . view_{t-1}, the model's ActionTransport (quarter turns)."""
    from flow_escnn._compat import enn, gspaces
    from flow_escnn.flows._action import ActionTransport
    from flow_escnn.flows._flowset import FlowSet

    b = gen(num_episodes=4, num_frames=6, view_size=None, static=True, turns=90, turn_probability=0.5, seed=2)
    gs = gspaces.rot2dOnR2(4)
    motion = ActionTransport(enn.FieldType(gs, [gs.trivial_repr]), FlowSet.identity(gs), (14, 14))
    steps = actions_to_steps(b.actions, 4)
    assert bool((steps[..., 2].abs() > 0).any()) and bool((steps[..., :2].abs() > 0).any())
    ok = control = True
    for t in range(1, 6):
        prev = b.views[:, t - 1][:, None]  # [B, V=1, C=1, H, W]
        ok &= torch.equal(motion(prev, steps[:, t])[:, 0], b.views[:, t])
        backwards = steps[:, t].clone()
        backwards[:, :2] *= -1
        control &= torch.equal(motion(prev, backwards)[:, 0], b.views[:, t])
    assert ok
    assert not control, "control: transporting by the wrong move must fail"


# -- poses ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("turns", [None, 90, 45])
def test_pose_follows_the_group_law(turns):
    b = gen(num_episodes=5, num_frames=10, turns=turns, turn_probability=0.4, random_heading=turns is not None,
            seed=11)
    n = SMALL["world_size"]
    wrong = 0
    for e in range(5):
        acts, poses = b.actions[e].numpy(), b.poses[e].numpy()
        assert torus_close(poses, poses_oracle(acts, poses[0], n), n)
        # control: moving along the *new* heading (R_t u_t instead of R_{t-1} u_t) must be flagged
        swapped = acts.copy()
        swapped[1:, 2] = 0.0
        alt = poses_oracle(swapped, poses[0], n)
        wrong += int(not torus_close(poses[:, :2], alt[:, :2], n))
    if turns is not None:
        assert wrong > 0
    assert bool((b.poses[:, 0, :2] == b.poses[:, 0, :2].round()).all())  # integer start positions


# -- the world --------------------------------------------------------------------------------------------
def test_digits_move_at_their_velocities():
    vels = [(1, -1), (2, 1), (-1, 0), (0, 2)]
    b = gen(num_episodes=8, num_frames=6, num_digits=1, velocities=vels, seed=4)
    assert b.velocities.shape == (8, 1, 2)
    assert set(map(tuple, b.velocities[:, 0].tolist())) <= set(vels)
    ok, control = True, True
    for e in range(8):
        vx, vy = (int(v) for v in b.velocities[e, 0])
        for t in range(5):
            w0, w1 = b.worlds[e, t, 0], b.worlds[e, t + 1, 0]
            ok &= torch.equal(w1, torch.roll(w0, shifts=(-vy, vx), dims=(-2, -1)))
            control &= torch.equal(w1, torch.roll(w0, shifts=(vy, vx), dims=(-2, -1)))  # y down: wrong
    assert ok
    assert not control


def test_digits_are_placed_summed_and_clamped():
    """World 0 is the sum of the centred digits rolled to their offsets, clamped to [0, 1]."""
    b = gen(num_episodes=4, num_frames=2, num_digits=3, world_size=12, view_size=8, seed=8)
    n, h = 12, DIGITS.images.shape[-1]
    top = (n - h) // 2
    for e in range(4):
        total = torch.zeros(n, n)
        for k in range(3):
            canvas = torch.zeros(n, n)
            canvas[top : top + h, top : top + h] = torch.from_numpy(DIGITS.images[int(b.digit_index[e, k])])
            ox, oy = (int(v) for v in b.offsets[e, k])
            total += torch.roll(canvas, shifts=(-oy, ox), dims=(-2, -1))
        assert torch.allclose(b.worlds[e, 0, 0], total.clamp(0, 1), atol=1e-6)
        assert not torch.allclose(b.worlds[e, 0, 0], total.clamp(0, 0.5), atol=1e-6)  # control: clamped at 1
    assert torch.equal(b.labels, torch.from_numpy(DIGITS.labels)[b.digit_index])


def test_static_split_keeps_the_world_still():
    still = gen(num_episodes=4, num_frames=5, **WORLD_SPLITS["static"], seed=1)
    moving = gen(num_episodes=4, num_frames=5, **WORLD_SPLITS["dynamic"], seed=1)
    constant = lambda b: bool((b.worlds == b.worlds[:, :1]).all())  # noqa: E731
    assert constant(still) and not bool(still.velocities.abs().any())
    assert not constant(moving), "control: the dynamic split's worlds must change"
    assert bool(still.actions.abs().any())  # the camera still moves


def test_fully_observed_views_are_the_pulled_back_world():
    b = gen(num_episodes=4, num_frames=6, **WORLD_SPLITS["fully_observed"], turns=90, seed=6)
    assert b.views.shape[-2:] == b.worlds.shape[-2:] == (14, 14)
    ok = control = True
    for e in range(4):
        for t in range(6):
            world, pose = b.worlds[e, t, 0], b.poses[e, t]
            px, py, q = int(pose[0]), int(pose[1]), int(round(float(pose[2]) / 90))
            pulled = torch.rot90(torch.roll(world, shifts=(py, -px), dims=(-2, -1)), -q, dims=(-2, -1))
            ok &= torch.equal(b.views[e, t, 0], pulled)
            control &= torch.equal(b.views[e, t, 0], torch.roll(world, shifts=(-py, px), dims=(-2, -1)))
    assert ok and not control


@pytest.mark.parametrize("options", [dict(ego_motion=False, turns=90), dict(max_step=0), WORLD_SPLITS["no_ego_motion"]])
def test_without_ego_motion_the_camera_is_fixed(options):
    b = gen(num_episodes=4, num_frames=6, seed=9, **options)
    w = b.views.shape[-1]
    fixed = lambda batch: all(  # noqa: E731
        torch.equal(batch.views[e, t, 0], crop_oracle(batch.worlds[e, t, 0], batch.poses[e, 0], w))
        for e in range(batch.views.shape[0]) for t in range(batch.views.shape[1]))
    assert not bool(b.actions.abs().any())
    assert bool((b.poses == b.poses[:, :1]).all())
    assert fixed(b)
    moving = gen(num_episodes=4, num_frames=6, seed=9, **dict(options, ego_motion=True, max_step=2))
    assert bool(moving.actions.abs().any()) and not fixed(moving), "control: a moving camera is not a fixed crop"


def test_max_step_zero_keeps_turning_in_place():
    b = gen(num_episodes=6, num_frames=8, max_step=0, turns=90, turn_probability=0.5, seed=3)
    assert not bool(b.actions[..., :2].abs().any()) and bool(b.actions[..., 2].abs().any())
    assert bool((b.poses[..., :2] == b.poses[:, :1, :2]).all())


# -- actions ----------------------------------------------------------------------------------------------
def actions_ok(actions, max_step, turn):
    """Integer moves in range, first action zero, turns only 0 or +-turn."""
    a = actions.numpy()
    moves, turns = a[..., :2], a[..., 2]
    allowed = {0.0} if turn is None else {0.0, float(turn), -float(turn)}
    return (np.all(moves == np.round(moves)) and np.all(np.abs(moves) <= max_step) and not np.any(a[:, 0])
            and set(np.unique(turns).tolist()) <= allowed)


def headings_ok(poses, turn):
    h = poses[..., 2].numpy() / (90.0 if turn is None else turn)
    return bool(np.all(np.abs(h - np.round(h)) < 1e-9))


@pytest.mark.parametrize("mode", ["random_walk", "straight"])
@pytest.mark.parametrize("turn", [None, 90, 45])
def test_actions_are_in_range(mode, turn):
    b = gen(num_episodes=40, num_frames=12, actions=mode, max_step=3, turns=turn, random_heading=True, seed=7)
    assert b.actions.dtype == torch.float64 and b.actions.shape == (40, 12, 3)
    assert actions_ok(b.actions, 3, turn) and headings_ok(b.poses, turn)
    used = set(np.unique(b.actions[:, 1:, :2].numpy()).tolist())
    assert used == set(range(-3, 4))  # every step size occurs
    if turn is not None:
        assert set(np.unique(b.actions[..., 2].numpy()).tolist()) == {0.0, float(turn), -float(turn)}
    # controls: the same checks flag a fractional move, a too-long move, a moving first step, a wrong turn
    for tamper in (lambda a: a.__setitem__((0, 3, 0), 0.5), lambda a: a.__setitem__((0, 3, 1), 4.0),
                   lambda a: a.__setitem__((1, 0, 0), 1.0), lambda a: a.__setitem__((2, 4, 2), 30.0)):
        bad = b.actions.clone()
        tamper(bad)
        assert not actions_ok(bad, 3, turn)
    bad_poses = b.poses.clone()
    bad_poses[0, 2, 2] += 30.0
    assert not headings_ok(bad_poses, turn)


def test_straight_runs_keep_their_move():
    def same_rate(b):
        m = b.actions[:, 2:, :2] == b.actions[:, 1:-1, :2]
        return float(m.all(dim=-1).double().mean())

    straight = gen(num_episodes=60, num_frames=16, actions="straight", keep=0.9, seed=12)
    walk = gen(num_episodes=60, num_frames=16, actions="random_walk", seed=12)
    never = gen(num_episodes=60, num_frames=16, actions="straight", keep=0.0, seed=12)
    assert same_rate(straight) > 0.8  # expected 0.9 + 0.1 / 25
    assert same_rate(walk) < 0.15  # expected 1 / 25
    assert same_rate(never) < 0.15  # control: keep=0 is a random walk


# -- determinism ------------------------------------------------------------------------------------------
def test_determinism_and_index_purity():
    opts = dict(turns=90, random_heading=True, seed=21, stream=1)
    a, b = gen(**opts), gen(**opts)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    other = gen(**dict(opts, seed=22))
    assert not torch.equal(a.views, other.views) and not torch.equal(a.actions, other.actions)
    assert not torch.equal(a.views, gen(**dict(opts, stream=2)).views)
    sub = gen(num_episodes=2, indices=[4, 1], **opts)
    for x, y in zip(a, sub):
        assert torch.equal(x[[4, 1]], y)
    longer = gen(num_frames=11, **opts)  # frame t's draws do not depend on the number of frames
    for x, y in zip(a, longer):
        if x.dim() >= 2 and x.shape[1] == 8:
            assert torch.equal(x, y[:, :8])
    ins = inspection_episode(DIGITS, 3, 8, **SMALL, **opts)
    assert torch.equal(ins.views, a.views[3]) and torch.equal(ins.worlds, a.worlds[3])
    assert torch.equal(ins.actions, a.actions[3]) and torch.equal(ins.poses, a.poses[3])


# -- any-angle turns --------------------------------------------------------------------------------------
def test_45_degree_turns_sample_bilinearly_and_stay_exact_on_the_grid():
    b = gen(num_episodes=5, num_frames=8, turns=45, turn_probability=0.5, seed=13)
    w = SMALL["view_size"]
    aligned = off = 0
    err = err_wrong = 0.0
    for e in range(5):
        for t in range(8):
            world, pose, view = b.worlds[e, t, 0], b.poses[e, t], b.views[e, t, 0]
            if grid_aligned(pose):
                aligned += 1
                assert torch.equal(view, crop_oracle(world, pose, w))
            else:
                off += 1
                err = max(err, float((view.double() - bilinear_oracle(world, pose, w)).abs().max()))
                err_wrong = max(err_wrong, float((view.double() - bilinear_oracle(world, pose, w, -1)).abs().max()))
    assert aligned > 0 and off > 0
    assert bool((b.poses[..., 2] % 90 != 0).any())  # some headings are odd multiples of 45
    assert err < 1e-5
    assert err_wrong > 1e-2, "control: the bilinear oracle turned the wrong way must disagree"


# -- pictures ---------------------------------------------------------------------------------------------
def test_inspection_mask_and_window_outline():
    ins = inspection_episode(DIGITS, 2, 6, colour=(0.0, 1.0, 0.0), **SMALL, turns=45, turn_probability=0.5, seed=4)
    n, w = SMALL["world_size"], SMALL["view_size"]
    assert ins.overlay.shape == (6, 3, n, n) and ins.mask.shape == (6, n, n) and ins.mask.dtype == torch.bool
    assert float(ins.overlay.min()) >= 0.0 and float(ins.overlay.max()) <= 1.0
    green = (ins.overlay[:, 1] == 1) & (ins.overlay[:, 0] == 0) & (ins.overlay[:, 2] == 0)
    for t in range(6):
        pose = ins.poses[t]
        if grid_aligned(pose):
            # the window is exactly the world pixels the view copies (oracle: crop of an index map)
            ids = torch.arange(n * n, dtype=torch.float64).view(n, n)
            covered = torch.zeros(n * n, dtype=torch.bool)
            covered[crop_oracle(ids, pose, w).long().reshape(-1)] = True
            assert torch.equal(ins.mask[t], covered.view(n, n))
            border = crop_oracle(ids, pose, w).clone()
            border[1:-1, 1:-1] = -1
            ring = torch.zeros(n * n, dtype=torch.bool)
            ring[border[border >= 0].long()] = True
            assert torch.equal(green[t], ring.view(n, n) & green[t]) and bool(green[t][ring.view(n, n)].all())
            assert not torch.equal(ins.mask[t], torch.roll(covered.view(n, n), 1, 0))  # control
        else:
            assert abs(int(ins.mask[t].sum()) - w * w) <= 2 * w  # about the area of the rotated square
        assert int(green[t].sum()) > 0
    full = draw_window(ins.worlds, ins.poses, None)
    assert full.shape == (6, 3, n, n)


# -- the dataset ------------------------------------------------------------------------------------------
def test_dataset_splits_samples_and_inspection():
    kw = dict(num_episodes=5, num_frames=6, world_size=12, view_size=8, num_digits=2, seed=1)
    train = MNISTWorld(SOURCE, "train", **kw)
    val = MNISTWorld(SOURCE, "val", **kw)
    again = MNISTWorld(SOURCE, "train", **kw)
    assert len(train) == 5 and train.views.shape == (5, 6, 1, 8, 8) and train.actions.shape == (5, 6, 3)
    item = train[2]
    assert isinstance(item, WorldSample) and torch.equal(item.views, train.views[2])
    assert torch.equal(item.actions, train.actions[2])
    assert torch.equal(train.views, again.views)
    assert not torch.equal(train.views, val.views)  # other digits, other stream
    assert "world=12" in repr(train) and "split='val'" in repr(val)
    ins = train.inspect(4)
    assert torch.equal(ins.views, train.views[4])
    with pytest.raises(IndexError):
        train.inspect(5)
    for name, overrides in WORLD_SPLITS.items():
        ds = MNISTWorld(SOURCE, "test", **dict(kw, **overrides))
        assert ds.views.shape[-1] == (12 if overrides.get("view_size", 8) is None else 8), name


# -- bad arguments ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(view_size=16), ValueError, "view_size .* at most world_size"),
    (dict(view_size=7), ValueError, "must be even"),
    (dict(max_step=-1), ValueError, "max_step must be a non-negative integer"),
    (dict(actions="zigzag"), ValueError, "actions must be one of"),
    (dict(turns=7), ValueError, "divide 360"),
    (dict(turns=0), ValueError, "turns must be a finite number"),
    (dict(turns="90"), TypeError, "turns must be None or an angle"),
    (dict(keep=1.5), ValueError, "keep must be"),
    (dict(turn_probability=-0.1), ValueError, "turn_probability must be"),
    (dict(static="yes"), TypeError, "static must be True or False"),
    (dict(num_frames=0), ValueError, "num_frames must be a positive integer"),
    (dict(num_digits=0), ValueError, "num_digits must be a positive integer"),
    (dict(world_size=6, view_size=4), ValueError, "do not fit"),
    (dict(velocities=[(0.5, 0)]), ValueError, "integer"),
    (dict(indices=[0, 1]), ValueError, "indices has 2 entries"),
    (dict(seed=-1), ValueError, "seed must be a non-negative integer"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    opts = dict(world_size=14, view_size=8, num_episodes=3, num_frames=4)
    opts.update(kwargs)
    n, t = opts.pop("num_episodes"), opts.pop("num_frames")
    with pytest.raises(error, match=match):
        generate_world_episodes(DIGITS, n, t, **opts)


def test_bad_arguments_of_the_helpers():
    with pytest.raises(TypeError, match="DigitSet or images"):
        generate_world_episodes([1, 2], 1, 2)
    with pytest.raises(ValueError, match="split must be one of"):
        MNISTWorld(SOURCE, "dev", num_episodes=1)
    with pytest.raises(TypeError, match="sets stream itself"):
        MNISTWorld(SOURCE, "train", num_episodes=1, stream=3)
    with pytest.raises(ValueError, match="poses must be"):
        draw_window(torch.zeros(3, 1, 12, 12), torch.zeros(2, 3), 8)
    with pytest.raises(ValueError, match="must be even"):
        draw_window(torch.zeros(3, 1, 12, 12), torch.zeros(3, 3), 7)
    with pytest.raises(ValueError, match="whole steps"):
        actions_to_steps(torch.tensor([[0.0, 0.0, 45.0]]), 4)
    assert actions_to_steps(torch.tensor([[1.0, 0.0, -90.0]]), 4).tolist() == [[1.0, 0.0, -1.0]]
