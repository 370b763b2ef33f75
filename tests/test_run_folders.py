"""Run folders lose nothing: one owner at a time, no run replaced, evaluations beside training runs,
failed writes reported in one line, and the CLI's parse-time and data-file errors (issue 21)."""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flow_escnn.experiments import ExperimentConfig
from flow_escnn.experiments._cli import main
from flow_escnn.experiments._evaluation import evaluate_checkpoint
from flow_escnn.experiments._run_folder import (
    LOCK_NAME,
    RunFolderBusy,
    RunFolderError,
    claim_run_folder,
    folder_owner,
)
from flow_escnn.experiments._runtime import OutputWriteError, save_checkpoint, write_json
from flow_escnn.experiments._training import train_flowing
from flow_escnn.models._config import ClassifierConfig
from tests.tiny import TINY, cli, write_tiny_kth

ROOT = Path(__file__).resolve().parents[1]
E = [sys.executable, "-m", "flow_escnn.experiments"]


def _hold_lock(folder: Path) -> subprocess.Popen:
    """A process (no torch: it starts fast) holding ``folder``'s run lock until killed."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'{\"pid\": %d, \"command\": \"holder\"}' % os.getpid()); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _train(out: Path, *extra: str) -> int:
    return main(["train", "--out", str(out), "--steps", "2", *cli(), *extra])


def _error(capsys, code: int = 2) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- ownership --------------------------------------------------------------------------------------------------
def test_a_folder_in_use_is_refused_and_a_killed_owner_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "run"
    holder = _hold_lock(out)
    try:
        assert "holder" in folder_owner(out)
        with pytest.raises(RunFolderBusy, match=rf"{out} is in use by another run \(pid {holder.pid}"):
            with claim_run_folder(out, "train"):
                pass
    finally:
        holder.kill()  # kill -9: no chance to clean up
        holder.wait()
    assert folder_owner(out) is None  # the OS dropped the lock with its process
    with claim_run_folder(out, "train") as folder:
        assert folder == out and "train" in (out / LOCK_NAME).read_text()
        with claim_run_folder(out, "train"):  # re-entrant within the owner
            pass
        assert f"pid {os.getpid()}" in folder_owner(out)
    assert folder_owner(out) is None


def test_the_owner_holds_a_lock_that_other_processes_see(tmp_path):
    """A claim holds the OS lock that a second process meets (a probe without torch: it starts
    fast); once the claim ends the probe takes it (control). The same with a second
    ``claim_run_folder`` in a process of its own: the subprocess test below."""
    out = tmp_path / "run"
    code = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\ntry:\n"
            "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    print('busy')\n"
            "else:\n    print('taken')")
    with claim_run_folder(out, "train"):
        probe = subprocess.run([sys.executable, "-c", code, str(out / LOCK_NAME)], capture_output=True, text=True)
    assert probe.stdout.strip() == "busy", probe.stderr
    again = subprocess.run([sys.executable, "-c", code, str(out / LOCK_NAME)], capture_output=True, text=True)
    assert again.stdout.strip() == "taken", again.stderr


@pytest.mark.subprocess
def test_a_second_process_is_refused_while_the_first_owns_the_folder(tmp_path):
    """The control of the ownership test: the same claim from a *second process* fails."""
    out = tmp_path / "run"
    code = ("import sys; from flow_escnn.experiments._run_folder import claim_run_folder\n"
            "try:\n    claim_run_folder(sys.argv[1], 'probe').__enter__()\nexcept ValueError as e:\n    print(e)\n"
            "else:\n    print('claimed')")
    with claim_run_folder(out, "train"):
        probe = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=ROOT)
    assert "is in use by another run" in probe.stdout and f"pid {os.getpid()}" in probe.stdout, probe.stderr
    again = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=ROOT)
    assert again.stdout.strip() == "claimed"


def test_overwrite_never_moves_a_sub_folder_another_process_owns(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    holder = _hold_lock(out / "evaluation")
    try:
        with pytest.raises(SystemExit):
            _train(out, "--overwrite")
        assert "evaluation is in use by another run" in _error(capsys)
        assert (out / "checkpoint.pt").is_file() and not list(out.glob("replaced-*"))
    finally:
        holder.kill()
        holder.wait()


# -- nothing replaced -----------------------------------------------------------------------------------------
def test_a_fresh_run_refuses_a_folder_whose_checkpoint_is_gone(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    (out / "checkpoint.pt").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME}
    with pytest.raises(SystemExit) as exc:
        _train(out, "--seed", "9")
    assert exc.value.code == 2 and "already holds a run (config.json, metrics.csv, metrics.json)" in _error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME} == before
    # the Python function refuses too; --overwrite (overwrite=True) moves the old files aside first
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_flowing(ExperimentConfig(**TINY, steps=1), out)
    assert _train(out, "--seed", "9", "--overwrite") == 0
    (kept,) = out.glob("replaced-*")
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
    assert json.loads((out / "config.json").read_text())["seed"] == 9


def test_overwrite_moves_only_what_a_run_wrote(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my thesis")
    with pytest.raises(SystemExit):
        _train(out, "--overwrite")
    assert "holds files that no flow_escnn run wrote (notes.txt)" in _error(capsys)
    assert (out / "notes.txt").read_text() == "my thesis" and not list(out.glob("replaced-*"))
    with pytest.raises(SystemExit):
        _train(out)
    assert "already holds a run (notes.txt)" in _error(capsys)


def test_evaluate_never_writes_into_the_training_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for target in (str(out), f"{out}/", str(out / "." / "")):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", str(out / "checkpoint.pt"), "--out", target, "--no-plots"])
        assert exc.value.code == 2 and "would replace the training run's metrics.json" in _error(capsys)
    with pytest.raises(RunFolderError, match="would replace"):
        evaluate_checkpoint(out / "checkpoint.pt", out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the default goes beside it; a second evaluation there is refused, and --overwrite keeps the first
    assert main(["evaluate", str(out / "checkpoint.pt"), "--no-plots"]) == 0
    first = (out / "evaluation" / "metrics.json").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["evaluate", str(out / "checkpoint.pt"), "--no-plots"])
    assert "already holds a run" in _error(capsys)
    assert main(["evaluate", str(out / "checkpoint.pt"), "--no-plots", "--overwrite"]) == 0
    (kept,) = (out / "evaluation").glob("replaced-*")
    assert (kept / "metrics.json").read_bytes() == first
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("command", ["train", "evaluate", "demo", "kth"])
def test_an_empty_out_is_refused(tmp_path, capsys, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = {"train": ["train", *cli()], "evaluate": ["evaluate", str(tmp_path / "c.pt")], "demo": ["demo"],
            "kth": ["kth", "--root", str(tmp_path)]}[command]
    if command == "evaluate":
        save_checkpoint(tmp_path / "c.pt", {"model": {}, "config": {}})
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", ""])
    assert exc.value.code == 2 and "--out is empty" in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["c.pt"] if command == "evaluate" else [])


# -- failed writes ------------------------------------------------------------------------------------------------
@pytest.fixture
def file_size_limit():
    """``limit(n)``: lower the soft file-size limit (``ulimit -f``) to ``n`` bytes for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    yield lambda n: resource.setrlimit(resource.RLIMIT_FSIZE, (n, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_one_and_leaves_no_partial_file(tmp_path, file_size_limit):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(100)})
    before = path.read_bytes()
    file_size_limit(20_000)
    with pytest.raises(OutputWriteError, match=rf"could not write {path}: the file-size limit was reached .*"
                       rf"the previous checkpoint at {path} is kept"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(100_000)})
    with pytest.raises(OutputWriteError, match="no earlier file was there"):
        write_json(tmp_path / "metrics.json", {"x": "y" * 50_000})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    save_checkpoint(path, {"step": 3, "w": torch.zeros(10)})  # control: a write under the limit works
    assert torch.load(path, weights_only=True)["step"] == 3


