"""``padding_mode="auto"``: padding chosen by the flow kind (issue 26, item 2).

Circular where an exact symmetry needs the torus (translations in V, or a gspace without rotations),
zero padding (conv2d's own) for rotation-only V; files and configs saved while circular was the
default keep loading circular.
"""

import pytest
import torch

import flow_escnn  # noqa: F401  (before escnn)
from escnn import gspaces, nn as enn

from flow_escnn import FlowSet
from flow_escnn.checks import check_flow_equivariance
from flow_escnn.models import (
    NextFramePredictor, PredictorConfig, SequenceClassifier, build_predictor, load_model, model_record,
)
from flow_escnn.nn import FERNN, GRNN
from flow_escnn.nn._conv import resolve_padding


def _types(gs, fields=1):
    return enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, fields * [gs.regular_repr])


@pytest.mark.parametrize("flows, expected", [
    (lambda: FlowSet.translations(gspaces.rot2dOnR2(4), 1), "circular"),
    (lambda: FlowSet.translations(gspaces.trivialOnR2(), 1), "circular"),
    (lambda: FlowSet.roto_translations(gspaces.rot2dOnR2(4), 1, [0, 1]), "circular"),
    (lambda: FlowSet(gspaces.rot2dOnR2(4), [(0, 0, 0), (1, 0, 1)]), "circular"),  # one translating generator
    (lambda: FlowSet.identity(gspaces.trivialOnR2()), "circular"),
    (lambda: FlowSet.identity(gspaces.rot2dOnR2(8)), "circular"),  # the G-RNN keeps static translations
    (lambda: FlowSet.rotations(gspaces.rot2dOnR2(8), [-2, -1, 0, 1, 2]), "zeros"),
    (lambda: FlowSet.rotations(gspaces.flipRot2dOnR2(4), [0, 1]), "zeros"),
])
def test_auto_resolves_by_flow_kind(flows, expected):
    v = flows()
    assert resolve_padding("auto", v) == expected
    assert resolve_padding("circular", v) == "circular" and resolve_padding("zeros", v) == "zeros"
    in_t, hid_t = _types(v.gspace)
    cell = FERNN(in_t, hid_t, v).cells[0]
    assert cell.padding_mode == cell.U.padding_mode == cell.W.padding_mode == expected


def test_auto_refuses_other_modes():
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        resolve_padding("reflect", FlowSet.identity(gspaces.rot2dOnR2(4)))


def test_models_resolve_auto_for_encoder_and_decoder():
    gs = gspaces.rot2dOnR2(4)
    in_t, hid_t = _types(gs)
    rot = NextFramePredictor(in_t, hid_t, FlowSet.rotations(gs, [-1, 0, 1]), decoder_layers=1)
    assert rot.padding_mode == "zeros" and rot.encoder.cells[0].padding_mode == "zeros"
    tr = NextFramePredictor(in_t, hid_t, FlowSet.translations(gs, 1), decoder_layers=1)
    assert tr.padding_mode == "circular" and tr.encoder.cells[0].padding_mode == "circular"
    clf = SequenceClassifier(in_t, hid_t, FlowSet.rotations(gs, [0, 1]), 3)
    assert clf.encoder.cells[0].padding_mode == "zeros"
    assert GRNN(in_t, hid_t).cells[0].padding_mode == "circular"


_V = {"translation": dict(flow_radius=1), "rotation": dict(flow_steps=[-1, 0, 1]),
      "both": dict(flow_radius=1, flow_steps=[0, 1])}


@pytest.mark.parametrize("flow, model, expected", [
    ("translation", "fernn", "circular"), ("translation", "grnn", "circular"), ("both", "fernn", "circular"),
    ("rotation", "fernn", "zeros"), ("rotation", "grnn", "zeros"),  # a rotating task's G-RNN pads as its FERNN
])
def test_configs_pad_by_the_task_flow_kind(flow, model, expected):
    kw = dict(model=model, flow=flow, group=4, hidden_channels=4, **(_V[flow] if model == "fernn" else {}))
    c = PredictorConfig(**kw).resolve()
    assert c.model_padding == expected
    built = build_predictor(c)
    assert built.padding_mode == built.encoder.cells[0].padding_mode == expected
    assert PredictorConfig(**kw, padding_mode="circular").resolve().model_padding == "circular"


def test_translation_flows_need_the_torus_so_auto_is_circular():
    """Control: zero padding breaks translation flows, so auto must not pick it for them."""
    gs = gspaces.rot2dOnR2(4)
    in_t, hid_t = _types(gs)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 1, 8, 8, dtype=torch.float64)
    flows = FlowSet.translations(gs, 1)
    auto = FERNN(in_t, hid_t, flows).double().eval()
    zeros = FERNN(in_t, hid_t, flows, padding_mode="zeros").double().eval()
    zeros.load_state_dict(auto.state_dict())
    assert check_flow_equivariance(auto, x, in_t, flows=[(1, 0)]).passed
    assert not check_flow_equivariance(zeros, x, in_t, flows=[(1, 0)]).passed


def test_rotation_flows_stay_exact_with_zero_padding():
    """90-degree rotation flows on a square grid: exact with the zero padding auto picks."""
    gs = gspaces.rot2dOnR2(4)
    in_t, hid_t = _types(gs)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 1, 8, 8, dtype=torch.float64)
    model = FERNN(in_t, hid_t, FlowSet.rotations(gs, [0, 1, 2, 3])).double().eval()
    assert model.cells[0].padding_mode == "zeros"
    report = check_flow_equivariance(model, x, in_t, flows=[(0, 0, 1)])
    assert report.passed, report


def _old_record(model):
    """The record as written while circular was the default (no mark, no explicit padding_mode)."""
    record = model_record(model)
    record.pop("padding_default")
    record["args"] = {k: v for k, v in record["args"].items() if k != "padding_mode"}
    return record


@pytest.mark.parametrize("build", [
    lambda gs, i, h, v: NextFramePredictor(i, h, v, decoder_layers=1, padding_mode="circular"),
    lambda gs, i, h, v: FERNN(i, h, v, padding_mode="circular"),
])
def test_files_saved_before_auto_load_circular(tmp_path, build):
    gs = gspaces.rot2dOnR2(4)
    in_t, hid_t = _types(gs)
    old = build(gs, in_t, hid_t, FlowSet.rotations(gs, [-1, 0, 1])).eval()
    torch.save(_old_record(old), tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert getattr(loaded, "cells", None) is None or loaded.cells[0].padding_mode == "circular"
    assert getattr(loaded, "padding_mode", "circular") == "circular"
    x = torch.rand(1, 3, 1, 8, 8)
    out = (lambda m: m(x, 2)) if isinstance(old, NextFramePredictor) else (lambda m: m(x).tensor)
    assert torch.equal(out(loaded), out(old))
    # a file written now keeps what it was built with: auto, resolved again to zeros
    fresh = NextFramePredictor(in_t, hid_t, FlowSet.rotations(gs, [-1, 0, 1]), decoder_layers=1)
    torch.save(model_record(fresh), tmp_path / "new.pt")
    assert load_model(tmp_path / "new.pt").padding_mode == "zeros"


def test_configs_saved_before_the_padding_field_keep_circular():
    old = PredictorConfig().to_dict()
    assert old["padding_mode"] == "auto"
    del old["padding_mode"]
    assert PredictorConfig.from_dict(old).padding_mode == "circular"
    assert PredictorConfig.from_dict(PredictorConfig().to_dict()).padding_mode == "auto"
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        PredictorConfig(hidden_channels=2, padding_mode="reflect").resolve()
