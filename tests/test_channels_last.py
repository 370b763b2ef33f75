"""Channels-last co-moving states (issue 26): the kernels that read and write them against the plain
``[N, C, H, W]`` computation, and the engine's runs with and without them.

- :func:`flow_escnn.nn._kernels.conv2d` with ``channels_last=True``: ``F.conv2d``'s values and
  gradients (float64 rounding), in the channels-last layout, on both of its paths (im2col, oneDNN).
- :func:`flow_escnn.flows._resample.resample_fields` of a channels-last map: the values and gradients
  of the same map laid out ``[B, m, C, N]`` (fiber permutations and the pooling included), returned
  channels-last.
- :func:`flow_escnn.flows._gather.permute_columns`: an index gather, backward the inverse.
- The engine: a float32 CPU co-moving run keeps its states channels-last and computes what the same run
  computes with the layout switched off (:data:`~flow_escnn.nn._kernels.CHANNELS_LAST_2D` emptied), and
  90-degree rotations stay exactly equivariant.

Each comparison has a control it must flag.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowSet
from flow_escnn.flows._gather import permute_columns
from flow_escnn.flows._resample import resample_fields
from flow_escnn.lifted import LiftedTensor
from flow_escnn.nn import CELL_KINDS, CELLS, FERNN
from flow_escnn.nn import _kernels as nnk
from flow_escnn.nn._kernels import conv2d


def _grads(fn, inputs, gy):
    y = fn(*inputs)
    return (y, *torch.autograd.grad(y, [t for t in inputs if t is not None and t.requires_grad], gy))


def _max_diff(a, b):
    return max(float((p - q).detach().abs().max()) for p, q in zip(a, b))


def _is_channels_last(y: torch.Tensor) -> bool:
    return y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


@pytest.mark.parametrize("c_in", [1, 2, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_channels_last_conv_matches_conv2d(c_in, bias):
    """Thin inputs (im2col) and thick ones (oneDNN): F.conv2d's values and gradients, a channels-last output."""
    g = torch.Generator().manual_seed(c_in)
    x = torch.randn(3, c_in, 9, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, c_in, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    gy = torch.randn(3, 6, 9, 8, generator=g, dtype=torch.float64)
    want = _grads(lambda *a: F.conv2d(*a, padding=1), (x, w, b), gy)
    got = _grads(lambda *a: conv2d(*a, padding=1, channels_last=True), (x, w, b), gy)
    assert _is_channels_last(got[0])
    assert _max_diff(got, want) < 1e-12
    # control: the same comparison flags a kernel that reads the filter flipped
    bad = _grads(lambda x_, w_, b_: conv2d(x_, w_.flip(-1), b_, padding=1, channels_last=True), (x, w, b), gy)
    assert _max_diff(bad, want) > 1e-3


def test_permute_columns_is_a_gather_with_an_inverse_backward():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.stack([torch.randperm(5, generator=g) for _ in range(3)]).view(1, 3, 1, 5)
    inverse = index.argsort(-1)
    y = permute_columns(x, index, inverse)
    want = torch.stack([x[:, i][..., index[0, i, 0]] for i in range(3)], 1)
    assert torch.equal(y, want)
    torch.autograd.gradcheck(lambda t: permute_columns(t, index, inverse), (x,))
    # control: a wrong inverse gives a wrong gradient, which gradcheck flags
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        torch.autograd.gradcheck(lambda t: permute_columns(t, index, index), (x,))


def _tables(m, n_in, n_out, k, g):
    index = torch.randint(0, n_in, (m, n_out, k), generator=g)
    weights = torch.randn(m, n_out, k, generator=g, dtype=torch.float64)
    # the transposed tables: for each source pixel, the output rows reading it (padded with zero weights)
    rows = [[[] for _ in range(n_in)] for _ in range(m)]
    for i in range(m):
        for q in range(n_out):
            for j in range(k):
                rows[i][int(index[i, q, j])].append((q, float(weights[i, q, j])))
    kt = max(1, max(len(r) for block in rows for r in block))
    t_index = torch.zeros(m, n_in, kt, dtype=torch.long)
    t_weights = torch.zeros(m, n_in, kt, dtype=torch.float64)
    for i in range(m):
        for s in range(n_in):
            for j, (q, wt) in enumerate(rows[i][s]):
                t_index[i, s, j], t_weights[i, s, j] = q, wt
    return index, weights, t_index, t_weights


@pytest.mark.parametrize("reduce", [None, "max", "mean"])
@pytest.mark.parametrize("with_perm", [False, True])
def test_channels_last_resample_matches_the_plain_layout(reduce, with_perm):
    """The same fields, channels-last or not: the same values and gradients, and the output channels-last."""
    g = torch.Generator().manual_seed(1 + with_perm)
    b, m, c, h, w = 2, 3, 4, 5, 5
    tables = _tables(m, h * w, h * w, 4, g)
    perm = None
    if with_perm:
        local = torch.stack([torch.randperm(c, generator=g) for _ in range(m)])
        perm = (local, local.argsort(1))
    x = torch.randn(b, m, c, h, w, generator=g, dtype=torch.float64)
    x_cl = x.reshape(b * m, c, h, w).contiguous(memory_format=torch.channels_last).view(b, m, c, h, w)
    assert x_cl.stride(2) == 1 and torch.equal(x_cl, x)
    x, x_cl = x.requires_grad_(), x_cl.detach().requires_grad_()

    def run(t):
        return resample_fields(t.reshape(b, m, c, h * w), tables, h * w, perm, reduce)

    gy = torch.randn(run(x).shape, generator=g, dtype=torch.float64)
    want, got = _grads(run, (x,), gy), _grads(run, (x_cl,), gy)
    assert got[0].stride(-2) == 1  # channels innermost: the channels-last layout kept
    assert _max_diff(got, want) < 1e-12
    # control: the comparison flags a resampling that forgets the fiber permutation (or, without one, the batch order)
    if with_perm:
        bad = _grads(lambda t: resample_fields(t.reshape(b, m, c, h * w), tables, h * w, None, reduce), (x_cl,), gy)
    else:
        bad = _grads(lambda t: run(t.flip(0)), (x_cl,), gy)
    assert _max_diff(bad, want) > 1e-3


@pytest.mark.parametrize("reduce", [None, "max"])
def test_interpolated_transport_of_channels_last_fields_stays_channels_last(reduce):
    """A co-moving readout (45-degree C8 tables, pooled or not) of a channels-last state: the plain state's values,
    channels-last, so the decoder convolves it in that layout too (no copy back to [N, C, H, W])."""
    from flow_escnn.flows._element import GridElement
    from flow_escnn.flows._transport import TransportPlan

    gs = gspaces.rot2dOnR2(8)
    field = enn.FieldType(gs, [gs.regular_repr])
    plan = TransportPlan(field, [GridElement(gs, gs.fibergroup.element(k)) for k in (1, 2, 3)], (7, 7),
                         interpolation="bilinear")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 7, 7, generator=g)
    x_cl = x.reshape(6, 8, 7, 7).contiguous(memory_format=torch.channels_last).view(2, 3, 8, 7, 7)
    want, got = plan(x, start=0, reduce=reduce), plan(x_cl, start=0, reduce=reduce)
    assert torch.allclose(got, want, atol=1e-6)
    maps = got if reduce else got.reshape(6, 8, 7, 7)
    assert _is_channels_last(maps)
    # control: the check flags the plain layout
    assert not _is_channels_last(want if reduce else want.reshape(6, 8, 7, 7))


