"""The recurrence engine: model/export parity for every cell x mode x V-mixing x model kind,
mixed precision (autocast) with exact-case equivariance to the dtype's rounding, dtype errors,
and the gather-only transports (deterministic backward, gradients checked numerically)."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import FlowGenerator, FlowSet, TransportPlan, flow_sequence
from flow_escnn.flows._gather import circular_pad
from flow_escnn.models import NextFramePredictor, SequenceClassifier
from flow_escnn.nn import CELL_KINDS

C4 = gspaces.rot2dOnR2(4)
IN = enn.FieldType(C4, [C4.trivial_repr])
HID = enn.FieldType(C4, [C4.regular_repr])
F64 = torch.float64


def _randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.4) -> torch.nn.Module:
    """Redraw every parameter (steerable coefficients, V-mixing and G-RNN+ kernels alike), so no
    piece (in particular a non-identity V-mixing) sits at a special initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _x(t: int = 4, h: int = 6, seed: int = 1, dtype=F64) -> torch.Tensor:
    return torch.randn(2, t, 1, h, h, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _cases():
    for cell, mode, mixing in itertools.product(sorted(CELL_KINDS), ["hidden", "comoving"], [0, 1]):
        if cell == "grnn_plus" and (mode == "comoving" or mixing):
            continue  # the learned kernel is stationary-frame only and has no V-mixing
        if mixing and mode == "comoving":
            continue  # V-mixing is stationary-frame only
        yield cell, mode, mixing


def _kwargs(cell: str, mixing: int) -> dict:
    kw = {"velocity_mixing": mixing} if mixing else {}
    if cell == "grnn_plus":
        kw["velocity_kernel_size"] = 3
    return kw


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("cell,mode,mixing", list(_cases()))
@pytest.mark.parametrize("kind", ["layer", "predictor", "classifier"])
def test_model_and_export_agree(kind, cell, mode, mixing):
    """float64, relative 1e-9: the export runs the model's own engine program (here: bit for bit)."""
    torch.manual_seed(0)
    flows = FlowSet.translations(C4, 1)
    kw = dict(_kwargs(cell, mixing), mode=mode, num_layers=2)
    if kind == "layer":
        model = CELL_KINDS[cell].layer(IN, HID, flows, **kw)
        call = lambda m, x: m(x).tensor if hasattr(m(x), "tensor") else m(x)  # noqa: E731
    elif kind == "predictor":
        model = NextFramePredictor(IN, HID, flows, cell=cell, decoder_layers=1, **kw)
        call = lambda m, x: m(x, 3, include_one_step=True)  # noqa: E731
    else:
        model = SequenceClassifier(IN, HID, flows, 3, cell=cell, readout="mean", **kw)
        call = lambda m, x: m(x)  # noqa: E731
    model = _randomize(copy.deepcopy(model).to(F64)).eval()
    if mixing:
        assert not torch.allclose(model.encoder.cells[0].mix.matrix() if kind != "layer" else model.cells[0].mix.matrix(),
                                  torch.eye(9, dtype=F64)), "V-mixing must not be the identity here"
    twin = model.export(grid_shape=(6, 6), max_steps=8)
    x = _x()
    with torch.no_grad():
        ref, out = call(model, x), call(twin, x)
        assert ref.abs().max() > 1e-3
        assert _rel(out, ref) <= 1e-9
        # control: the same comparison sees a drifted twin (one frozen weight changed)
        name = next(iter(twin.weights))
        twin.weights[name].mul_(1.5)
        assert _rel(call(twin, x), ref) > 1e-6


def test_exports_share_the_engine_and_hold_no_update_code():
    """Every exported twin is a Frozen program: the recurrence code lives in the engine only."""
    from flow_escnn.nn import Frozen, Recurrence

    flows = FlowSet.translations(C4, 1)
    for model in (CELL_KINDS["lstm"].layer(IN, HID, flows), NextFramePredictor(IN, HID, flows),
                  SequenceClassifier(IN, HID, flows, 2)):
        twin = model.export(grid_shape=(5, 5))
        assert isinstance(twin, Frozen)
        assert sum(isinstance(m, Recurrence) for m in twin.modules()) == 1


# -- mixed precision ------------------------------------------------------------------------------------
# one bf16 rounding step (2**-7) relative; measured: 0.0 for fernn, gru and lstm on CPU (torch 2.13)
AUTOCAST_TOL = {torch.bfloat16: 2.0 ** -7}


@pytest.mark.parametrize("cell", sorted(CELL_KINDS))
def test_autocast_bf16_runs_and_stays_translation_equivariant(cell):
    """Under torch.autocast(bf16) every layer runs with bf16 states; the exact translation flow
    still commutes to bf16 rounding (relative error stated per dtype)."""
    torch.manual_seed(0)
    flows = FlowSet.translations(C4, 2)  # covers the 5x5 torus: the V shift is a permutation
    kw = {"velocity_kernel_size": 5} if cell == "grnn_plus" else {}
    model = _randomize(NextFramePredictor(IN, HID, flows, cell=cell, decoder_layers=1, **kw), scale=1.0)
    x = _x(h=5, dtype=torch.float32)
    mu = FlowGenerator(C4, (1, -1))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x, 2)
        y2 = model(flow_sequence(x, IN, mu), 2)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert y.float().std(dim=(-1, -2)).min() > 0.05, "vacuous check: a predicted frame is (nearly) constant"
    expected = flow_sequence(y.float(), IN, mu, start=x.shape[1])
    err = _rel(y2.float(), expected)
    if cell == "grnn_plus":
        return  # at its shift initialisation G-RNN+ is a FERNN, but its kernels are randomized here
    assert err <= AUTOCAST_TOL[torch.bfloat16], err
    # control: the same check without the flow on the output fails
    control = _rel(y2.float(), y.float())
    assert control > 3 * AUTOCAST_TOL[torch.bfloat16] and control > 3 * err, (control, err)


