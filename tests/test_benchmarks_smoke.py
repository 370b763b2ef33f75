"""Smoke tests of benchmarks/ on tiny sizes: it runs, its output is well formed, and the
straightforward comparison model computes the same recurrence as flow_escnn's FERNN.

No timing assertions: timings on a shared machine are noise at these sizes.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from escnn import gspaces  # noqa: E402
from escnn import nn as enn  # noqa: E402

from benchmarks import bench_fernn  # noqa: E402
from benchmarks.straightforward import StraightforwardFERNN  # noqa: E402
from flow_escnn import FlowSet  # noqa: E402
from flow_escnn.nn import FERNN  # noqa: E402

TINY = [
    "--batch", "1", "--hidden-channels", "8", "--grid", "8", "--t-in", "2", "--t-out", "2",
    "--repeats", "1", "--warmup", "0", "--t-short", "3", "--t-long", "6", "--threads", "1",
]
RATIOS_RE = re.compile(
    r"^RATIOS vs_straightforward_translation=(\S+) vs_straightforward_rotation=(\S+) "
    r"overhead_vs_floor=(\S+) checkpoint_memory=(\S+)$"
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One in-process run of the whole benchmark at tiny sizes: (stdout, results, json dump)."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("bench") / "out.json"
    threads = torch.get_num_threads()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            res = bench_fernn.main(TINY + ["--json", str(path)])
    finally:
        torch.set_num_threads(threads)
    return buf.getvalue(), res, json.loads(path.read_text())


def test_ratios_line_is_last_and_well_formed(tiny_run):
    out, res, _ = tiny_run
    lines = out.strip().splitlines()
    assert sum(line.startswith("RATIOS") for line in lines) == 1
    m = RATIOS_RE.match(lines[-1])
    assert m, lines[-1]
    values = [float(v) for v in m.groups()]
    assert all(math.isfinite(v) and v > 0 for v in values), values
    assert lines[-1] == bench_fernn.format_ratios(res["ratios"])


def test_every_row_and_target_is_reported(tiny_run):
    out, res, dumped = tiny_run
    cfg = bench_fernn.parse_args(TINY)
    keys = [c.key for c in bench_fernn.build_cases(cfg)]
    assert list(res["rows"]) == keys
    for key in keys:
        assert key in out
        row = res["rows"][key]
        assert row["step_s"] > 0 and row["loss_finite"]
        assert row["saved_bytes"] > 0 and row["peak_live_bytes"] > 0
    # translation |V| = 1, 9, 25 for both field types, rotation in both modes
    for v in (1, 9, 25):
        for fld in ("trivial", "C4-regular"):
            assert f"trans-{fld}-V{v}-fernn" in res["rows"] and f"trans-{fld}-V{v}-naive" in res["rows"]
    assert {res["rows"][f"rot-C8-regular-V3-fernn-{m}"]["resolved_mode"] for m in ("hidden", "comoving")} == {
        "hidden", "comoving"}
    assert 0 < res["transport_share_v25"] < 1
    assert len(res["targets"]) == 4 and all(f"target {'PASS' if t['pass'] else 'FAIL'}: {n}" in out
                                            for n, t in res["targets"].items())
    # long inference rows: finite, both lengths, for each inference model
    assert {(r["case"], r["T"]) for r in res["inference"]} == {
        (k, t) for k in ("trans-C4-regular-V25-fernn", "rot-C8-regular-V3-fernn-hidden", "rot-C8-regular-V3-fernn-comoving")
        for t in (3, 6)}
    assert all(r["finite"] and r["peak_live_bytes"] > 0 for r in res["inference"])
    # the JSON dump mirrors the results
    assert set(dumped) >= {"config", "env", "rows", "inference", "ratios", "targets"}
    assert dumped["env"]["threads"] == 1
    assert set(dumped["ratios"]) == set(bench_fernn.RATIO_KEYS)


def test_checkpointing_reduces_saved_activations(tiny_run):
    _, res, _ = tiny_run
    rows = res["rows"]
    assert rows["trans-C4-regular-V25-fernn-ckpt"]["saved_bytes"] < rows["trans-C4-regular-V25-fernn"]["saved_bytes"]
    assert res["ratios"]["checkpoint_memory"] == pytest.approx(
        rows["trans-C4-regular-V25-fernn"]["saved_bytes"] / rows["trans-C4-regular-V25-fernn-ckpt"]["saved_bytes"])


@pytest.mark.parametrize(
    "gspace, field, flows, tol",
    [
        (gspaces.trivialOnR2(), "trivial", lambda gs: FlowSet.translations(gs, 2), 1e-5),
        (gspaces.rot2dOnR2(4), "regular", lambda gs: FlowSet.translations(gs, 1), 1e-5),
        (gspaces.rot2dOnR2(4), "regular", lambda gs: FlowSet.translations(gs, 2), 1e-5),
        # rotations: both bilinear (45 degrees) and exact (90 degrees), agree to float rounding
        (gspaces.rot2dOnR2(8), "regular", lambda gs: FlowSet.rotations(gs, [-1, 0, 1]), 1e-4),
        (gspaces.rot2dOnR2(4), "regular", lambda gs: FlowSet.rotations(gs, [-1, 0, 1]), 1e-4),
    ],
)
def test_straightforward_matches_fernn(gspace, field, flows, tol):
    torch.manual_seed(0)
    in_type = enn.FieldType(gspace, [gspace.trivial_repr])
    reps = [gspace.regular_repr] * 2 if field == "regular" else [gspace.trivial_repr] * 8
    hidden_type = enn.FieldType(gspace, reps)
    fs = flows(gspace)
    grid = 12
    fernn = FERNN(in_type, hidden_type, fs, mode="hidden")
    naive = StraightforwardFERNN(in_type, hidden_type, fs.velocities, (grid, grid)).load_from_fernn(fernn)
    x = torch.rand(2, 5, 1, grid, grid)
    with torch.no_grad():
        h_lib = fernn(x).tensor
        h_naive = naive(x)
    assert h_lib.shape == h_naive.shape == (2, 5, len(fs), hidden_type.size, grid, grid)
    assert h_lib.abs().max() > 0.1  # not trivially zero
    assert (h_lib - h_naive).abs().max() <= tol


def test_meters_count_what_they_should():
    x = torch.randn(1000, requires_grad=True)
    with bench_fernn.SavedTensorMeter() as saved:
        y = x * x  # saves x twice: one storage
        z = torch.relu(y)  # saves its result
    assert saved.bytes == 2 * 4000
    del y, z
    with bench_fernn.LiveTensorMeter(ignore=[x]) as live:
        a = x.detach() + 1  # 4000 bytes
        b = a * 2  # 4000 more, a still alive
        del a
        c = b.view(10, 100)  # a view: no new storage
        del b, c
        d = torch.ones(500)  # 2000, after a and b were freed
        del d
    assert live.peak == 8000 and live.current == 0


def test_script_mode_help():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_fernn.py"), "--help"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--device", "--batch", "--hidden-channels", "--grid", "--t-in", "--t-out", "--repeats", "--quick", "--json"):
        assert flag in proc.stdout
