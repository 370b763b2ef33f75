"""The recurrence engine's tensor kernels (plain torch): convolution of planes and volumes (im2col for
thin planar inputs, channels-last for thin float volumes, circular "same" padding), the dtype check,
checkpoint segments and the batched input terms."""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function

from flow_escnn._validate import positive_int
from flow_escnn.flows._gather import CircularPad, circular_pad

__all__ = [
    "conv", "conv2d", "conv3d", "IM2COL_MAX_CHANNELS", "THIN_OUTPUT_MAX_CHANNELS", "CHANNELS_LAST_2D",
    "CHANNELS_LAST_3D_MAX_CHANNELS", "channels_last_2d", "conv_same", "check_dtype",
    "ThinTerm", "add_thin_conv_", "thin_conv_grads",
    "segment_length", "INPUT_BATCH_BYTES",
    "frames_per_batch", "InputBatches",
]

#: Upper bound on the output bytes of one batch of input terms (:class:`InputBatches`).
INPUT_BATCH_BYTES = 16 * 2**20
#: CPU convolutions with at most this many input channels run as GEMMs on the shifted copies of the input (:func:`conv2d`).
IM2COL_MAX_CHANNELS = 1
#: CPU convolutions with at most this many output channels (and more input channels than
#: :data:`IM2COL_MAX_CHANNELS`) contract the channels first, then add the shifted taps (:func:`conv2d`).
THIN_OUTPUT_MAX_CHANNELS = 2
#: Planar CPU maps of these dtypes run channels-last where the engine can keep them so (:func:`channels_last_2d`).
CHANNELS_LAST_2D = frozenset({torch.float32, torch.bfloat16})
#: CPU volume convolutions of this dtype with 2 to this many input channels run channels-last (:func:`conv3d`).
CHANNELS_LAST_3D_MAX_CHANNELS = {torch.float32: 8, torch.bfloat16: 8}