C4 = gspaces.rot2dOnR2(4)


def _layer(cls=FERNN, mode="comoving", gs=C4, seed=0, **kw):
    in_type = enn.FieldType(gs, [gs.trivial_repr])
    hidden = enn.FieldType(gs, [gs.regular_repr] * 2)
    torch.manual_seed(seed)
    return cls(in_type, hidden, FlowSet.rotations(gs, [-1, 0, 1]), num_layers=2, mode=mode, **kw)


def _run(layer, x, h0=None):
    seq, states = layer.forward_with_state(x, h0)
    tensors = [s.tensor for st in states for s in (st if isinstance(st, tuple) else (st,))]
    loss = (seq.tensor ** 2).mean() + sum((s ** 2).mean() for s in tensors)
    grads = torch.autograd.grad(loss, [x, *layer.parameters()])
    return (seq.tensor, *tensors, *grads)


class _LayoutSpy:
    """Records, for every convolution of the hidden fields, whether its input and output were channels-last."""

    def __init__(self, monkeypatch, maps=None):
        self.seen, real = [], nnk.conv2d

        def spy(x_, w_, *args, **kwargs):
            y = real(x_, w_, *args, **kwargs)
            if x_.shape[1] == w_.shape[1] > 2 and maps in (None, x_.shape[0]):  # maps: the recurrent conv's B*V
                self.seen.append(_is_channels_last(x_) and _is_channels_last(y))
            return y

        monkeypatch.setattr(nnk, "conv2d", spy)