def test_autocast_training_step_has_float32_gradients():
    torch.manual_seed(0)
    model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), decoder_layers=1)
    x = _x(h=6, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, 2).float().square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtype_that_differs_from_the_model_is_refused_with_the_fix(dtype):
    model = NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), decoder_layers=1)
    with pytest.raises(TypeError, match=r"input has dtype .* but the model's weights are torch.float32.*autocast"):
        model(_x(dtype=dtype), 1)
    with pytest.raises(TypeError, match="autocast"):
        model.encoder(_x(dtype=dtype))


# -- transports ---------------------------------------------------------------------------------------------
def test_exact_transport_backward_is_a_gather_and_deterministic(deterministic_grads):
    """The backward of an exact (padded) transport equals autograd's reference and is bitwise
    repeatable; under torch.use_deterministic_algorithms it runs without error."""
    flows = FlowSet.roto_translations(C4, 1, [0, 1])
    plan = TransportPlan(HID, flows.elements(1), (6, 6), pad=1)
    x = torch.randn(2, len(flows), HID.size, 6, 6, dtype=F64, requires_grad=True)
    g = torch.randn(2, len(flows), HID.size, 8, 8, dtype=F64)
    a, b = deterministic_grads(plan, x, g)
    assert torch.equal(a, b)
    unpadded = TransportPlan(HID, flows.elements(1), (6, 6))
    ref_out = torch.nn.functional.pad(unpadded(x).flatten(0, 1), (1,) * 4, mode="circular")
    (ref,) = torch.autograd.grad(ref_out, x, g.flatten(0, 1))
    assert (a - ref).abs().max() <= 1e-12
    assert torch.autograd.gradcheck(lambda z: plan(z), (x[:1].detach().requires_grad_(),))


def test_circular_pad_matches_torch_and_refuses_oversized_padding():
    x = torch.randn(2, 3, 4, 5, dtype=F64, requires_grad=True)
    torch.testing.assert_close(circular_pad(x, 2), torch.nn.functional.pad(x, (2,) * 4, mode="circular"), rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda z: circular_pad(z, 2), (x,))
    with pytest.raises(ValueError, match="needs a grid of at least 5 per axis, got 4x5"):
        circular_pad(x, 5)


