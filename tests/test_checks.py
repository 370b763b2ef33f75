"""Tests of flow_escnn.checks with toy models written here in plain torch.

The toy FERNN moves its hidden state with ``torch.roll`` / ``torch.rot90`` (``tests/oracles.py``; not with
the library's transport), so a sign or axis convention mismatch between the toy and
``flow_escnn.flows`` shows up as a failing check.

Exactly equivariant toys must pass; known non-equivariant controls must fail:
* a G-RNN (V = {0}) under a translation flow,
* a lifted model whose V shift is dropped, or applied with the wrong sign,
* a model with a non-isotropic kernel under a static rotation,
* a next-frame model checked with the wrong ``time_offset``.
"""
from __future__ import annotations

from typing import Tuple

import pytest
import torch
import torch.nn.functional as F
from flow_escnn._compat import enn, gspaces  # the package's escnn import guard (silences only py3nj's warning)
from flow_escnn.checks import (
    DEFAULT_TOLERANCES,
    CheckRow,
    EquivarianceError,
    EquivarianceReport,
    check_combined_equivariance,
    check_equivariance,
    check_flow_equivariance,
    check_static_equivariance,
    default_tolerances,
)
from flow_escnn.flows import FlowGenerator, FlowSet
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from tests.oracles import quarter_turns, roll

B, T, H, W = 2, 4, 8, 8
GS = gspaces.rot2dOnR2(4)
TRIVIAL = enn.FieldType(GS, [GS.trivial_repr])
REGULAR = enn.FieldType(GS, [GS.regular_repr])
HIDDEN_TRIVIAL = enn.FieldType(GS, [GS.trivial_repr] * 2)


# ---------------------------------------------------------------------------------------------
# toy models (plain torch)
# ---------------------------------------------------------------------------------------------
def _iso3(abc: torch.Tensor) -> torch.Tensor:
    """Isotropic 3x3 kernel (centre a, edges b, corners c): invariant under rot90."""
    a, b, c = abc
    return torch.stack([torch.stack([c, b, c]), torch.stack([b, a, b]), torch.stack([c, b, c])])


def _weight(c_out: int, c_in: int, regular: bool, isotropic: bool, gen: torch.Generator) -> torch.Tensor:
    """A 3x3 conv weight, C4-equivariant when ``isotropic``.

    Trivial fields: any isotropic kernel per (out, in) pair. Regular C4 fields (4 channels
    per field): ``W[o, i] = K[(o - i) mod 4]`` with isotropic ``K`` (a group convolution).
    """
    if not regular:
        if isotropic:
            w = torch.stack(
                [torch.stack([_iso3(torch.randn(3, generator=gen)) for _ in range(c_in)]) for _ in range(c_out)]
            )
        else:
            w = torch.randn(c_out, c_in, 3, 3, generator=gen)
        return w / (3.0 * c_in)
    assert c_out % 4 == 0 and c_in % 4 == 0
    fo, fi = c_out // 4, c_in // 4
    w = torch.zeros(c_out, c_in, 3, 3)
    for p in range(fo):
        for q in range(fi):
            ks = [
                _iso3(torch.randn(3, generator=gen)) if isotropic else torch.randn(3, 3, generator=gen)
                for _ in range(4)
            ]
            for o in range(4):
                for i in range(4):
                    w[4 * p + o, 4 * q + i] = ks[(o - i) % 4]
    return w / (3.0 * c_in)


def _circ_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w)


def _step(x: torch.Tensor, velocity: Tuple[int, int, int], regular: bool, sign: int = 1) -> torch.Tensor:
    """psi_1(nu) on [..., C, H, W] written by hand: rotate k quarter turns, then translate.

    x along the last axis, y up: a translation (vx, vy) rolls rows by -vy and columns by vx.
    """
    vx, vy, k = (sign * v for v in velocity)
    if k:
        x = quarter_turns(x, k)
        if regular:
            x = torch.roll(x, k, dims=-3)  # regular C4 field: rho(r^k) shifts channels by k
    if vx or vy:
        x = roll(x, vx, vy)
    return x