def _x(seed, grid=(9, 9), t=4):
    return torch.randn(2, t, 1, *grid, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def test_comoving_run_is_the_same_with_channels_last_states(monkeypatch):
    """A float32 CPU co-moving run at 45 degrees per frame (interpolated, C8 fibers permuted) keeps its states
    channels-last and computes the plain layout's outputs, final states and gradients to float32 rounding."""
    layer = _layer(gs=gspaces.rot2dOnR2(8))
    x = _x(3, (11, 11))
    spy = _LayoutSpy(monkeypatch)
    got = _run(layer, x)
    assert spy.seen and all(spy.seen), "the co-moving states should be convolved channels-last"
    spy.seen.clear()
    monkeypatch.setattr(nnk, "CHANNELS_LAST_2D", frozenset())
    want = _run(layer, x)
    assert spy.seen and not any(spy.seen)
    scale = max(float(t.detach().abs().max()) for t in want)
    assert _max_diff(got, want) < 1e-5 * scale
    # control: the comparison flags a run whose last input frame differs
    x2 = x.detach().clone()
    x2[:, -1] += 1.0
    assert _max_diff(_run(layer, x2.requires_grad_()), want) > 1e-3 * scale


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("cell", CELLS)
def test_channels_last_comoving_agrees_with_the_hidden_mode_exactly(cell, with_h0, monkeypatch):
    """90-degree rotations are exact: the channels-last co-moving run (float32) and the stationary-frame run
    (plain layout, the state transported every step) compute the same function, to float32 rounding."""
    cls = CELL_KINDS[cell].layer
    hidden, comoving = _layer(cls, "hidden"), _layer(cls, "comoving")
    comoving.load_state_dict(hidden.state_dict())
    x = _x(5)
    h0 = None
    if with_h0:
        g = torch.Generator().manual_seed(7)
        parts = [[LiftedTensor(torch.randn(2, 3, 8, 9, 9, generator=g), hidden.out_type)
                  for _ in range(cls.cell_class.state_size)] for _ in range(2)]
        h0 = [tuple(p) if len(p) > 1 else p[0] for p in parts]
    spy = _LayoutSpy(monkeypatch)
    got = _run(comoving, x, h0)
    assert spy.seen and all(spy.seen)
    want = _run(hidden, x, h0)
    scale = max(float(t.detach().abs().max()) for t in want)
    assert _max_diff(got, want) < 1e-5 * scale
    # control: the same comparison flags the hidden run of a sequence whose frames come in reverse
    assert _max_diff(_run(hidden, x.detach().flip(1).requires_grad_(), h0), got) > 1e-3 * scale


def test_layout_only_where_every_piece_reads_it():
    """Float32 / bfloat16 planes on the CPU run channels-last, co-moving (zero or circular padding) and in the
    stationary frame (exact transports); float64, field nonlinearities and learned transports keep the plain
    layout (each is checked to be refused while the same layer otherwise qualifies)."""
    cpu = torch.device("cpu")
    grid = (9, 9)

    def layout(layer, dtype=torch.float32):
        return layer.recurrence(grid, cpu, 4).channels_last(dtype, cpu)

    assert layout(_layer()) and layout(_layer(), torch.bfloat16)
    assert layout(_layer(padding_mode="circular")) and layout(_layer(mode="hidden"))
    translations = FlowSet.translations(C4, 1)
    in_type, hidden = enn.FieldType(C4, [C4.trivial_repr]), enn.FieldType(C4, [C4.regular_repr] * 2)
    assert layout(FERNN(in_type, hidden, translations))
    assert not layout(_layer(), torch.float64)
    assert not layout(FERNN(in_type, hidden, translations, nonlinearity="norm_squash"))
    assert not layout(CELL_KINDS["grnn_plus"].layer(in_type, hidden, translations))


def test_translation_predictor_is_the_same_with_channels_last_states(monkeypatch):
    """The stationary-frame step (exact translations, circular padding) with channels-last states and the readout
    pooled inside the transport's gather (:meth:`~flow_escnn.flows.GatherTransport.pooled_rows`): the plain
    layout's predictions and gradients to float32 rounding."""
    from flow_escnn.flows._transport import GatherTransport
    from flow_escnn.models import NextFramePredictor

    gs = gspaces.trivialOnR2()
    torch.manual_seed(0)
    model = NextFramePredictor(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.trivial_repr] * 4),
                               FlowSet.translations(gs, 1), decoder_layers=1, padding_mode="circular")
    x = torch.rand(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def run(frames):
        y = model(frames, 3)
        return (y, *torch.autograd.grad(y.square().mean(), list(model.parameters())))

    pooled = []
    real = GatherTransport.pooled_rows
    monkeypatch.setattr(GatherTransport, "pooled_rows", lambda self, h: pooled.append(1) or real(self, h))
    got = run(x)
    assert len(pooled) == 3  # one fused readout per prediction
    monkeypatch.setattr(nnk, "CHANNELS_LAST_2D", frozenset())
    want = run(x)
    assert len(pooled) == 3  # the plain layout pools separately
    scale = max(float(t.detach().abs().max()) for t in want)
    assert _max_diff(got, want) < 1e-5 * scale
    # control: the comparison flags a run on frames moved by one pixel
    assert _max_diff(run(torch.roll(x, 1, -1)), want) > 1e-3 * scale


@pytest.mark.parametrize("mu", [(1, 0), (-1, 1)])
def test_float32_translation_flow_is_exact_with_channels_last_states(mu, monkeypatch):
    """The commuting diagram of an exact translation flow, in float32 with channels-last states: the output of the
    flowed input is the flow (transport and V shift) of the output, to float32 rounding."""
    from tests.oracles import translate_sequence

    in_type, hidden = enn.FieldType(C4, [C4.trivial_repr]), enn.FieldType(C4, [C4.regular_repr] * 2)
    torch.manual_seed(2)
    layer = FERNN(in_type, hidden, FlowSet.translations(C4, 1), num_layers=2)
    x = torch.randn(2, 5, 1, 6, 7, generator=torch.Generator().manual_seed(3))
    spy = _LayoutSpy(monkeypatch)
    with torch.no_grad():
        y, yp = layer(x), layer(translate_sequence(x, mu))
    assert spy.seen and all(spy.seen)
    scale = float(y.tensor.abs().max())
    lifted, valid = y.transform_flow(mu)
    assert int(valid.sum()) > 0
    assert float((lifted.tensor[:, :, valid] - yp.tensor[:, :, valid]).abs().max()) <= 1e-5 * scale
    # control: the same check flags the flow of the opposite velocity
    wrong, valid = y.transform_flow((-mu[0], -mu[1]))
    assert float((wrong.tensor[:, :, valid] - yp.tensor[:, :, valid]).abs().max()) > 1e-2 * scale


def _cl(x: torch.Tensor) -> torch.Tensor:
    """``[B, S, C, H, W]`` with its channels innermost (the engine's channels-last states)."""
    b, s, c, h, w = x.shape
    return x.reshape(b * s, c, h, w).contiguous(memory_format=torch.channels_last).view(b, s, c, h, w)


def test_circular_pad_of_channels_last_maps_is_f_pad():
    from flow_escnn.flows._gather import CircularPad

    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 4, 5, 6, generator=g, dtype=torch.float64)
    pad = CircularPad((5, 6), 2)
    xc = _cl(x).requires_grad_()
    y = pad(xc)
    assert y.stride(2) == 1  # still channels-last
    assert torch.equal(y, F.pad(x.view(6, 4, 5, 6), (2,) * 4, mode="circular").view(2, 3, 4, 9, 10))
    torch.autograd.gradcheck(pad, (xc,))
    # control: the same comparison flags zero padding
    assert not torch.equal(y, F.pad(x.view(6, 4, 5, 6), (2,) * 4).view(2, 3, 4, 9, 10))


