"""Evaluation in seconds and an honest ``--estimate`` (issue 26.3, 26.4): functional tests, no timing.

* the evaluation predicts every set once, under no_grad, in full batches of ``eval_batch_size`` (a batch
  may span the per-velocity sets) and gives the same MSEs as set-by-set evaluation;
* the sets are generated once per run, and a caller's data is reused;
* it reports progress lines as training does (``evaluate fernn: sequence N/M``), and
  ``evaluate_checkpoint`` without a progress factory logs them (``-v``);
* ``--estimate`` counts compilation in the projection and says in one line whether it pays off.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from flow_escnn.experiments import ExperimentConfig
from flow_escnn.experiments._cli import main
from flow_escnn.experiments._datasets import ExperimentData
from flow_escnn.experiments._estimate import estimate_training, format_estimate, project
from flow_escnn.experiments._evaluation import evaluate_checkpoint, evaluate_model, mse_per_set, mse_per_step
from flow_escnn.experiments._runtime import load_checkpoint
from flow_escnn.experiments._training import FlowingTask, build_model, train_flowing
from tests.tiny import TINY, cli

EVAL = dict(TINY, num_test=5, num_per_velocity=3, eval_batch_size=4)  # 5 test + 25 x 3 per-velocity sequences


class Recorder:
    """A progress bar that keeps what it was told."""

    def __init__(self, **kwargs):
        self.kwargs, self.updates, self.closed = kwargs, [], False

    def update(self, n=1):
        self.updates.append(n)

    def set_postfix(self, **kw):
        pass

    def close(self):
        self.closed = True


class Spy(torch.nn.Module):
    """Wraps a predictor, recording each call's batch size and whether autograd was on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, steps):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        return self.model(x, steps)


def _setup(**changes):
    config = ExperimentConfig(**{**EVAL, **changes}).resolve()
    torch.manual_seed(0)
    return config, build_model(config), ExperimentData(config)


def test_evaluation_runs_full_batches_without_autograd_and_reports_progress():
    config, model, data = _setup()
    spy = Spy(model)
    bars = []
    metrics = evaluate_model(spy, config, data, progress=lambda **kw: bars.append(Recorder(**kw)) or bars[-1])
    sizes = [n for n, _ in spy.calls]
    assert not any(grad for _, grad in spy.calls)
    assert sizes == [4, 1] + [4] * 18 + [3]  # the test set, then 75 per-velocity sequences as one stream
    (bar,) = bars
    assert bar.kwargs == {"total": 80, "initial": 0, "desc": "evaluate fernn", "unit": "sequence"}
    assert sum(bar.updates) == 80 and bar.closed
    # the same MSEs as set by set, one batch per set
    for key, frames in data.per_velocity().items():
        alone = mse_per_step(model, frames, config.t_in, config.t_out, 64).mean()
        assert metrics["mse_per_velocity"][key] == pytest.approx(float(alone), rel=1e-6, abs=1e-12)
    assert metrics["test_mse"] == pytest.approx(
        float(mse_per_step(model, data.test(), config.t_in, config.t_out, 64).mean()), rel=1e-6)


def test_mse_per_set_splits_batches_across_sets():
    torch.manual_seed(0)
    sets = [torch.rand(n, 5, 1, 6, 6) for n in (3, 1, 6)]

    class Last(torch.nn.Module):  # predicts every frame as the last input frame
        def forward(self, x, steps):
            return x[:, -1:].expand(-1, steps, -1, -1, -1)

    got = mse_per_set(Last(), sets, 2, 3, batch_size=4)
    for frames, curve in zip(sets, got):
        want = (frames[:, 1:2] - frames[:, 2:5]).double().pow(2).mean(dim=(0, 2, 3, 4)).numpy()
        np.testing.assert_allclose(curve, want, rtol=1e-12)
    with pytest.raises(ValueError, match="need t_in \\+ horizon = 6"):
        mse_per_set(Last(), sets, 2, 4, batch_size=4)


def test_each_set_is_generated_once_per_run(tmp_path, monkeypatch):
    import flow_escnn.experiments._datasets as datasets

    made = []
    real = datasets.FlowingMNIST

    def counting(source, split, **kw):
        made.append(split)
        return real(source, split, **kw)

    monkeypatch.setattr(datasets, "FlowingMNIST", counting)
    train_flowing(ExperimentConfig(**dict(EVAL, steps=2)), tmp_path / "run")
    assert sorted(made) == ["test", "train", "val"]  # validation every step and the final evaluation: no regeneration
    made.clear()
    config = ExperimentConfig.from_dict(load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]).resolve()
    data = ExperimentData(config)
    data.test()
    made.clear()
    evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "eval", data=data)
    assert made == []  # the caller's sets (which its plots use too)
    evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", tmp_path / "eval2", overrides={"num_test": 3}, data=data)
    assert made == ["test"]  # control: data of another config is not used


