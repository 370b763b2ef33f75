"""World models (issue 23): self-motion transports against torch.roll / torch.rot90 written here,
the world model's commuting diagrams with their controls, export, save/load."""
from __future__ import annotations

import pytest
import torch

from flow_escnn import FlowSet
from flow_escnn._compat import enn, gspaces
from flow_escnn.checks import check_world_equivariance
from flow_escnn.flows._action import ActionTransport
from flow_escnn.models._world import WorldModel, centred_window

C4 = gspaces.rot2dOnR2(4)
TRIV = enn.FieldType(C4, [C4.trivial_repr])
REG = enn.FieldType(C4, [C4.regular_repr])
IRR = enn.FieldType(C4, [C4.irrep(1), C4.trivial_repr])


def roll(t, vx, vy):
    """The translation by (vx, vy) (x right, y up) of [..., H, W], written here as the oracle."""
    return torch.roll(t, shifts=(-vy, vx), dims=(-2, -1))


def rot(t, q):
    """The rotation by q quarter turns (counter-clockwise) of [..., H, W] about the centre."""
    return torch.rot90(t, q, dims=(-2, -1))


def channel_turn(x, q):
    """rho(r^q) on C4 regular fields [..., 4, H, W]: a cyclic shift of the 4 channels."""
    return torch.roll(x, shifts=q, dims=-3)


def _actions(b, t, turns=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-2, 3, (b, t, 3), generator=g).double()
    a[..., 2] = torch.randint(0, 4, (b, t), generator=g).double() if turns else 0
    return a


# -- the self-motion transport ---------------------------------------------------------------------------------
@pytest.mark.parametrize("field", [TRIV, REG, IRR], ids=["trivial", "regular", "irreps"])
def test_moves_are_rolls_of_the_map(field):
    """a = (u, e): a^{-1} h = h(x + u), a roll by -u; every V slice the same. Control: +u is flagged."""
    flows = FlowSet.translations(C4, 1)
    tr = ActionTransport(field, flows, (7, 7))
    h = torch.randn(3, len(flows), field.size, 7, 7, dtype=torch.float64)
    a = torch.tensor([[2.0, -1.0, 0.0], [0.0, 3.0, 0.0], [-4.0, 0.0, 0.0]], dtype=torch.float64)
    out = tr(h, a)
    for i in range(3):
        ux, uy = int(a[i, 0]), int(a[i, 1])
        assert torch.equal(out[i], roll(h[i], -ux, -uy))
    assert not torch.equal(out[0], roll(h[0], 2, -1))  # control: the wrong direction


def test_quarter_turns_rotate_space_fibers_and_velocities():
    """a = (0, r^q): [a^{-1} h](nu') = rho(r)^{-q} h(r^q nu')(r^q x): rot90 by -q, channels shifted by -q,
    V relabelled. Control: without the V relabel the oracle disagrees."""
    flows = FlowSet.translations(C4, 1)
    tr = ActionTransport(REG, flows, (6, 6))
    h = torch.randn(4, len(flows), 4, 6, 6, dtype=torch.float64)
    a = torch.tensor([[0.0, 0.0, q] for q in range(4)], dtype=torch.float64)
    out = tr(h, a)
    for q in range(4):
        c, s = [1, 0, -1, 0][q], [0, 1, 0, -1][q]
        perm = [flows.index((vx * c - vy * s, vx * s + vy * c, 0)) for vx, vy, _ in flows.velocities]  # r^q . nu'
        expected = channel_turn(rot(h[q][perm], -q), -q)
        assert torch.equal(out[q], expected)
        if q:
            assert not torch.equal(out[q], channel_turn(rot(h[q], -q), -q))  # control: V not relabelled


def test_a_move_and_a_turn_compose_in_the_agents_frame():
    """a = (u, r): a^{-1} = r^{-1} T_{-u}: first roll by -u, then turn back (a single gather here)."""
    flows = FlowSet.identity(C4)
    tr = ActionTransport(REG, flows, (8, 8))
    h = torch.randn(1, 1, 4, 8, 8, dtype=torch.float64)
    out = tr(h, torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64))
    assert torch.equal(out[0], channel_turn(rot(roll(h[0], -1, -2), -1), -1))
    assert not torch.equal(out[0], channel_turn(roll(rot(h[0], -1), -1, -2), -1))  # control: the other order


