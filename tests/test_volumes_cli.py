"""``python -m flow_escnn.experiments volumes``: 3D FERNN / G-RNN next-frame runs on flowing volumes.

Tiny runs (a 6^3 torus, a few sequences, 2-4 steps) through the CLI in this process: what metrics.json
holds, the default velocity split and V, exact resume, and the one-line errors of options that do not
fit. One test starts the command as a process (``-m subprocess``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flow_escnn.experiments._cli import main
from flow_escnn.experiments._volumes import VolumeExperimentConfig, load_volume_model

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--grid-size", "6", "--num-train", "8", "--num-val", "2", "--num-test", "2", "--t-in", "2", "--t-out", "2",
        "--rollout", "3", "--batch-size", "2", "--hidden-fields", "1", "--eval-every", "2", "--checkpoint-every", "2",
        "--no-progress"]


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _same(a, b) -> bool:
    """Bit-identical state: tensors by ``torch.equal``, dicts (extra states) key by key, the rest by ``==``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_a_tiny_run_writes_its_metrics_and_plots(tmp_path, capsys):
    out = tmp_path / "f"
    assert main(["volumes", "--out", str(out), "--steps", "2", *TINY]) == 0
    m = _metrics(out)
    assert m["model"] == "fernn" and m["num_flows"] == 27 and m["steps"] == 2
    assert len(m["rollout_mse_per_step"]) == 3 and len(m["rollout_mse_per_step_unseen"]) == 3
    assert m["test_mse"] == pytest.approx(sum(m["rollout_mse_per_step"][:2]) / 2)
    assert m["test_mse_unseen"] == pytest.approx(sum(m["rollout_mse_per_step_unseen"][:2]) / 2)
    # the default split: train on vz = 0, test on the 18 velocities with vz = +-1, all of them in the FERNN's V
    assert len(m["velocities_seen"]) == 9 and all(k.endswith(",0)") for k in m["velocities_seen"])
    assert len(m["velocities_unseen"]) == 18 and not any(k.endswith(",0)") for k in m["velocities_unseen"])
    assert m["config"]["flow_radius"] == 1 and m["config"]["symmetry"] == "c4z"
    assert {p.name for p in out.glob("*.png")} == {"mse_per_step.png", "val_curve.png"}
    text = capsys.readouterr().out
    assert "MSE unseen v" in text and "|V| = 27" in text
    model, config, _ = load_volume_model(out / "checkpoint.pt")
    x = torch.rand(1, 2, 1, 6, 6, 6)
    assert model(x, 3).shape == (1, 3, 1, 6, 6, 6) and isinstance(config, VolumeExperimentConfig)


def test_the_grnn_has_one_velocity_and_the_same_parameters(tmp_path):
    out = tmp_path / "g"
    assert main(["volumes", "--out", str(out), "--model", "grnn", "--steps", "1", "--no-plots", *TINY]) == 0
    assert main(["volumes", "--out", str(tmp_path / "f"), "--steps", "1", "--no-plots", *TINY]) == 0
    g, f = _metrics(out), _metrics(tmp_path / "f")
    assert g["num_flows"] == 1 and g["num_parameters"] == f["num_parameters"]
    assert g["test_mse_unseen"] is not None


def test_resume_after_two_steps_is_bit_identical_to_four_steps(tmp_path):
    once, twice = tmp_path / "once", tmp_path / "twice"
    assert main(["volumes", "--out", str(once), "--steps", "4", "--no-plots", *TINY]) == 0
    assert main(["volumes", "--out", str(twice), "--steps", "2", "--no-plots", *TINY]) == 0
    halfway = torch.load(twice / "checkpoint.pt", weights_only=True)["model"]
    assert main(["volumes", "--out", str(twice), "--steps", "4", "--resume", "--no-plots", *TINY]) == 0
    a = torch.load(once / "checkpoint.pt", weights_only=True)
    b = torch.load(twice / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    assert _same(a["model"], b["model"]) and _same(a["optimizer"], b["optimizer"])
    assert _metrics(once)["test_mse"] == _metrics(twice)["test_mse"]
    assert not _same(a["model"], halfway)  # the control: the comparison sees two steps


@pytest.mark.parametrize("extra, message", [
    (["--group", "4"], "take their group from --symmetry"),
    (["--flow", "translation"], "invalid choice"),
    (["--model", "grnn_plus"], "invalid choice"),
    (["--model", "grnn", "--flow-radius", "1"], "the G-RNN has no flow set"),
    (["--flow-steps", "1"], "--flow-steps does nothing"),
    (["--velocities", "1:0"], "vx:vy:vz"),
    (["--test-velocities", "0:0:0,1:0:0"], "holds training velocities only"),
    (["--rollout", "1"], "rollout=1 must be at least t_out=2"),
    (["--kernel-size", "4"], "kernel_size"),
    (["--digits", "mnist"], "--digits does nothing"),
    (["--resume"], "no checkpoint"),
])
def test_options_that_do_not_fit_are_one_line_errors(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(["volumes", "--out", str(tmp_path / "v"), "--steps", "1", *TINY, *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err, err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "v" / "checkpoint.pt").exists()


def test_a_fresh_run_refuses_a_folder_that_holds_one(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["volumes", "--out", str(out), "--steps", "1", "--no-plots", *TINY]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["volumes", "--out", str(out), "--steps", "1", "--no-plots", *TINY])
    assert exc.value.code == 2 and "already holds a run" in capsys.readouterr().err


def test_the_velocity_split_and_v_follow_the_options():
    c = VolumeExperimentConfig(velocities="1:0:0,0:1:0", test_velocities="2", grid_size=8).resolve()
    assert c.train_rows() == [(1, 0, 0), (0, 1, 0)]
    assert len(c.unseen_rows()) == 125 - 2 and c.flow_radius == 2 and len(c.flows) == 125
    every = VolumeExperimentConfig(velocities="1").resolve()  # the training set covers [-1, 1]^3: no unseen test
    assert every.unseen_rows() == [] and every.test_velocities is None
    assert len(VolumeExperimentConfig(model="grnn").resolve().flows) == 1


@pytest.mark.subprocess
def test_the_command_runs_as_a_process(tmp_path):
    out = tmp_path / "p"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "flow_escnn.experiments", "volumes"]
    done = subprocess.run([*command, "--out", str(out), "--steps", "2", "--no-plots", *TINY], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "test MSE" in done.stdout and (out / "metrics.json").is_file()
    bad = subprocess.run([*command, "--out", str(tmp_path / "b"), "--group", "2", *TINY], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "from --symmetry" in bad.stderr


def test_volumes_help_shows_its_own_defaults_and_hides_the_planar_options(capsys):
    """The shared options under ``volumes`` say the volume defaults (400 steps, batch 4, lr 0.005, identity
    init 0.8, V over [-R, R]^3) and hide --group / --flow-steps, which it refuses; ``train`` keeps its own help."""
    from flow_escnn.experiments._parser import build_parser

    help_text = {}
    for command in ("volumes", "train"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        help_text[command] = " ".join(capsys.readouterr().out.split())
    volumes, train = help_text["volumes"], help_text["train"]
    for text in ("optimisation steps (default 400)", "mini-batch size (4)", "Adam learning rate (0.005)", "[-R,R]^3",
                 "escnn's random init (default 0.8)"):
        assert text in volumes, text
    assert "--group GROUP" not in volumes and "--flow-steps FLOW_STEPS" not in volumes
    assert "Adam learning rate (1e-3)" in train and "--group GROUP" in train  # the control: train's help is unchanged
    assert "(default 0; volumes 0.8)" in train