def channels_last_2d(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether planar maps of this device and dtype convolve faster channels-last (:data:`CHANNELS_LAST_2D`)."""
    return device.type == "cpu" and dtype in CHANNELS_LAST_2D


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, padding: int = 0,
           channels_last: bool = False) -> torch.Tensor:
    """Stride-1, ungrouped ``torch.nn.functional.conv2d`` of ``x [N, C, H, W]`` (zero ``padding``).

    On the CPU, an input with at most :data:`IM2COL_MAX_CHANNELS` channel (the frames entering
    layer 0) is convolved as GEMMs on its ``C k^2`` shifted copies, stored tap-major,

    .. math::
        Y = b + W_{[C_{out},\\, C k^2]}\\, \\mathrm{cols}(x)_{[C k^2,\\, N H' W']},

    the same sums as ``conv2d`` (float64: equal to rounding; ``tests/test_step_kernels.py``), with a
    backward of single GEMMs over the whole batch (:class:`_ThinInputConv`). Why: oneDNN handles such
    thin inputs badly, above all their weight gradient. ``python -m benchmarks.step_kernels --threads 1
    --repeats 31`` on our 2-core CPU, forward + weight gradient, 3x3 into 32 channels, four runs:
    ``conv2d`` took 1.7-3.3x this path's time for ``[40, 1, 30, 30]`` (the rotation row's layer-0 inputs;
    oneDNN's time is bimodal there) and 1.8-2.0x for ``[160, 1, 30, 30]``. With two input channels this
    path lost (``conv2d`` 0.82-0.91x its time, five runs), so the threshold is one. Other devices
    always use ``conv2d`` (cuDNN was not measured against this path); under ``torch.autocast`` the
    operands are cast as ``conv2d``'s autocast would, and the path runs in that precision.

    ``channels_last=True`` returns the output in the ``channels_last`` memory format (the layout of the
    engine's CPU states, :func:`channels_last_2d`): ``conv2d`` of the input in that format, or the
    thin input's product taken pixel-major, :math:`Y^\\top = \\mathrm{cols}(x)^\\top W^\\top` (one GEMM with a
    transposed operand; its output is the channels-last map).

    A CPU filter with at most :data:`THIN_OUTPUT_MAX_CHANNELS` output channels (a decoder's last layer, into
    the frame's channels) contracts the channels of every input pixel first and then adds the
    :math:`k^2` shifted tap planes,

    .. math::
        z_{o,a,b}(p) = \\sum_c W_{o,c,a,b}\\, x_c(p), \\qquad
        y_o(q) = b_o + \\sum_{a,b} z_{o,a,b}(q + (a, b) - \\text{padding}),

    with :math:`z` zero outside the grid; its backward pass is two GEMMs on the :math:`k^2` shifted copies of the
    output gradient (:class:`_ThinOutputConv`). Same sums again. Why: oneDNN spends as long on a 32 -> 1 channel
    3x3 convolution as on one into 32 channels. ``python -m benchmarks.step_kernels --threads 1``
    (``conv2d_vs_thin_output_*``, forward + backward, ``[8, 32, 28, 28]`` channels-last): ``conv2d`` took
    1.37-1.77x this path's time into 1 channel, 1.06-1.38x into 2 and 0.93-1.02x into 4 (the crossover; five
    runs on our 2-core CPU).
    Under ``torch.autocast`` such filters keep ``conv2d``.
    """
    if has_torch_function((x, weight)):  # lets a TorchFunctionMode see the call (the benchmark's conv recorder)
        return handle_torch_function(conv2d, (x, weight), x, weight, bias, padding, channels_last)
    cpu_plane = x.dim() == 4 and x.device.type == "cpu"
    thin_input = _thin_input(x)
    thin_output = (cpu_plane and not thin_input and weight.shape[0] <= THIN_OUTPUT_MAX_CHANNELS
                   and not torch.is_autocast_enabled("cpu"))
    if not (thin_input or thin_output):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, padding=padding)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: the input has {x.shape[1]} channels but the filter expects {weight.shape[1]} "
                         f"(weight {list(weight.shape)})")
    if thin_output:
        return _thin_output(x, weight, bias, padding, channels_last)
    if torch.is_autocast_enabled("cpu"):  # conv2d's autocast: every operand in the lower precision, then none inside
        dtype = torch.get_autocast_dtype("cpu")
        with torch.autocast("cpu", enabled=False):
            return conv2d(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), padding,
                          channels_last)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _ThinInputConv.apply(x, weight, bias, padding, channels_last)
    return _thin_input_forward(_tap_cols(x, weight.shape, padding), weight, bias, x.shape, padding, channels_last)


def _thin_input(x: torch.Tensor) -> bool:
    """Whether :func:`conv2d` convolves ``x`` by GEMMs on its shifted copies: a CPU plane with at most
    :data:`IM2COL_MAX_CHANNELS` channels."""
    return x.dim() == 4 and x.device.type == "cpu" and x.shape[1] <= IM2COL_MAX_CHANNELS


def _tap_cols(x: torch.Tensor, w_shape: Tuple[int, ...], padding: int) -> torch.Tensor:
    """The ``C k^2`` shifted copies of ``x [N, C, H, W]`` (zero-padded by ``padding``), tap-major: ``[C kh kw, N H' W']``."""
    if padding:
        x = F.pad(x, (padding,) * 4)
    kh, kw = w_shape[-2:]
    cols = x.unfold(2, kh, 1).unfold(3, kw, 1)  # [N, C, H', W', kh, kw]
    return cols.permute(1, 4, 5, 0, 2, 3).reshape(x.shape[1] * kh * kw, -1)


def _thin_input_forward(cols: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                        x_shape: Tuple[int, ...], padding: int, channels_last: bool) -> torch.Tensor:
    """``y = b + W cols`` from the tap-major ``cols [C k^2, N H' W']``: pixel rows ``cols^T W^T`` (the channels-last
    map) or, plain, one GEMM per batch element on a view of ``cols``."""
    c_out, k = weight.shape[0], cols.shape[0]
    n, _, h, w = x_shape
    ho, wo = h + 2 * padding - weight.shape[2] + 1, w + 2 * padding - weight.shape[3] + 1
    wm = weight.reshape(c_out, k)
    if channels_last:
        rows = cols.t() @ wm.t() if bias is None else torch.addmm(bias, cols.t(), wm.t())
        return rows.view(n, ho, wo, c_out).permute(0, 3, 1, 2)
    per = cols.view(k, n, ho * wo).transpose(0, 1)  # [N, C k^2, H'W'], a view
    filt = wm.unsqueeze(0).expand(n, -1, -1)
    if bias is None:
        y = torch.bmm(filt, per)
    else:
        y = torch.baddbmm(bias.view(1, c_out, 1).expand(n, -1, 1), filt, per)
    return y.view(n, c_out, ho, wo)


def _col2im(taps: torch.Tensor, x_shape: Tuple[int, ...], padding: int) -> torch.Tensor:
    """The adjoint of :func:`_tap_cols`: every tap's plane of ``taps [C, kh, kw, N, H', W']`` added back at its shift,
    padding cropped."""
    n, c, h, w = x_shape
    kh, kw, _, ho, wo = taps.shape[1:]
    hp, wp = h + 2 * padding, w + 2 * padding
    acc = taps.dtype if taps.dtype in (torch.float32, torch.float64) else torch.float32  # half precision: add in float32
    out = taps.new_zeros(c, n, hp, wp, dtype=acc)
    for a in range(kh):
        for b in range(kw):
            out[:, :, a : a + ho, b : b + wo] += taps[:, a, b]
    out = out.to(taps.dtype).transpose(0, 1)
    return out[..., padding : padding + h, padding : padding + w] if padding else out


class _ThinInputConv(torch.autograd.Function):
    """:func:`conv2d` of a thin input as GEMMs on its tap-major columns (:func:`_tap_cols`); backward
    :func:`thin_conv_grads`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],  # type: ignore[override]
                padding: int, channels_last: bool) -> torch.Tensor:
        cols = _tap_cols(x, weight.shape, padding)
        ctx.save_for_backward(cols, weight)
        ctx.meta = (tuple(x.shape), padding, bias is not None)
        return _thin_input_forward(cols, weight, bias, x.shape, padding, channels_last)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        cols, weight = ctx.saved_tensors
        x_shape, padding, has_bias = ctx.meta
        needs = ctx.needs_input_grad
        return (*thin_conv_grads(g, cols, weight, x_shape, padding, needs[0], needs[1], has_bias and needs[2]),
                None, None)


