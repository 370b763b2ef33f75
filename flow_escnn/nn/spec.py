"""Construction specs: how a model was built, in plain data, so a whole model can be saved.

``torch.save(model)`` (pickling) fails on flow_escnn models: escnn builds its
representations from local functions, which pickle cannot store. The supported way to save
a whole model is its *spec* (the constructor arguments, with escnn field types, gspaces and
flow sets written as plain data) plus its ``state_dict``: see
:func:`flow_escnn.models.save_model` / :func:`flow_escnn.models.load_model`.

:func:`records_init` makes a class remember the arguments its ``__init__`` was called with;
:func:`encode` / :func:`decode` turn them into plain data (lists, dicts, strings, numbers)
and back.
"""
from __future__ import annotations

import functools
import inspect
from fractions import Fraction
from typing import Any, Dict, TypeVar

from flow_escnn._compat import enn, gspaces
from flow_escnn.flows.flowset import FlowSet

__all__ = ["records_init", "init_args", "encode", "decode"]

C = TypeVar("C")


def records_init(cls: C) -> C:
    """Class decorator: keep the arguments of the outermost ``__init__`` call in ``self._init_args``."""
    init = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        outermost = "_init_args" not in self.__dict__
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            arguments = dict(bound.arguments)
            arguments.pop("self")
            extra = {}
            for name, param in signature.parameters.items():
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    extra = arguments.pop(name, {})
            self.__dict__["_init_args"] = {**arguments, **extra}
        init(self, *args, **kwargs)

    cls.__init__ = wrapped  # type: ignore[misc]
    return cls


def init_args(module: Any) -> Dict[str, Any]:
    """The recorded constructor arguments of a :func:`records_init` class instance."""
    try:
        return dict(module.__dict__["_init_args"])
    except KeyError:
        raise TypeError(f"{type(module).__name__} does not record its constructor arguments") from None


def encode(value: Any) -> Any:
    """Plain data for constructor arguments: escnn gspaces, field types and FlowSets included."""
    if isinstance(value, enn.FieldType):
        return {"__field_type__": {"gspace": encode(value.gspace), "reps": [_rep_recipe(r) for r in value.representations]}}
    if isinstance(value, FlowSet):
        return {"__flow_set__": {"gspace": encode(value.gspace), "velocities": [encode(list(v)) for v in value.velocities]}}
    if hasattr(value, "_sg_id") and hasattr(value, "fibergroup"):
        sg = value._sg_id
        return {"__gspace__": [sg[0], sg[1], int(getattr(value, "_maximum_frequency", 6) or 6)]}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Fraction):  # rotation velocities in degrees on SO(2) / O(2)
        return {"__fraction__": [value.numerator, value.denominator]}
    raise TypeError(f"cannot write a {type(value).__name__} into a model spec")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, dict):
        if "__gspace__" in value:
            axis, n, freq = value["__gspace__"]
            return gspaces.GSpace2D((axis, n), freq)
        if "__field_type__" in value:
            spec = value["__field_type__"]
            gs = decode(spec["gspace"])
            return enn.FieldType(gs, [_rep(gs, r) for r in spec["reps"]])
        if "__fraction__" in value:
            return Fraction(*value["__fraction__"])
        if "__flow_set__" in value:
            spec = value["__flow_set__"]
            return FlowSet(decode(spec["gspace"]), [tuple(decode(v)) for v in spec["velocities"]])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


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
    import ast

    value = ast.literal_eval(text)
    return value if isinstance(value, tuple) else (value,)

