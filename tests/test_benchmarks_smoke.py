"""Smoke tests of benchmarks/ on tiny sizes: it runs, its output is well formed, the conv floor
replays exactly the step's convolutions, and the straightforward comparison model computes
the same predictions as flow_escnn's predictor.

No timing assertions: timings on a shared machine are noise at these sizes.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks import bench_fernn
from benchmarks.meters import ConvFloor, ConvRecorder, LiveTensorMeter, SavedTensorMeter
from benchmarks.straightforward import StraightforwardFERNN
from flow_escnn import FlowSet
from flow_escnn._compat import enn, gspaces
from flow_escnn.nn import FERNN
from flow_escnn.nn._kernels import conv2d as library_conv2d

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--batch", "1", "--hidden-channels", "8", "--grid", "8", "--t-in", "2", "--t-out", "2", "--decoder-layers", "1",
    "--repeats", "1", "--warmup", "0", "--threads", "1", "--volume-grid", "4", "--volume-channels", "2",
]
RATIOS_RE = re.compile(r"^RATIOS " + " ".join(rf"{k}=(\S+)" for k in bench_fernn.RATIO_KEYS) + "$")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One in-process run of the whole benchmark at tiny sizes: (stdout, results, json dump)."""
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
    out, res, dumped = tiny_run
    lines = out.strip().splitlines()
    assert sum(line.startswith("RATIOS") for line in lines) == 1
    m = RATIOS_RE.match(lines[-1])
    assert m, lines[-1]
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in m.groups())
    assert lines[-1] == bench_fernn.format_ratios(res["ratios"])
    assert set(dumped["ratios"]) == set(bench_fernn.RATIO_KEYS) and dumped["env"]["threads"] == 1


def test_every_row_floor_and_target_is_reported(tiny_run):
    out, res, _ = tiny_run
    for key in ("fernn", "fernn-naive", "grnn", "rotation", "rotation-naive", "fernn-deterministic", "fernn-amp",
                "fernn-checkpoint", "fernn-floor", "grnn-floor", "rotation-floor", "volume", "volume-floor",
                *(row for rows in bench_fernn.REFERENCE_ROWS.values() for row in rows)):
        assert key in res["median_s"] and res["median_s"][key] > 0 and key in out
    for key, (lib, anchor) in bench_fernn.REFERENCE_ROWS.items():  # this library's step / the paper's (the anchor)
        assert res["ratios"][key] == pytest.approx(res["median_s"][lib] / res["median_s"][anchor])
    assert all(res["losses_finite"].values())
    # T_in = 2, 2 predictions: U on the 2 input frames (one call for both; frame by frame where the states are
    # channels-last, as the float32 CPU planes are) + 1 fed back, W on the 2 updates after the first (the zero
    # initial state needs no W * 0), 2 decoder convs per prediction
    assert res["floor_convs"]["fernn-floor"] == 2 + 1 + 2 + 2 * 2
    # the co-moving rotation step adds its input convolutions into the recurrent term (deferred): still in its floor
    assert res["floor_convs"]["rotation-floor"] == res["floor_convs"]["fernn-floor"]
    assert res["floor_convs"]["volume-floor"] == 1 + 1 + 2 + 2 * 2  # the same calls, conv3d (one batch of U)
    assert res["ratios"]["volume_vs_floor"] == pytest.approx(res["median_s"]["volume"] / res["median_s"]["volume-floor"])
    assert len(res["targets"]) == 10 and all(f"target {'PASS' if t['pass'] else 'FAIL'}: {t['ratio']}" in out
                                            for t in res["targets"])
    assert res["memory"]["fernn-checkpoint"]["peak_bytes"] < res["memory"]["fernn"]["peak_bytes"]


