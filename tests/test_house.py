"""The house rules of issue 22: one-file kinds, configs resolved once, names that mean one thing,
one psi_t(nu) for the data and the flows."""
from __future__ import annotations

import dataclasses
import math
import sys
import textwrap

import pytest
import torch

import flow_escnn.flows.kinds as flow_kinds_pkg
import flow_escnn.nn.cell_kinds as cell_kinds_pkg
from flow_escnn import FlowGenerator
from flow_escnn._compat import gspaces
from flow_escnn._registry import discover
from flow_escnn.experiments import ExperimentConfig
from flow_escnn.flows._generator import flow_parts
from flow_escnn.flows.kinds import ALL_FLOW_KINDS, FLOW_KINDS, FlowKind
from flow_escnn.models import PredictorConfig, build_predictor
from flow_escnn.models._config import RECURRENT_MODELS
from flow_escnn.nn import CELL_KINDS, CELLS, FERNN, CellKind
from flow_escnn.experiments._parser import build_parser
from tests.tiny import TINY


# -- one file per kind ------------------------------------------------------------------------------------------
def _package(tmp_path, name, files):
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for module, text in files.items():
        (root / f"{module}.py").write_text(textwrap.dedent(text))
    sys.path.insert(0, str(tmp_path))
    return root


class _Kind:
    def __init__(self, name):
        self.name = name


def test_a_kind_is_one_file_found_by_the_registry(tmp_path, monkeypatch):
    """Adding a module with ``KIND = ...`` is all it takes; a module without one, or a name defined
    twice, is refused (the controls)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = _package(tmp_path, "kinds_ok", {
        "base": "X = 1\n",
        "alpha": f"import {__name__} as t\nKIND = t._Kind('alpha')\n",
        "beta": f"import {__name__} as t\nKIND = t._Kind('beta')\n",
    })
    found = discover("kinds_ok", [str(root)], _Kind, skip=("base",))
    assert list(found) == ["alpha", "beta"]
    root = _package(tmp_path, "kinds_bad", {"gamma": "KIND = None\n"})
    with pytest.raises(TypeError, match="kinds_bad.gamma defines no KIND"):
        discover("kinds_bad", [str(root)], _Kind)
    root = _package(tmp_path, "kinds_twice", {
        "a": f"import {__name__} as t\nKIND = t._Kind('same')\n",
        "b": f"import {__name__} as t\nKIND = t._Kind('same')\n",
    })
    with pytest.raises(ValueError, match="'same' is defined twice"):
        discover("kinds_twice", [str(root)], _Kind)


def test_every_module_of_the_kind_packages_is_a_registered_kind():
    import pkgutil

    flow_modules = {m.name for m in pkgutil.iter_modules(flow_kinds_pkg.__path__)} - {"base"}
    cell_modules = {m.name for m in pkgutil.iter_modules(cell_kinds_pkg.__path__)} - {"registry"}
    assert len(flow_modules) == len(ALL_FLOW_KINDS) and len(cell_modules) == len(CELL_KINDS)
    assert all(isinstance(k, FlowKind) for k in ALL_FLOW_KINDS.values())
    assert all(isinstance(k, CellKind) for k in CELL_KINDS.values())


def test_the_cli_choices_come_from_the_registries():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001 - argparse has no public accessor
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert tuple(choices["cell"]) == CELLS == tuple(n for n, k in CELL_KINDS.items() if k.model is None)
    assert tuple(choices["flow"]) == tuple(FLOW_KINDS)
    assert tuple(choices["model"]) == RECURRENT_MODELS
    assert set(RECURRENT_MODELS) == {"fernn", "grnn", *(k.model for k in CELL_KINDS.values() if k.model)}


def test_the_engine_reads_the_update_from_the_layer_spec():
    """No cell names in the engine: the layer spec carries the kind's update and flags."""
    gs = gspaces.rot2dOnR2(4)
    from flow_escnn._compat import enn
    from flow_escnn import FlowSet

    in_type, hid = enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr])
    for name, kind in CELL_KINDS.items():
        cell = kind.cell(in_type, hid, FlowSet.translations(gs, 1))
        spec = cell.layer_spec()
        assert spec.kind == name and spec.update is kind.cell.update and spec.gates == kind.gates
        assert spec.learned_transport == kind.cell.learned_transport
    engine = (flow_kinds_pkg.__file__.rsplit("/flows/", 1)[0]) + "/nn/_engine.py"
    text = open(engine).read()
    assert not any(f'"{name}"' in text for name in CELL_KINDS), "the engine compares a cell name"