def thin_conv_grads(g: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor, x_shape: Tuple[int, ...], padding: int,
                    need_x: bool, need_weight: bool, need_bias: bool) -> Tuple[Optional[torch.Tensor], ...]:
    """``(dx, dW, db)`` of a thin-input convolution (:func:`conv2d`) from its output gradient ``g [N, C_out, H', W']``
    and tap-major columns: ``dW = dY cols^T`` and ``db`` as one GEMM / sum over every pixel of the batch, ``dx`` the
    columns' gradient ``W^T dY`` added back at the taps' shifts (:func:`_col2im`); None where not needed."""
    c_out, k = weight.shape[0], cols.shape[0]
    n, c = x_shape[:2]
    kh, kw = weight.shape[-2:]
    ho, wo = g.shape[-2:]
    wm = weight.reshape(c_out, k)
    gw = gb = gx = None
    if g.stride(1) == 1 and c_out > 1:  # channels-last: the gradient's pixel rows [N H' W', C_out] (a view)
        rows = g.permute(0, 2, 3, 1).reshape(-1, c_out)
        if need_weight:
            gw = (cols @ rows).t()
        if need_bias:
            gb = rows.sum(0)
        if need_x:
            gx = _col2im((wm.t() @ rows.t()).view(c, kh, kw, n, ho, wo), x_shape, padding)
    else:  # plain: one GEMM per batch element ([N, C_out, H'W'] and the columns' per-element views)
        gp = g.reshape(n, c_out, ho * wo)
        if need_weight:
            gw = torch.bmm(cols.view(k, n, ho * wo).transpose(0, 1), gp.transpose(1, 2)).sum(0).t()
        if need_bias:
            gb = gp.sum((0, 2))
        if need_x:
            gcols = torch.bmm(wm.t().unsqueeze(0).expand(n, -1, -1), gp)  # [N, C k^2, H'W']
            gx = _col2im(gcols.view(n, c, kh, kw, ho, wo).permute(1, 2, 3, 0, 4, 5), x_shape, padding)
    return gx, (None if gw is None else gw.reshape(weight.shape)), gb


