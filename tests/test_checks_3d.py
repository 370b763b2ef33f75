"""The commuting-diagram checks on volumes: sequences ``[B, T, C, D, H, W]`` on escnn's 3D gspaces.

Toy models are written here with the torch oracles of ``tests/oracles.py`` (never with the library's
transports), plus one built from :func:`~flow_escnn.flows._volume_transport.volume_flow_sequence`:

* the identity passes every check;
* a fixed per-frame ``torch.roll`` is flagged wherever it does not commute with the transform (static
  rotations, rotation flows about other axes) and passes where it does (translation flows, flows about
  its own axis), so the checks neither pass nor fail everything;
* a lifted accumulator ``h_t(nu) = psi_1(nu) h_{t-1}(nu) + f_t`` passes flow, static and combined
  checks; with the V shift of the wrong sign it is flagged;
* the 3D FERNN (``flow_escnn.nn.FERNN``) on ``rot2dOnR3(4)`` with translation flows and on ``octaOnR3()``
  with quarter-turn flows about x, y, z passes; a FERNN with zero padding under translation flows and a
  G-RNN (V = {0}) under a flow are flagged.

Everything is float64 on the CPU, seeded, on 4^3-5^3 grids; the gspaces are built once per module.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest
import torch

import flow_escnn.checks._predict as predict_module
from flow_escnn._compat import enn, gspaces  # the package's escnn import guard
from flow_escnn.checks import (
    check_combined_equivariance,
    check_equivariance,
    check_flow_equivariance,
    check_static_equivariance,
)
from flow_escnn.flows import FlowGenerator, FlowSet
from flow_escnn.flows._volume import VolumeGenerator
from flow_escnn.flows._volume_transport import volume_flow_sequence
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.nn import FERNN
from tests.oracles import volume_roll, volume_turn

B, T = 1, 3
GS_Z = gspaces.rot2dOnR3(4)  # C4 about z, on R^3
OCTA = gspaces.octaOnR3()  # the 24 rotations of the cube
TRIV_Z = enn.FieldType(GS_Z, [GS_Z.trivial_repr])
REG_Z = enn.FieldType(GS_Z, [GS_Z.regular_repr])
TRIV_O = enn.FieldType(OCTA, [OCTA.trivial_repr])
REG_O = enn.FieldType(OCTA, [OCTA.regular_repr])
V_T = FlowSet.translations(GS_Z, 1)  # 27 translation flows
V_R = FlowSet.rotations(OCTA, 1)  # identity and +-1 quarter turn per frame about x, y, z

TRANSLATIONS = [(1, 0, 0), (0, -1, 0), (0, 0, 1), (1, -1, 1)]
QUARTER_TURNS = [(0, 0, 0, 1, 0, 0), (0, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, -1)]
TOL = 1e-10


def _x(n: int, c: int = 1, seed: int = 0, shape: Sequence[int] = ()) -> torch.Tensor:
    grid = tuple(shape) or (n, n, n)
    return torch.randn(B, T, c, *grid, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _about(mu: Sequence[int]) -> str:
    return "xyz"[next(i for i in range(3) if mu[3 + i])]


# ---------------------------------------------------------------------------------------------
# toy models (torch oracles)
# ---------------------------------------------------------------------------------------------
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _fixed_roll(x: torch.Tensor) -> torch.Tensor:
    """Every frame rolled one voxel along x: commutes with translations and turns about x, nothing else."""
    return volume_roll(x, (1, 0, 0))


def _step(h: torch.Tensor, nu: VolumeGenerator, power: int) -> torch.Tensor:
    """``psi_1(nu)^power`` on a scalar volume, with the oracles (rotation about the axis, then the drift)."""
    if nu.axis is not None:
        h = volume_turn(h, nu.axis, power * nu.quarter_turns)
    return volume_roll(h, [power * u for u in nu.translation])


class ToyLifted(torch.nn.Module):
    """``h_t(nu) = psi_1(nu)^shift h_{t-1}(nu) + f_t`` over V (scalar fields), returned as a LiftedTensor.

    ``shift=1`` is flow equivariant; ``shift=-1`` (the state moved against its flow) is a control.
    """

    def __init__(self, in_type: Any, flows: FlowSet, shift: int = 1) -> None:
        super().__init__()
        self.in_type, self.flows, self.shift = in_type, flows, shift

    def forward(self, x: torch.Tensor) -> LiftedTensor:
        h = x.new_zeros(x.shape[0], len(self.flows), *x.shape[2:])
        out = []
        for t in range(x.shape[1]):
            h = torch.stack([_step(h[:, i], nu, self.shift) for i, nu in enumerate(self.flows)], 1) + x[:, t, None]
            out.append(h)
        return LiftedTensor(torch.stack(out, 1), LiftedFieldType(self.in_type, self.flows))


def _inverse(nu: VolumeGenerator) -> VolumeGenerator:
    return VolumeGenerator(nu.gspace, tuple(-u for u in nu.translation), tuple(-k for k in nu.rotation))


class FlowSequenceLifted(torch.nn.Module):
    """The closed form of ``ToyLifted``, ``h_t(nu) = sum_{s <= t} psi_{t-s}(nu) f_s``, with volume_flow_sequence."""

    def __init__(self, in_type: Any, flows: FlowSet) -> None:
        super().__init__()
        self.in_type, self.flows = in_type, flows

    def forward(self, x: torch.Tensor) -> LiftedTensor:
        slices = []
        for nu in self.flows:
            back = volume_flow_sequence(x, self.in_type, _inverse(nu))  # psi_{-s}(nu) f_s
            slices.append(volume_flow_sequence(torch.cumsum(back, 1), self.in_type, nu))
        return LiftedTensor(torch.stack(slices, 2), LiftedFieldType(self.in_type, self.flows))


def _drift(x: torch.Tensor) -> torch.Tensor:
    """A co-moving frame, ``y_t = psi_t(nu0) f_t`` with ``nu0`` one voxel per frame along z."""
    return volume_flow_sequence(x, TRIV_O, (0, 0, 1))


# ---------------------------------------------------------------------------------------------
# toy models
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_type", [TRIV_O, REG_O], ids=["trivial", "regular"])
def test_identity_passes_every_check_on_octa(in_type):
    x = _x(4, in_type.size)
    rep = check_equivariance(_identity, x, in_type, TRANSLATIONS[:2] + QUARTER_TURNS, out_type=in_type,
                             elements=list(OCTA.fibergroup.elements)[:6])
    assert rep.passed, rep.summary()
    assert rep.max_abs_error == 0.0
    assert {r.check for r in rep.rows} == {"flow", "static", "combined"}
    assert all(r.exact for r in rep.rows)


def test_identity_passes_all_24_static_rotations():
    rep = check_static_equivariance(_identity, _x(4), TRIV_O, out_type=TRIV_O)
    assert rep.passed and rep.max_abs_error == 0.0
    assert len({r.transform for r in rep.rows}) == 24


def test_fixed_roll_control_is_flagged():
    x = _x(5)
    static = check_static_equivariance(_fixed_roll, x, TRIV_Z, out_type=TRIV_Z)
    assert not static.passed and static.max_rel_error > 0.1
    failed = {r.transform for r in static.failed_rows}
    assert len(failed) == 3 and f"g={GS_Z.fibergroup.identity}" not in failed  # every quarter turn about z
    # rolls commute with translations: those flow rows pass (the check does not fail everything)
    assert check_flow_equivariance(_fixed_roll, x, TRIV_Z, TRANSLATIONS, out_type=TRIV_Z).passed
    rot = check_flow_equivariance(_fixed_roll, _x(4), TRIV_O, QUARTER_TURNS, out_type=TRIV_O)
    assert not rot.passed and rot.max_rel_error > 0.1
    about = {r.transform: r for r in rot.rows if r.t == T - 1}
    for mu in QUARTER_TURNS:
        assert about[f"mu={mu}"].passed == (_about(mu) == "x"), mu  # only turns about x commute with an x roll
    assert all(r.t >= 1 for r in rot.failed_rows)  # frame 0 is never moved


def test_drift_model_is_static_equivariant_exactly_for_the_stabiliser_of_its_velocity():
    # on a 5-torus no t * (A nu0 - nu0), t = 1, 2, vanishes unless A fixes nu0 (on a 4-torus a half turn would)
    rep = check_equivariance(_drift, _x(5, seed=1), TRIV_O, TRANSLATIONS, out_type=TRIV_O, combined=False)
    assert not rep.passed
    assert all(r.passed for r in rep.rows if r.check == "flow")
    z = np.array([0, 0, 1])
    for g in OCTA.fibergroup.elements:
        fixes_z = np.allclose(np.asarray(OCTA.basespace_action(g)) @ z, z)
        rows = [r for r in rep.rows if r.transform == f"g={g}"]
        assert rows[0].passed  # psi_0 is the identity
        assert all(r.passed == fixes_z for r in rows[1:]), g
    assert sum(1 for g in OCTA.fibergroup.elements if f"g={g}" not in {r.transform for r in rep.failed_rows}) == 4


@pytest.mark.parametrize("gs_in, flows, mus", [(TRIV_Z, V_T, TRANSLATIONS), (TRIV_O, V_R, QUARTER_TURNS)],
                         ids=["translations-rot2dOnR3", "quarter-turns-octa"])
def test_lifted_accumulator_passes_flow_static_and_combined(gs_in, flows, mus):
    model = ToyLifted(gs_in, flows).eval()
    x = _x(4, seed=2)
    elements = None if flows is V_T else list(OCTA.fibergroup.elements)[::3]
    rep = check_equivariance(model, x, gs_in, mus, elements=elements)
    assert rep.passed, rep.summary()
    assert rep.max_abs_error <= TOL
    assert rep.output_kind == "lifted"
    flow_rows = [r for r in rep.rows if r.check == "flow"]
    assert all(0 < r.compared_slices < len(flows) for r in flow_rows)
    # the same model written with the library's volume_flow_sequence gives the same states
    closed_form = FlowSequenceLifted(gs_in, flows).eval()
    torch.testing.assert_close(closed_form(x).tensor, model(x).tensor, atol=1e-12, rtol=0)
    assert check_flow_equivariance(closed_form, x, gs_in, mus).passed


@pytest.mark.parametrize("gs_in, flows, mus", [(TRIV_Z, V_T, TRANSLATIONS), (TRIV_O, V_R, QUARTER_TURNS)],
                         ids=["translations-rot2dOnR3", "quarter-turns-octa"])
def test_lifted_accumulator_with_the_wrong_shift_is_flagged(gs_in, flows, mus):
    rep = check_flow_equivariance(ToyLifted(gs_in, flows, shift=-1).eval(), _x(4, seed=3), gs_in, mus)
    assert not rep.passed and rep.max_rel_error > 1e-3
    assert rep.failed_rows and all(r.t >= 1 for r in rep.failed_rows)


def test_time_offset_on_volumes():
    def next_frame(x):
        return x[:, 1:]

    x = _x(4, seed=4)
    assert check_flow_equivariance(next_frame, x, TRIV_Z, (1, 0, 1), out_type=TRIV_Z, time_offset=1).passed
    assert not check_flow_equivariance(next_frame, x, TRIV_Z, (1, 0, 1), out_type=TRIV_Z).passed


# ---------------------------------------------------------------------------------------------
# the 3D FERNN
# ---------------------------------------------------------------------------------------------
def _fernn(in_type: Any, hidden_type: Any, flows: FlowSet, seed: int = 0, **kwargs: Any) -> FERNN:
    torch.manual_seed(seed)
    return FERNN(in_type, hidden_type, flows, **kwargs).double().eval()


@pytest.fixture(scope="module")
def fernn_octa() -> FERNN:
    return _fernn(TRIV_O, REG_O, V_R)


def _plain(model: Any, slice_index: int = 0) -> Any:
    """A plain readout of a lifted model: its hidden state on one V slice."""
    return lambda x: model(x).tensor[:, :, slice_index]


def test_fernn_translation_flows_rot2d_on_r3():
    model = _fernn(TRIV_Z, REG_Z, V_T)
    rep = check_equivariance(model, _x(5, seed=5), TRIV_Z, TRANSLATIONS)
    assert rep.passed, rep.summary()
    assert rep.max_abs_error <= TOL
    assert {r.check for r in rep.rows} == {"flow", "static", "combined"}


def test_fernn_quarter_turn_flows_about_x_y_z_on_octa(fernn_octa):
    rep = check_flow_equivariance(fernn_octa, _x(4, seed=6), TRIV_O, QUARTER_TURNS)
    assert rep.passed, rep.summary()
    assert rep.max_abs_error <= TOL
    assert {_about(mu) for mu in QUARTER_TURNS} == set("xyz")
    assert all(r.compared_slices >= 2 for r in rep.rows)


def test_fernn_static_all_24_octahedral_rotations(fernn_octa):
    rep = check_static_equivariance(fernn_octa, _x(4, seed=7), TRIV_O)
    assert rep.passed, rep.summary()
    assert rep.max_abs_error <= TOL
    assert len({r.transform for r in rep.rows}) == 24 and all(r.compared_slices == len(V_R) for r in rep.rows)


def test_fernn_combined_on_octa(fernn_octa):
    elements = [g for g in OCTA.fibergroup.elements if not g == OCTA.fibergroup.identity][:2]
    rep = check_combined_equivariance(fernn_octa, _x(4, seed=8), TRIV_O, QUARTER_TURNS[:3], elements=elements)
    assert rep.passed, rep.summary()
    assert rep.max_abs_error <= TOL


def test_fernn_with_zero_padding_is_flagged_under_translation_flows():
    model = _fernn(TRIV_Z, REG_Z, V_T, padding_mode="zeros")
    rep = check_flow_equivariance(model, _x(5, seed=5), TRIV_Z, TRANSLATIONS)
    assert not rep.passed and rep.max_rel_error > 1e-3
    assert all(r.t >= 1 for r in rep.failed_rows)


def test_grnn_is_flagged_under_a_translation_flow():
    model = _fernn(TRIV_Z, REG_Z, FlowSet.identity(GS_Z))
    x = _x(5, seed=9)
    lifted = check_flow_equivariance(model, x, TRIV_Z, (1, 0, 0))
    assert not lifted.passed and lifted.unverified  # no nu - mu lies in V = {0}: nothing is predicted
    plain = check_flow_equivariance(_plain(model), x, TRIV_Z, (1, 0, 0), out_type=REG_Z)
    assert not plain.passed and plain.max_rel_error > 1e-3
    static = check_static_equivariance(_plain(model), x, TRIV_Z, out_type=REG_Z)
    assert static.passed and static.max_abs_error <= TOL  # a G-RNN is still G-equivariant


def test_grnn_is_flagged_under_a_rotation_flow_on_octa():
    model = _fernn(TRIV_O, REG_O, FlowSet.identity(OCTA))
    plain = check_flow_equivariance(_plain(model), _x(4, seed=10), TRIV_O, QUARTER_TURNS[2], out_type=REG_O)
    assert not plain.passed and plain.max_rel_error > 1e-3


# ---------------------------------------------------------------------------------------------
# input validation and interpolation on volumes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(x=torch.zeros(B, T, 1, 4, 4, dtype=torch.float64)), ValueError, r"\[B, T, C, D, H, W\] \(6 dims\)"),
        (dict(x=torch.zeros(B, T, 2, 4, 4, 4, dtype=torch.float64)), ValueError, r"C=2 .*\[B, T, C, D, H, W\]"),
        (dict(flows=(1, 0)), TypeError, r"\(vx, vy, vz\)"),
        (dict(flows=FlowGenerator(gspaces.rot2dOnR2(4), (1, 0))), ValueError, r"gspace"),
        (dict(flows=FlowSet.translations(OCTA, 1)), ValueError, r"in_type lives on"),
        (dict(flows=(0.5, 0, 0)), ValueError, r"integer|whole"),
        (dict(flows="up"), TypeError, r"VolumeGenerator"),
        (dict(model=lambda x: x[..., 0]), ValueError, r"\[B, T', C, D, H, W\]"),
        (dict(model=lambda x: x[..., :3]), ValueError, r"input's volume \(D, H, W\)"),
        (dict(model=lambda x: [x]), TypeError, r"LiftedTensor \[B, T', V, C, D, H, W\]"),
        (dict(interpolation="nearest"), ValueError, r"interpolation must be one of"),
    ],
)
def test_bad_inputs_on_volumes(kwargs, exc, match):
    args = dict(model=_identity, x=_x(4), in_type=TRIV_Z, flows=(1, 0, 0), out_type=TRIV_Z)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        check_flow_equivariance(args.pop("model"), args.pop("x"), args.pop("in_type"), args.pop("flows"), **args)


def _lifted_copies(x: torch.Tensor) -> LiftedTensor:
    return LiftedTensor(x.unsqueeze(2).expand(-1, -1, len(V_R), -1, -1, -1, -1), LiftedFieldType(TRIV_O, V_R))


def test_rotation_on_a_non_cube_is_refused_not_interpolated():
    x = _x(0, shape=(4, 5, 5))  # D != H: a quarter turn about x or y does not map the grid onto itself
    with pytest.raises(ValueError, match=r"never interpolated"):
        check_static_equivariance(_identity, x, TRIV_O, out_type=TRIV_O)
    with pytest.raises(ValueError, match=r"never interpolated"):
        check_flow_equivariance(_lifted_copies, x, TRIV_O, QUARTER_TURNS[0])
    # rotations about z only exchange x and y (H == W): exact, and checked
    rep = check_equivariance(_identity, x, TRIV_Z, QUARTER_TURNS[2:], out_type=TRIV_Z)
    assert rep.passed and rep.max_abs_error == 0.0


def test_no_interpolation_reaches_a_volume_transport(monkeypatch):
    """Volume transports are exact: the checks never pass an interpolation to them (any value is accepted and unused)."""
    seen = []
    plan, transform, transform_flow = predict_module.transport_plan, LiftedTensor.transform, LiftedTensor.transform_flow

    def spy_plan(field_type, elements, grid_shape, *args, **kwargs):
        seen.append(("plan", len(grid_shape), args, tuple(kwargs)))
        return plan(field_type, elements, grid_shape, *args, **kwargs)

    def spy_transform(self, g, *args, **kwargs):
        seen.append(("transform", self.type.spatial_dims, args, tuple(kwargs)))
        return transform(self, g, *args, **kwargs)

    def spy_transform_flow(self, mu, *args, **kwargs):
        seen.append(("transform_flow", self.type.spatial_dims, args, tuple(k for k in kwargs if k == "interpolation")))
        return transform_flow(self, mu, *args, **kwargs)

    monkeypatch.setattr(predict_module, "transport_plan", spy_plan)
    monkeypatch.setattr(LiftedTensor, "transform", spy_transform)
    monkeypatch.setattr(LiftedTensor, "transform_flow", spy_transform_flow)
    x = _x(4, seed=11)
    elements = list(GS_Z.fibergroup.elements)[:2]
    for model, out_type in [(_identity, TRIV_Z), (ToyLifted(TRIV_Z, V_T).eval(), None)]:
        rep = check_equivariance(model, x, TRIV_Z, [(1, 0, 0)], out_type=out_type, elements=elements,
                                 interpolation="bilinear")
        assert rep.passed, rep.summary()
        assert all(r.exact for r in rep.rows)
    kinds = {k for k, *_ in seen}
    assert kinds == {"plan", "transform", "transform_flow"}
    assert all(nd == 3 and not args and not kwargs for _, nd, args, kwargs in seen), seen
