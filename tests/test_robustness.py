"""Findings of the user-robustness audit (issue 21), each with a control that shows the check bites.

* max over V on irreps fields (not equivariant) is refused by VelocityPool / FlowSequential;
* huge float translations are reduced exactly modulo the torus;
* degenerate grids, non-finite angles, velocity tuples in flow_sequence, out-of-range frames;
* FERNN, FlowSet, GridElement (and friends) pickle through their construction spec.
"""
from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch

from flow_escnn import FlowGenerator, FlowSet
from flow_escnn._compat import enn, gspaces
from flow_escnn.flows import GridElement, flow_sequence, transport
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn import FERNN, FlowSequential, PerFrame, VelocityPool, pool_velocities
from flow_escnn.sequences import SequenceFieldType, SequenceTensor
from tests.oracles import translate_sequence

C4 = gspaces.rot2dOnR2(4)
SO2 = gspaces.rot2dOnR2(-1)
TRIV = enn.FieldType(C4, [C4.trivial_repr])
REG = enn.FieldType(C4, [C4.regular_repr])
IRREP = enn.FieldType(C4, [C4.irrep(1)])
TRANSLATIONS = FlowSet.translations(C4, 1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- 4. max over V only on fields that permute channels ------------------------------------------------------
def test_flow_sequential_refuses_max_velocity_pool_on_irreps():
    fernn = FERNN(TRIV, IRREP, TRANSLATIONS, nonlinearity="norm_squash")
    with pytest.raises(ValueError, match=r"not equivariant on the fields \['irrep_1'\].*use VelocityPool\('mean'\)"):
        FlowSequential(fernn, VelocityPool("max"))
    with pytest.raises(ValueError, match="regular"):  # the message also names the field types that work
        FlowSequential(fernn, VelocityPool("max"))
    # controls: the mean is linear (equivariant on any field), and the max is fine on permutation fields
    assert FlowSequential(fernn, VelocityPool("mean"))(torch.randn(1, 2, 1, 5, 5)).shape == (1, 2, 2, 5, 5)
    for hidden in (REG, TRIV, enn.FieldType(C4, [C4.quotient_repr(2)])):
        model = FlowSequential(FERNN(TRIV, hidden, TRANSLATIONS), VelocityPool("max"))
        assert model(torch.randn(1, 2, 1, 5, 5)).shape == (1, 2, hidden.size, 5, 5)


def test_standalone_velocity_pool_refuses_max_on_a_typed_irreps_input():
    lifted = LiftedTensor(torch.randn(1, 2, len(TRANSLATIONS), 2, 5, 5), LiftedFieldType(IRREP, TRANSLATIONS))
    with pytest.raises(ValueError, match=r"VelocityPool\('mean'\)"):
        VelocityPool("max")(lifted)
    with pytest.raises(ValueError, match="mode='mean'"):
        pool_velocities(lifted, "max")
    # controls: the mean on the same input, the max on a regular one, and a plain tensor (no type to check)
    assert torch.equal(VelocityPool("mean")(lifted).tensor, lifted.tensor.mean(dim=2))
    regular = LiftedTensor(torch.randn(1, 2, len(TRANSLATIONS), 4, 5, 5), LiftedFieldType(REG, TRANSLATIONS))
    assert torch.equal(VelocityPool("max")(regular).tensor, regular.tensor.amax(dim=2))
    assert VelocityPool("max")(lifted.tensor).shape == (1, 2, 2, 5, 5)


def _static_pool_error(field_type, mode: str) -> float:
    """max |P_V(g.h) - g.P_V(h)| for a 90-degree rotation g (V closed under it: exact when P_V is equivariant)."""
    h = LiftedTensor(torch.randn(2, 2, len(TRANSLATIONS), field_type.size, 6, 6, dtype=torch.float64),
                     LiftedFieldType(field_type, TRANSLATIONS))
    g = C4.fibergroup.element(1)
    lhs = pool_velocities(h.transform(g).tensor, mode)  # the raw tensor: a typed irreps input is refused for "max"
    rhs = SequenceTensor(pool_velocities(h.tensor, mode), SequenceFieldType(field_type)).transform(g).tensor
    return float((lhs - rhs).abs().max())


def test_why_max_over_v_is_refused_on_irreps():
    assert _static_pool_error(IRREP, "max") > 0.3  # the max of rotated vectors is not the rotated max
    assert _static_pool_error(IRREP, "mean") < 1e-12
    assert _static_pool_error(REG, "max") == 0.0  # a channel permutation commutes with the max


# -- 11. huge float translations are integers: reduced exactly modulo the torus -------------------------------
@pytest.mark.parametrize("vx", [1e16, 1e300, -1e300, 2.0**53, -(2.0**60) - 2048.0])
def test_huge_float_translations_reduce_exactly_modulo_the_grid(vx):
    h, w = 5, 7
    x = torch.randn(2, 1, h, w)
    element = GridElement(C4, translation=(vx, 0))
    assert element.exact_translation == (int(vx), 0)
    want = torch.roll(x, shifts=(0, int(vx) % w), dims=(-2, -1))  # (vx, vy) -> shifts (-vy, vx)
    assert torch.equal(transport(x, TRIV, element), want)
    wrong = torch.roll(x, shifts=(0, (int(vx) + 1) % w), dims=(-2, -1))  # control: an off-by-one shift is flagged
    assert not torch.equal(transport(x, TRIV, element), wrong)
    assert torch.equal(transport(x, TRIV, GridElement(C4, translation=(0, vx))),
                       torch.roll(x, shifts=(-(int(vx) % h), 0), dims=(-2, -1)))


def test_huge_translations_that_cannot_be_reduced_are_refused_clearly():
    c8 = gspaces.rot2dOnR2(8)
    element = GridElement(c8, c8.fibergroup.element(1), (1e16, 0))  # 45 degrees: no reduction keeps the map
    with pytest.raises(ValueError, match="float64 cannot place its source points"):
        transport(torch.randn(1, 1, 6, 6), enn.FieldType(c8, [c8.trivial_repr]), element)
    # control: the same rotation with a small translation resamples
    small = GridElement(c8, c8.fibergroup.element(1), (3, 0))
    assert transport(torch.randn(1, 1, 6, 6), enn.FieldType(c8, [c8.trivial_repr]), small).shape == (1, 1, 6, 6)


# -- 12. degenerate grids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [(0, 5), (5, 0), (-1, 5), (5,), (5.0, 5), "55"])
def test_period_and_translation_mod_refuse_bad_grids(grid):
    with pytest.raises(ValueError, match="grid_shape"):
        FlowGenerator(C4, (1, 0)).period(grid)
    with pytest.raises(ValueError, match="grid_shape"):
        TRANSLATIONS.period(grid)
    with pytest.raises(ValueError, match="grid_shape"):
        TRANSLATIONS.check_distinct_on(grid)
    with pytest.raises(ValueError, match="periodic_grid"):
        TRANSLATIONS.shift_indices((1, 0), grid)


def test_translation_mod_refuses_non_positive_sizes():
    e = GridElement(C4, translation=(3, -2))
    with pytest.raises(ValueError, match=r"h \(torus height\) must be a positive integer, got 0"):
        e.translation_mod(0, 5)
    with pytest.raises(ValueError, match=r"w \(torus width\)"):
        e.translation_mod(5, -1)
    assert e.translation_mod(5, 4).tolist() == [3.0, 3.0]  # control
    assert FlowGenerator(C4, (1, 0)).period((5, 5)) == 5


# -- 13. non-finite angles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gspace", [SO2, C4])
@pytest.mark.parametrize("angle", [math.inf, -math.inf, math.nan])
def test_from_angle_refuses_non_finite_angles(gspace, angle):
    with pytest.raises(ValueError, match="angle must be a finite number of radians per frame"):
        FlowGenerator.from_angle(gspace, angle)


def test_from_angle_controls():
    assert FlowGenerator.from_angle(C4, math.pi / 2).rotation == 1
    assert FlowGenerator.from_angle(SO2, math.pi / 8).rotation == 45 / 2
    with pytest.raises(TypeError, match="real number"):
        FlowGenerator.from_angle(SO2, "0.5")


# -- 14. velocity tuples in flow_sequence -------------------------------------------------------------------------
def test_flow_sequence_takes_velocity_tuples():
    x = torch.randn(2, 4, 1, 5, 6)
    want = translate_sequence(x, (1, 2))
    assert torch.equal(flow_sequence(x, TRIV, (1, 2)), want)
    assert torch.equal(flow_sequence(x, TRIV, (1, 2, 0)), want)
    assert torch.equal(flow_sequence(x, TRIV, FlowGenerator(C4, (1, 2))), want)
    assert not torch.equal(flow_sequence(x, TRIV, (2, 1)), want)  # control
    with pytest.raises(ValueError, match="belongs to gspace"):
        flow_sequence(x, TRIV, FlowGenerator(gspaces.rot2dOnR2(8), (1, 0)))


# -- 15. frame indices -----------------------------------------------------------------------------------------------
def test_lifted_frame_index_range():
    h = LiftedTensor(torch.randn(2, 3, len(TRANSLATIONS), 1, 4, 4), LiftedFieldType(TRIV, TRANSLATIONS))
    with pytest.raises(IndexError, match=r"frame index 7 is out of range for a sequence of T=3 frames: valid are "
                                         r"0 \.\. 2, or -3 \.\. -1"):
        h.frame(7)
    with pytest.raises(IndexError, match="-4 is out of range"):
        h.frame(-4)
    with pytest.raises(TypeError, match="integer"):
        h.frame(1.0)
    assert torch.equal(h.frame(-1).tensor, h.tensor[:, 2])  # Python's negative indices
    assert torch.equal(h.frame(0).tensor, h.tensor[:, 0])


# -- 16. pickling through the construction spec ----------------------------------------------------------------
def _round_trips(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return [pickle.loads(pickle.dumps(obj)), torch.load(buffer, weights_only=False), copy.deepcopy(obj)]


@pytest.mark.parametrize("flows", [TRANSLATIONS, FlowSet.rotations(C4, [-1, 0, 1])], ids=["translations", "rotations"])
@pytest.mark.parametrize("train", [False, True])
def test_fernn_pickles_with_identical_outputs(flows, train):
    model = FERNN(TRIV, REG, flows).train(train)
    x = torch.randn(2, 3, 1, 5, 5)
    with torch.no_grad():
        want = model(x)
    for copied in _round_trips(model):
        assert type(copied) is FERNN and copied is not model and copied.training == train
        assert copied.flows == flows and copied.hidden_type == REG
        with torch.no_grad():
            got = copied(x)
        assert torch.equal(got.tensor, want.tensor) and got.type == want.type
        mine, theirs = model.state_dict(), copied.state_dict()
        assert list(mine) == list(theirs)
        assert all(torch.equal(v, theirs[k]) if isinstance(v, torch.Tensor) else v == theirs[k] for k, v in mine.items())


def test_pickled_fernn_keeps_dtype_and_frozen_parameters():
    model = FERNN(TRIV, REG, TRANSLATIONS).double()
    frozen = next(iter(model.named_parameters()))[0]
    model.get_parameter(frozen).requires_grad_(False)
    copied = pickle.loads(pickle.dumps(model))
    x = torch.randn(1, 2, 1, 5, 5, dtype=torch.float64)
    assert torch.equal(copied(x).tensor, model(x).tensor)
    assert [n for n, p in copied.named_parameters() if not p.requires_grad] == [frozen]


@pytest.mark.parametrize("obj", [
    TRANSLATIONS,
    FlowSet.rotations(SO2, [-22.5, 0, 22.5]),
    GridElement(C4, C4.fibergroup.element(3), (2, -1)),
    GridElement(gspaces.flipRot2dOnR2(4), gspaces.flipRot2dOnR2(4).fibergroup.element((1, 1)), (10**30, 0.5)),
    GridElement(SO2, SO2.fibergroup.element(0.3), (1.25, 2)),
    FlowGenerator(SO2, (1, 0), 22.5),
    LiftedFieldType(REG, TRANSLATIONS),
    SequenceFieldType(IRREP),
], ids=["flowset", "so2-flowset", "c4-element", "d4-element", "so2-element", "generator", "lifted-type", "seq-type"])
def test_flow_objects_pickle_to_equal_objects(obj):
    for copied in _round_trips(obj):
        assert copied == obj and hash(copied) == hash(obj) and repr(copied) == repr(obj)
    if isinstance(obj, GridElement):
        assert pickle.loads(pickle.dumps(obj)).exact_translation == obj.exact_translation


def test_typed_tensors_and_flow_sequential_pickle():
    model = FlowSequential(FERNN(TRIV, REG, TRANSLATIONS), VelocityPool("max")).eval()
    x = torch.randn(1, 2, 1, 5, 5)
    with torch.no_grad():
        lifted = model[0](x)
    for copied in _round_trips(lifted):
        assert torch.equal(copied.tensor, lifted.tensor) and copied.type == lifted.type
    for copied in _round_trips(model):
        assert torch.equal(copied(x).tensor, model(x).tensor) and copied.out_type == model.out_type


def test_what_cannot_pickle_says_what_to_do_instead():
    fernn = FERNN(TRIV, REG, TRANSLATIONS)
    per_frame = PerFrame(enn.ReLU(REG))
    for obj in (fernn.cells[0], fernn.cells[0].U, per_frame, FlowSequential(fernn, VelocityPool("max"), per_frame)):
        with pytest.raises(TypeError, match=r"flow_escnn\.models\.save_model.*flow_escnn\.models\.load_model.*export\(\)"):
            pickle.dumps(obj)
        assert type(copy.deepcopy(obj)) is type(obj)  # copies are unaffected

    class Custom(FERNN):  # its own __init__, not recorded: the spec would rebuild the wrong thing
        def __init__(self) -> None:
            super().__init__(TRIV, REG, TRANSLATIONS)

    with pytest.raises(TypeError, match="records_init"):
        pickle.dumps(Custom())