def test_circular_pad_of_a_volume_matches_torch():
    """The same tables on a (D, H, W) grid: F.pad's circular padding of a 5-D tensor, values and gradients."""
    x = torch.randn(2, 3, 3, 4, 5, dtype=F64, requires_grad=True)
    torch.testing.assert_close(circular_pad(x, 2, dims=3), torch.nn.functional.pad(x, (2,) * 6, mode="circular"),
                               rtol=0, atol=0)
    small = x[:1, :1].detach().clone().requires_grad_()  # gradcheck perturbs every entry: one channel suffices
    assert torch.autograd.gradcheck(lambda z: circular_pad(z, 2, dims=3), (small,))
    zero_padded = torch.nn.functional.pad(x, (1,) * 6)
    assert not torch.equal(circular_pad(x, 1, dims=3), zero_padded)  # a control: the border differs


# -- input batches ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hidden", "comoving"])
def test_input_terms_in_batches_change_nothing(mode):
    """Convolving the input frames a batch at a time (``chunk``) gives the all-at-once outputs and
    gradients (float64, 1e-12), with autoregressive steps past the given frames and checkpointing;
    a bad ``chunk`` is refused. Control: a batch that skips a frame is seen."""
    from flow_escnn.nn._kernels import INPUT_BATCH_BYTES, InputBatches, frames_per_batch

    torch.manual_seed(0)
    model = _randomize(NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), mode=mode, decoder_layers=1).to(F64))
    x = _x(t=5)
    program = model.encoder.recurrence((6, 6), "cpu", 8)

    def run(chunk, checkpoint=False):
        weights = model.encoder.weights()
        def predict(s, guess):  # a frame from the guess (hidden mode hands it over circularly padded)
            p = (guess.shape[-1] - 6) // 2
            return guess[..., p : p + 6, p : p + 6].amax(1)[:, :1]

        res = program.run(x, weights, predict=predict, predict_from=2, extra_steps=2, chunk=chunk, checkpoint=checkpoint)
        out = torch.stack(res.predictions, 1)
        grads = torch.autograd.grad(out.square().sum(), list(model.encoder.parameters()))
        return out.detach(), grads

    ref, ref_g = run(100)
    for chunk, ckpt in [(1, False), (2, False), (3, True), (None, False)]:
        out, grads = run(chunk, ckpt)
        assert _rel(out, ref) <= 1e-12, chunk
        assert max(_rel(a, b) for a, b in zip(grads, ref_g)) <= 1e-12, chunk
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"chunk \(frames per input batch\) must be a positive integer"):
            run(bad)
    # the automatic size: as many frames as fit, at least one
    assert frames_per_batch(None, INPUT_BATCH_BYTES // 3) == 3 and frames_per_batch(None, 2 * INPUT_BATCH_BYTES) == 1
    # control: the comparison above sees a batcher that hands out the wrong frame
    terms = torch.arange(5.0).view(1, 5)
    good = InputBatches(lambda i, k: terms[:, i : i + k], 5, 2)
    assert [float(good(i)) for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    skipping = InputBatches(lambda i, k: terms[:, i + 1 : i + 1 + k], 4, 2)
    assert [float(skipping(i)) for i in range(4)] != [0.0, 1.0, 2.0, 3.0]
    # a frame of the kept batch is the same tensor again (frame 0 gives the dtype, then its update)
    calls = []
    batches = InputBatches(lambda i, k: calls.append(i) or terms[:, i : i + k], 5, 2)
    assert batches(0) is batches(0) and [float(batches(i)) for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert calls == [0, 2, 4]


# -- pooled readouts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,pool", [("hidden", "max"), ("comoving", "max"), ("comoving", "mean")])
def test_pooled_readouts_are_the_pooled_guesses(mode, pool):
    """``run(readout_pool=...)`` hands ``predict`` the guesses pooled over V: the pooling of the guesses
    it hands over without it (max: bit for bit, gradients too; mean: 1e-12), for an interpolated C8
    rotation flow (co-moving: pooled inside the resampling's layout) and the hidden mode. Control: the
    same comparison flags a pooling that drops the last velocity."""
    from flow_escnn.nn._pooling import reduce_velocities

    c8 = gspaces.rot2dOnR2(8)
    torch.manual_seed(0)
    model = _randomize(NextFramePredictor(enn.FieldType(c8, [c8.trivial_repr]), enn.FieldType(c8, [c8.regular_repr]),
                                          FlowSet.rotations(c8, [-1, 0, 1]), mode=mode, decoder_layers=1).to(F64))
    x = _x(t=4, h=7)
    program = model.encoder.recurrence((7, 7), "cpu", 6)
    assert program.comoving == (mode == "comoving")

    def run(readout_pool, reduce=lambda g: g):
        weights = model.encoder.weights()
        guesses = []

        def predict(s, guess):
            guesses.append(reduce(guess))
            p = (guesses[-1].shape[-1] - 7) // 2
            return guesses[-1][..., p : p + 7, p : p + 7][:, :1]

        program.run(x, weights, predict=predict, predict_from=2, extra_steps=2, readout_pool=readout_pool)
        out = torch.stack(guesses, 1)
        return out.detach(), torch.autograd.grad(out.square().sum(), list(model.encoder.parameters()))

    pooled, grads = run(pool)
    ref, ref_grads = run(None, lambda g: reduce_velocities(g, pool))
    if pool == "max":
        assert torch.equal(pooled, ref) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    else:
        assert _rel(pooled, ref) <= 1e-12 and max(_rel(a, b) for a, b in zip(grads, ref_grads)) <= 1e-12
    dropped, _ = run(None, lambda g: reduce_velocities(g[:, :-1], pool))
    assert _rel(pooled, dropped) > 1e-3


# -- the zero initial state ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cell,mode,mixing", list(_cases()))
def test_zero_initial_state_skips_step_zero_and_changes_nothing(cell, mode, mixing, monkeypatch):
    """With no initial state the first step neither transports nor convolves the zero state (``W * 0 = 0``):
    predictions, final states and gradients equal those of a run handed explicit zero states (which takes
    the full step), bit for bit, for every cell kind, frame and V-mixing, with and without checkpointing.
    Control: the shortcut is taken (one recurrent convolution fewer) and an explicit non-zero state is seen.
    (The co-moving one-slice start, which sums the first recurrent term's gradient over V before its
    convolution's backward, is switched off here: tests of its own below.)"""
    from flow_escnn.nn import _engine

    monkeypatch.setattr(_engine, "UNIFORM_START", False)
    torch.manual_seed(0)
    model = _randomize(NextFramePredictor(IN, HID, FlowSet.translations(C4, 1), cell=cell, mode=mode, decoder_layers=1,
                                          **_kwargs(cell, mixing)).to(F64))
    x = _x(t=4)
    program = model.encoder.recurrence((6, 6), "cpu", 6)

    def run(h0, checkpoint=False):
        weights = model.encoder.weights()
        res = program.run(x, weights, h0, predict=lambda s, g: g[..., :1, :, :].amax(1)[:, :1] if g.shape[-1] == 6
                          else g[..., 1:7, 1:7].amax(1)[:, :1], predict_from=2, extra_steps=2, checkpoint=checkpoint)
        out = torch.stack(res.predictions, 1)
        finals = torch.cat([s.reshape(-1) for layer in res.states for s in layer])
        grads = torch.autograd.grad(out.square().sum() + finals.sum(), list(model.encoder.parameters()))
        return out.detach(), finals.detach(), grads

    zeros = program.zero_state(2, F64, torch.device("cpu"))
    calls = []
    real = _engine.conv

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    _engine.conv = counting
    try:
        out, finals, grads = run(None)
        skipped = len(calls)
        calls.clear()
        ref, ref_finals, ref_grads = run(zeros)
        assert len(calls) == skipped + 1  # the full first step convolves the zero state once more
    finally:
        _engine.conv = real
    assert torch.equal(out, ref) and torch.equal(finals, ref_finals)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    ck_out, ck_finals, ck_grads = run(None, checkpoint=True)  # checkpointed: against the checkpointed full step
    ck_ref, ck_ref_finals, ck_ref_grads = run(zeros, checkpoint=True)
    assert torch.equal(ck_out, ck_ref) and torch.equal(ck_finals, ck_ref_finals)
    assert all(torch.equal(a, b) for a, b in zip(ck_grads, ck_ref_grads))
    # control: a non-zero initial state changes the predictions
    other, _, _ = run([tuple(s + 0.1 for s in layer) for layer in zeros])
    assert not torch.equal(other, ref)


# -- the self-motion folded into the flow transport (world maps) ------------------------------------------------
def _world_program(field, world=10, view=6, seed=0):
    from flow_escnn.models import WorldModel

    torch.manual_seed(seed)
    model = WorldModel(IN, field, FlowSet.translations(C4, 1), world, view).to(F64)
    recurrence = model.encoder.recurrence(model.world_size, "cpu", 5, view=model._view)
    return model, recurrence, model._new_program(recurrence, model.motion)


class _CountingAct:
    """An ``act`` that counts the separate self-motion passes it runs (the folded transport only reads its tables)."""

    def __init__(self, act):
        self.act, self.calls = act, 0

    def permutation(self, *args):
        return self.act.permutation(*args)

    def __call__(self, t, s):
        self.calls += 1
        return self.act(t, s)


@pytest.mark.parametrize("field", [IN, HID, enn.FieldType(C4, [C4.regular_repr] * 2)],
                         ids=["trivial", "regular", "regular2"])
@pytest.mark.parametrize("turns", [False, True], ids=["moves", "turns"])
@pytest.mark.parametrize("pool", [None, "max", "mean"])
def test_folded_self_motion_and_flow_transport_equal_the_two_passes(field, turns, pool):
    """``psi_1(nu) a_t^{-1} h`` as one gather (the self-motion's and the flow's permutations composed, the circular
    padding and the view window's readout written by it) equals the self-motion's gather followed by the flow
    transport and the window read: values bit for bit, gradients (a gather by the inverse, the window's and the
    ring's copies added) bit for bit, also when only the readout is gathered. Control: the flow without the
    self-motion differs."""
    from flow_escnn.flows._reduce import reduce_over

    model, rec, program = _world_program(field)
    g = torch.Generator().manual_seed(3)
    actions = torch.randint(-2, 3, (3, 5, 3), generator=g).double()
    actions[..., 2] = torch.randint(0, 4, (3, 5), generator=g).double() if turns else 0
    act = _CountingAct(program.act(actions, 5))
    weights = model.weights()
    tr = rec.step_transports[0]
    top, left, vh, vw = rec.view
    h = torch.randn(3, len(model.flows), field.size, 10, 10, dtype=F64, generator=g).requires_grad_()

    def reference(s):
        y = tr(act.act(2, s))
        win = y[..., top + 1 : top + 1 + vh, left + 1 : left + 1 + vw].contiguous()
        return y, (reduce_over(win, 1, pool) if pool else win)

    moved = rec.transport(0, (h,), weights, 2, True, pool, act)
    assert act.calls == 0  # folded: no separate self-motion pass
    y_ref, read_ref = reference(h)
    y = moved.conv_input.view_as(y_ref)
    assert torch.equal(y, y_ref) and torch.equal(moved.readout, read_ref)
    assert torch.equal(moved.state[0], y_ref[..., 1:-1, 1:-1])
    gy, gr = torch.randn(y.shape, dtype=F64, generator=g), torch.randn(read_ref.shape, dtype=F64, generator=g)
    (grad,) = torch.autograd.grad([y, moved.readout], h, [gy, gr])
    (grad_ref,) = torch.autograd.grad([y_ref, read_ref], h, [gy, gr])
    assert torch.equal(grad, grad_ref)
    only = rec.transport(0, (h,), weights, 2, True, pool, act, readout_only=True)
    read_ref = reference(h)[1]
    assert only.conv_input is None and torch.equal(only.readout, read_ref)
    assert torch.equal(torch.autograd.grad(only.readout, h, gr)[0], torch.autograd.grad(read_ref, h, gr)[0])
    plain = rec.transport(0, (h,), weights, 2, False)  # control: the map that did not move
    assert not torch.equal(plain.conv_input.view_as(y_ref), y_ref)


def test_dense_fiber_turns_take_the_two_passes():
    """Irreps fields: a turn acts on the fibers by dense matrices, no permutation, so those steps run the
    self-motion on its own (the steps without a turn are folded); the values equal the two passes."""
    field = enn.FieldType(C4, [C4.irrep(1), C4.trivial_repr])
    torch.manual_seed(0)
    from flow_escnn.models import WorldModel

    model = WorldModel(IN, field, FlowSet.translations(C4, 1), 10, 6, nonlinearity="norm_squash", pool="mean").to(F64)
    rec = model.encoder.recurrence(model.world_size, "cpu", 5, view=model._view)
    actions = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]]], dtype=F64).expand(2, 2, 3)
    act = _CountingAct(model._new_program(rec, model.motion).act(actions, 2))
    h = torch.randn(2, len(model.flows), field.size, 10, 10, dtype=F64)
    for t, separate in ((0, 0), (1, 1)):
        moved = rec.transport(0, (h,), model.weights(), t, False, None, act)
        assert act.calls == separate
        assert torch.equal(moved.conv_input.view(2, len(model.flows), field.size, 12, 12),
                           rec.step_transports[0](act.act(t, h)))