def test_an_unwritable_out_is_one_line(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(SystemExit) as exc:
        _train(tmp_path / "locked" / "run")
    assert exc.value.code == 2
    assert f"cannot write --out {tmp_path / 'locked' / 'run'}: Permission denied" in _error(capsys)


def test_an_unwritable_out_on_a_real_file_system(tmp_path, capsys):
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = tmp_path / "ro" / "run"
    else:  # root writes anywhere but in sysfs (Linux)
        target = Path("/sys/flow_escnn_run")
        try:
            target.mkdir()
        except OSError:
            pass
        else:
            target.rmdir()
            pytest.skip("no folder here that this user cannot write to")
    with pytest.raises(SystemExit) as exc:
        _train(target)
    assert exc.value.code == 2 and f"cannot write --out {target}" in _error(capsys)


# -- the CLI's other one-line errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value", [
    ("--lr", "1e38"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--grad-clip", "-inf"),
    ("--one-step-weight", "1e300"), ("--progress-every", "nan"),
])
def test_non_finite_or_overflowing_hyper_parameters_are_refused_at_parse_time(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "r"), *cli(), f"{option}={value}"])
    assert exc.value.code == 2 and "must be a finite number" in _error(capsys)
    assert not (tmp_path / "r").exists()


def test_non_finite_hyper_parameters_are_refused_by_the_config_too():
    for bad in (dict(lr=1e38), dict(lr=float("inf")), dict(grad_clip=float("nan")), dict(one_step_weight=1e7)):
        with pytest.raises(ValueError, match="must be a finite number"):
            ExperimentConfig(**TINY, **bad).resolve()
    ExperimentConfig(**TINY, lr=1e3, grad_clip=0.0).resolve()  # control: large but finite values pass