@pytest.mark.parametrize("fibers", ["trivial", "regular"])
def test_exact_transport_of_channels_last_fields_matches_the_plain_layout(fibers):
    """Exact tables (C4 rotations and translations, circular padding, permuted fibers): the channels-last pixel-row
    gather gives the plain gather's values and gradients, and :meth:`pooled_rows` the transport and its max."""
    from flow_escnn.flows import TransportPlan
    from flow_escnn.flows._reduce import max_over

    rep = C4.trivial_repr if fibers == "trivial" else C4.regular_repr
    ftype = enn.FieldType(C4, [rep] * (3 if fibers == "trivial" else 1))
    flows = FlowSet.rotations(C4, [-1, 0, 1, 2])
    plan = TransportPlan(ftype, flows.elements(1), (6, 6), pad=1)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, len(flows), ftype.size, 6, 6, generator=g, dtype=torch.float64)
    xc = _cl(x).requires_grad_()
    x = x.requires_grad_()
    gy = torch.randn(2, len(flows), ftype.size, 8, 8, generator=g, dtype=torch.float64)
    want, got = _grads(plan, (x,), gy), _grads(plan, (xc,), gy)
    assert got[0].stride(2) == 1 and _max_diff(got, want) < 1e-12
    torch.autograd.gradcheck(plan, (xc,))
    if fibers == "trivial":
        gp = torch.randn(2, ftype.size, 8, 8, generator=g, dtype=torch.float64)
        y, pooled = plan.pooled_rows(xc)
        ref_y = plan(x)
        ref = max_over(ref_y, 1)
        assert torch.equal(y, ref_y) and torch.equal(pooled, ref)
        g_got = torch.autograd.grad((y * gy).sum() + (pooled * gp).sum(), xc)[0]
        g_want = torch.autograd.grad((ref_y * gy).sum() + (ref * gp).sum(), x)[0]
        assert float((g_got - g_want).abs().max()) < 1e-12
        torch.autograd.gradcheck(lambda t: plan.pooled_rows(t)[1], (xc,))
    else:
        with pytest.raises(ValueError, match="identity fibers"):
            plan.pooled_rows(xc)
    # control: the comparison flags the transport of the slices in the wrong order
    assert _max_diff(_grads(plan, (xc.flip(1),), gy), want) > 1e-3