@pytest.mark.parametrize("field", [TRIV, REG, IRR], ids=["trivial", "regular", "irreps"])
@pytest.mark.parametrize("turns", [False, True], ids=["moves", "turns"])
def test_transport_gradient_is_the_adjoint(field, turns):
    """The backward (gathers by the inverse permutations) is A^T: <A h, g> = <h, A^T g> for every h, g.
    Control: the forward transport applied to g (A instead of A^T) is flagged."""
    flows = FlowSet.translations(C4, 1)
    tr = ActionTransport(field, flows, (6, 6))
    h = torch.randn(3, len(flows), field.size, 6, 6, dtype=torch.float64, requires_grad=True)
    a = _actions(3, 1, turns=turns)[:, 0]
    g = torch.randn(3, len(flows), field.size, 6, 6, dtype=torch.float64)
    (tr(h, a) * g).sum().backward()
    a_h = tr(h.detach(), a)
    assert torch.allclose((a_h * g).sum(), (h.detach() * h.grad).sum(), atol=1e-10)
    assert not torch.allclose(h.grad, tr(g, a), atol=1e-6)  # control: A g is not A^T g


def test_turns_that_do_not_close_v_are_refused():
    c8 = gspaces.rot2dOnR2(8)
    tr = ActionTransport(enn.FieldType(c8, [c8.regular_repr]), FlowSet.translations(c8, 1), (8, 8))
    with pytest.raises(ValueError, match="relabels the velocities of V"):
        tr(torch.zeros(1, 9, 8, 8, 8), torch.tensor([[0.0, 0.0, 1.0]]))  # 45 degrees
    ok = ActionTransport(enn.FieldType(c8, [c8.regular_repr]), FlowSet.identity(c8), (8, 8))
    y = ok(torch.rand(1, 1, 8, 8, 8), torch.tensor([[0.0, 0.0, 1.0]]))  # control: V = {0} turns by any angle
    assert y.shape == (1, 1, 8, 8, 8)


def test_bad_windows_and_actions_are_refused():
    with pytest.raises(ValueError, match="cannot sit at the centre"):
        centred_window((12, 12), (7, 7))
    with pytest.raises(ValueError, match="larger than the world map"):
        centred_window((8, 8), (10, 10))
    m = WorldModel(TRIV, REG, FlowSet.translations(C4, 1), 12, 8)
    with pytest.raises(ValueError, match=r"actions must be \[B=1, T>=5, 3\]"):
        m(torch.rand(1, 4, 1, 8, 8), torch.zeros(1, 4, 3), 1)
    with pytest.raises(ValueError, match="whole pixels"):
        m(torch.rand(1, 4, 1, 8, 8), torch.full((1, 5, 3), 0.5), 1)
    with pytest.raises(ValueError, match="views of 8x8 pixels"):
        m(torch.rand(1, 4, 1, 9, 9), torch.zeros(1, 5, 3), 1)


# -- the world model's diagrams ------------------------------------------------------------------------------------
HID = enn.FieldType(C4, [C4.regular_repr] * 2)


def _model(world, view, radius=1, **kw):
    torch.manual_seed(0)
    return WorldModel(TRIV, HID, FlowSet.translations(C4, radius), world, view, **kw).double().eval()


@pytest.mark.parametrize("cell, imagine", [("fernn", "feedback"), ("gru", "feedback"), ("lstm", "feedback"),
                                           ("fernn", "carry"), ("gru", "carry")])
def test_turning_the_episode_turns_the_predictions(cell, imagine):
    """Views rotated about their centre and actions conjugated: predictions rotated (partial view)."""
    m = _model(12, 8, cell=cell, imagine=imagine)
    views = torch.rand(2, 4, 1, 8, 8, dtype=torch.float64)
    report = check_world_equivariance(m, views, _actions(2, 7), TRIV, 3, checks=["turn"])
    assert report.passed and report.max_abs_error <= 1e-10, report.summary()


def test_the_turn_check_flags_turns_about_the_wrong_point():
    """Control: a self-motion that turns the map about a point off the view centre."""
    m = _model(12, 8)
    views = torch.rand(2, 4, 1, 8, 8, dtype=torch.float64)
    m.motion.quarters.x.add_(1.0)  # coordinates measured from one pixel left of the centre
    report = check_world_equivariance(m, views, _actions(2, 7), TRIV, 3, checks=["turn"])
    assert not report.passed and report.max_abs_error > 1e-3


