"""The runnable examples in examples/ must keep working: each runs with --smoke in a subprocess.

Each example exits with status 0 only when the outcome it demonstrates holds (e.g. the FERNN
passes its checks and the plain ConvGRU fails the flow check), writes its figures into the
``--out`` folder, and prints its interpretation. The tests check all three.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str, out: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--smoke", "--out", str(out)],
        cwd=str(out),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def assert_pngs(out: Path, names: List[str]) -> None:
    for n in names:
        path = out / n
        assert path.is_file(), f"{n} was not written; folder has {sorted(p.name for p in out.iterdir())}"
        data = path.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n", f"{n} is not a non-empty PNG"


@pytest.mark.subprocess
def test_add_flow_layer(tmp_path):
    stdout = run_example("add_flow_layer.py", tmp_path)
    assert_pngs(tmp_path, ["add_flow_layer.png"])
    assert "lifted FERNN state: PASSED" in stdout
    assert "torus (V covers it), flow mu=(1, 0): PASSED" in stdout
    assert "static C4 (rtol=1e-6): PASSED" in stdout


@pytest.mark.subprocess
def test_study_flows(tmp_path):
    stdout = run_example("study_flows.py", tmp_path)
    assert_pngs(tmp_path, ["flows.png", "v_shift.png", "rotation_error.png"])
    assert "FERNN theorem on the predicted slices" in stdout
    assert "hidden, 45 deg/frame" in stdout and "comoving, 45 deg/frame" in stdout


@pytest.mark.subprocess
def test_check_your_model(tmp_path):
    stdout = run_example("check_your_model.py", tmp_path)
    assert_pngs(tmp_path, ["check_your_model.png"])
    assert "ConvGRU (plain PyTorch): FAILED" in stdout
    assert "FlowGRU over V = translations(1): PASSED" in stdout
    assert "raised EquivarianceError" in stdout


@pytest.mark.parametrize("name", ["add_flow_layer.py", "study_flows.py", "check_your_model.py"])
def test_examples_have_the_documented_flags(name):
    text = (EXAMPLES / name).read_text()
    assert '"--smoke"' in text and '"--out"' in text and "argparse" in text
    assert "def main(" in text and 'if __name__ == "__main__":' in text