def test_an_unpadded_identity_transport_is_the_map_itself():
    """V = {0} with zero padding (the G-RNN's): no gather runs in either layout, and nothing is pooled in the gather
    (one slice); with circular padding, the pixel-row gather pads."""
    from flow_escnn.flows import TransportPlan

    ftype = enn.FieldType(C4, [C4.regular_repr])
    ident = FlowSet.identity(C4).elements(1)
    xc = _cl(torch.randn(2, 1, 4, 5, 5))
    still, padded = TransportPlan(ftype, ident, (5, 5), pad=0), TransportPlan(ftype, ident, (5, 5), pad=1)
    same = still(xc)
    assert same.data_ptr() == xc.data_ptr() and same.stride() == xc.stride() and torch.equal(same, xc)
    assert not still.pools_rows(xc) and not padded.pools_rows(xc)
    y = padded(xc)
    assert y.stride(2) == 1 and torch.equal(y, F.pad(xc.reshape(2, 4, 5, 5), (1,) * 4, mode="circular").view(2, 1, 4, 7, 7))


def _translation_predictor(**kw):
    from flow_escnn.models import NextFramePredictor

    gs = gspaces.trivialOnR2()
    torch.manual_seed(0)
    return NextFramePredictor(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.trivial_repr] * 4),
                              FlowSet.translations(gs, 1), decoder_layers=1, padding_mode="circular", **kw)