class ThinTerm(NamedTuple):
    """A thin input's convolution :math:`U * x` (``x [N, C, H, W]``, at most :data:`IM2COL_MAX_CHANNELS` channels, on
    the CPU) not computed yet: an update adds it straight into the memory of the recurrent term it is summed with
    (:func:`add_thin_conv_`), instead of writing it and reading it back (:meth:`Recurrence.input_terms
    <flow_escnn.nn._engine.Recurrence.input_terms>` with ``defer=True``)."""

    x: torch.Tensor
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    padding: int

    @staticmethod
    def applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether :func:`conv2d` of ``x`` by ``weight`` takes the thin-input path in this precision (no autocast)."""
        return _thin_input(x) and x.dtype == weight.dtype and not torch.is_autocast_enabled("cpu")


def add_thin_conv_(out: torch.Tensor, term: ThinTerm) -> torch.Tensor:
    """``out += conv2d(term)`` in place for ``out [N, C_out, H', W']`` (either layout; no autograd); returns the
    term's tap-major columns (:func:`thin_conv_grads` takes them)."""
    x, weight, bias, padding = term
    if has_torch_function((x, weight)):  # lets a TorchFunctionMode see the convolution (the benchmark's conv recorder)
        return handle_torch_function(add_thin_conv_, (x, weight), out, term)
    cols = _tap_cols(x, weight.shape, padding)
    c_out, n = weight.shape[0], x.shape[0]
    wm = weight.reshape(c_out, -1)
    if out.stride(1) == 1 and c_out > 1:  # channels-last: pixel rows (view() raises rather than copy)
        rows = out.permute(0, 2, 3, 1).view(-1, c_out)
        rows.addmm_(cols.t(), wm.t())
    else:
        rows = out.view(n, c_out, -1)
        rows.baddbmm_(wm.unsqueeze(0).expand(n, -1, -1), cols.view(cols.shape[0], n, -1).transpose(0, 1))
    if bias is not None:
        out.add_(bias.view(1, -1, 1, 1))
    return cols


def _thin_output(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int,
                 channels_last: bool) -> torch.Tensor:
    """:func:`conv2d` of a filter with few output channels: channels contracted first (:class:`_ThinOutputConv`)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        y = _ThinOutputConv.apply(x, weight, padding)
    else:
        y = _thin_output_forward(_pixel_rows(x), _tap_rows(weight), weight.shape, x.shape, padding)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _pixel_rows(x: torch.Tensor) -> torch.Tensor:
    """``x [N, C, H, W]`` as ``[N H W, C]`` (a view of a channels-last map, else a copy)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _tap_rows(weight: torch.Tensor) -> torch.Tensor:
    """``weight [O, C, kh, kw]`` as ``[O kh kw, C]``."""
    return weight.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])