def test_reference_rows_are_configured_like_the_paper():
    """The vs_reference_* rows: library and anchor with one decoder layer and no bias (whatever
    --decoder-layers says), same fields and V; the rotation row bilinear, as the paper's grid_sample."""
    cfg = bench_fernn.BenchConfig(batch=1, hidden_channels=8, grid=8, t_in=2, t_out=1, decoder_layers=3)
    x, y = bench_fernn.make_data(cfg)
    steps = bench_fernn.reference_steps(cfg, x, y)
    assert set(steps) == {row for rows in bench_fernn.REFERENCE_ROWS.values() for row in rows}
    for key, (lib, anchor) in bench_fernn.REFERENCE_ROWS.items():
        mine, paper = steps[lib].model, steps[anchor].model
        assert len(mine.decoder) == 2 and sum(isinstance(m, torch.nn.Conv2d) for m in paper.decoder) == 2, key
        for m in (mine, paper):
            assert not any("bias" in n and p is not None for n, p in m.named_parameters()), key
        assert len(mine.flows.velocities) == paper.cell.num_v, key
        assert mine.hidden_type.size == paper.cell.hidden_channels == 8, key
    assert steps["rotation-d1"].model.encoder.cells[0].interpolation == "bilinear"
    # the paper's padding: conv2d's zeros for the rotation models, circular for the translation ones
    pads = {lib: (steps[lib].model.padding_mode, steps[anchor].model.decoder[-1].padding_mode)
            for lib, anchor in bench_fernn.REFERENCE_ROWS.values()}
    assert pads["rotation-d1"] == pads["grnn-c8-d1"] == ("zeros", "zeros"), pads
    assert pads["fernn-d1"] == pads["grnn-d1"] == ("circular", "circular"), pads


def test_conv_floor_replays_the_recorded_convolutions():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 5, 5)
    with ConvRecorder() as rec:
        conv(x)
        torch.nn.functional.conv2d(x, conv.weight, None, 1, 1, 1, 1)
        library_conv2d(x, conv.weight, conv.bias, 1)  # the library's (thin CPU inputs: an im2col GEMM)
    assert [c["input"] for c in rec.calls] == [(4, 2, 5, 5)] * 3 and [c["bias"] for c in rec.calls] == [True, False, True]
    assert [c["fn"] for c in rec.calls] == [F.conv2d, F.conv2d, library_conv2d] and rec.calls[2]["kwargs"] == {"padding": 1}
    floor = ConvFloor(rec.calls)
    floor()
    assert len(floor) == 3 and all(x.grad is None for _, x, *_ in floor.items)


@pytest.mark.parametrize("kind", ["fernn", "rotation"])
def test_straightforward_predictor_matches_the_library(kind):
    cfg = bench_fernn.BenchConfig(batch=2, hidden_channels=8, grid=9, t_in=3, t_out=3, decoder_layers=1)
    model = bench_fernn.build_model(kind, cfg, mode="hidden")
    naive = bench_fernn.naive_twin(model, cfg)
    x, y = bench_fernn.make_data(cfg)
    with torch.no_grad():
        a, b = model(x, 3), naive(x, 3)
    assert a.abs().max() > 1e-3
    assert (a - b).abs().max() <= (1e-5 if kind == "fernn" else 1e-4)


@pytest.mark.parametrize(
    "gspace, field, flows, tol",
    [
        (gspaces.trivialOnR2(), "trivial", lambda gs: FlowSet.translations(gs, 2), 1e-5),
        (gspaces.rot2dOnR2(4), "regular", lambda gs: FlowSet.translations(gs, 1), 1e-5),
        (gspaces.rot2dOnR2(8), "regular", lambda gs: FlowSet.rotations(gs, [-1, 0, 1]), 1e-4),
        (gspaces.rot2dOnR2(4), "regular", lambda gs: FlowSet.rotations(gs, [-1, 0, 1]), 1e-4),
    ],
)
def test_straightforward_layer_matches_fernn(gspace, field, flows, tol):
    torch.manual_seed(0)
    in_type = enn.FieldType(gspace, [gspace.trivial_repr])
    reps = [gspace.regular_repr] * 2 if field == "regular" else [gspace.trivial_repr] * 8
    hidden_type = enn.FieldType(gspace, reps)
    fs = flows(gspace)
    fernn = FERNN(in_type, hidden_type, fs, mode="hidden", interpolation="bilinear",
                  padding_mode="circular")  # the straightforward layer's
    naive = StraightforwardFERNN(in_type, hidden_type, fs.velocities, (12, 12)).load_from_fernn(fernn)
    x = torch.rand(2, 5, 1, 12, 12)
    with torch.no_grad():
        h_lib, h_naive = fernn(x).tensor, naive(x)
    assert h_lib.abs().max() > 0.1
    assert (h_lib - h_naive).abs().max() <= tol


def test_meters_count_what_they_should():
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter() as saved:
        y = x * x  # saves x twice: one storage
        z = torch.relu(y)  # saves its result
    assert saved.bytes == 2 * 4000
    del y, z
    with LiveTensorMeter(ignore=[x]) as live:
        a = x.detach() + 1  # 4000 bytes
        b = a * 2  # 4000 more, a still alive
        del a
        c = b.view(10, 100)  # a view: no new storage
        del b, c
        d = torch.ones(500)  # 2000, after a and b were freed
        del d
    assert live.peak == 8000 and live.current == 0