@pytest.mark.parametrize("imagine", ["feedback", "carry"])
def test_fully_observed_self_motion_shift_and_flow_are_exact(imagine):
    """View = world (5x5 torus, V = [-2, 2]^2 covers it): a moving agent sees its static twin's views
    pulled back by its pose and predicts them pulled back; world shifts and object flows act as for a FERNN."""
    m = _model(5, 5, radius=2, imagine=imagine)
    views = torch.rand(2, 4, 1, 5, 5, dtype=torch.float64)
    report = check_world_equivariance(m, views, _actions(2, 7), TRIV, 3, checks=["turn", "self_motion"])
    assert report.passed and report.max_abs_error <= 1e-10, report.summary()
    moves = _actions(2, 7, turns=False)
    report = check_world_equivariance(m, views, moves, TRIV, 3, checks=["shift", "flow"], flows=[(1, 0), (1, -2)])
    assert report.passed and report.max_abs_error <= 1e-10, report.summary()


def test_a_model_without_self_motion_fails_the_self_motion_diagram():
    views = torch.rand(2, 4, 1, 5, 5, dtype=torch.float64)
    m = _model(5, 5, radius=2, self_motion=False)
    report = check_world_equivariance(m, views, _actions(2, 7), TRIV, 3, checks=["self_motion"])
    assert not report.passed and report.max_abs_error > 1e-3
    # control 2: self-motion that turns the map but leaves the velocity labels as they were
    m = _model(5, 5, radius=2)
    m.motion.quarters.vperms.copy_(torch.arange(25).expand(4, 25))
    report = check_world_equivariance(m, views, _actions(2, 7), TRIV, 3, checks=["self_motion"])
    assert not report.passed and report.max_abs_error > 1e-3


def test_diagrams_that_need_a_whole_world_are_refused_on_a_window():
    m = _model(12, 8)
    with pytest.raises(ValueError, match="fully observed"):
        check_world_equivariance(m, torch.rand(1, 3, 1, 8, 8, dtype=torch.float64), _actions(1, 4), TRIV, 1,
                                 checks=["self_motion"])


def test_carry_only_transports_the_map_past_the_given_views():
    """imagine='carry': past the given views the map is only carried, so with V = {0}, no self-motion and
    no turns every prediction is the same view; with self-motion the predictions are that view moved by
    the inverse actions (fully observed world: a roll). Control: 'feedback' changes the views."""
    views = torch.rand(1, 3, 1, 6, 6, dtype=torch.float64)
    a = torch.zeros(1, 7, 3, dtype=torch.float64)
    still = _model(6, 6, radius=0, self_motion=False, imagine="carry")
    y = still(views, a, 4)
    assert all(torch.equal(y[:, 0], y[:, s]) for s in range(4))
    assert not torch.allclose(_model(6, 6, radius=0, self_motion=False)(views, a, 4)[:, 0],
                              _model(6, 6, radius=0, self_motion=False)(views, a, 4)[:, 3])
    moving = _model(6, 6, radius=0, imagine="carry")
    a[0, 3:, 0] = 1.0  # one pixel right per step while imagining
    y = moving(views, a, 4)
    for s in range(1, 4):
        assert torch.allclose(y[:, s], roll(y[:, 0], -s, 0), atol=1e-12)


def test_action_input_baseline_and_export():
    m = _model(12, 8, radius=0, self_motion=False, action_input=True)
    views = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64)
    a = _actions(2, 6)
    y = m(views, a, 3)
    assert y.shape == (2, 3, 1, 8, 8)
    a2 = a.clone()
    a2[:, 3:, 0] += 1  # the baseline reads the actions
    assert (m(views, a2, 3) - y).abs().max() > 1e-6
    flowm = _model(12, 8)
    twin = flowm.export()
    assert torch.equal(twin(views, a, 3), flowm(views, a, 3))



@pytest.mark.parametrize("cell, imagine, kw", [("fernn", "feedback", {}), ("fernn", "carry", {}), ("gru", "feedback", {}),
                                               ("lstm", "carry", {}), ("fernn", "feedback", {"velocity_mixing": 1}),
                                               ("fernn", "feedback", {"checkpoint": True})])
