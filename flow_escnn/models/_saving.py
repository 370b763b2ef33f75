"""Save and load a whole model: its construction spec and its ``state_dict`` in one file.

escnn's representations are built from local functions, which pickle cannot store, so
:func:`save_model` writes what rebuilds the model instead: the class, its constructor
arguments as plain data (:mod:`flow_escnn.nn._spec`: field types, gspaces and flow sets
included) and the ``state_dict``; :func:`load_model` rebuilds it and loads the weights
(``weights_only`` loading: no code is unpickled). ``pickle`` / ``torch.save(model)`` of these
models go through the same spec (:func:`flow_escnn.nn._spec.module_spec`), but loading a pickle
runs code, so files to share are best written here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch

from flow_escnn.models._classifier import SequenceClassifier
from flow_escnn.models._predictor import NextFramePredictor
from flow_escnn.models._world import WorldModel
from flow_escnn.nn._baselines import GRNN, Conv3DClassifier
from flow_escnn.nn.cell_kinds import CELL_KINDS
from flow_escnn.nn._spec import module_spec, rebuild_module

__all__ = ["save_model", "load_model", "SAVABLE"]

#: The classes :func:`save_model` writes, by name.
SAVABLE: Dict[str, Any] = {
    cls.__name__: cls
    for cls in (*(kind.layer for kind in CELL_KINDS.values()), GRNN, NextFramePredictor, WorldModel,
                SequenceClassifier, Conv3DClassifier)
}
_FORMAT = "flow_escnn.model/1"


def save_model(model: torch.nn.Module, path: Union[str, Path]) -> None:
    """Write ``model`` (one of :data:`SAVABLE`) as spec + ``state_dict`` to ``path``.

    Raises:
        TypeError: for a model of another class.
    """
    name = type(model).__name__
    if SAVABLE.get(name) is not type(model):
        raise TypeError(f"save_model writes {sorted(SAVABLE)}, got {name}; save its state_dict instead")
    payload = {"format": _FORMAT, "class": name, **module_spec(model)}
    torch.save(payload, Path(path))


def load_model(path: Union[str, Path], map_location: Any = "cpu") -> torch.nn.Module:
    """Rebuild the model :func:`save_model` wrote to ``path`` and load its weights.

    A model built without an explicit ``interpolation`` is rebuilt with the one its flow layers
    recorded in the ``state_dict`` (the default when it was saved: bicubic before cubic6 became
    the default), so files saved under an older default keep loading. The model comes back on the
    device its weights load to (``map_location``), in their dtype (:func:`flow_escnn.nn._spec.rebuild_module`).

    Raises:
        ValueError: when ``path`` is not such a file.
    """
    try:
        payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"{path} is not a readable model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT or payload.get("class") not in SAVABLE:
        raise ValueError(f"{path} was not written by flow_escnn.models.save_model")
    args = dict(payload["args"])
    if "interpolation" not in args:  # built with the default of its day: rebuild with what its layers recorded
        recorded = {v["interpolation"] for k, v in payload["state_dict"].items()
                    if k.rsplit(".", 1)[-1] == "_extra_state" and isinstance(v, dict) and "interpolation" in v}
        if len(recorded) == 1:
            args["interpolation"] = recorded.pop()
    return rebuild_module(SAVABLE[payload["class"]], {**payload, "args": args})
