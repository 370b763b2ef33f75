"""Live metrics (issue 25.10): ``metrics.csv`` gets one row per evaluation while the run goes on, a resumed
run continues it without duplicated steps, ``--tensorboard`` writes the same scalars (or refuses in one line
when the package is missing), and under data parallelism only rank 0 writes."""
from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from flow_escnn.experiments import ExperimentConfig
from flow_escnn.experiments._cli import main
from flow_escnn.experiments._distributed import World
from flow_escnn.experiments._progress import METRICS_CSV, MetricsLog, TensorBoardMissingError
from flow_escnn.experiments._training import FlowingTask, merge_resume_config, train_flowing
from tests.tiny import TINY, cli, write_tiny_kth

COLUMNS = ["step", "wall_time", "train_time_s", "train_loss", "val_mse", "lr", "eval_time_s"]


def _rows(folder: Path) -> list:
    with open(folder / METRICS_CSV, newline="") as f:
        return list(csv.DictReader(f))


def _curve(folder: Path) -> list:
    return json.loads((folder / "metrics.json").read_text())["val_curve"]


def test_one_row_per_evaluation_written_while_the_run_goes_on(tmp_path):
    """Every evaluation's row is on disk (flushed) before the next step starts; the numbers are the run's."""
    out = tmp_path / "run"
    seen = []

    class Spy:  # a progress bar: set_postfix comes right after an evaluation's row is written
        def update(self, n: int = 1) -> None:
            pass

        def set_postfix(self, **kw: object) -> None:
            seen.append([r["step"] for r in _rows(out)])

        def close(self) -> None:
            pass

    train_flowing(ExperimentConfig(**dict(TINY, steps=4, eval_every=2, lr=2e-3)), out,
                  progress=lambda **kw: Spy())
    assert seen == [["2"], ["2", "4"]]  # readable mid-run, one row per evaluation
    rows = _rows(out)
    assert list(rows[0]) == COLUMNS
    curve = _curve(out)
    assert [int(r["step"]) for r in rows] == [p["step"] for p in curve] == [2, 4]
    for row, point in zip(rows, curve):
        assert float(row["val_mse"]) == point["val_mse"] and float(row["train_loss"]) == point["train_loss"]
        assert float(row["train_time_s"]) == point["train_time_s"] and float(row["lr"]) == 2e-3
        assert float(row["eval_time_s"]) > 0
    assert float(rows[0]["wall_time"]) <= float(rows[1]["wall_time"])


def test_resume_continues_the_file_without_duplicated_steps(tmp_path):
    """A run stopped after evaluating steps 3 and 4 but last checkpointed at step 2: resuming drops the
    rows past step 2 and writes them again; the values equal an uninterrupted run's (exact resume)."""
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["train", "--out", str(straight), *cli(steps=4)]) == 0
    assert main(["train", "--out", str(run), *cli(steps=2)]) == 0
    shutil.copy(run / "checkpoint.pt", tmp_path / "step2.pt")
    assert main(["train", "--out", str(run), "--resume", *cli(steps=4)]) == 0
    assert [r["step"] for r in _rows(run)] == ["1", "2", "3", "4"]
    shutil.copy(tmp_path / "step2.pt", run / "checkpoint.pt")  # the rows of steps 3, 4 are now past the checkpoint
    first = _rows(run)
    assert main(["train", "--out", str(run), "--resume", *cli(steps=4)]) == 0
    rows = _rows(run)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[:2] == first[:2]  # kept as written
    assert rows[2]["wall_time"] != first[2]["wall_time"]  # written again
    assert [r["val_mse"] for r in rows] == [r["val_mse"] for r in _rows(straight)]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in _rows(straight)]


def test_resume_of_a_run_without_the_file_starts_it_from_the_checkpoint_curve(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *cli(steps=2)]) == 0
    (run / METRICS_CSV).unlink()  # a run folder written before metrics.csv existed
    assert main(["train", "--out", str(run), "--resume", *cli(steps=3)]) == 0
    rows = _rows(run)
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert [float(r["val_mse"]) for r in rows] == [p["val_mse"] for p in _curve(run)]
    assert rows[0]["wall_time"] == "" and rows[2]["wall_time"] != ""  # unknown for the rows from the checkpoint


