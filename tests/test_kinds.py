"""Tests of flow_escnn.flows.kinds: one spec per kind of flow, asked by data, CLI and plots."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

from flow_escnn._compat import gspaces
from flow_escnn.experiments import ExperimentConfig
from flow_escnn.flows import FlowSet
from flow_escnn.flows.kinds import (
    FLOW_KINDS,
    ROTATION,
    ROTO_TRANSLATION,
    TRANSLATION,
    FlowKind,
    degrees_to_steps,
    flow_kind,
    parse_steps,
    steps_to_degrees,
)

ROOT = Path(__file__).resolve().parents[1]


def rows_of(flows: FlowSet, kind: FlowKind):
    """The data rows ``(vx, vy, degrees)`` of a model's V, rounded so angles compare exactly."""
    return {(r[0], r[1], round(r[2], 9)) for r in (kind.check(g) for g in flows)}


def test_registry_names_and_lookup():
    assert set(FLOW_KINDS) == {"translation", "rotation", "both"}
    assert flow_kind("rotation") is ROTATION and flow_kind(TRANSLATION) is TRANSLATION
    with pytest.raises(ValueError, match="flow must be one of"):
        flow_kind("shear")
    with pytest.raises(ValueError, match="flow must be one of"):
        flow_kind(["translation"])  # unhashable: still a clear ValueError


@pytest.mark.parametrize("kind", list(FLOW_KINDS.values()), ids=list(FLOW_KINDS))
def test_every_kind_parses_its_defaults_and_rows_match_the_kind(kind):
    for spec in (*kind.default_sets, kind.default_data):
        rows = kind.parse(spec)
        assert rows and len(set(rows)) == len(rows)
        for vx, vy, w in rows:
            assert isinstance(vx, int) and isinstance(vy, int) and isinstance(w, float)
            assert kind.translates or (vx, vy) == (0, 0)
            assert kind.rotates or w == 0.0
    assert kind.name in kind.bad("x").args[0] and kind.syntax in kind.bad("x").args[0]


def test_parse_forms():
    assert TRANSLATION.parse("1") == [(vx, vy, 0.0) for vx in (-1, 0, 1) for vy in (-1, 0, 1)]
    assert TRANSLATION.parse(" 1:0 , -1:2 ") == [(1, 0, 0.0), (-1, 2, 0.0)]
    assert [r[2] for r in ROTATION.parse("40/20")] == [-40.0, -20.0, 0.0, 20.0, 40.0]
    assert ROTATION.parse("30,") == [(0, 0, 30.0)]
    assert len(ROTO_TRANSLATION.parse("1@10")) == 27
    assert ROTO_TRANSLATION.parse("1:0:90") == [(1, 0, 90.0)]


@pytest.mark.parametrize(
    "kind, spec, why",
    [
        (TRANSLATION, "", "empty"),
        (TRANSLATION, "-1", "radius must be >= 0"),
        (TRANSLATION, "1.5", "not an integer"),
        (TRANSLATION, "1:0:3", "is not 'vx:vy'"),
        (TRANSLATION, "a", "not a number"),
        (ROTATION, "1:0", "use flow 'both'"),
        (ROTATION, "35/10", "not a multiple"),
        (ROTATION, "inf", "not finite"),
        (ROTO_TRANSLATION, "1", "expected 'R@M'"),
        (ROTO_TRANSLATION, "1:0", "is not 'vx:vy:deg'"),
        (ROTO_TRANSLATION, "1@10,2", "expected 'R@M'"),
    ],
)
def test_malformed_specs_name_the_syntax(kind, spec, why):
    with pytest.raises(ValueError, match=re.escape(why)) as info:
        kind.parse(spec)
    assert kind.syntax in str(info.value)


def test_check_refuses_velocities_of_another_kind():
    assert TRANSLATION.check((1, -2)) == (1, -2, 0.0)
    assert ROTATION.check(30) == (0, 0, 30.0)
    with pytest.raises(ValueError, match="rotating velocity"):
        TRANSLATION.check((0, 0, 10.0))
    with pytest.raises(ValueError, match="translating velocity"):
        ROTATION.check((1, 0, 10.0))
    with pytest.raises(ValueError, match="integer number of pixels"):
        ROTO_TRANSLATION.check((0.5, 0, 10.0))
    with pytest.raises(ValueError, match="finite"):
        ROTATION.check(float("nan"))
    with pytest.raises(ValueError, match=r"\(vx, vy, degrees_per_frame\)"):
        ROTO_TRANSLATION.check((1, 0))


