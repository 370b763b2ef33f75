"""Data-parallel training under torchrun (gloo on CPU): the same steps as one process, resumable
under another number of processes, deterministic for a fixed one."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flow_escnn.experiments import ExperimentConfig
from flow_escnn.experiments._distributed import World, world_from_env
from flow_escnn.experiments._runtime import load_checkpoint
from flow_escnn.experiments._training import merge_resume_config, train_flowing
from tests.tiny import TINY, cli

ROOT = Path(__file__).resolve().parents[1]
DDP = dict(TINY, eval_every=2)  # the tiny run; a batch of 4 splits over 2 processes
CLI = cli(DDP)


def torchrun(*args: str, procs: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "flow_escnn.experiments", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=300, env=env)


def weights(path: Path) -> dict:
    model = load_checkpoint(path / "checkpoint.pt")["model"]
    return {k: v for k, v in model.items() if torch.is_tensor(v) and v.is_floating_point()}


def gap(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    straight = torchrun("--out", str(root / "two"), "--steps", "4", *CLI)
    assert straight.returncode == 0, straight.stderr
    half = torchrun("--out", str(root / "two-resumed"), "--steps", "2", *CLI)
    assert half.returncode == 0, half.stderr
    shutil.copytree(root / "two-resumed", root / "two-half")
    resumed = torchrun("--out", str(root / "two-resumed"), "--resume", "--steps", "4", "--no-progress", "--no-plots")
    assert resumed.returncode == 0, resumed.stderr
    train_flowing(ExperimentConfig(**DDP, steps=4), root / "one")
    return root


@pytest.mark.subprocess
def test_two_processes_take_the_steps_of_one(runs):
    """Each rank takes half of the same global batch; DDP averages: equal up to float addition order."""
    assert gap(weights(runs / "two"), weights(runs / "one")) <= 1e-5
    two, one = load_checkpoint(runs / "two" / "checkpoint.pt"), load_checkpoint(runs / "one" / "checkpoint.pt")
    assert abs(two["last_loss"] - one["last_loss"]) <= 1e-6 and two["step"] == one["step"] == 4
    assert (runs / "two" / "metrics.json").is_file()


@pytest.mark.subprocess
def test_resume_under_the_same_world_size_is_bit_identical(runs):
    assert gap(weights(runs / "two-resumed"), weights(runs / "two")) == 0.0


@pytest.mark.subprocess
def test_resume_under_another_world_size(runs, tmp_path):
    """A 2-process checkpoint (step 2) continues in one process: checkpoints hold the unwrapped model."""
    shutil.copytree(runs / "two-half", tmp_path / "run")
    payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["step"] == 2 and not any(k.startswith("module.") for k in payload["model"])
    config = merge_resume_config(ExperimentConfig.from_dict(payload["config"]), {"steps": 4})
    train_flowing(config, tmp_path / "run", resume=True)
    assert gap(weights(tmp_path / "run"), weights(runs / "one")) <= 1e-5


def test_world_from_env_and_batch_split(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world_from_env() == World()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    w = world_from_env()
    assert (w.rank, w.size, w.local_rank, w.is_main) == (2, 4, 2, False)
    assert w.shard(torch.arange(8)).tolist() == [4, 5]
    with pytest.raises(ValueError, match="does not split into 4 equal shards"):
        w.check_batch(6)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="inconsistent torchrun environment"):
        world_from_env()