class ToyFERNN(torch.nn.Module):
    """h_t(nu) = relu(psi_1(nu) [W * h_{t-1}(nu)] + U * f_t), h_{-1} = 0; returns the lifted h.

    Args:
        flows: the flow set V (``FlowSet.identity`` gives a G-RNN).
        regular: regular C4 fields (4 channels) instead of trivial ones.
        isotropic: C4-equivariant kernels (else random 3x3 kernels: a control).
        shift: +1 the FERNN shift, 0 drop it (control), -1 wrong sign (control).
    """

    def __init__(self, flows: FlowSet, regular: bool = False, isotropic: bool = True, shift: int = 1,
                 dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        # trivial fields on flows.gspace (any planar gspace: isotropic kernels are D4-symmetric),
        # regular fields only on GS = rot2dOnR2(4)
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.regular, self.shift, self.flows = regular, shift, flows
        c_in, c_hid = (4, 4) if regular else (1, 2)
        self.register_buffer("w", _weight(c_hid, c_hid, regular, isotropic, gen).to(dtype))
        self.register_buffer("u", _weight(c_hid, c_in, regular, isotropic, gen).to(dtype) * 3.0)
        gs = flows.gspace
        self.hidden_type = REGULAR if regular else enn.FieldType(gs, [gs.trivial_repr] * 2)
        self.lifted_type = LiftedFieldType(self.hidden_type, flows)

    def forward(self, x: torch.Tensor) -> LiftedTensor:
        b, t_len, c, h, w = x.shape
        v, ch = len(self.flows), self.hidden_type.size
        state = x.new_zeros(b, v, ch, h, w)
        outs = []
        for t in range(t_len):
            wh = _circ_conv(state.reshape(b * v, ch, h, w), self.w).reshape(b, v, ch, h, w)
            if self.shift:
                wh = torch.stack(
                    [_step(wh[:, i], nu, self.regular, self.shift) for i, nu in enumerate(self.flows.velocities)], 1
                )
            state = torch.relu(wh + _circ_conv(x[:, t], self.u)[:, None])
            outs.append(state)
        return LiftedTensor(torch.stack(outs, 1), self.lifted_type)


class _EvalModule(torch.nn.Module):
    """Parameter-free toys are built in eval mode (the checks refuse training-mode modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.eval()


class PlainGRNN(torch.nn.Module):
    """G-RNN h_t = relu(W * h_{t-1} + U * f_t) returning the plain hidden sequence."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.core = ToyFERNN(FlowSet.identity(GS), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core(x).tensor[:, :, 0]


class Pointwise(_EvalModule):
    """Per-frame, per-channel map: equivariant to every exact transform."""

    def __init__(self, linear: bool = False) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x if self.linear else torch.tanh(1.5 * x) + 0.25 * x * x


class FrameConv(_EvalModule):
    """Per-frame circular 3x3 conv (translation-equivariant; rotation-equivariant iff isotropic)."""

    def __init__(self, isotropic: bool, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.register_buffer("w", _weight(2, 1, False, isotropic, torch.Generator().manual_seed(1)).to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return _circ_conv(x.flatten(0, 1), self.w).unflatten(0, (b, t))


class NextFrame(_EvalModule):
    """Output frame t is (a pointwise map of) input frame t + 1: needs time_offset=1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x[:, 1:])


class Perturbed(_EvalModule):
    """``scale * tanh(x)`` plus ``eps`` times a fixed position-dependent (non-equivariant) pattern."""

    def __init__(self, eps: float, scale: float = 1.0) -> None:
        super().__init__()
        self.eps, self.scale = eps, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pattern = torch.arange(H * W, dtype=x.dtype).reshape(H, W) / (H * W)
        return self.scale * torch.tanh(x) + self.eps * pattern


def _x(c: int = 1, dtype: torch.dtype = torch.float64, t: int = T, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, t, c, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _el(k: int):
    return GS.fibergroup.element(k)


V1 = FlowSet.translations(GS, 1)


# ---------------------------------------------------------------------------------------------
# flow equivariance
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("regular", [False, True])
def test_toy_fernn_is_flow_equivariant_float64(regular):
    model = ToyFERNN(V1, regular=regular).eval()
    x = _x(4 if regular else 1)
    rep = check_flow_equivariance(model, x, REGULAR if regular else TRIVIAL, [(1, 0), (0, -1), (1, 1)])
    assert rep.passed, rep.summary()
    assert rep.output_kind == "lifted"
    assert rep.max_abs_error <= 1e-10
    assert len(rep.rows) == 3 * T
    assert all(r.exact for r in rep.rows)
    # nu - mu in V for 6 of the 9 velocities when |mu| = 1 along one axis, 4 for a diagonal mu
    by_flow = {r.transform: r.compared_slices for r in rep.rows if r.t == 0}
    assert by_flow == {"mu=(1, 0, 0)": 6, "mu=(0, -1, 0)": 6, "mu=(1, 1, 0)": 4}
    assert rep.total_slices == 3 * T * 9
    assert rep.excluded_slices == T * (3 + 3 + 5)
    assert "excluded" in rep.summary()
    # hidden state actually nontrivial (not a vacuous pass)
    assert min(r.max_abs_expected for r in rep.rows) > 1e-2


def test_toy_fernn_rotation_flows_regular():
    flows = FlowSet.rotations(GS, [-1, 0, 1])
    model = ToyFERNN(flows, regular=True).eval()
    rep = check_flow_equivariance(model, _x(4), REGULAR, FlowGenerator(GS, rotation=1))
    assert rep.passed, rep.summary()
    assert {r.compared_slices for r in rep.rows} == {2}  # nu - mu = -2 is not in V
    # the same model with the wrong rotation direction in its recurrence fails
    bad = ToyFERNN(flows, regular=True, shift=-1).eval()
    assert not check_flow_equivariance(bad, _x(4), REGULAR, FlowGenerator(GS, rotation=1)).passed


def test_flowset_argument_checks_every_flow():
    model = ToyFERNN(V1).eval()
    rep = check_flow_equivariance(model, _x(), TRIVIAL, V1)
    assert rep.passed, rep.summary()
    assert len({r.transform for r in rep.rows}) == 9
    identity_rows = [r for r in rep.rows if r.transform == "mu=(0, 0, 0)"]
    assert all(r.compared_slices == 9 and r.max_abs_error == 0.0 for r in identity_rows)


def test_periodic_velocities_compare_every_slice_when_v_covers_the_torus():
    model = ToyFERNN(V1).eval()
    x = torch.randn(B, T, 1, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    plain = check_flow_equivariance(model, x, TRIVIAL, (1, 0))
    assert plain.passed and plain.compared_slices == 6 * T
    torus = check_flow_equivariance(model, x, TRIVIAL, [(1, 0), (1, 1)], periodic_velocities=True)
    assert torus.passed, torus.summary()
    assert torus.compared_slices == torus.total_slices == 2 * 9 * T and torus.excluded_slices == 0
    both = check_combined_equivariance(model, x, TRIVIAL, (1, 0), elements=[_el(1)], periodic_velocities=True)
    assert both.passed and both.excluded_slices == 0
    # the wrong-sign control fails on the slices periodic matching adds, too
    bad = check_flow_equivariance(ToyFERNN(V1, shift=-1).eval(), x, TRIVIAL, (1, 0), periodic_velocities=True)
    assert not bad.passed


@pytest.mark.parametrize("shift", [0, -1])
def test_lifted_controls_without_correct_shift_fail(shift):
    model = ToyFERNN(V1, shift=shift).eval()
    rep = check_flow_equivariance(model, _x(), TRIVIAL, (1, 0))
    assert not rep.passed
    assert rep.max_rel_error > 1e-3
    assert rep.failed_rows and all(r.t >= 1 for r in rep.failed_rows)  # frame 0 is never moved


def test_grnn_control_fails_flow_but_passes_static():
    model = PlainGRNN().eval()
    x = _x()
    flow = check_flow_equivariance(model, x, TRIVIAL, (1, 0), out_type=HIDDEN_TRIVIAL)
    assert not flow.passed
    assert flow.max_rel_error > 1e-3
    static = check_static_equivariance(model, x, TRIVIAL, out_type=HIDDEN_TRIVIAL)
    assert static.passed, static.summary()


def test_lifted_grnn_has_nothing_to_compare_and_does_not_pass():
    model = ToyFERNN(FlowSet.identity(GS)).eval()
    rep = check_flow_equivariance(model, _x(), TRIVIAL, (1, 0))
    assert rep.compared_slices == 0 and all(r.skipped and r.status == "skip" for r in rep.rows)
    assert not rep.passed
    assert "nothing was compared" in rep.summary()
    with pytest.raises(EquivarianceError):
        rep.raise_if_failed()


@pytest.mark.parametrize("in_type", [TRIVIAL, REGULAR])
def test_pointwise_model_passes_everything(in_type):
    x = _x(in_type.size)
    rep = check_equivariance(
        Pointwise(), x, in_type, [(1, 0), (0, 0, 1), (-2, 1)], out_type=in_type
    )
    assert rep.passed, rep.summary()
    assert rep.max_abs_error <= 1e-12
    assert {r.check for r in rep.rows} == {"flow", "static", "combined"}
    assert len(rep.rows) == 3 * T + 4 * T + 4 * 3 * T


def test_time_offset_for_next_frame_model():
    x = _x()
    good = check_flow_equivariance(NextFrame(), x, TRIVIAL, (1, 0), out_type=TRIVIAL, time_offset=1)
    assert good.passed, good.summary()
    assert len(good.rows) == T - 1 and good.time_offset == 1
    bad = check_flow_equivariance(NextFrame(), x, TRIVIAL, (1, 0), out_type=TRIVIAL)
    assert not bad.passed
    comb = check_combined_equivariance(NextFrame(), x, TRIVIAL, (1, 2), out_type=TRIVIAL, time_offset=1)
    assert comb.passed, comb.summary()


def test_time_offset_for_lifted_output():
    class DropFirst(torch.nn.Module):
        """Lifted output frame t is the FERNN state at input time t + 1."""

        def __init__(self):
            super().__init__()
            self.core = ToyFERNN(V1)

        def forward(self, x):
            h = self.core(x)
            return LiftedTensor(h.tensor[:, 1:], h.type)

    model, x = DropFirst().eval(), _x()
    good = check_equivariance(model, x, TRIVIAL, [(1, 0)], elements=[_el(1)], time_offset=1)
    assert good.passed, good.summary()
    assert len(good.rows) == 3 * (T - 1)
    bad_flow = check_flow_equivariance(model, x, TRIVIAL, (1, 0))
    assert not bad_flow.passed
    bad_comb = check_combined_equivariance(model, x, TRIVIAL, (1, 0), elements=[_el(1)])
    assert not bad_comb.passed


# ---------------------------------------------------------------------------------------------
# static equivariance
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("regular", [False, True])
def test_toy_fernn_is_static_equivariant(regular):
    model = ToyFERNN(V1, regular=regular).eval()
    rep = check_static_equivariance(model, _x(4 if regular else 1), REGULAR if regular else TRIVIAL)
    assert rep.passed, rep.summary()
    assert len(rep.rows) == 4 * T and all(r.compared_slices == 9 for r in rep.rows)
    identity = [r for r in rep.rows if r.transform == f"g={_el(0)}"]
    assert identity and all(r.max_abs_error == 0.0 for r in identity)


@pytest.mark.parametrize("regular", [False, True])
def test_non_isotropic_kernel_fails_static(regular):
    model = ToyFERNN(V1, regular=regular, isotropic=False).eval()
    x = _x(4 if regular else 1)
    in_type = REGULAR if regular else TRIVIAL
    rep = check_static_equivariance(model, x, in_type, elements=[_el(1)])
    assert not rep.passed and rep.max_rel_error > 1e-3
    # translation flows do not care about the kernel's shape: the flow check still passes
    assert check_flow_equivariance(model, x, in_type, (1, 0)).passed


def test_plain_non_isotropic_conv_fails_static_passes_flow():
    x = _x()
    assert check_static_equivariance(FrameConv(True), x, TRIVIAL, out_type=HIDDEN_TRIVIAL).passed
    bad = check_static_equivariance(FrameConv(False), x, TRIVIAL, out_type=HIDDEN_TRIVIAL, elements=[_el(2)])
    assert not bad.passed
    assert check_flow_equivariance(FrameConv(False), x, TRIVIAL, [(1, 0), (0, 2)], out_type=HIDDEN_TRIVIAL).passed


def test_lifted_static_permutes_v():
    """A lifted model equivariant in space/fibers but ignoring V's permutation fails."""

    class NoVPermutation(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.core = ToyFERNN(V1)

        def forward(self, x):
            h = self.core(x)
            # every slice holds the nu = (1, 0) state: static g should move it to slice g.nu
            t = h.velocity_slice((1, 0)).unsqueeze(2).expand_as(h.tensor)
            return LiftedTensor(t.contiguous(), h.type)

    rep = check_static_equivariance(NoVPermutation().eval(), _x(), TRIVIAL, elements=[_el(1)])
    assert not rep.passed


# ---------------------------------------------------------------------------------------------
# combined: rotated and moving input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("regular", [False, True])
def test_combined_passes_for_exact_toy(regular):
    model = ToyFERNN(V1, regular=regular).eval()
    rep = check_combined_equivariance(
        model, _x(4 if regular else 1), REGULAR if regular else TRIVIAL, [(1, 0), (1, -1)],
        elements=[_el(1), _el(3)],
    )
    assert rep.passed, rep.summary()
    assert len(rep.rows) == 2 * 2 * T
    assert rep.max_abs_error <= 1e-10
    assert {r.compared_slices for r in rep.rows} == {6, 4}


def test_reflections_d4_full_check():
    d4 = gspaces.flipRot2dOnR2(4)
    t_in = enn.FieldType(d4, [d4.trivial_repr])
    model = ToyFERNN(FlowSet.translations(d4, 1)).eval()
    rep = check_equivariance(model, _x(), t_in, [(1, 0), (1, 1)])
    assert rep.passed, rep.summary()
    assert len({r.transform for r in rep.rows if r.check == "static"}) == 8
    bad = ToyFERNN(FlowSet.translations(d4, 1), shift=-1).eval()
    assert not check_combined_equivariance(bad, _x(), t_in, (1, 1), elements=[d4.fibergroup.element((1, 1))]).passed


def test_combined_fails_for_controls():
    x = _x()
    assert not check_combined_equivariance(ToyFERNN(V1, shift=0).eval(), x, TRIVIAL, (1, 0), elements=[_el(1)]).passed
    assert not check_combined_equivariance(
        ToyFERNN(V1, isotropic=False).eval(), x, TRIVIAL, (1, 0), elements=[_el(1)]
    ).passed
    assert not check_combined_equivariance(
        PlainGRNN().eval(), x, TRIVIAL, (0, 1), elements=[_el(2)], out_type=HIDDEN_TRIVIAL
    ).passed


# ---------------------------------------------------------------------------------------------
# dtypes and tolerances
# ---------------------------------------------------------------------------------------------
def test_float32_uses_float32_tolerances_and_passes():
    model = ToyFERNN(V1, dtype=torch.float32).eval()
    rep = check_equivariance(model, _x(dtype=torch.float32), TRIVIAL, [(1, 0)], elements=[_el(1)])
    assert rep.passed, rep.summary()
    assert (rep.atol, rep.rtol) == DEFAULT_TOLERANCES[torch.float32] == (1e-5, 1e-5)
    assert rep.dtype == "torch.float32"


def test_tolerance_selection_by_dtype():
    perturbed = Perturbed(eps=1e-7)
    r64 = check_flow_equivariance(perturbed, _x(), TRIVIAL, (1, 0), out_type=TRIVIAL)
    assert (r64.atol, r64.rtol) == (1e-10, 1e-10)
    assert not r64.passed and 1e-9 < r64.max_abs_error < 1e-6
    r32 = check_flow_equivariance(perturbed, _x(dtype=torch.float32), TRIVIAL, (1, 0), out_type=TRIVIAL)
    assert r32.passed, r32.summary()
    loose = check_flow_equivariance(perturbed, _x(), TRIVIAL, (1, 0), out_type=TRIVIAL, atol=1e-6)
    assert loose.passed and loose.atol == 1e-6 and loose.rtol == 1e-10
    strict = check_flow_equivariance(
        Pointwise(), _x(dtype=torch.float32), TRIVIAL, (1, 0), out_type=TRIVIAL, atol=0.0, rtol=0.0
    )
    assert strict.passed  # exact transports of a pointwise model: bitwise equal


def test_rtol_scales_with_the_expected_output():
    model, x = Perturbed(eps=1e-8, scale=1e3), _x()  # defect ~1e-9 on outputs of size ~1e3
    rep = check_flow_equivariance(model, x, TRIVIAL, (1, 0), out_type=TRIVIAL)
    assert rep.passed, rep.summary()  # within atol 1e-10 + rtol 1e-10 * ~1e3
    row = rep.rows[1]
    assert row.max_abs_error > 1e-10 and row.tolerance == pytest.approx(1e-10 + 1e-10 * row.max_abs_expected)
    assert not check_flow_equivariance(model, x, TRIVIAL, (1, 0), out_type=TRIVIAL, rtol=0.0).passed


def test_identity_element_catches_nondeterminism_and_relative_guard():
    class Counter(_EvalModule):
        """Zeros on the first call, ones afterwards: not a function of its input."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return torch.zeros_like(x) if self.calls == 1 else torch.ones_like(x)

    rep = check_static_equivariance(Counter(), _x(), TRIVIAL, out_type=TRIVIAL, elements=[_el(0)])
    assert not rep.passed
    assert all(r.max_abs_expected == 0.0 and r.max_rel_error == float("inf") for r in rep.rows)


def test_default_tolerances():
    assert default_tolerances(torch.float64) == (1e-10, 1e-10)
    assert default_tolerances(torch.float32, atol=1e-3) == (1e-3, 1e-5)
    with pytest.raises(ValueError, match="floating dtype"):
        default_tolerances(torch.int64)
    with pytest.raises(ValueError, match="rtol must be"):
        default_tolerances(torch.float32, rtol=-1.0)


def test_interpolated_rotation_is_measured_and_marked():
    gs8 = gspaces.rot2dOnR2(8)
    t8 = enn.FieldType(gs8, [gs8.trivial_repr])
    x = torch.randn(1, 3, 1, 9, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mu = FlowGenerator(gs8, rotation=1)  # 45 degrees per frame: bilinear
    linear = check_flow_equivariance(Pointwise(linear=True), x, t8, mu, out_type=t8)
    assert linear.passed, linear.summary()  # bilinear resampling commutes with a linear pointwise map
    assert not linear.exact and [r.exact for r in linear.rows] == [False] * 3  # frame 1 is rotated by 45 deg
    assert any("interpolation" in n for n in linear.notes)
    nonlinear = check_flow_equivariance(Pointwise(), x, t8, mu, out_type=t8)
    assert not nonlinear.passed and nonlinear.max_abs_error > 1e-3
    assert check_flow_equivariance(Pointwise(), x, t8, mu, out_type=t8, atol=10.0).passed
    static = check_static_equivariance(Pointwise(), x, t8, out_type=t8, elements=[gs8.fibergroup.element(2)])
    assert static.passed and static.exact  # 90 degrees stays exact on C8


# ---------------------------------------------------------------------------------------------
# report object
# ---------------------------------------------------------------------------------------------
def test_report_contents():
    rep = check_flow_equivariance(ToyFERNN(V1).eval(), _x(), TRIVIAL, (1, 0))
    assert isinstance(rep, EquivarianceReport)
    assert all(isinstance(r, CheckRow) for r in rep.rows)
    assert [r.t for r in rep.rows] == list(range(T))
    assert all(r.check == "flow" and r.transform == "mu=(1, 0, 0)" for r in rep.rows)
    assert rep.compared_slices == 6 * T and rep.total_slices == 9 * T and rep.excluded_slices == 3 * T
    text = rep.summary()
    assert text == str(rep) and "PASSED" in text and "mu=(1, 0, 0)" in text and "6/9" in text
    assert len(text.splitlines()) >= len(rep.rows) + 3
    d = rep.to_dict()
    for key in ("passed", "max_abs_error", "max_rel_error", "atol", "rtol", "dtype", "output_kind", "rows",
                "compared_slices", "total_slices", "excluded_slices", "num_rows", "num_failed", "notes"):
        assert key in d
    assert d["passed"] is True and len(d["rows"]) == T
    assert set(d["rows"][0]) >= {"check", "transform", "t", "max_abs_error", "max_rel_error", "passed"}
    assert rep.raise_if_failed() is rep


def test_report_failure_and_error_message():
    rep = check_flow_equivariance(ToyFERNN(V1, shift=0).eval(), _x(), TRIVIAL, (1, 0))
    assert not rep.passed and rep.to_dict()["num_failed"] == len(rep.failed_rows) > 0
    assert "FAILED" in rep.summary() and "FAIL" in rep.summary()
    with pytest.raises(EquivarianceError, match=r"(?s)equivariance check failed.*mu=\(1, 0, 0\)") as info:
        rep.raise_if_failed()
    assert info.value.report is rep
    assert isinstance(info.value, AssertionError)


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x.clone()


def test_relative_error_guard_and_combine():
    class Zero(_EvalModule):
        def forward(self, x):
            return torch.zeros_like(x)

    rep = check_flow_equivariance(Zero(), _x(), TRIVIAL, (1, 0), out_type=TRIVIAL)
    assert rep.max_rel_error == 0.0 and rep.max_abs_error == 0.0  # 0 / 0 counts as no error...
    assert not rep.passed and rep.degenerate == ["flow mu=(1, 0, 0)"]  # ...but an all-zero output verifies nothing
    assert "vacuous" in rep.summary() and rep.to_dict()["degenerate"] == rep.degenerate
    other = check_static_equivariance(Zero(), _x(), TRIVIAL, out_type=TRIVIAL)
    both = EquivarianceReport.combine([rep, other])
    assert len(both.rows) == len(rep.rows) + len(other.rows) and not both.passed
    # control: a non-zero equivariant output passes
    assert check_flow_equivariance(_Identity().eval(), _x(), TRIVIAL, (1, 0), out_type=TRIVIAL).passed
    with pytest.raises(ValueError, match="at least one"):
        EquivarianceReport.combine([])


def test_nan_output_fails():
    class NaNAfterMove(_EvalModule):
        def forward(self, x):
            y = x.clone()
            if x[0, 1, 0, 0, 1] == self.probe:  # moved input: poison it
                y[0, 1] = float("nan")
            return y

    x = _x()
    m = NaNAfterMove()
    m.probe = x[0, 1, 0, 0, 0]  # after a (1, 0) move, pixel (0, 1) of frame 1 holds pixel (0, 0)
    rep = check_flow_equivariance(m, x, TRIVIAL, (1, 0), out_type=TRIVIAL)
    assert not rep.passed and rep.rows[1].status == "FAIL"


# ---------------------------------------------------------------------------------------------
# model mode and no_grad
# ---------------------------------------------------------------------------------------------
def test_model_mode_is_respected_and_never_changed():
    model = ToyFERNN(V1)  # nn.Module starts in training mode
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        check_flow_equivariance(model, _x(), TRIVIAL, (1, 0))
    assert model.training
    rep = check_flow_equivariance(model, _x(), TRIVIAL, (1, 0), allow_training=True)
    assert rep.passed and model.training
    model.eval()
    check_flow_equivariance(model, _x(), TRIVIAL, (1, 0))
    assert not model.training


def test_model_runs_without_grad_and_plain_callables_work():
    seen = []

    def fn(x):
        seen.append(torch.is_grad_enabled())
        return x * 3.0

    x = _x().requires_grad_(True)
    assert check_flow_equivariance(fn, x, TRIVIAL, (1, 0), out_type=TRIVIAL).passed
    assert seen and not any(seen)


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------
def _ident(x):
    return x


def _lifted_ident(x):
    return LiftedTensor(
        x.unsqueeze(2).expand(-1, -1, 2, -1, -1, -1), LiftedFieldType(TRIVIAL, FlowSet(GS, [(0, 0), (1, 0)]))
    )


GS8 = gspaces.rot2dOnR2(8)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(x=torch.zeros(B, 1, H, W, dtype=torch.float64)), ValueError, r"\[B, T, C, H, W\]"),
        (dict(x=torch.zeros(B, 0, 1, H, W, dtype=torch.float64)), ValueError, r"T >= 1"),
        (dict(x=torch.zeros(B, T, 3, H, W, dtype=torch.float64)), ValueError, r"C=3 .*in_type has size 1"),
        (dict(x=torch.zeros(B, T, 1, H, W, dtype=torch.int64)), ValueError, r"floating"),
        (dict(x=[[0.0]]), TypeError, r"x must be a torch.Tensor"),
        (dict(in_type=GS), TypeError, r"in_type must be an escnn FieldType"),
        (dict(out_type=None), ValueError, r"out_type .* is\s+required"),
        (dict(out_type=REGULAR), ValueError, r"out_type lives on|out_type has size"),
        (dict(out_type=HIDDEN_TRIVIAL), ValueError, r"C=1 channels .* out_type has size 2"),
        (dict(flows=(0.5, 0)), ValueError, r"integer"),
        (dict(flows=[]), ValueError, r"flows is empty"),
        (dict(flows="east"), TypeError, r"flows must be"),
        (dict(flows=FlowGenerator(GS8, (1, 0))), ValueError, r"gspace"),
        (dict(flows=FlowSet.translations(GS8, 1)), ValueError, r"in_type lives on"),
        (dict(time_offset=0.5), ValueError, r"time_offset"),
        (dict(interpolation="nearest"), ValueError, r"interpolation must be one of"),
        (dict(atol=-1.0), ValueError, r"atol must be"),
        (dict(model=lambda x: (x, x)), TypeError, r"expected a torch.Tensor"),
        (dict(model=lambda x: x[:1]), ValueError, r"batch size"),
        (dict(model=lambda x: x[:, :, :, :4]), ValueError, r"input's grid"),
    ],
)
def test_bad_inputs_flow(kwargs, exc, match):
    args = dict(model=_ident, x=_x(), in_type=TRIVIAL, flows=(1, 0), out_type=TRIVIAL)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        check_flow_equivariance(
            args.pop("model"), args.pop("x"), args.pop("in_type"), args.pop("flows"), **args
        )


@pytest.mark.parametrize(
    "model, kwargs, exc, match",
    [
        (_ident, dict(elements=[GS8.fibergroup.element(1)]), ValueError, r"not an element of the fiber group"),
        (_ident, dict(elements=[]), ValueError, r"elements is empty"),
        (_lifted_ident, dict(elements=[_el(1)], out_type=None), ValueError, r"not closed under"),
        (_lifted_ident, dict(elements=[_el(2)], out_type=REGULAR), ValueError, r"does not match"),
        (lambda x: x.unsqueeze(2), dict(), ValueError, r"sequence \[B, T', C, H, W\]"),
        (lambda x: _lifted_ident(x).frame(0), dict(out_type=None), ValueError, r"single lifted frame"),
    ],
)
def test_bad_inputs_static(model, kwargs, exc, match):
    args = dict(out_type=TRIVIAL)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        check_static_equivariance(model, _x(), TRIVIAL, **args)


def test_model_whose_output_shape_changes_is_rejected():
    def fickle(x):
        return x if x[0, 0, 0, 0, 0] == 0 else x[:, :-1]

    x = _x()
    x[0, 0, 0, 0, 0] = 0.0
    x[0, 1, 0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="same shape"):
        check_static_equivariance(fickle, x, TRIVIAL, out_type=TRIVIAL)


def test_check_equivariance_needs_something_to_check():
    with pytest.raises(ValueError, match="nothing to check"):
        check_equivariance(_ident, _x(), TRIVIAL, None, static=False, out_type=TRIVIAL)
    rep = check_equivariance(_ident, _x(), TRIVIAL, None, out_type=TRIVIAL)
    assert {r.check for r in rep.rows} == {"static"} and rep.passed


def test_a_transform_with_no_comparable_slice_is_not_verified_and_fails():
    """A lifted G-RNN output (V = {0}) has no prediction under a flow: the report must not pass
    on the strength of other (e.g. static) rows."""
    from flow_escnn.checks import check_equivariance
    from flow_escnn.nn import FERNN

    gs = gspaces.rot2dOnR2(4)
    it = enn.FieldType(gs, [gs.trivial_repr])
    model = FERNN(it, enn.FieldType(gs, [gs.regular_repr]), FlowSet.identity(gs)).double().eval()
    x = torch.randn(1, 3, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    report = check_equivariance(model, x, it, flows=[(1, 0)])
    assert not report.passed
    assert any(u.startswith("flow") for u in report.unverified)
    assert "not verified" in report.summary()
    static_only = check_equivariance(model, x, it, flows=None)
    assert static_only.passed and not static_only.unverified  # the static rows themselves are fine