def test_window_input_term_equals_the_written_map():
    """With a view window the FERNN cell adds ``U * f`` to the window's rows only (and sums its gradient over V
    there): the same new state (bit for bit) and the same gradients (float64, to rounding) as adding the map with
    the term written into the window, zeros elsewhere. Control: a term written one row off differs."""
    model, rec, _ = _world_program(HID)
    weights = model.weights()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 2, 6, 6, dtype=F64, generator=g)
    h = torch.randn(2, len(model.flows), HID.size, 10, 10, dtype=F64, generator=g).requires_grad_()
    params = [weights["l0_u_weight"], weights["l0_w_weight"]]

    def step(window, shift=0):
        u = rec.input_terms(0, x, weights, 0, window=window)[:, 0]
        if shift:
            u = u.roll(shift, -2)
        new = rec.update(0, rec.transport(0, (h,), weights, 1, False), u, weights)[0]
        return new, torch.autograd.grad(new.square().sum(), [h, *params])

    windowed, grads = step(True)
    written, ref = step(False)
    assert rec.input_terms(0, x, weights, 0, window=True).shape[-2:] == (6, 6)
    assert torch.equal(windowed, written)
    assert all(_rel(a, b) <= 1e-12 for a, b in zip(grads, ref))  # the sum over V of fewer terms: rounding at most
    assert not torch.equal(step(False, shift=1)[0], written)


