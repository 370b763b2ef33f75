"""Construction specs: escnn gspaces, field types and the flow objects written as plain data.

escnn builds its groups and representations from local functions, which pickle cannot store,
so nothing that holds a gspace or a field type pickles as is. :func:`encode` writes such
values as plain data (lists, dicts, strings, numbers) that rebuilds them, and :func:`decode`
rebuilds them: gspaces (from their subgroup id; 3D ones too), field types (from their representations'
names), fiber-group elements (from their parameter), :class:`~flow_escnn.flows.GridElement`,
:class:`~flow_escnn.flows.FlowGenerator` and :class:`~flow_escnn.flows.FlowSet`.

This is the one codec of the package: :func:`flow_escnn.models.save_model` writes models'
constructor arguments with it (:mod:`flow_escnn.nn._spec`), and the flow objects, the lifted and
sequence types and the sequence layers pickle through it (their ``__reduce__``).
"""
from __future__ import annotations

import ast
from fractions import Fraction
from typing import Any, Dict

import numpy as np

from flow_escnn._compat import enn, gspaces
from flow_escnn._compat import group as _group
from flow_escnn.flows._element import GridElement
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.flows._volume import gspace_recipe, rebuild_gspace

__all__ = ["encode", "decode", "eval_literal"]


def encode(value: Any) -> Any:
    """Plain data for ``value``: escnn gspaces, field types and group elements, the flow objects,
    fractions, and lists / tuples / dicts of them (tuples become lists)."""
    if isinstance(value, enn.FieldType):
        return {"__field_type__": {"gspace": encode(value.gspace), "reps": [_rep_recipe(r) for r in value.representations]}}
    if isinstance(value, FlowSet):
        return {"__flow_set__": {"gspace": encode(value.gspace), "velocities": [encode(list(v)) for v in value.velocities]}}
    if isinstance(value, FlowGenerator):
        return {"__flow_generator__": {"gspace": encode(value.gspace), "velocity": encode(list(value.velocity))}}
    if isinstance(value, GridElement):
        u = value.exact_translation
        return {"__grid_element__": {
            "gspace": encode(value.gspace),
            "g": encode(value.g),
            "translation": list(u) if u is not None else [float(v) for v in value.translation],
        }}
    if hasattr(value, "_sg_id") and hasattr(value, "fibergroup"):
        if getattr(value, "dimensionality", 2) == 3:  # its subgroup id as a Python literal (O(3) elements as data)
            return {"__gspace3d__": repr(gspace_recipe(value))}
        sg = value._sg_id
        return {"__gspace__": [sg[0], sg[1], int(getattr(value, "_maximum_frequency", 6) or 6)]}
    if isinstance(value, _group.GroupElement):  # the fiber part of a GridElement
        return {"__group_element__": {"value": _plain(value.value), "param": value.param}}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Fraction):  # rotation velocities in degrees on SO(2) / O(2)
        return {"__fraction__": [value.numerator, value.denominator]}
    raise TypeError(f"cannot write a {type(value).__name__} into a construction spec")


def decode(value: Any, gspace: Any = None) -> Any:
    """The inverse of :func:`encode` (``gspace``: the one a group element belongs to)."""
    if isinstance(value, dict):
        if "__gspace__" in value:
            axis, n, freq = value["__gspace__"]
            return gspaces.GSpace2D((axis, n), freq)
        if "__gspace3d__" in value:
            return rebuild_gspace(ast.literal_eval(value["__gspace3d__"]))
        if "__field_type__" in value:
            spec = value["__field_type__"]
            gs = decode(spec["gspace"])
            return enn.FieldType(gs, [_rep(gs, r) for r in spec["reps"]])
        if "__fraction__" in value:
            return Fraction(*value["__fraction__"])
        if "__flow_set__" in value:
            spec = value["__flow_set__"]
            return FlowSet(decode(spec["gspace"]), [tuple(decode(v)) for v in spec["velocities"]])
        if "__flow_generator__" in value:
            spec = value["__flow_generator__"]
            vx, vy, k = decode(spec["velocity"])
            return FlowGenerator(decode(spec["gspace"]), (vx, vy), k)
        if "__grid_element__" in value:
            spec = value["__grid_element__"]
            gs = decode(spec["gspace"])
            return GridElement(gs, decode(spec["g"], gs), tuple(spec["translation"]))
        if "__group_element__" in value:
            if gspace is None:
                raise ValueError("a group element is decoded with the gspace whose fiber group it belongs to")
            spec = value["__group_element__"]
            raw = spec["value"]
            return gspace.fibergroup.element(tuple(raw) if isinstance(raw, list) else raw, spec["param"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A group element's parameter as Python numbers (tuples as lists)."""
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def _rep_recipe(rep: Any) -> Dict[str, Any]:
    if rep.name == "regular":
        return {"regular": True}
    irrep_id = getattr(rep, "id", None)
    if rep.name.startswith("irrep_") and irrep_id is not None:
        return {"irrep": list(irrep_id)}
    if rep.name.startswith("quotient[") and rep.name.endswith("]"):
        return {"quotient": rep.name[len("quotient["):-1]}
    return {"name": rep.name}


def _rep(gs: Any, recipe: Dict[str, Any]) -> Any:
    if recipe.get("regular"):
        return gs.regular_repr
    if "irrep" in recipe:
        return gs.irrep(*recipe["irrep"])
    if "quotient" in recipe:
        text = recipe["quotient"]
        sub = tuple(eval_literal(text))  # e.g. "2" or "(None, 2)"
        return gs.quotient_repr(sub[0] if len(sub) == 1 else sub)
    reps = gs.fibergroup.representations
    if recipe["name"] in reps:
        return reps[recipe["name"]]
    raise ValueError(f"cannot rebuild the representation {recipe['name']!r} of {gs}; build it before loading")


def eval_literal(text: str) -> Any:
    """``text`` read as a Python literal, always as a tuple."""
    value = ast.literal_eval(text)
    return value if isinstance(value, tuple) else (value,)