@pytest.mark.subprocess
def test_script_mode_help():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_fernn.py"), "--help"],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--device", "--batch", "--hidden-channels", "--decoder-layers", "--repeats", "--quick", "--json"):
        assert flag in proc.stdout


def test_memory_projection_orders_the_modes():
    """benchmarks/memory_projection.py at 8 channels: checkpointing and bf16 each lower the peak, and the
    projection is the line through the two measured batches."""
    from benchmarks.memory_projection import project

    rows = project((1, 2), targets=(4,), channels=8)
    assert rows["checkpoint"]["b2"] < rows["fp32"]["b2"]
    assert rows["checkpoint+bf16"]["b2"] < rows["checkpoint"]["b2"]
    for r in rows.values():
        assert r["projected_b4"] == pytest.approx(r["b1"] + 3 * (r["b2"] - r["b1"]))


def _last_line_of_main(module, argv, capsys) -> str:
    """The last printed line of ``module.main(argv)`` (which sets the torch threads: restored after)."""
    threads = torch.get_num_threads()
    try:
        module.main(argv)
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_resample_kernels_compares_equal_products(capsys):
    """benchmarks/resample_kernels.py at tiny sizes: one finite ratio per interpolation (the script
    checks itself that both kernels compute the same products) and a well-formed RATIOS line."""
    from benchmarks import resample_kernels
    from flow_escnn.flows._tables import INTERPOLATIONS

    ratios = resample_kernels.run(slices=2, grid=8, columns=4, repeats=1)
    assert set(ratios) == set(INTERPOLATIONS) and all(math.isfinite(r) and r > 0 for r in ratios.values())
    last = _last_line_of_main(resample_kernels, ["--repeats", "1", "--threads", "1"], capsys)
    assert re.match(r"^RATIOS " + " ".join(rf"csr_vs_embedding_bag_{k}=\S+" for k in INTERPOLATIONS) + "$", last)


def test_step_kernels_compares_equal_results(capsys):
    """benchmarks/step_kernels.py at tiny sizes: finite ratios (the script checks itself that both sides
    agree) and a well-formed RATIOS line."""
    from benchmarks import step_kernels

    ratios = step_kernels.run(batch=1, slices=2, channels=4, grid=6, repeats=1)
    assert len(ratios) == 16 and all(math.isfinite(r) and r > 0 for r in ratios.values())
    last = _last_line_of_main(step_kernels, ["--repeats", "1", "--threads", "1"], capsys)
    assert re.match(r"^RATIOS conv2d_vs_im2col_c1_n40=\S+ .* max_vs_max_over_v=\S+ unpooled_vs_pooled_readout=\S+ "
                    r"conv2d_vs_channels_last_c32_n40=\S+ strided_vs_contiguous_amax_v25=\S+ "
                    r"strided_vs_contiguous_sum_v25=\S+ transpose_vs_batch_move=\S+ conv2d_vs_thin_output_c32_o1=\S+ "
                    r"conv2d_vs_thin_output_c32_o2=\S+ conv2d_vs_thin_output_c32_o4=\S+$", last)


def test_rotation_step_times_both_steps(capsys):
    """benchmarks/rotation_step.py at tiny sizes: positive times, consistent ratios, a RATIOS line."""
    from benchmarks import rotation_step

    res = rotation_step.run(bench_fernn.BenchConfig(batch=1, hidden_channels=8, grid=9, t_in=2, t_out=2,
                                                    decoder_layers=1), rounds=1, warmup=0)
    assert res["step_s_min"] > 0 and res["naive_s_min"] > 0
    assert res["vs_straightforward_min"] == pytest.approx(res["step_s_min"] / res["naive_s_min"])
    last = _last_line_of_main(rotation_step, ["--rounds", "1", "--batch", "1", "--hidden-channels", "8", "--threads", "1"],
                              capsys)
    assert re.match(r"^RATIOS step_s_min=\S+ naive_s_min=\S+ vs_straightforward_min=\S+ "
                    r"vs_straightforward_median=\S+$", last)


def test_single_row_refuses_a_layout_option_of_the_other_rank(capsys):
    """``--plain-layout`` is for the planar rows, ``--ncdhw`` for the volume row: each refused elsewhere, in one line."""
    from benchmarks import single_row

    for argv in (["--row", "volume", "--plain-layout"], ["--row", "rotation", "--ncdhw"]):
        with pytest.raises(SystemExit) as e:
            single_row.main(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--plain-layout applies to the planar rows" in err and "--ncdhw applies to --row volume only" in err