def test_the_zero_initial_state_is_not_moved_either():
    """With a self-motion the first step of a zero initial state is skipped too (moving zeros gives zeros):
    predictions and gradients equal those of a run handed explicit zero states, bit for bit; one recurrent
    convolution fewer. Control: a non-zero state changes the predictions."""
    from flow_escnn.nn import _engine

    model, rec, program = _world_program(HID)
    g = torch.Generator().manual_seed(2)
    x = program.inputs(torch.rand(2, 3, 1, 6, 6, dtype=F64, generator=g), torch.zeros(2, 3, 3, dtype=F64))
    actions = torch.randint(-2, 3, (2, 5, 3), generator=g).double()

    def run(h0):
        weights = model.weights()
        res = rec.run(x, weights, h0, predict=lambda s, z: (z, x[:, 0]), predict_from=1, extra_steps=1,
                      act=program.act(actions, 5), readout_pool="max")
        out = torch.stack(res.predictions, 1)
        return out.detach(), torch.autograd.grad(out.square().sum(), list(model.encoder.parameters()))

    calls, real = [], _engine.conv
    _engine.conv = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        out, grads = run(None)
        skipped = len(calls)
        zeros = rec.zero_state(2, F64, torch.device("cpu"))
        ref, ref_grads = run(zeros)
        assert len(calls) == 2 * skipped + 1
    finally:
        _engine.conv = real
    assert torch.equal(out, ref) and all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    assert not torch.equal(run([tuple(s + 0.1 for s in layer) for layer in zeros])[0], ref)