def test_metrics_log_drops_a_row_cut_short(tmp_path):
    (tmp_path / METRICS_CSV).write_text(",".join(COLUMNS) + "\n1,1.0,0.1,0.5,0.4,0.001,0.01\n2,2.0,0.2,0.4,0.3,0.0\n3,")
    with MetricsLog(tmp_path, resume_step=2) as log:
        log.write(3, 0.25, 0.2, 0.001, 0.3, 0.02)
    assert [r["step"] for r in _rows(tmp_path)] == ["1", "2", "3"]
    assert _rows(tmp_path)[1]["eval_time_s"] == ""  # a short row keeps what it had


@contextlib.contextmanager
def _without_tensorboard(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    yield


def test_tensorboard_missing_is_refused_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    with _without_tensorboard(monkeypatch):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--out", str(tmp_path / "run"), "--tensorboard", *cli(steps=1)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "pip install tensorboard" in err and "--tensorboard" in err, err
        assert not (tmp_path / "run" / "checkpoint.pt").exists()
        with pytest.raises(TensorBoardMissingError, match="pip install tensorboard"):  # the Python API: a ValueError
            FlowingTask(ExperimentConfig(**TINY, tensorboard=True))
        with pytest.raises(ValueError):
            FlowingTask(ExperimentConfig(**TINY, tensorboard=True))
        kth = write_tiny_kth(tmp_path / "kth")
        assert main(["kth", "--root", str(kth), "--out", str(tmp_path / "k"), "--tensorboard", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "pip install tensorboard" in err, err
        assert not (tmp_path / "k" / "config.json").exists()
    # control: without the flag the same run trains
    assert main(["train", "--out", str(tmp_path / "plain"), *cli(steps=1)]) == 0


def test_tensorboard_switch_may_change_on_resume(tmp_path):
    saved = ExperimentConfig(**TINY).resolve()
    assert merge_resume_config(saved, {"tensorboard": True}).tensorboard is True
    with pytest.raises(ValueError, match="cannot change"):  # control: a field that may not change
        merge_resume_config(saved, {"num_train": 99})
    with pytest.raises(ValueError, match="tensorboard must be True or False"):
        ExperimentConfig(**TINY, tensorboard="yes").resolve()


def test_tensorboard_scalars_match_the_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--tensorboard", *cli(steps=3)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    val = [(e.step, e.value) for e in events.Scalars("val_mse")]
    assert [s for s, _ in val] == [1, 2, 3]
    assert [v for _, v in val] == pytest.approx([float(r["val_mse"]) for r in _rows(out)], rel=1e-6)
    assert {"train_loss", "lr"} <= set(events.Tags()["scalars"])


def test_only_rank_0_writes(tmp_path, monkeypatch):
    import flow_escnn.experiments._task as task_module

    class OtherRank(World):
        @property
        def is_main(self) -> bool:
            return False

    @contextlib.contextmanager
    def fake_world(device_type):
        yield OtherRank()

    monkeypatch.setattr(task_module, "distributed_world", fake_world)
    out = tmp_path / "rank1"
    assert train_flowing(ExperimentConfig(**dict(TINY, steps=2)), out) == {}
    assert not (out / METRICS_CSV).exists() and not (out / "config.json").exists()
    monkeypatch.undo()  # control: rank 0 writes
    train_flowing(ExperimentConfig(**dict(TINY, steps=2)), tmp_path / "rank0")
    assert [r["step"] for r in _rows(tmp_path / "rank0")] == ["1", "2"]


def test_world_and_kth_runs_write_rows(tmp_path):
    from tests.test_world import WORLD_TINY

    assert main(["world", "--out", str(tmp_path / "w"), "--steps", "2", "--no-plots", *WORLD_TINY]) == 0
    assert [r["step"] for r in _rows(tmp_path / "w")] == ["2"]
    kth = write_tiny_kth(tmp_path / "kth")
    argv = ["kth", "--root", str(kth), "--out", str(tmp_path / "k"), "--model", "grnn", "--num-frames", "4",
            "--stride", "2", "--size", "8", "--steps", "2", "--batch-size", "2", "--train-velocities", "1",
            "--eval-every", "1", "--hidden-channels", "2", "--no-progress"]
    assert main(argv) == 0
    rows = _rows(tmp_path / "k")
    assert list(rows[0]) == [c if c != "val_mse" else "val_accuracy" for c in COLUMNS]
    curve = json.loads((tmp_path / "k" / "metrics.json").read_text())["val_curve"]
    assert [float(r["val_accuracy"]) for r in rows] == [p["val_accuracy"] for p in curve]