# -- configs resolved once ---------------------------------------------------------------------------------------
def test_a_resolved_config_is_frozen_explicit_and_resolves_to_itself():
    c = ExperimentConfig(**TINY)
    r = c.resolve()
    assert r.resolved and not c.resolved and r.resolve() is r
    assert r.flow_radius == 1 and r.hidden_fields == 3 and r.hidden_channels is None
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"use \.replace\(lr=\.\.\.\)"):
        r.lr = 0.1
    changed = r.replace(lr=0.1)
    assert not changed.resolved and changed.resolve().lr == 0.1
    assert r.flows is r.flows and r.field_types() is r.field_types()  # built once
    assert r.train_velocity_array() is r.train_velocity_array()
    with pytest.raises(ValueError, match="read-only"):
        r.train_velocity_array()[0, 0] = 5.0
    c.lr = 0.5  # control: an unresolved config is an ordinary dataclass
    assert c.lr == 0.5


def test_resolution_parses_and_builds_once(monkeypatch):
    import flow_escnn.experiments._config as config_module

    calls = {"parse": 0}
    original = config_module.parse_velocities

    def counting(*args, **kwargs):
        calls["parse"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(config_module, "parse_velocities", counting)
    r = ExperimentConfig(**TINY).resolve()
    after_resolve = calls["parse"]
    for _ in range(3):
        r.resolve()
        r.train_velocity_array()
        r.test_velocity_array()
        build_predictor(r)
    assert calls["parse"] <= after_resolve + 2  # each set parsed at most once more, then memoised
    unresolved = ExperimentConfig(**TINY)
    before = calls["parse"]
    unresolved.train_velocity_array()
    unresolved.train_velocity_array()
    assert calls["parse"] == before + 2  # control: an unresolved config parses every time


def test_the_factory_takes_resolved_configs_only():
    config = PredictorConfig(flow_radius=1, hidden_channels=2, decoder_layers=1)
    with pytest.raises(TypeError, match=r"pass config\.resolve\(\)"):
        build_predictor(config)
    model = build_predictor(config.resolve())  # control
    assert len(model.flows) == 9


def test_flow_steps_resolve_to_integers_and_old_strings_still_load():
    r = ExperimentConfig(**{**TINY, "train_velocities": "90/90", "test_velocities": "90/90", "flow": "rotation",
                            "group": 4, "hidden_channels": 4}).resolve()
    assert r.flow_steps == (-1, 0, 1) and r.to_dict()["flow_steps"] == [-1, 0, 1]
    saved = {**r.to_dict(), "flow_steps": "-1,0,1"}  # configs saved before the change held strings
    assert ExperimentConfig.from_dict(saved).resolve().flow_steps == (-1, 0, 1)
    assert ExperimentConfig.from_dict(r.to_dict()).resolve() == r


# -- names ------------------------------------------------------------------------------------------------------
@pytest.mark.compile
def test_module_compile_is_torchs():
    """``FlowRNN.compile`` no longer shadows ``torch.nn.Module.compile``."""
    gs = gspaces.trivialOnR2()
    from flow_escnn._compat import enn
    from flow_escnn import FlowSet

    t = enn.FieldType(gs, [gs.trivial_repr])
    model = FERNN(t, t, FlowSet.translations(gs, 1)).eval()
    assert type(model).compile is torch.nn.Module.compile
    x = torch.rand(1, 3, 1, 5, 5)
    expected = model(x).tensor
    assert model.compile(backend="eager") is None
    torch.testing.assert_close(model(x).tensor, expected)


# -- one psi_t(nu) ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("velocity, n", [((1, -2, 0), 4), ((2, 1, 90), 4), ((1, 0, 45), 8), ((0, 3, 135), 8)])
def test_flow_parts_is_the_generators_psi(velocity, n):
    """The data's floating-point psi_t(nu) equals FlowGenerator.psi(t) where both apply; a wrong
    order of rotation and translation (the control) does not."""
    gs = gspaces.rot2dOnR2(n)
    vx, vy, deg = velocity
    gen = FlowGenerator(gs, (vx, vy), int(round(deg * n / 360)))
    u_t, theta = flow_parts(torch.tensor([float(vx), float(vy), float(deg)]), 7)
    for t in range(7):
        psi = gen.psi(t)
        assert torch.allclose(u_t[t], torch.tensor(psi.translation, dtype=torch.float64), atol=1e-9)
        assert math.isclose(float(theta[t]) % 360, (t * deg) % 360, abs_tol=1e-9)
    if deg % 360:
        wrong = torch.stack([torch.tensor([float(vx), float(vy)]) * t for t in range(7)])  # rotation ignored
        assert not torch.allclose(u_t, wrong.to(torch.float64), atol=1e-6)
