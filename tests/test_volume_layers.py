"""Flow layers on volumes (issue 24, part 3): FERNN / FlowGRU / FlowLSTM and the predictor on ``[B, T, C, D, H, W]``.

One engine serves planes and volumes; these tests drive it on escnn's 3D gspaces and check the
commuting diagrams against oracles written by hand (``tests/oracles.py``: ``torch.roll`` on the
3-torus, ``torch.rot90`` about each axis, escnn's own representation matrices for the fiber and
the flow set's V shift). Each diagram has a control that the same comparison flags. The engine's
other paths (co-moving frame, checkpointing, export, bf16) must compute the same function.
Everything is float64 and small (5^3 voxels, a few channels).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flow_escnn import FlowSet
from flow_escnn._compat import enn, gspaces
from flow_escnn.flows._volume import quarter_turn_element
from flow_escnn.models import NextFramePredictor
from flow_escnn.nn import FERNN, FlowGRU, FlowLSTM
from tests.oracles import fiber, volume_roll, volume_turn

F64 = torch.float64
TOL = 1e-10
C4Z = gspaces.rot2dOnR3(4)  # quarter turns about z; builds in milliseconds
SCALAR = enn.FieldType(C4Z, [C4Z.trivial_repr])
REGULAR = enn.FieldType(C4Z, [C4Z.regular_repr])
TRANSLATIONS = FlowSet.translations(C4Z, 1)  # the 27 velocities of [-1, 1]^3
GRID = (5, 5, 5)


@pytest.fixture(scope="module")
def octa():
    gs = gspaces.octaOnR3()  # ~4 s the first time
    return gs, enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr])


def _x(t: int = 4, b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 1, *GRID, generator=g, dtype=F64)


def _model(cls, flows=TRANSLATIONS, in_type=SCALAR, hidden=REGULAR, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(in_type, hidden, flows, **kw).to(F64)


def _translated(x: torch.Tensor, mu) -> torch.Tensor:
    """``f'_t = roll(f_t, t mu)``: the input moved by the translation flow ``mu``."""
    return torch.stack([volume_roll(x[:, t], [t * m for m in mu]) for t in range(x.shape[1])], 1)


def _shift_v(h: torch.Tensor, flows, mu) -> tuple:
    """``h(nu - mu)`` on the V axis of ``[B, T, V, ...]`` and the mask of the velocities that have one."""
    src = torch.as_tensor(flows.shift_indices(mu))
    return h.index_select(2, src.clamp(min=0)), src >= 0


# -- translations of the 3-torus ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FERNN, FlowGRU, FlowLSTM])
def test_translation_flow_equivariance_on_the_3_torus(cls):
    """``h'_t(nu) = roll(h_t(nu - mu), t mu)`` exactly when the input moves by ``mu``; a zero-padded layer fails."""
    mu = (1, 0, -1)
    x = _x()
    out = {}
    for padding in ("circular", "zeros"):
        m = _model(cls, padding_mode=padding)
        with torch.no_grad():
            h, h_moved = m(x).tensor, m(_translated(x, mu)).tensor
        shifted, valid = _shift_v(h, TRANSLATIONS, mu)
        expected = torch.stack([volume_roll(shifted[:, t], [t * v for v in mu]) for t in range(x.shape[1])], 1)
        out[padding] = float((h_moved - expected)[:, :, valid].abs().max())
    assert out["circular"] <= TOL, out
    assert out["zeros"] > 1e-3, out  # the control: the torus is what makes translations exact