# -- the co-moving one-slice start ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["fernn", "gru", "lstm"])
@pytest.mark.parametrize("checkpoint", [False, True])
def test_comoving_start_runs_one_slice_and_changes_only_rounding(cell, checkpoint, monkeypatch):
    """Co-moving from the zero state, every slice of the first update holds the same state, so the engine runs
    that update on one slice and convolves one slice at the next step (``UNIFORM_START``): predictions (the first
    read from the one-slice state), per-step outputs, final states and gradients equal those of the run over all V
    to float64 rounding (two layers, so the second layer's start is one slice as well). Controls: the shortcut is
    taken (the first recurrent convolution has B maps, not B * V); a given initial state, even zeros, or a lifted
    input does not take it; a backward that averages instead of summing over the slices is flagged."""
    from flow_escnn.nn import _engine

    torch.manual_seed(0)
    flows = FlowSet.rotations(gspaces.rot2dOnR2(8), [-1, 0, 1])  # 45 degrees: interpolated, so co-moving
    c8 = flows.gspace
    model = _randomize(NextFramePredictor(enn.FieldType(c8, [c8.trivial_repr]), enn.FieldType(c8, [c8.regular_repr]),
                                          flows, cell=cell, mode="comoving", num_layers=2, decoder_layers=1).to(F64))
    x = _x(t=4, h=7)
    program = model.encoder.recurrence((7, 7), "cpu", 6)
    assert program.comoving
    v = len(flows)
    calls, recurrent = [], []  # the maps of every convolution by layer 0's recurrent filter
    real = _engine.conv

    def counting(*args, **kwargs):
        if args[1] is recurrent[0]:
            calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    def run(uniform, h0=None, inputs=x):
        monkeypatch.setattr(_engine, "UNIFORM_START", uniform)
        weights = model.encoder.weights()
        recurrent[:] = [weights["l0_w_weight"]]
        calls.clear()
        res = program.run(inputs, weights, h0, predict=lambda s, g: g.amax(1)[:, :1], predict_from=1, extra_steps=2,
                          checkpoint=checkpoint)  # predict_from=1: the one-slice state is read out too
        out = torch.stack(res.predictions, 1)
        finals = torch.cat([s.reshape(-1) for layer in res.states for s in layer] + [o.reshape(-1) for o in res.outputs])
        grads = torch.autograd.grad(out.square().sum() + finals.sum(), list(model.encoder.parameters()))
        return out.detach(), finals.detach(), grads, list(calls)

    monkeypatch.setattr(_engine, "conv", counting)
    out, finals, grads, first_calls = run(True)
    ref, ref_finals, ref_grads, ref_calls = run(False)
    assert first_calls[0] == 2 and ref_calls[0] == 2 * v  # the first recurrent convolution: one slice per sample
    assert _rel(out, ref) <= 1e-12 and _rel(finals, ref_finals) <= 1e-12
    assert max(_rel(a, b) for a, b in zip(grads, ref_grads)) <= 1e-12
    # not taken: a given initial state (zeros included), a lifted input
    zeros = program.zero_state(2, F64, torch.device("cpu"))
    assert run(True, zeros)[3][0] == 2 * v
    assert run(True, inputs=x.unsqueeze(2).expand(-1, -1, v, -1, -1, -1))[3][0] == 2 * v
    # control: the same comparison flags a backward that averages over the slices
    monkeypatch.setattr(_engine._BroadcastSlices, "backward",
                        staticmethod(lambda ctx, g: (g.view(ctx.shape).mean(1, keepdim=True), None)))
    bad = run(True)[2]
    assert max(_rel(a, b) for a, b in zip(bad, ref_grads)) > 1e-3