@pytest.mark.parametrize("turns", [False, True], ids=["moves", "turns"])
def test_the_folded_step_trains_the_same_model(monkeypatch, cell, imagine, kw, turns):
    """The step as the engine runs it (the self-motion folded into the flow transport's gather, the readout
    window written by it and pooled over V there, U * f added on the window only) against the same step with
    separate passes (self-motion, flow transport, window read, pool; U * f written into a zero map): the same
    predictions bit for bit and the same gradients (float64, 1e-12; bit for bit where no sum over V changes its
    extent). Control: the engine really took the separate passes in the reference (no folded gather ran)."""
    from flow_escnn.nn import _engine

    views, a = torch.rand(2, 4, 1, 8, 8, dtype=torch.float64), _actions(2, 7, turns=turns)

    def step():
        m = _model(12, 8, cell=cell, imagine=imagine, **kw)
        y = m(views, a, 3)
        return y.detach(), torch.autograd.grad(y.square().sum(), list(m.parameters()))

    folded, grads = step()
    calls = []
    with monkeypatch.context() as mp:
        mp.setattr(_engine.Recurrence, "_fold", lambda self, *args: calls.append(1))  # None: no fold
        plain_terms = _engine.Recurrence.input_terms
        mp.setattr(_engine.Recurrence, "input_terms",
                   lambda self, l, x, w, t0, window=False, **kw: plain_terms(self, l, x, w, t0, window=False, **kw))
        separate, ref = step()
    assert calls  # the reference asked for the fold and went without it
    assert torch.equal(folded, separate)
    assert all(float((g - r).abs().max()) <= 1e-12 * float(r.abs().max()) for g, r in zip(grads, ref))


# -- the CLI and the demo ------------------------------------------------------------------------------------------
WORLD_TINY = ["--digits", "synthetic", "--world-size", "12", "--window-size", "8", "--digit-size", "5",
              "--num-digits", "2", "--num-train", "8", "--num-val", "4", "--num-test", "4", "--t-in", "3", "--t-out", "2",
              "--rollout", "6", "--batch-size", "4", "--hidden-channels", "2", "--eval-every", "2",
              "--checkpoint-every", "2", "--no-progress"]


def test_world_cli_trains_resumes_and_writes_its_metrics(tmp_path, capsys):
    import json

    from flow_escnn.experiments._cli import main

    out = tmp_path / "w"
    assert main(["world", "--out", str(out), "--steps", "2", *WORLD_TINY]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["rollout_mse_per_step"]) == 6 and m["test_mse"] == pytest.approx(sum(m["rollout_mse_per_step"][:2]) / 2)
    assert {p.name for p in out.glob("*.png")} == {"rollout.png", "rollout_mse.png", "val_curve.png"}
    assert "rollout MSE" in capsys.readouterr().out
    assert main(["world", "--out", str(out), "--steps", "4", "--resume", "--no-plots", *WORLD_TINY]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    with pytest.raises(SystemExit):  # a fresh run refuses the folder of a run
        main(["world", "--out", str(out), "--steps", "2", *WORLD_TINY])
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--turns", "90"], "need a group with that rotation"),
    (["--turns", "45", "--group", "8", "--hidden-channels", "8"], "does not map integer velocities"),
    (["--split", "fully_observed"], "shows the whole world"),
    (["--model", "grnn", "--flow-radius", "1"], "the G-RNN has no flow set"),
    (["--turn-probability", "0.5"], "does nothing"),
])
def test_world_cli_refuses_what_does_not_fit(tmp_path, capsys, extra, message):
    from flow_escnn.experiments._cli import main

    with pytest.raises(SystemExit) as exc:
        main(["world", "--out", str(tmp_path / "w"), "--steps", "1", *WORLD_TINY, *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_world_demo_compares_the_models(tmp_path):
    from flow_escnn.experiments._world_demo import WORLD_DEMO_MODELS, run_world_demo

    res = run_world_demo(tmp_path / "d", digits="synthetic", plots=False, workers=1, world_size=12, view_size=8,
                         digit_size=5, num_digits=2, num_train=8, num_val=4, num_test=4, t_in=3, t_out=2, rollout=100,
                         steps=2, batch_size=4, hidden_channels=2, eval_every=2, checkpoint_every=2)
    assert set(res["metrics"]) == set(WORLD_DEMO_MODELS)
    text = (tmp_path / "d" / "results.md").read_text()
    assert "FloWM" in text and "predict black views" in text and "view 100 / view 20" in text


def test_world_help_shows_the_config_defaults():
    """The world options' help takes its defaults from WorldExperimentConfig (typed once); control: a
    changed default shows in the help."""
    import dataclasses

    from flow_escnn.experiments._parser import _config_defaults_in_help, build_parser
    from flow_escnn.experiments._world import WorldExperimentConfig

    text = build_parser()._subparsers._group_actions[0].choices["world"].format_help()
    assert "{default}" not in text
    assert "side of the world torus and the map (24)" in " ".join(text.split())
    assert "in pixels (4)" in " ".join(text.split())

    @dataclasses.dataclass
    class Other(WorldExperimentConfig):
        world_size: int = 40

    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--world-size", help="side ({default})")
    _config_defaults_in_help(p, Other)
    assert "side (40)" in p.format_help()
