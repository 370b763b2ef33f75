"""Speed switches of ``train`` (autocast, gradient checkpointing, determinism) and clean stops on signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import torch

from flow_escnn.experiments import ExperimentConfig
from flow_escnn.experiments._run_folder import LOCK_NAME
from flow_escnn.experiments._runtime import load_checkpoint
from flow_escnn.experiments._training import FlowingTask, train_flowing
from tests.tiny import TINY, cli

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = dict(TINY, steps=3, eval_every=3, checkpoint_every=3)  # the tiny run, 3 steps, one evaluation
TRAIN = [sys.executable, "-m", "flow_escnn.experiments", "train"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # for the processes started here (tiny tensors)


def trained_weights(tmp_path: Path, name: str, **changes) -> dict:
    train_flowing(ExperimentConfig(**{**SWITCHES, **changes}), tmp_path / name)
    return load_checkpoint(tmp_path / name / "checkpoint.pt")


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if torch.is_tensor(a[k]) and a[k].is_floating_point())


def test_checkpointing_and_autocast_train_the_same_model(tmp_path):
    plain = trained_weights(tmp_path, "plain")
    recomputed = trained_weights(tmp_path, "ckpt", gradient_checkpointing=True)
    bf16 = trained_weights(tmp_path, "bf16", amp="bf16")
    assert max_difference(recomputed["model"], plain["model"]) == 0.0  # recomputation is the same arithmetic
    gap = max_difference(bf16["model"], plain["model"])
    assert 0.0 < gap < 1e-2  # autocast ran (the weights moved differently), and only by bf16 rounding
    assert bf16["config"]["amp"] == "bf16" and bf16["scaler"] is None


def test_fp16_keeps_its_gradient_scaler_in_the_checkpoint(tmp_path):
    payload = trained_weights(tmp_path, "fp16", amp="fp16")
    assert payload["scaler"] is not None and payload["scaler"]["scale"] > 0
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if torch.is_tensor(v) and v.is_floating_point())


def test_determinism_defaults_by_device_and_bad_values_are_refused():
    assert ExperimentConfig(**SWITCHES).resolve().deterministic is True
    assert ExperimentConfig(**SWITCHES, device="cuda").resolve().deterministic is False
    assert ExperimentConfig(**SWITCHES, device="cuda", deterministic=True).resolve().deterministic is True
    with pytest.raises(ValueError, match="amp must be one of"):
        ExperimentConfig(**SWITCHES, amp="fp8").resolve()
    with pytest.raises(ValueError, match="gradient_checkpointing must be True or False"):
        ExperimentConfig(**SWITCHES, gradient_checkpointing="yes").resolve()


def _wait_for_first_checkpoint(out: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    """Until ``proc`` owns ``out`` (its run lock names its pid) and has written a checkpoint (step >= 1):
    training, its signal handlers and its checkpoint writes are running."""
    deadline = time.monotonic() + seconds
    while not ((out / "checkpoint.pt").is_file() and _lock_pid(out) == proc.pid):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.02)


def _lock_pid(out: Path) -> Optional[int]:
    """The pid the run lock of ``out`` names (None while there is none, or it is being written)."""
    try:
        return json.loads((out / LOCK_NAME).read_text()).get("pid")
    except (OSError, ValueError):
        return None


@pytest.mark.subprocess
def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [*TRAIN, "--out", str(out), *cli(steps=100000, checkpoint_every=1, eval_every=100000)]
    proc = subprocess.Popen(cmd, cwd=str(ROOT), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_first_checkpoint(out, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped by SIGTERM after step" in lines[0] and "--resume" in lines[0], err
    step = int(load_checkpoint(out / "checkpoint.pt")["step"])
    assert 1 <= step < 100000
    resumed = subprocess.run([*TRAIN, "--out", str(out), "--resume", "--steps", str(step + 1), "--no-progress",
                              "--no-plots"], cwd=str(ROOT), env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert int(load_checkpoint(out / "checkpoint.pt")["step"]) == step + 1


@pytest.mark.subprocess
def test_kill_9_at_any_point_then_resume_continues_bit_identically(tmp_path):
    """SIGKILL leaves no chance to save: the run continues from its last (atomically written) checkpoint,
    and the resumed run ends with exactly the weights of an uninterrupted one.

    The killed run is told to take 100000 steps, so it is always killed mid-run (inside a step or a
    checkpoint write, wherever it is once its first checkpoint is seen); both runs then end 2 steps
    after the step it was killed at (the number of steps changes nothing before the last one)."""
    args = cli(checkpoint_every=1, eval_every=100000)

    def train(out: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*TRAIN, "--out", str(out), *args, *extra], cwd=str(ROOT), env=ENV, capture_output=True,
                              text=True, timeout=300)

    out = tmp_path / "killed"
    proc = subprocess.Popen([*TRAIN, "--out", str(out), *args, "--steps", "100000"], cwd=str(ROOT), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_first_checkpoint(out, proc)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(load_checkpoint(out / "checkpoint.pt")["step"])  # the last complete checkpoint
    assert 1 <= killed_at < 100000
    end = str(killed_at + 2)
    resumed = train(out, "--resume", "--steps", end)  # also: the dead run's lock is no obstacle
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob("*.tmp"))
    reference = train(tmp_path / "reference", "--steps", end)
    assert reference.returncode == 0, reference.stderr
    a, b = load_checkpoint(tmp_path / "reference" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert a["step"] == b["step"] == killed_at + 2
    assert max_difference(a["model"], b["model"]) == 0.0


@pytest.mark.compile
def test_compiled_engine_trains_the_same_model():
    """--compile runs the engine program through torch.compile: same loss and gradients as eager
    (the debug backend here; the CLI uses inductor, exercised in the slow test below)."""
    from flow_escnn.experiments._config import build_model
    from flow_escnn.experiments._training import prediction_loss

    config = ExperimentConfig(**SWITCHES).resolve()
    torch.manual_seed(0)
    eager = build_model(config)
    compiled = build_model(config)
    compiled.load_state_dict(eager.state_dict())
    assert compiled.compile_engine(backend="aot_eager") is compiled
    x = torch.rand(2, config.t_in + config.t_out, 1, config.grid_size, config.grid_size)
    losses = [prediction_loss(m, x, config) for m in (eager, compiled)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="compile must be one of"):
        ExperimentConfig(**SWITCHES, compile="fast").resolve()


@pytest.mark.compile
def test_compiled_engine_with_interpolated_transports():
    """A C8 predictor at 45 degrees per frame (the interpolated embedding_bag transport and its
    custom backward inside the compiled program, one graph): same predictions and gradients as eager."""
    from flow_escnn import FlowSet
    from flow_escnn._compat import enn, gspaces
    from flow_escnn.models import NextFramePredictor

    gs = gspaces.rot2dOnR2(8)
    torch.manual_seed(0)
    args = (enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr]), FlowSet.rotations(gs, [0, 1]))
    eager = NextFramePredictor(*args, decoder_layers=0)
    compiled = NextFramePredictor(*args, decoder_layers=0)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_engine(backend="aot_eager", fullgraph=True)  # no graph break (np.prod on shapes made three)
    x = torch.rand(2, 2, 1, 7, 7)  # one interpolated readout (frame 2), its prediction fed back once
    outs = [m(x, 2) for m in (eager, compiled)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)
    for out in outs:
        out.square().sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad / p.grad.abs().max(), p.grad / p.grad.abs().max(), rtol=0, atol=1e-5, msg=name)


@pytest.mark.slow
def test_train_with_inductor_compile_matches_eager(tmp_path):
    """``train --compile`` (inductor, about a minute of compilation on 2 cores)."""
    plain = trained_weights(tmp_path, "plain")
    compiled = trained_weights(tmp_path, "compiled", compile="default")
    assert max_difference(compiled["model"], plain["model"]) < 1e-4
    assert compiled["config"]["compile"] == "default"


def test_estimate_projects_the_run_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from flow_escnn.experiments._cli import main
    from flow_escnn.experiments._estimate import estimate_training

    out = tmp_path / "never"
    argv = ["train", "--out", str(out), *cli(steps=50), "--estimate", "2"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "s/step" in lines[0] and "projected for 50 steps" in lines[1], lines
    assert "peak memory" in lines[2] and not out.exists()

    est = estimate_training(FlowingTask(ExperimentConfig(**{**SWITCHES, "steps": 40})), steps=2)
    assert est["steps"] == 40 and est["timed_steps"] == 2
    assert est["train_s"] == pytest.approx(40 * est["step_s"])
    assert all(est[k] > 0 for k in ("step_s", "eval_s", "data_s", "peak_memory_bytes"))
    assert est["total_s"] == pytest.approx(est["train_s"] + est["eval_s"] + est["data_s"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "--estimate measures one process" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.compile
def test_compiled_classifier_engine_gives_the_same_logits_and_gradients():
    from flow_escnn import FlowSet
    from flow_escnn._compat import enn, gspaces
    from flow_escnn.models import SequenceClassifier

    gs = gspaces.rot2dOnR2(4)
    args = (enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr]), FlowSet.translations(gs, 1), 3)
    torch.manual_seed(0)
    eager = SequenceClassifier(*args, readout="mean")
    compiled = SequenceClassifier(*args, readout="mean")
    compiled.load_state_dict(eager.state_dict())
    assert compiled.compile_engine(backend="aot_eager") is compiled
    x = torch.randn(2, 3, 1, 6, 6)
    outs = [m(x) for m in (eager, compiled)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)
    for out in outs:
        out.square().sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