def test_grnn_on_a_volume_is_not_flow_equivariant():
    """The G-RNN (V = {0}) run through the same engine and the same check: moving content is not followed."""
    mu = (1, 0, 0)
    x = _x()
    grnn = _model(FERNN, flows=FlowSet.identity(C4Z))
    with torch.no_grad():
        h, h_moved = grnn(x).tensor, grnn(_translated(x, mu)).tensor
    expected = torch.stack([volume_roll(h[:, t], [t * v for v in mu]) for t in range(x.shape[1])], 1)
    assert float((h_moved - expected)[:, 1:].abs().max()) > 1e-3
    # ... but it is equivariant to a static translation of the torus (no flow: every frame moved alike)
    with torch.no_grad():
        moved = grnn(volume_roll(x, (2, 1, -1))).tensor
    assert float((moved - volume_roll(h, (2, 1, -1))).abs().max()) <= TOL


# -- rotations about the coordinate axes ----------------------------------------------------------------------
@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_quarter_turn_flow_equivariance_about_each_axis(octa, axis):
    """On octaOnR3, an input turning by a quarter turn per frame about ``axis``: the state turns with it (voxels by
    ``torch.rot90``, fibers by escnn's regular representation) and its V index shifts; the wrong direction fails."""
    gs, scalar, regular = octa
    flows = FlowSet.rotations(gs, 1)  # identity and +-1 quarter turns about x, y, z: 7 velocities
    m = _model(FERNN, flows=flows, in_type=scalar, hidden=regular, padding_mode="zeros")
    x = _x(t=4, b=1)
    mu = tuple(1 if a == axis else 0 for a in "xyz")
    with torch.no_grad():
        h = m(x).tensor
        h_moved = m(torch.stack([volume_turn(x[:, t], axis, t) for t in range(4)], 1)).tensor
    shifted, valid = _shift_v(h, flows, (0, 0, 0) + mu)
    # nu - mu for nu in {0, +1 about axis}; -1 - mu is a half turn, outside V; the other axes do not commute with mu
    assert int(valid.sum()) == 2
    errs = {}
    for sign in (1, -1):
        expected = torch.stack([
            fiber(regular, quarter_turn_element(gs, axis, sign * t), volume_turn(shifted[:, t], axis, sign * t))
            for t in range(4)], 1)
        errs[sign] = float((h_moved - expected)[:, :, valid].abs().max())
    assert errs[1] <= TOL, errs
    assert errs[-1] > 1e-3, errs


def test_static_octahedral_equivariance_of_a_volume_fernn(octa):
    """Every one of the 24 rotations of the cube: rotating the input rotates the state, relabels V and permutes the
    regular fibers; the check flags a state left in place."""
    gs, scalar, regular = octa
    flows = FlowSet.translations(gs, 1)
    m = _model(FERNN, flows=flows, in_type=scalar, hidden=regular)
    x = _x(t=3, b=1)
    with torch.no_grad():
        h = m(x)
    worst, control = 0.0, 0.0
    for g in gs.fibergroup.elements:
        rotated = enn.GeometricTensor(x.reshape(-1, 1, *GRID), scalar).transform(g).tensor.reshape(x.shape)
        with torch.no_grad():
            got = m(rotated)
        worst = max(worst, float((got.tensor - h.transform(g).tensor).abs().max()))
        if g != gs.fibergroup.identity:
            control = max(control, float((got.tensor - h.tensor).abs().max()))
    assert worst <= TOL, worst
    assert control > 1e-3


# -- one function, every path of the engine -------------------------------------------------------------------
def test_comoving_checkpoint_and_export_compute_the_same_function():
    x = _x()
    m = _model(FERNN)
    ref = m(x).tensor
    co = _model(FERNN, mode="comoving")
    with torch.no_grad():
        assert float((co(x).tensor - ref).abs().max()) <= TOL
    twin = m.export(GRID)
    assert float((twin(x) - ref).detach().abs().max()) <= 1e-12
    with pytest.raises(ValueError, match="5x5x5 grid, got 5x5x4"):
        twin(x[..., :4])
    # checkpointed: same outputs and gradients
    ck = _model(FERNN, checkpoint=True)
    y, y_ck = m(x).tensor, ck(x).tensor
    g = torch.autograd.grad(y.square().sum(), list(m.parameters()))
    g_ck = torch.autograd.grad(y_ck.square().sum(), list(ck.parameters()))
    assert float((y - y_ck).detach().abs().max()) <= TOL
    assert max(float((a - b).abs().max()) for a, b in zip(g, g_ck)) <= 1e-9