def _predict_grads(model, x, amp=False):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else torch.autocast("cpu", enabled=False)
    with ctx:
        y = model(x, 3).float()
    return (y, *torch.autograd.grad(y.square().mean(), list(model.parameters())))


def test_checkpointed_channels_last_run_is_the_plain_run(monkeypatch):
    """Recomputed segments (``checkpoint=True``) with channels-last states: the plain layout's uncheckpointed
    predictions and gradients, to float32 rounding."""
    x = torch.rand(2, 5, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    got = _predict_grads(_translation_predictor(checkpoint=True), x)
    monkeypatch.setattr(nnk, "CHANNELS_LAST_2D", frozenset())
    want = _predict_grads(_translation_predictor(), x)
    scale = max(float(t.detach().abs().max()) for t in want)
    assert _max_diff(got, want) < 1e-5 * scale
    # control: the same comparison flags another initialisation
    torch.manual_seed(1)
    other = _translation_predictor()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert _max_diff(_predict_grads(other, x), want) > 1e-3 * scale


def test_bf16_autocast_runs_channels_last_and_agrees_with_the_plain_layout(monkeypatch):
    """Under bf16 autocast the states are channels-last too (bf16 maps): the plain layout's predictions and gradients
    to bf16 rounding (2e-2 relative, per tensor; measured 0 for the predictions and at most 2.3e-3)."""
    model = _translation_predictor()
    x = torch.rand(2, 4, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    spy = _LayoutSpy(monkeypatch, maps=2 * 9)  # the recurrent convolutions (the decoder reads a crop of the readout)
    got = _predict_grads(model, x, amp=True)
    assert spy.seen and all(spy.seen)
    monkeypatch.setattr(nnk, "CHANNELS_LAST_2D", frozenset())
    want = _predict_grads(model, x, amp=True)

    def rel(a, b):  # per tensor: the gradients' scales differ by orders of magnitude
        return max(float((p - q).detach().abs().max()) / max(float(q.detach().abs().max()), 1e-12) for p, q in zip(a, b))

    assert rel(got, want) < 2e-2
    # control: the same comparison flags the run on half the input
    assert rel(_predict_grads(model, 0.5 * x, amp=True), want) > 2e-2


def _rotation_predictor(dtype=torch.float64, **kw):
    from flow_escnn.models import NextFramePredictor

    gs = gspaces.rot2dOnR2(8)
    torch.manual_seed(2)
    model = NextFramePredictor(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr] * 2),
                               FlowSet.rotations(gs, [-1, 0, 1]), decoder_layers=1, bias=True, **kw)
    return model.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("flows", ["rotation", "translation-bias"])