def test_degrees_and_steps_round_trip():
    for n in (1, 4, 8, 9):
        for k in range(-n, n + 1):
            assert degrees_to_steps(steps_to_degrees(k, n), n) == (k, True)
    assert degrees_to_steps(10.0, 8) == (0, False)
    assert parse_steps("2") == [-2, -1, 0, 1, 2] and parse_steps("0,3") == [0, 3]
    for bad in ("-1", "a", "1,1", ","):
        with pytest.raises(ValueError, match="rotation steps"):
            parse_steps(bad)


#: per flow kind: a training velocity spec and the rotation group it needs (every kind of the registry has one)
EXAMPLES = {"translation": ("1:0,0:-2", 1), "rotation": ("-90,0,45", 8), "both": ("1@45/45", 8)}
#: per flow kind: the group and the training velocities of a small resolved config (16x16 grid)
CONFIGS = {"translation": (1, None), "rotation": (4, "90/90"), "both": (4, "1@90/90")}


def test_every_flow_kind_has_examples_here():
    """The parametrised tests below run every kind of the registry: a new kind needs its examples."""
    assert set(EXAMPLES) == set(FLOW_KINDS) and set(CONFIGS) == set(FLOW_KINDS)


@pytest.mark.parametrize("name", [n for n in FLOW_KINDS if n in EXAMPLES])
def test_default_model_flows_cover_the_training_velocities(name):
    """The commuting square of the config: data rows -> V (by the kind) -> rows again contains the
    data rows; the control (a smaller radius / fewer steps) must miss one of them."""
    kind = FLOW_KINDS[name]
    spec, group = EXAMPLES[name]
    gs = gspaces.trivialOnR2() if group == 1 else gspaces.rot2dOnR2(group)
    rows = kind.parse(spec)
    params, notes = kind.default_params(rows, group)
    assert not notes and set(params) == set(kind.params)
    covered = rows_of(kind.model_flows(gs, **params), kind)
    assert {(r[0], r[1], round(r[2], 9)) for r in rows} <= covered
    smaller = {"flow_radius": max(0, params.get("flow_radius", 0) - 1), "flow_steps": params.get("flow_steps", (0,))[1:]}
    smaller = kind.model_flows(gs, **{k: v for k, v in smaller.items() if k in kind.params})
    assert not {(r[0], r[1], round(r[2], 9)) for r in rows} <= rows_of(smaller, kind)


@pytest.mark.parametrize("flow", [n for n in FLOW_KINDS if n in CONFIGS])
def test_config_model_flows_is_the_kinds(flow):
    group, train = CONFIGS[flow]
    c = ExperimentConfig(flow=flow, group=group, grid_size=16, train_velocities=train).resolve()
    ours = c.flows
    rows = c.train_velocity_array()
    assert {(int(r[0]), int(r[1]), round(float(r[2]), 9)) for r in rows} <= rows_of(ours, c.kind)


_FLOW_NAME_COMPARISON = re.compile(r"""flow\s*(==|!=|in)\s*[\("']""")


def flow_name_comparisons(source: str) -> List[str]:
    """The code lines of ``source`` that compare a flow's *name* (``flow == "rotation"``,
    ``c.flow in ("rotation", "both")``): what a kind's own attributes should answer."""
    return [f"{i}: {line.strip()}" for i, line in enumerate(source.splitlines(), 1)
            if _FLOW_NAME_COMPARISON.search(line) and not line.lstrip().startswith(("#", "*", ":"))]


def test_the_flow_name_check_flags_name_comparisons_and_passes_kind_questions():
    """Control of the check below: it flags each comparison of a flow name, and passes code that
    asks the kind (and comments or docs that mention a comparison)."""
    bad = ('if flow == "rotation":\n    pass\nrotating = c.flow in ("rotation", "both")\n'
           "if config.flow != 'translation':\n    pass\n")
    assert [line.split(":")[0] for line in flow_name_comparisons(bad)] == ["1", "3", "4"]
    good = ('kind = flow_kind(config.flow)\nif kind.rotates and not kind.translates:\n    pass\n'
            '# never: if flow == "rotation"\n    * ``flow == "both"`` in a docstring list\n')
    assert flow_name_comparisons(good) == []


def test_no_library_code_outside_the_kinds_compares_flow_names():
    """Adding a kind must not mean hunting ``flow == "rotation"`` branches across the package."""
    offenders = []
    for path in sorted((ROOT / "flow_escnn").rglob("*.py")):
        if "kinds" in path.parts:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{hit}" for hit in flow_name_comparisons(path.read_text())]
    assert not offenders, "\n".join(offenders)
