"""The step's replacement kernels against the torch calls they replace: the thin-input convolutions
(:func:`flow_escnn.nn._kernels.conv2d`, :func:`~flow_escnn.nn._kernels.conv3d`) and the max over V
(:func:`~flow_escnn.nn._pooling.reduce_velocities`).

Both must give the plain call's values and gradients: the convolution to float64 rounding, the max
bit for bit (same values, gradient at the same first maximal slice). Each comparison is shown to
flag a wrong kernel (a control).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flow_escnn.nn import _kernels as nnk
from flow_escnn.nn._kernels import (
    CHANNELS_LAST_3D_MAX_CHANNELS, IM2COL_MAX_CHANNELS, THIN_OUTPUT_MAX_CHANNELS, conv, conv2d, conv3d,
)
from flow_escnn.nn._pooling import reduce_velocities


def _conv_grads(fn, x, w, b, gy):
    y = fn(x, w, b)
    return (y, *torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], gy))


def _max_diff(a, b):
    return max(float((p - q).detach().abs().max()) for p, q in zip(a, b))


def _refuse(*args, **kwargs):
    raise AssertionError("this convolution must not reach F.conv2d on the CPU")


@pytest.mark.parametrize("c_in", range(1, IM2COL_MAX_CHANNELS + 1))
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["plain", "channels_last"])
def test_thin_conv_matches_conv2d(c_in, padding, bias, layout, monkeypatch):
    """GEMMs on the shifted copies: F.conv2d's values and gradients (input, filter, bias) to float64 rounding, in
    either output layout, the output gradient arriving in that layout (the backward's two branches)."""
    g = torch.Generator().manual_seed(c_in + 3 * padding)
    k = 2 * padding + 1 if padding else 3
    cl = layout == "channels_last"
    x = torch.randn(3, c_in, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, c_in, k, k - 2 if k > 3 else k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    gy = torch.randn(F.conv2d(x, w, b, padding=padding).shape, generator=g, dtype=torch.float64)
    if cl:
        gy = gy.contiguous(memory_format=torch.channels_last)
    want = _conv_grads(lambda *a: F.conv2d(*a, padding=padding), x, w, b, gy)
    monkeypatch.setattr(nnk.F, "conv2d", _refuse)  # proves the thin-input path ran
    got = _conv_grads(lambda *a: conv2d(*a, padding=padding, channels_last=cl), x, w, b, gy)
    assert got[0].is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    assert _max_diff(got, want) < 1e-12
    with torch.no_grad():
        assert _max_diff([conv2d(x, w, b, padding=padding, channels_last=cl)], [want[0]]) < 1e-12
    # control: the same comparison flags a kernel that reads the filter flipped
    bad = _conv_grads(lambda x_, w_, b_: conv2d(x_, w_.flip(-1, -2), b_, padding=padding), x, w, b, gy)
    assert _max_diff(bad, want) > 1e-3


def test_thick_conv_is_conv2d():
    x = torch.randn(2, IM2COL_MAX_CHANNELS + 1, 7, 7)
    w = torch.randn(4, IM2COL_MAX_CHANNELS + 1, 3, 3)
    assert torch.equal(conv2d(x, w, None, padding=1), F.conv2d(x, w, None, padding=1))


def test_thin_conv_float32_close_to_conv2d():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(4, 1, 30, 30, generator=g), torch.randn(32, 1, 3, 3, generator=g), torch.randn(32, generator=g)
    ref = F.conv2d(x, w, b)
    assert float((conv2d(x, w, b) - ref).abs().max() / ref.abs().max()) < 1e-6


def test_thin_conv_under_autocast_runs_in_its_precision_with_float32_gradients(monkeypatch):
    """Under bf16 autocast the thin-input path casts its operands as conv2d's autocast does: a bf16 output close to
    F.conv2d's under the same autocast, and gradients in the float32 of the parameters."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 10, 10, generator=g, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.conv2d(x, w, padding=1)
        monkeypatch.setattr(nnk.F, "conv2d", _refuse)
        got = conv2d(x, w, padding=1, channels_last=True)
    assert got.dtype == want.dtype == torch.bfloat16
    assert float((got - want).detach().float().abs().max()) < 2e-2 * float(want.detach().float().abs().max())
    gx, gw = torch.autograd.grad(got.float().square().sum(), (x, w))
    assert gx.dtype == gw.dtype == torch.float32 and torch.isfinite(gw).all()


def test_thin_conv_refuses_a_channel_mismatch():
    with pytest.raises(ValueError, match="1 channels but the filter expects 2"):
        conv2d(torch.zeros(1, 1, 5, 5), torch.zeros(3, 2, 3, 3))


@pytest.mark.parametrize("c_out", range(1, THIN_OUTPUT_MAX_CHANNELS + 1))
@pytest.mark.parametrize("padding, kernel", [(0, (3, 3)), (1, (3, 3)), (2, (3, 5)), (3, (3, 3))])
@pytest.mark.parametrize("channels_last", [True, False])
def test_thin_output_conv_matches_conv2d(c_out, padding, kernel, channels_last, monkeypatch):
    """Few output channels (channels contracted first, then the shifted taps added): F.conv2d's values and gradients
    to float64 rounding, for padding below, at and above the kernel's reach, the gradient in the input's layout."""
    g = torch.Generator().manual_seed(c_out + 5 * padding)
    x = torch.randn(3, 6, 9, 8, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(c_out, 6, *kernel, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(F.conv2d(x, w, b, padding=padding).shape, generator=g, dtype=torch.float64)
    want = _conv_grads(lambda *a: F.conv2d(*a, padding=padding), x, w, b, gy)
    monkeypatch.setattr(nnk.F, "conv2d", _refuse)  # proves the thin-output path ran
    got = _conv_grads(lambda *a: conv2d(*a, padding=padding), x, w, b, gy)
    assert _max_diff(got, want) < 1e-12
    assert got[1].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with torch.no_grad():
        assert _max_diff([conv2d(x, w, b, padding=padding)], [want[0]]) < 1e-12
    # control: the same comparison flags a kernel that reads the filter flipped
    bad = _conv_grads(lambda x_, w_, b_: conv2d(x_, w_.flip(-1, -2), b_, padding=padding), x, w, b, gy)
    assert _max_diff(bad, want) > 1e-3


def test_thin_output_conv_gradcheck(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(nnk.F, "conv2d", _refuse)
    torch.autograd.gradcheck(lambda a, b: conv2d(a, b, padding=1), (x, w))


def test_thicker_outputs_and_autocast_keep_conv2d():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 7, 7, generator=g)
    w = torch.randn(THIN_OUTPUT_MAX_CHANNELS + 1, 8, 3, 3, generator=g)
    assert torch.equal(conv2d(x, w, None, padding=1), F.conv2d(x, w, None, padding=1))
    w1 = torch.randn(1, 8, 3, 3, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(conv2d(x, w1, None, padding=1), F.conv2d(x, w1, None, padding=1))


def test_thin_output_conv_refuses_a_channel_mismatch():
    with pytest.raises(ValueError, match="8 channels but the filter expects 6"):
        conv2d(torch.zeros(1, 8, 5, 5), torch.zeros(1, 6, 3, 3))


@pytest.mark.parametrize("c_in, dtype", [(2, torch.float32), (4, torch.float32), (8, torch.float32),
                                         (2, torch.bfloat16), (8, torch.bfloat16)])
def test_channels_last_volume_conv_matches_conv3d(c_in, dtype, monkeypatch):
    """Thin float volumes run channels-last: F.conv3d's values and gradients to the dtype's rounding, a
    contiguous output, and the channels-last input reaching F.conv3d (checked by a spy)."""
    assert c_in <= CHANNELS_LAST_3D_MAX_CHANNELS[dtype]
    g = torch.Generator().manual_seed(c_in)
    x = torch.randn(3, c_in, 5, 6, 4, generator=g).to(dtype).requires_grad_()
    w = torch.randn(4, c_in, 3, 3, 3, generator=g).to(dtype).requires_grad_()
    b = torch.randn(4, generator=g).to(dtype).requires_grad_()
    gy = torch.randn(3, 4, 5, 6, 4, generator=g).to(dtype)
    want = _conv_grads(lambda *a: F.conv3d(*a, padding=1), x, w, b, gy)
    layouts = []
    real = F.conv3d

    def spy(x_, *args, **kwargs):
        layouts.append(x_.is_contiguous(memory_format=torch.channels_last_3d) and not x_.is_contiguous())
        return real(x_, *args, **kwargs)

    monkeypatch.setattr(nnk.F, "conv3d", spy)
    got = _conv_grads(lambda *a: conv(*a, padding=1), x, w, b, gy)
    assert layouts == [True] and got[0].is_contiguous()
    scale = max(float(t.detach().abs().max()) for t in want)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert _max_diff(got, want) < tol * scale
    # control: the same comparison flags a kernel that reads the filter flipped
    bad = _conv_grads(lambda x_, w_, b_: conv3d(x_, w_.flip(-1), b_, padding=1), x, w, b, gy)
    assert _max_diff(bad, want) > 10 * tol * scale


@pytest.mark.parametrize("c_in, dtype", [(1, torch.float32), (9, torch.float32), (9, torch.bfloat16), (4, torch.float64)])
def test_other_volume_convs_are_conv3d(c_in, dtype):
    """One channel, thick inputs and float64 stay on the plain call: bit for bit."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, c_in, 4, 5, 4, generator=g).to(dtype)
    w = torch.randn(3, c_in, 3, 3, 3, generator=g).to(dtype)
    assert torch.equal(conv3d(x, w, None, padding=1), F.conv3d(x, w, None, padding=1))


@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 4), (2, 3, 4, 3, 4, 4), (4, 3, 4, 4), (3, 2, 2, 5, 5)])
def test_max_over_v_matches_max_bit_for_bit(shape):
    g = torch.Generator().manual_seed(len(shape))
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    v = shape[-4]
    x.select(-4, v - 1)[..., :2, :] = x.select(-4, 0)[..., :2, :]  # ties between the first and last slice
    x = torch.relu(x).requires_grad_()  # and ReLU zeros tied across all slices
    gy = torch.randn(x.amax(-4).shape, generator=g, dtype=torch.float64)
    got = reduce_velocities(x, "max")
    want = x.max(dim=-4).values
    assert torch.equal(got, want)
    grad_want = torch.autograd.grad(want, x, gy)[0]
    assert torch.equal(torch.autograd.grad(got, x, gy)[0], grad_want)
    # control: the same comparison flags a gradient sent to the last maximal slice
    last = x.flip(-4).max(dim=-4).values
    assert not torch.equal(torch.autograd.grad(last, x, gy)[0], grad_want)


def test_max_over_v_gradcheck():
    x = torch.randn(2, 4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reduce_velocities(t, "max"), (x,))