def test_bf16_autocast_runs_a_volume_fernn_close_to_float32():
    x = _x().float()
    m = _model(FERNN).float()
    ref = m(x).tensor
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x).tensor
    assert low.dtype == torch.bfloat16
    assert float((low.float() - ref).detach().abs().max() / ref.detach().abs().max()) < 5e-2


def test_a_planar_tensor_is_refused_with_the_volume_layout():
    m = _model(FERNN)
    with pytest.raises(ValueError, match=r"\[B, T, C=1, D, H, W\]"):
        m(torch.zeros(1, 2, 1, 5, 5, dtype=F64))


def test_what_is_planar_is_refused_on_a_volume():
    """The G-RNN+ (a learned planar kernel per velocity) and V-mixing (the planar velocity lattice) say so."""
    from flow_escnn.nn import GRNNPlus

    with pytest.raises(ValueError, match="planar per-velocity kernel"):
        GRNNPlus(SCALAR, REGULAR, TRANSLATIONS)
    with pytest.raises(ValueError, match="velocity_mixing=0"):
        FERNN(SCALAR, REGULAR, TRANSLATIONS, velocity_mixing=1)


# -- the predictor ----------------------------------------------------------------------------------------------
def test_next_frame_predictor_on_volumes_is_flow_equivariant_and_exports():
    """Predictions of a moved input are the moved predictions (frame ``T_in + j`` by ``(T_in + j) mu``); the
    lagged convention (``(T_in - 1 + j) mu``) fails the same comparison."""
    torch.manual_seed(0)
    # V = all 125 velocities of [-2, 2]^3: every translation of the 5^3 torus, so V is closed under the shift by mu
    # modulo the torus and the pooled prediction sees every slice
    model = NextFramePredictor(SCALAR, REGULAR, FlowSet.translations(C4Z, 2), decoder_layers=0,
                               output_activation="identity").to(F64)
    with torch.no_grad():
        for p in model.parameters():  # random weights and signed inputs: no dead ReLU, no constant readout
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 3, 1, *GRID, generator=torch.Generator().manual_seed(1), dtype=F64)
    mu = (0, 1, 1)
    with torch.no_grad():
        p = model(x, num_predictions=2)
        p_moved = model(_translated(x, mu), num_predictions=2)
        twin = model.export(GRID)(x, num_predictions=2)
    assert p.shape == (2, 2, 1, *GRID)
    assert float(p.std(dim=(-3, -2, -1)).min()) > 1e-3  # not vacuous: every predicted volume varies in space
    errs = {}
    for start in (3, 2):
        expected = torch.stack([volume_roll(p[:, j], [(start + j) * v for v in mu]) for j in range(2)], 1)
        errs[start] = float((p_moved - expected).abs().max())
    assert errs[3] <= TOL, errs
    assert errs[2] > 1e-2, errs
    assert float((twin - p).abs().max()) <= 1e-12
    one = model.one_step_predictions(x)
    assert one.shape == (2, 2, 1, *GRID) and bool(torch.isfinite(one).all())


def test_memory_of_a_volume_state_is_v_c_d_h_w():
    """The hidden state is |V| x C x D x H x W per sample (what docs/volumes.rst tabulates)."""
    m = _model(FERNN)
    _, states = m.forward_with_state(_x(t=2, b=3), return_sequence=False)
    h = states[0].tensor
    assert tuple(h.shape) == (3, len(TRANSLATIONS), REGULAR.size, *GRID)
    assert h.numel() * h.element_size() == 3 * 27 * 4 * int(np.prod(GRID)) * 8