def test_comoving_start_channels_last_thin_input_float32(monkeypatch):
    """The rotation benchmark's path: a co-moving FERNN on a thin input in float32, its states channels-last and
    its input convolution deferred into the update (a one-slice ``ThinTerm``): the one-slice start matches the run
    over all V to float32 rounding, values and gradients, and its broadcast term is channels-last."""
    from flow_escnn.nn import _engine

    flows = FlowSet.rotations(gspaces.rot2dOnR2(8), [-1, 0, 1])
    c8 = flows.gspace
    torch.manual_seed(0)
    model = NextFramePredictor(enn.FieldType(c8, [c8.trivial_repr]), enn.FieldType(c8, [c8.regular_repr] * 2), flows,
                               decoder_layers=1)
    x = _x(t=4, h=9, dtype=torch.float32)
    program = model.encoder.recurrence((9, 9), "cpu", 6)
    assert program.defers_input(x, model.encoder.weights())
    layouts = []
    real = _engine._BroadcastSlices.forward

    def spy(ctx, t, n):
        out = real(ctx, t, n)
        layouts.append(out.is_contiguous(memory_format=torch.channels_last))
        return out

    monkeypatch.setattr(_engine._BroadcastSlices, "forward", staticmethod(spy))

    def run(uniform):
        monkeypatch.setattr(_engine, "UNIFORM_START", uniform)
        model.zero_grad(set_to_none=True)
        pred = model(x, 2)
        pred.square().sum().backward()
        return pred.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    out, grads = run(True)
    assert layouts == [True]
    ref, ref_grads = run(False)
    assert _rel(out, ref) <= 1e-5 and max(_rel(a, b) for a, b in zip(grads, ref_grads)) <= 1e-4