def test_progress_lines_of_the_final_evaluation(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--progress-every", "0", *cli(EVAL, progress=True)]) == 0
    err = capsys.readouterr().err
    assert "train fernn: step 1/1 (100%)" in err
    assert "evaluate fernn: sequence 80/80 (100%)" in err and "sequences/s" in err
    assert main(["train", "--out", str(tmp_path / "quiet"), "--steps", "1", *cli(EVAL)]) == 0
    assert "evaluate fernn" not in capsys.readouterr().err  # control: --no-progress
    with caplog.at_level(logging.INFO, logger="flow_escnn.experiments._evaluation"):
        evaluate_checkpoint(out / "checkpoint.pt")  # the library default: lines to the log (the CLI's -v)
    assert any("evaluate fernn: sequence 80/80 (100%)" in r.getMessage() for r in caplog.records)


def test_world_evaluation_reports_progress(tmp_path):
    from flow_escnn.experiments._world import WorldExperimentConfig, train_world

    bars = []
    config = WorldExperimentConfig(digits="synthetic", world_size=12, view_size=8, digit_size=5, num_digits=2,
                                   num_train=8, num_val=4, num_test=4, t_in=3, t_out=2, rollout=6, batch_size=4,
                                   hidden_channels=2, eval_every=2, checkpoint_every=2, steps=2)
    train_world(config, tmp_path / "w", progress=lambda **kw: bars.append(Recorder(**kw)) or bars[-1])
    final = bars[-1]
    assert final.kwargs["desc"].startswith("evaluate") and final.kwargs["unit"] == "episode"
    assert sum(final.updates) == 4 and final.closed


# -- --compile honesty ---------------------------------------------------------------------------------------------
#: What a fake timer would have measured in the issue: a 174 s first compiled step, 0.126 s compiled steps,
#: 0.082 s eager ones.
ISSUE = dict(first_step_s=174.0, step_s=0.126, eval_warmup_s=6.0, eval_sample_s=0.01, data_sample_s=0.001)
EAGER = dict(first_step_s=0.3, step_s=0.082, eval_warmup_s=0.1, eval_sample_s=0.008, data_sample_s=0.001)
WORK = dict(steps=25, eval_samples=100.0, generated=1000.0)


def test_projection_counts_compilation_once():
    p = project(ISSUE, WORK, compiled=True, eager=EAGER)
    assert p["compile_s"] == pytest.approx(174.0 - 0.126 + 6.0)
    assert p["train_s"] == pytest.approx(25 * 0.126) and p["eval_s"] == pytest.approx(1.0)
    assert p["data_s"] == pytest.approx(1.0)
    assert p["total_s"] == pytest.approx(p["compile_s"] + p["train_s"] + p["eval_s"] + p["data_s"])
    assert p["total_s"] > 174  # the issue's projection of 3.2 s left this out
    assert p["eager_total_s"] == pytest.approx(25 * 0.082 + 0.8 + 1.0)
    assert p["compile_pays_off"] is False and p["break_even_steps"] is None  # the compiled step is slower
    faster = dict(ISSUE, step_s=0.05)
    p = project(faster, WORK, compiled=True, eager=EAGER)
    assert p["break_even_steps"] == int(np.ceil((174.0 - 0.05 + 6.0) / 0.032))
    assert p["compile_pays_off"] is False  # repaid only after ~5600 steps; the run has 25
    p = project(faster, dict(WORK, steps=100_000), compiled=True, eager=EAGER)
    assert p["compile_pays_off"] is True
    eager_only = project(EAGER, WORK, compiled=False)
    assert eager_only["compile_s"] == 0.0 and "eager_total_s" not in eager_only
    assert eager_only["total_s"] == pytest.approx(25 * 0.082 + 0.8 + 1.0)


def _estimate_dict(measured, work, compiled, eager=None):
    return {"device": "CPU, 2 threads", "timed_steps": 3, "step_s": measured["step_s"],
            "first_step_s": measured["first_step_s"], "steps": work["steps"], "compiled": compiled,
            **project(measured, work, compiled, eager), "peak_memory_bytes": 2**30, "memory_kind": "test"}


def test_estimate_says_in_one_line_whether_compilation_pays_off():
    lines = format_estimate(_estimate_dict(ISSUE, WORK, True, EAGER)).splitlines()
    assert len(lines) == 4
    assert "compiling took" in lines[0] and lines[1].startswith("projected for 25 steps: compilation 3.0 min + ")
    assert lines[2].startswith("--compile does not pay off on this device: a compiled step takes 0.126 s, an eager "
                               "one 0.082 s"), lines[2]
    assert "without --compile the run projects to 3.9 s" in lines[2]
    faster = dict(ISSUE, step_s=0.05)
    line = format_estimate(_estimate_dict(faster, WORK, True, EAGER)).splitlines()[2]
    assert line.startswith("--compile does not pay off for this run") and "the run has 25" in line
    line = format_estimate(_estimate_dict(faster, dict(WORK, steps=100_000), True, EAGER)).splitlines()[2]
    assert line.startswith("--compile pays off: 1.64x faster steps"), line
    assert len(format_estimate(_estimate_dict(EAGER, WORK, False)).splitlines()) == 3  # control: no --compile


def test_estimate_of_an_eager_run_is_unchanged_in_form():
    est = estimate_training(FlowingTask(ExperimentConfig(**dict(TINY, steps=40))), steps=2)
    assert est["compiled"] is False and est["compile_s"] == 0.0 and "eager_step_s" not in est
    assert est["train_s"] == pytest.approx(40 * est["step_s"])
    assert est["total_s"] == pytest.approx(est["train_s"] + est["eval_s"] + est["data_s"])


@pytest.mark.slow
def test_estimate_with_compile_times_eager_steps_too():
    """Real inductor compilation of the tiny model (a minute or more on 2 cores)."""
    est = estimate_training(FlowingTask(ExperimentConfig(**dict(TINY, steps=40, compile="default"))), steps=2)
    assert est["compiled"] is True and est["compile_s"] > 0 and est["eager_step_s"] > 0
    assert est["total_s"] == pytest.approx(est["compile_s"] + est["train_s"] + est["eval_s"] + est["data_s"])
    assert est["total_s"] > est["first_step_s"] - est["step_s"]  # the first step's compilation is in the total
    lines = format_estimate(est).splitlines()
    assert len(lines) == 4 and lines[2].startswith("--compile ")