def test_deferred_input_terms_are_the_convolved_ones(dtype, checkpoint, flows, monkeypatch):
    """A co-moving predictor at 45 degrees per frame (and one of translations whose U has a bias) on a
    one-channel input: layer 0's input convolution added by the update into the recurrent term
    (:class:`~flow_escnn.nn._kernels.ThinTerm`; the predictions are fed back, so the input gradient runs too) gives
    the predictions and gradients of the run that convolves it first (``DEFER_INPUT`` off): float64 to rounding,
    float32 (channels-last states) to float32 rounding. Control: the same comparison flags a deferred term read
    with its filter mirrored."""
    from flow_escnn.nn import _engine
    from flow_escnn.nn.cell_kinds import fernn

    x = torch.rand(2, 4, 1, 9, 9, generator=torch.Generator().manual_seed(8), dtype=dtype)
    if flows == "rotation":
        model = _rotation_predictor(dtype, checkpoint=checkpoint)
    else:  # trivial hidden fields: U has a bias, which the deferred term adds too
        model = _translation_predictor(mode="comoving", bias=True, checkpoint=checkpoint).to(dtype)
        with torch.no_grad():  # escnn starts biases at zero
            for name, p in model.named_parameters():
                if "bias" in name:
                    p.copy_(torch.linspace(-0.5, 0.5, p.numel(), dtype=dtype).view_as(p))
        assert model.encoder.weights()["l0_u_bias"].abs().sum() > 0
    assert model.encoder.recurrence((9, 9), "cpu", 8).defers_input(x, model.encoder.weights())
    deferred = []
    real = fernn.add_thin_conv_

    def spy(out, term):
        deferred.append(term.x.shape)
        return real(out, term)

    monkeypatch.setattr(fernn, "add_thin_conv_", spy)
    got = _predict_grads(model, x)
    assert len(deferred) >= 4 + 2  # every update: 4 given frames, 2 fed back (checkpointing recomputes some)
    monkeypatch.setattr(_engine, "DEFER_INPUT", False)
    deferred.clear()
    want = _predict_grads(model, x)
    assert not deferred
    scale = max(float(t.detach().abs().max()) for t in want)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert _max_diff(got, want) < tol * scale
    # control: a deferred term with its filter mirrored
    monkeypatch.setattr(_engine, "DEFER_INPUT", True)
    monkeypatch.setattr(fernn, "add_thin_conv_", lambda out, term: real(out, term._replace(weight=term.weight.flip(-1))))
    assert _max_diff(_predict_grads(model, x), want) > 1e-3 * scale


def test_deferred_input_term_trains_a_bias_alone(monkeypatch):
    """Only U's bias trainable: its gradient through the deferred terms (the first step's, on the zero state, where
    nothing else requires a gradient, included) is the convolved run's. Control: without the first frame's
    contribution the gradient differs."""
    from flow_escnn.nn import _engine

    model = _translation_predictor(mode="comoving", bias=True).double()
    names = [n for n, _ in model.named_parameters()]
    bias = next(p for n, p in model.named_parameters() if n.startswith("encoder") and "bias" in n)
    for p in model.parameters():
        p.requires_grad_(p is bias)
    with torch.no_grad():
        bias.copy_(torch.linspace(-0.3, 0.3, bias.numel(), dtype=bias.dtype).view_as(bias))
    x = torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def grad(frames):
        return torch.autograd.grad(model(frames, 2).square().mean(), bias)[0]

    got = grad(x)
    monkeypatch.setattr(_engine, "DEFER_INPUT", False)
    want = grad(x)
    assert names and float(want.abs().max()) > 0
    assert float((got - want).abs().max()) < 1e-12 * float(want.abs().max())
    assert float((grad(x[:, 1:]) - want).abs().max()) > 1e-3 * float(want.abs().max())