@pytest.mark.parametrize("flow, option, value, who", [
    ("translation", "flow_steps", "1", "flow kinds rotation, both"),
    ("translation", "interpolation", "bilinear", "flow kinds rotation, both"),
    ("rotation", "flow_radius", 1, "flow kinds translation, both"),
    ("translation", "velocity_kernel_size", 3, "models grnn_plus"),
])
def test_an_option_the_run_does_not_use_is_refused(tmp_path, capsys, flow, option, value, who):
    rotating = dict(group=4, hidden_channels=4, train_velocities="90/90", test_velocities="90/90")
    args = cli(flow=flow, **(rotating if flow == "rotation" else {}))
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(tmp_path / "r"), "--steps", "1", *args, f"--{option.replace('_', '-')}", str(value)])
    line = _error(capsys)
    assert exc.value.code == 2 and f"--{option.replace('_', '-')} does nothing" in line and who in line
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))
    # control: the same option on a run that uses it passes the check
    used = {"flow_steps": dict(flow="rotation", group=4, hidden_channels=4),
            "interpolation": dict(flow="rotation", group=8, hidden_channels=8),
            "flow_radius": dict(flow="translation"), "velocity_kernel_size": dict(model="grnn_plus")}[option]
    c = ExperimentConfig(**{**TINY, "train_velocities": None, "test_velocities": None, **used, option: value})
    c.resolve().check_given([option])


def test_option_checks_name_who_takes_the_option():
    c = ExperimentConfig(**TINY).resolve()
    with pytest.raises(ValueError, match=r"--flow-steps does nothing for model 'fernn' \(cell 'fernn', flow "
                                         r"'translation'\): it applies to models fernn and grnn_plus with flow kinds "
                                         r"rotation, both"):
        c.check_given(["flow_steps"])
    with pytest.raises(ValueError, match="applies to model conv3d"):
        ClassifierConfig(model="fernn", flow_radius=1).check_given(["conv3d_channels"])
    with pytest.raises(ValueError, match="--hidden-channels does nothing for model 'conv3d': it applies to the recurrent"):
        ClassifierConfig(model="conv3d").check_given(["hidden_channels"])
    ExperimentConfig(**TINY).resolve().check_given(list(TINY))  # control: the tiny run uses all its options


def test_garbage_mnist_files_are_one_line(tmp_path, capsys):
    digits = tmp_path / "mnist"
    digits.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (digits / name).write_bytes(b"\x00\x00\x08\x03garbage")
    code = main(["train", "--out", str(tmp_path / "r"), "--steps", "1", *cli(digits=str(digits))])
    assert code == 2
    line = _error(capsys)
    assert line.startswith("error: ") and "train-images-idx3-ubyte" in line


def test_a_bad_kth_clip_is_named(tmp_path, capsys):
    root = write_tiny_kth(tmp_path / "kth")
    bad = root / "boxing" / "person01_boxing_d1_uncomp.npy"
    bad.write_bytes(b"not a numpy file at all, just text" * 4)
    code = main(["kth", "--root", str(root), "--out", str(tmp_path / "k"), "--num-frames", "4", "--size", "8",
                 "--steps", "1", "--batch-size", "2", "--hidden-channels", "2", "--train-velocities", "1",
                 "--no-progress"])
    assert code == 2 and str(bad) in _error(capsys)


# -- whole commands in their own processes ------------------------------------------------------------------------
def _popen(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, **kw)


def _wait_for_checkpoint(folder: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not (folder / "checkpoint.pt").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run wrote no checkpoint"
        time.sleep(0.1)


@pytest.mark.subprocess
@pytest.mark.parametrize("launcher", ["python", "torchrun"])
def test_two_trainings_into_one_folder_the_second_refuses(tmp_path, launcher):
    """The issue's command: two trainings into one --out at once, plain and under torchrun (2 processes)."""
    if launcher == "torchrun":
        start = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "flow_escnn.experiments"]
    else:
        start = E
    out = tmp_path / "R"
    args = ["train", "--out", str(out), *cli(checkpoint_every=1, eval_every=1000)]
    first = _popen([*start, *args, "--steps", "100000", "--seed", "1"])
    try:
        _wait_for_checkpoint(out, first)
        second = _popen([*start, *args, "--steps", "3", "--seed", "2"])
        _, err = second.communicate(timeout=300)
        assert second.returncode != 0
        assert f"--out {out} is in use by another run (pid" in err, err
        assert json.loads((out / "config.json").read_text())["seed"] == 1
        first.send_signal(signal.SIGTERM)  # the first run stops cleanly and keeps its files
        _, err = first.communicate(timeout=300)
        assert "continue with" in err and "--resume" in err, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["config"]["seed"] == 1 and saved["step"] >= 1


@pytest.mark.subprocess
def test_kill_9_frees_the_folder_and_a_full_disk_is_one_line(tmp_path):
    out = tmp_path / "R"
    args = ["train", "--out", str(out), *cli(checkpoint_every=1, eval_every=1000)]
    first = _popen([*E, *args, "--steps", "100000"])
    _wait_for_checkpoint(out, first)
    first.kill()
    first.wait()
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    before = (out / "checkpoint.pt").read_bytes()

    def limit():  # ulimit -f: the checkpoint (about 30 kB) no longer fits, config.json does
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))

    again = _popen([*E, *args, "--steps", str(step + 3), "--resume"], preexec_fn=limit)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 2, err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert f"could not write {out / 'checkpoint.pt'}: the file-size limit was reached" in line
    assert "is kept" in line and "--resume" in line
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not list(out.glob("*.tmp"))