def _thin_output_forward(rows: torch.Tensor, taps: torch.Tensor, w_shape: Tuple[int, ...], x_shape: Tuple[int, ...],
                         padding: int) -> torch.Tensor:
    """``[N, O, H', W']`` from the pixel rows and tap rows: ``z = taps rows^T`` per tap, then the shifted sum."""
    o, _, kh, kw = w_shape
    n, _, h, w = x_shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    z = (taps @ rows.t()).view(o, kh, kw, n, h, w)
    if padding:
        z = F.pad(z, (padding,) * 4)
    y = z[:, 0, 0, :, :ho, :wo].clone()
    for a in range(kh):
        for b in range(kw):
            if a or b:
                y.add_(z[:, a, b, :, a : a + ho, b : b + wo])
    return y.transpose(0, 1)


class _ThinOutputConv(torch.autograd.Function):
    """:func:`conv2d` into few output channels (:func:`_thin_output_forward`). Backward: the output gradient's
    :math:`k^2` shifted copies ``G [O kh kw, N H W]`` (zero outside), then ``dx = G^T taps`` (pixel rows: the
    channels-last map) and ``dW = G rows``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:  # type: ignore[override]
        rows, taps = _pixel_rows(x), _tap_rows(weight)
        ctx.save_for_backward(rows, taps)
        ctx.shapes = (tuple(x.shape), tuple(weight.shape), padding, x.stride(1) == 1 and x.shape[1] > 1)
        return _thin_output_forward(rows, taps, weight.shape, x.shape, padding)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        rows, taps = ctx.saved_tensors
        (n, c, h, w), (o, _, kh, kw), p, channels_last = ctx.shapes
        # G[o, a, b, n, i, j] = gy[n, o, i + p - a, j + p - b]: gy padded to [H + kh - 1, W + kw - 1], windows flipped
        gp = F.pad(gy.transpose(0, 1), (kw - 1 - p, kw - 1 - p, kh - 1 - p, kh - 1 - p))
        g = gp.unfold(2, h, 1).unfold(3, w, 1).flip(2, 3).permute(0, 2, 3, 1, 4, 5).reshape(o * kh * kw, n * h * w)
        gx = (g.t() @ taps).view(n, h, w, c).permute(0, 3, 1, 2)
        gw = (g @ rows).view(o, kh, kw, c).permute(0, 3, 1, 2)
        return (gx if channels_last else gx.contiguous()), gw, None


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, padding: int = 0) -> torch.Tensor:
    """Stride-1, ungrouped ``torch.nn.functional.conv3d`` of ``x [N, C, D, H, W]`` (zero ``padding``).

    On the CPU, a float32 or bfloat16 input with 2 to 8 channels
    (:data:`CHANNELS_LAST_3D_MAX_CHANNELS`) is convolved in the ``channels_last_3d`` memory format and
    the output returned contiguous: the same sums in another order (float rounding only). Why: oneDNN's
    backward pass of thin volume convolutions is much faster in that layout on our 2-core CPU
    (``python -m benchmarks.step_kernels --threads 1``, ``conv3d_vs_channels_last_*``: 3x3x3 on
    ``18^3`` inputs, forward + backward, conversions included; 4 -> 4 channels over 108 volumes, the
    volume FERNN's recurrent convolution, 1.9x). One input channel gains nothing (the layout is the
    same); 16 and 32 channels measured from 0.95x to 1.4x from run to run, 48 and more lose a few
    percent, and float64 runs slower that way, so those stay as they are.
    """
    if has_torch_function((x, weight)):  # lets a TorchFunctionMode see the call (the benchmark's conv recorder)
        return handle_torch_function(conv3d, (x, weight), x, weight, bias, padding)
    limit = CHANNELS_LAST_3D_MAX_CHANNELS.get(x.dtype, 0)
    if x.device.type != "cpu" or x.dim() != 5 or not 2 <= x.shape[1] <= limit:
        return F.conv3d(x, weight, bias, padding=padding)
    y = F.conv3d(x.contiguous(memory_format=torch.channels_last_3d), weight, bias, padding=padding)
    return y.contiguous()


def conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, padding: int = 0,
         channels_last: bool = False) -> torch.Tensor:
    """Stride-1, ungrouped convolution of planes ``[N, C, H, W]`` (:func:`conv2d`; ``channels_last``: its output
    layout) or volumes ``[N, C, D, H, W]`` (:func:`conv3d`), by the rank of ``weight``."""
    if weight.dim() == 5:
        return conv3d(x, weight, bias, padding)
    return conv2d(x, weight, bias, padding, channels_last)


def conv_same(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding_mode: str,
    pad: Optional[CircularPad] = None, channels_last: bool = False,
) -> torch.Tensor:
    """'Same'-size stride-1 :func:`conv` of ``[N, C, H, W]`` or ``[N, C, D, H, W]`` with circular (``pad``, a
    :class:`~flow_escnn.flows._gather.CircularPad` for the grid, or built here) or zero padding
    (``channels_last``: a planar output in that layout)."""
    p = weight.shape[-1] // 2
    if padding_mode == "circular":
        x = pad(x) if pad is not None else circular_pad(x, p, weight.dim() - 2)
        return conv(x, weight, bias, channels_last=channels_last)
    return conv(x, weight, bias, padding=p, channels_last=channels_last)


def check_dtype(x: torch.Tensor, weight: torch.Tensor) -> None:
    """Refuse an input whose dtype differs from the weights' outside ``torch.autocast`` (with the fix)."""
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return
    raise TypeError(
        f"the input has dtype {x.dtype} but the model's weights are {weight.dtype}: cast the input "
        f"(x.to({weight.dtype})), convert the model (model.to({x.dtype})), or run under "
        f"torch.autocast('{x.device.type}', dtype={x.dtype}) for mixed precision"
    )