def test_velocity_pooling_of_a_volume_pools_v():
    """``pool_velocities`` takes the max over V (axis 2 of ``[B, T, V, C, D, H, W]``), typed or plain."""
    from flow_escnn.nn import pool_velocities

    m = _model(FERNN)
    with torch.no_grad():
        h = m(_x(t=2))
    pooled = pool_velocities(h)
    assert type(pooled).__name__ == "SequenceTensor" and tuple(pooled.shape) == (2, 2, REGULAR.size, *GRID)
    assert torch.equal(pooled.tensor, h.tensor.amax(2))
    assert torch.equal(pool_velocities(h.tensor, "mean", spatial_dims=3), h.tensor.mean(2))
    assert not torch.equal(pooled.tensor, h.tensor.amax(3))  # the control: not the channel axis
    with pytest.raises(ValueError, match="pass spatial_dims=3"):
        pool_velocities(h.tensor)


def test_the_sequence_classifier_refuses_a_volume_with_what_to_use():
    from flow_escnn.models import SequenceClassifier

    with pytest.raises(ValueError, match="pool_velocities"):
        SequenceClassifier(SCALAR, REGULAR, TRANSLATIONS, num_classes=3)


def test_a_flow_sequential_chain_on_volumes_runs_checks_and_exports():
    """escnn's R3Conv per frame, a 3D FERNN, velocity pooling and an R3Conv readout in one chain: shapes, the
    export's outputs, and the chain's flow equivariance by its own check (a zero-padded chain flagged). V holds
    every translation of the 5^3 torus, so the pooled output is exactly equivariant (a truncated V loses the
    slices shifted out of it, as in 2D). (Not
    escnn's GroupPooling here: it returns float32 whatever its input, escnn 1.0.11's gpool.py.)"""
    from flow_escnn.nn import FlowSequential, PerFrame, VelocityPool

    def chain(padding):
        torch.manual_seed(0)
        return FlowSequential(
            PerFrame(enn.R3Conv(SCALAR, REGULAR, 3, padding=1, padding_mode=padding)),
            FERNN(REGULAR, REGULAR, FlowSet.translations(C4Z, 2), padding_mode=padding), VelocityPool("max"),
            PerFrame(enn.R3Conv(REGULAR, SCALAR, 3, padding=1, padding_mode=padding)),
        ).to(F64).eval()

    model = chain("circular")
    x = _x(t=3)
    with torch.no_grad():
        y = model(x)
        twin = model.export(GRID)(x)
    assert type(y).__name__ == "SequenceTensor"
    assert tuple(y.shape) == model.evaluate_output_shape(x.shape) == (2, 3, 1, *GRID)
    assert float((twin - y.tensor).abs().max()) <= 1e-12
    assert model.check_equivariance(x, flows=[(1, 0, 0), (0, 1, -1)]).passed  # and the C4 rotations about z
    assert not chain("zeros").check_equivariance(x, flows=[(1, 0, 0)]).passed


def test_volume_models_save_load_and_pickle(octa, tmp_path):
    """save_model / load_model and pickle rebuild a volume predictor with the same outputs; field types and flow
    sets on 3D gspaces (irreps included) survive the construction-spec codec."""
    import pickle

    from flow_escnn.flows._spec import decode, encode
    from flow_escnn.models import load_model, save_model

    model = NextFramePredictor(SCALAR, REGULAR, TRANSLATIONS).to(F64).eval()
    x = _x(t=2)
    save_model(model, tmp_path / "volume.pt")
    for copy in (load_model(tmp_path / "volume.pt"), pickle.loads(pickle.dumps(model))):
        assert torch.equal(copy(x), model(x)) and copy.encoder.flows == model.encoder.flows
    gs, _, regular = octa
    irreps = enn.FieldType(gs, [gs.irrep(1), gs.irrep(2), gs.trivial_repr])
    for value in (irreps, regular, FlowSet.rotations(gs, 1)):
        back = decode(encode(value))
        assert back == value and back.gspace == gs
