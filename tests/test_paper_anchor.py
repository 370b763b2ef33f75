"""benchmarks/paper_anchor.py: the re-implemented paper step runs, and its pieces compute what they claim.

The transports are checked against independent definitions (pixel indexing, escnn's own group
action), the step's structure by the convolutions it calls. No timing assertions.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from benchmarks import paper_anchor
from benchmarks.meters import ConvRecorder
from flow_escnn._compat import enn


def test_translation_velocities_are_the_square_x_outer():
    vs = paper_anchor.translation_velocities(1)
    assert vs[:3] == [(-1, -1), (-1, 0), (-1, 1)] and len(vs) == 9 and len(set(vs)) == 9
    assert paper_anchor.translation_velocities(0) == [(0, 0)]
    assert paper_anchor.rotation_degrees([-2, -1, 0, 1, 2]) == [-90.0, -45.0, 0.0, 45.0, 90.0]


def test_translation_transport_moves_every_slice_by_its_velocity():
    torch.manual_seed(0)
    cell = paper_anchor.TranslationCell(1, 3, paper_anchor.translation_velocities(2))
    h = torch.randn(2, cell.num_v, 3, 7, 6)
    out = cell.transport(h)
    rows, cols = torch.arange(7), torch.arange(6)
    for i, (vx, vy) in enumerate(cell.velocities):
        # slice (vx, vy) moves vy pixels down the rows and vx along the columns, periodically
        expected = h[:, i][:, :, (rows - vy) % 7][:, :, :, (cols - vx) % 6]
        assert torch.equal(out[:, i], expected), (vx, vy)
        assert torch.equal(out[:, i], torch.roll(h[:, i], shifts=(vy, vx), dims=(2, 3)))


@pytest.mark.parametrize("degrees, element", [(90.0, 2), (-90.0, 6), (180.0, 4), (0.0, 0)])
def test_rotation_by_quarter_turns_is_rot90_and_escnn_group_action(degrees, element):
    torch.manual_seed(0)
    cell = paper_anchor.RotationCell(1, 2, [degrees])
    x = torch.randn(3, cell.hidden_channels, 7, 7)
    got = cell.act(x, degrees)
    g = cell.gspace.fibergroup.element(element)
    assert torch.equal(got, enn.GeometricTensor(x, cell.hidden_type).transform(g).tensor)
    rolled = torch.roll(x.view(3, 2, 8, 7, 7), shifts=element, dims=2).view(3, 16, 7, 7)
    assert torch.equal(got, torch.rot90(rolled, int(degrees // 90), dims=(2, 3)))


def _smooth(batch: int, channels: int, size: int) -> torch.Tensor:
    torch.manual_seed(1)
    coarse = torch.randn(batch, channels, 4, 4)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)


def test_two_45_degree_steps_make_the_quarter_turn_near_the_centre():
    """The interpolated path (affine_grid + grid_sample) turns the same way as the rot90 path."""
    cell = paper_anchor.RotationCell(1, 1, [45.0, 90.0])
    n = 21
    x = _smooth(2, 8, n)
    twice = cell.act(cell.act(x, 45.0), 45.0)
    quarter, back = cell.act(x, 90.0), cell.act(x, -90.0)
    r = torch.arange(n) - (n - 1) / 2
    disc = (r[:, None] ** 2 + r[None, :] ** 2) <= (n / 2 - 3) ** 2  # away from the zero-padded corners
    err = (twice - quarter)[..., disc].abs().max()
    scale = quarter[..., disc].abs().max()
    assert err < 0.15 * scale, (err, scale)
    assert (twice - back)[..., disc].abs().max() > 0.5 * scale  # the opposite turn is far off
    assert not torch.allclose(cell.act(x, 45.0), x)


@pytest.mark.parametrize("row, num_v, channels_per_slice", [
    ("translation", 25, 8), ("grnn", 1, 8), ("rotation", 5, 8), ("grnn_c8", 1, 8),
])
def test_anchor_step_structure_and_training(row, num_v, channels_per_slice):
    torch.manual_seed(0)
    b, t_in, t_out, n = 2, 3, 2, 9
    model = paper_anchor.build_anchor(row, channels=channels_per_slice, decoder_layers=1)
    assert model.cell.num_v == num_v and model.cell.hidden_channels == channels_per_slice
    x, y = torch.rand(b, t_in, 1, n, n), torch.rand(b, t_out, 1, n, n)
    step = paper_anchor.AnchorStep(model, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    with ConvRecorder() as rec:
        step()
    # the cell runs T_in + T_out times (the last input frame is read twice), U and W each time,
    # then two decoder convs per prediction
    steps = t_in + t_out
    assert len(rec.calls) == 2 * steps + 2 * t_out
    w_calls = [c for c in rec.calls if c["input"][0] == b * num_v and c["input"][1] == channels_per_slice
               and c["weight"][0] == channels_per_slice]
    assert len(w_calls) >= steps
    rotation = row in ("rotation", "grnn_c8")
    pads = {_pair(c["kwargs"].get("padding", 0)) for c in rec.calls}
    # rotation models: zero padding inside conv2d; translation models: circular F.pad, conv2d without padding
    assert pads == ({(1, 1)} if rotation else {(0, 0)})
    assert all(not c["bias"] for c in rec.calls)
    assert step.grad_clip == (None if rotation else 1.0)
    for _ in range(2):
        step()
    assert len(step.losses) == 3 and all(math.isfinite(v) for v in step.losses)
    assert all(not torch.equal(p0, p) for p0, p in zip(before, model.parameters()))


def test_predictor_reads_the_last_input_frame_again_detached():
    """The first prediction's cell step reads the last input frame; the fed-back predictions are detached."""
    torch.manual_seed(0)
    model = paper_anchor.build_anchor("grnn", channels=4)
    x = torch.rand(1, 2, 1, 6, 6, requires_grad=True)
    out = model(x, 2)
    g0 = torch.autograd.grad(out[:, 1].sum(), x, retain_graph=True)[0]
    assert g0[:, 0].abs().sum() > 0 and g0[:, 1].abs().sum() > 0
    # by hand: the same cells, with the last input frame read again
    h = torch.zeros(1, 1, 4, 6, 6)
    for f in (x[:, 0], x[:, 1], x[:, 1]):
        h = model.cell(f, h)
    assert torch.allclose(out[:, 0], model.decoder(h.max(1)[0]))


def test_bad_rows_and_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown anchor row"):
        paper_anchor.build_anchor("scale")
    with pytest.raises(ValueError, match="multiple of 8"):
        paper_anchor.build_anchor("rotation", channels=12)
    with pytest.raises(ValueError, match="not a multiple"):
        paper_anchor.RotationCell(1, 1, [30.0])