def segment_length(t_len: int) -> int:
    """Checkpoint segment length: about :math:`\\sqrt{T}` steps, so stored states and recomputation balance."""
    return max(1, math.ceil(math.sqrt(t_len)))


def frames_per_batch(chunk: Optional[int], frame_bytes: int) -> int:
    """``chunk`` checked, or (``None``) the most frames whose input terms fit in :data:`INPUT_BATCH_BYTES` (>= 1)."""
    if chunk is None:
        return max(1, INPUT_BATCH_BYTES // max(1, int(frame_bytes)))
    return positive_int(chunk, "chunk (frames per input batch)")


class InputBatches:
    """The input terms of ``given`` frames, computed ``chunk`` frames at a time when first asked for.

    ``compute(i, k)`` returns the terms of frames ``i .. i+k-1`` stacked on axis 1. Only the
    batch of the frame asked for last is kept, so ask in increasing order (asking again for a
    frame of that batch returns the same tensor; an earlier frame recomputes its batch). Why
    batches rather than all frames at once: in the co-moving mode the input terms of all frames
    are a ``[B, T, V, G, H, W]`` tensor (and so is its gradient), which grows with the sequence;
    batched, a step holds at most
    :data:`INPUT_BATCH_BYTES` of them (the C8 rotation step of ``benchmarks/bench_fernn.py``:
    peak 305 instead of 328 MiB). Its speed did not change measurably on our CPU
    (``benchmarks/README.md``, "Input batches").
    """

    def __init__(self, compute: Callable[[int, int], torch.Tensor], given: int, chunk: int) -> None:
        self.compute, self.given, self.chunk = compute, int(given), int(chunk)
        self.start: int = 0
        self.batch: Tuple[torch.Tensor, ...] = ()

    def __call__(self, i: int) -> torch.Tensor:
        if not self.start <= i < self.start + len(self.batch):
            k = min(self.chunk, self.given - i)
            terms = self.compute(i, k)
            # one frame: a view (its gradient keeps the layout; unbind's backward would stack it)
            self.start, self.batch = i, ((terms.squeeze(1),) if k == 1 else terms.unbind(1))
        return self.batch[i - self.start]
