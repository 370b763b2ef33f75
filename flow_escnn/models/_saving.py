"""Save and load a whole model: its construction spec and its ``state_dict`` in one file; move its
weights to a model over another :math:`V`.

escnn's representations are built from local functions, which pickle cannot store, so
:func:`save_model` writes what rebuilds the model instead: the class, its constructor
arguments as plain data (:mod:`flow_escnn.nn._spec`: field types, gspaces and flow sets
included) and the ``state_dict`` (:func:`model_record`); :func:`load_model` rebuilds it and
loads the weights (``weights_only`` loading: no code is unpickled). ``pickle`` /
``torch.save(model)`` of these models go through the same spec
(:func:`flow_escnn.nn._spec.module_spec`), but loading a pickle runs code, so files to share
are best written here.

One format
----------
A run of the command line (``python -m flow_escnn.experiments train / world / kth``) writes
``checkpoint.pt`` with the same record beside its optimizer and RNG states
(``"model_record"``: the record without the weights, which sit under ``"model"``), so
:func:`load_model` reads a :func:`save_model` file, a run's ``checkpoint.pt`` and the run
folder itself, without knowing the experiments. Checkpoints written before runs stored the
record are rebuilt from their config's model section (:mod:`flow_escnn.models._config`).

Another V
---------
The :math:`U` and :math:`W` of a flow cell are shared over every velocity, so they do not depend
on :math:`V`: :func:`transfer_weights` loads them (and everything outside the flow layers) into a
model of the same architecture over another :math:`V`, and :func:`with_flows` builds that model
for you. A plain ``load_state_dict`` across different :math:`V` stays refused (the layers record
their V in the ``state_dict``), so no load changes V without saying so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Union

import torch

from flow_escnn._validate import one_of
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.models._classifier import SequenceClassifier
from flow_escnn.models._config import ClassifierConfig, PredictorConfig, WorldModelConfig
from flow_escnn.models._factory import build_classifier, build_predictor, build_world_model
from flow_escnn.models._predictor import NextFramePredictor
from flow_escnn.models._world import WorldModel
from flow_escnn.nn._baselines import GRNN, Conv3DClassifier
from flow_escnn.nn._conv import AUTO_PADDING
from flow_escnn.nn._sequence import FlowRNN
from flow_escnn.nn.cell_kinds import CELL_KINDS
from flow_escnn.nn._spec import init_args, module_spec, rebuild_module

__all__ = [
    "save_model",
    "load_model",
    "model_record",
    "transfer_weights",
    "with_flows",
    "SAVABLE",
    "RUN_CHECKPOINT",
    "FLOW_DEPENDENT",
]

#: The classes :func:`save_model` writes, by name.
SAVABLE: Dict[str, Any] = {
    cls.__name__: cls
    for cls in (*(kind.layer for kind in CELL_KINDS.values()), GRNN, NextFramePredictor, WorldModel,
                SequenceClassifier, Conv3DClassifier)
}
#: The file a command-line run keeps its model in, inside its run folder.
RUN_CHECKPOINT = "checkpoint.pt"
#: ``flow_dependent=`` of :func:`transfer_weights`: refuse parameters that depend on V, or keep the target's.
FLOW_DEPENDENT = ("refuse", "keep")
_FORMAT = "flow_escnn.model/1"
#: The classes whose ``padding_mode`` default did not change to ``"auto"`` (records marked ``"padding_default"``
#: were written since; one without the mark and without an explicit ``padding_mode`` was built circular).
_FIXED_PADDING = ("WorldModel", "Conv3DClassifier")

PathLike = Union[str, Path]


def model_record(model: torch.nn.Module, weights: bool = True) -> Dict[str, Any]:
    """What :func:`save_model` writes for ``model``: its format tag, class name, constructor
    arguments as plain data, ``training`` flag, frozen parameters and (``weights``) its ``state_dict``.

    A command-line run stores ``model_record(model, weights=False)`` in its ``checkpoint.pt``
    beside the ``state_dict`` it keeps for resuming, so :func:`load_model` reads both files.

    Raises:
        TypeError: for a model that is not one of :data:`SAVABLE`.

    Example:
        >>> from escnn import gspaces
        >>> from flow_escnn.models import PredictorConfig, build_predictor, model_record
        >>> model = build_predictor(PredictorConfig(hidden_channels=2, flow_radius=1).resolve())
        >>> record = model_record(model, weights=False)
        >>> record["class"], "state_dict" in record
        ('NextFramePredictor', False)
    """
    name = type(model).__name__
    if SAVABLE.get(name) is not type(model):
        raise TypeError(f"save_model writes {sorted(SAVABLE)}, got {name}; save its state_dict instead")
    spec = module_spec(model)
    if not weights:
        spec.pop("state_dict")
    return {"format": _FORMAT, "class": name, **spec, "padding_default": AUTO_PADDING}


def save_model(model: torch.nn.Module, path: PathLike) -> None:
    """Write ``model`` (one of :data:`SAVABLE`) as spec + ``state_dict`` to ``path`` (:func:`model_record`).

    Raises:
        TypeError: for a model of another class.
    """
    torch.save(model_record(model), Path(path))


def load_model(path: PathLike, map_location: Any = "cpu") -> torch.nn.Module:
    """Rebuild the model of a file and load its weights: a :func:`save_model` file, a command-line
    run's ``checkpoint.pt``, or the run folder that holds it.

    A run's model comes back in eval mode (a :func:`save_model` file keeps the ``training`` flag
    it was saved with). A model built without an explicit ``interpolation`` is rebuilt with the
    one its flow layers recorded in the ``state_dict`` (the default when it was saved: bicubic
    before cubic6 became the default), so files saved under an older default keep loading. The
    model comes back on the device its weights load to (``map_location``), in their dtype
    (:func:`flow_escnn.nn._spec.rebuild_module`).

    Args:
        path: a :func:`save_model` file, a ``checkpoint.pt`` written by ``python -m
            flow_escnn.experiments train`` / ``world`` / ``kth``, or its run folder.
        map_location: where the weights load to (``torch.load``'s argument).

    Raises:
        FileNotFoundError: when ``path`` does not exist, or is a folder without a ``checkpoint.pt``.
        ValueError: when ``path`` is not such a file.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from flow_escnn.models import PredictorConfig, build_predictor, load_model, save_model
        >>> model = build_predictor(PredictorConfig(hidden_channels=2, flow_radius=1).resolve()).eval()
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     save_model(model, Path(folder) / "model.pt")
        ...     loaded = load_model(Path(folder) / "model.pt")
        >>> x = torch.rand(1, 3, 1, 8, 8)
        >>> torch.equal(loaded(x, 2), model(x, 2))
        True
    """
    path = Path(path)
    if path.is_dir():
        if not (path / RUN_CHECKPOINT).is_file():
            raise FileNotFoundError(
                f"{path} is a folder without a {RUN_CHECKPOINT}: pass a run folder of `python -m "
                "flow_escnn.experiments train` (or world, kth), its checkpoint.pt, or a file written by save_model"
            )
        path = path / RUN_CHECKPOINT
    elif not path.exists():
        raise FileNotFoundError(f"no model file at {path}: pass a save_model file, a run's checkpoint.pt or its folder")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ValueError(f"{path} is not a readable model file ({type(exc).__name__}: {exc})") from None
    if _is_record(payload, weights=True):
        return _rebuild(payload)
    if isinstance(payload, dict) and isinstance(payload.get("model"), Mapping) and isinstance(payload.get("config"),
                                                                                               Mapping):
        record = payload.get("model_record")
        if record is None:  # written before runs stored their record: rebuild from the config's model section
            return _from_config(payload["config"], payload["model"], path).eval()
        if not _is_record(record, weights=False):
            raise ValueError(f"{path} holds a model record of an unknown format ({record.get('format')!r}) or class "
                             f"({record.get('class')!r}); it was written by another flow_escnn: load it with that one")
        return _rebuild({**record, "state_dict": payload["model"]}).eval()
    raise ValueError(
        f"{path} was written neither by flow_escnn.models.save_model nor by a command-line run "
        "(python -m flow_escnn.experiments train / world / kth)"
    )


def _is_record(payload: Any, weights: bool) -> bool:
    return (isinstance(payload, dict) and payload.get("format") == _FORMAT and payload.get("class") in SAVABLE
            and (not weights or "state_dict" in payload))


def _rebuild(record: Dict[str, Any]) -> torch.nn.Module:
    args = dict(record["args"])
    if "interpolation" not in args:  # built with the default of its day: rebuild with what its layers recorded
        recorded = {v["interpolation"] for k, v in record["state_dict"].items()
                    if k.rsplit(".", 1)[-1] == "_extra_state" and isinstance(v, dict) and "interpolation" in v}
        if len(recorded) == 1:
            args["interpolation"] = recorded.pop()
    if ("padding_mode" not in args and record.get("padding_default") != AUTO_PADDING
            and record["class"] not in _FIXED_PADDING):  # saved while circular was the default: keep it
        args["padding_mode"] = "circular"
    return rebuild_module(SAVABLE[record["class"]], {**record, "args": args})


def _model_section(cls: Any, config: Mapping[str, Any]) -> Any:
    """The model section ``cls`` (a :class:`~flow_escnn.models.ModelConfig` subclass) of a task config's dict."""
    names = set(cls.__dataclass_fields__)
    return cls.from_dict({k: v for k, v in config.items() if k in names}).resolve()


def _from_config(config: Mapping[str, Any], state: Mapping[str, Any], path: Path) -> torch.nn.Module:
    """The model of a run checkpoint without a record: its task config's model section, built by the factory
    (a task config holds its model section's fields, :mod:`flow_escnn.models._config`)."""
    try:
        if "world_size" in config:  # a world-model run
            model = build_world_model(_model_section(WorldModelConfig, config))
        elif "conv3d_channels" in config:  # a classification run: as many classes as its head has rows
            model = build_classifier(_model_section(ClassifierConfig, config), int(state["head.weight"].shape[0]))
        else:  # a next-frame run
            model = build_predictor(_model_section(PredictorConfig, config))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{path} is a run checkpoint without a model record, and its config does not rebuild its model "
            f"({type(exc).__name__}: {exc}); load it with the flow_escnn that wrote it and save_model the model, "
            "or retrain"
        ) from None
    return model


# -- another V ---------------------------------------------------------------------------------------------------
def transfer_weights(src: Union[torch.nn.Module, Mapping[str, Any]], dst: torch.nn.Module, *,
                     flow_dependent: str = "refuse") -> torch.nn.Module:
    """Load the weights of ``src`` into ``dst``, a model of the same architecture over another flow set V.

    A flow cell's :math:`U` and :math:`W` are shared over every velocity, so they do not depend on
    :math:`V` (:attr:`~flow_escnn.nn.FlowCellBase.flow_free`); neither does anything outside the
    flow layers (decoders, heads). They are copied as they are. Every other fact of a flow layer
    (cell kind, gspace, field types, depth, interpolation) must match. A plain
    ``dst.load_state_dict(src.state_dict())`` refuses another V, even with ``strict=False``; this
    is the route that means it.

    Args:
        src: the trained model, or its ``state_dict``.
        dst: the model to load into (its V may differ); loaded in place and returned.
        flow_dependent: what to do with parameters that depend on V (V-mixing weights, G-RNN+
            per-velocity kernels) when the V differ: ``"refuse"`` (default) raises, ``"keep"``
            leaves ``dst``'s own (initial) values.

    Returns:
        ``dst``, with the weights of ``src``.

    Raises:
        TypeError: when ``src`` and ``dst`` are models of different classes, or ``dst`` has no flow layer.
        ValueError: naming what differs besides V, or the parameters that depend on V.

    Example:
        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> from flow_escnn import FlowSet
        >>> from flow_escnn.models import NextFramePredictor, transfer_weights
        >>> gs = gspaces.rot2dOnR2(4)
        >>> in_type, hidden = enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr])
        >>> v1 = NextFramePredictor(in_type, hidden, FlowSet.translations(gs, 1))
        >>> v2 = transfer_weights(v1, NextFramePredictor(in_type, hidden, FlowSet.translations(gs, 2)))
        >>> torch.equal(v2.encoder.cells[0].W.conv.weights, v1.encoder.cells[0].W.conv.weights)
        True
    """
    one_of(flow_dependent, FLOW_DEPENDENT, "flow_dependent")
    if not isinstance(dst, torch.nn.Module):
        raise TypeError(f"dst must be a torch.nn.Module to load into, got {type(dst).__name__}")
    if isinstance(src, torch.nn.Module):
        if type(src) is not type(dst):
            raise TypeError(f"transfer_weights moves weights between models of one class, got {type(src).__name__} "
                            f"-> {type(dst).__name__}")
        state = dict(src.state_dict())
    elif isinstance(src, Mapping):
        state = dict(src)
    else:
        raise TypeError(f"src must be a model or its state_dict, got {type(src).__name__}")
    layers = [(name + "." if name else "", m) for name, m in dst.named_modules() if isinstance(m, FlowRNN)]
    if not layers:
        raise TypeError(f"{type(dst).__name__} has no flow layer (no V to change): use dst.load_state_dict(state)")
    mine = dst.state_dict()
    for prefix, layer in layers:
        facts = layer.layer_facts()
        saved = state.get(prefix + "_extra_state")
        if isinstance(saved, Mapping):
            differ = {k: (saved[k], v) for k, v in facts.items() if k != "flows" and k in saved and saved[k] != v}
            if differ:
                detail = "; ".join(f"{k}: source {a!r}, target {b!r}" for k, (a, b) in differ.items())
                raise ValueError(
                    f"transfer_weights changes V only, but the flow layer {prefix[:-1] or type(dst).__name__!r} differs "
                    f"in more ({detail}): build the target with the source's settings apart from its flows"
                )
        same_v = isinstance(saved, Mapping) and saved.get("flows") == facts["flows"]
        state[prefix + "_extra_state"] = facts  # the target's V: what this load means
        for i, cell in enumerate(layer.cells):
            cell_prefix = f"{prefix}cells.{i}."
            free = tuple(f"{cell_prefix}{sub}." for sub in cell.flow_free)
            dependent = sorted(k for k in set(state) | set(mine) if k.startswith(cell_prefix) and not k.startswith(free))
            if not dependent or same_v:
                continue
            if flow_dependent == "refuse":
                raise ValueError(
                    f"the parameters {dependent} depend on V (they are indexed by or built from the velocities), so "
                    "they cannot move to another V: pass flow_dependent='keep' to leave the target's own values, or "
                    "build both models without them"
                )
            for k in dependent:
                if k in mine:
                    state[k] = mine[k]
                else:
                    state.pop(k)
    shapes = sorted(k for k, v in mine.items() if isinstance(v, torch.Tensor) and isinstance(state.get(k), torch.Tensor)
                    and state[k].shape != v.shape)
    if shapes:
        detail = ", ".join(f"{k}: source {tuple(state[k].shape)}, target {tuple(mine[k].shape)}" for k in shapes)
        raise ValueError(f"the models differ in more than V: parameter shapes differ ({detail})")
    dst.load_state_dict(state)
    return dst


def with_flows(model: torch.nn.Module, flows: FlowSet, *, flow_dependent: str = "refuse") -> torch.nn.Module:
    """A copy of ``model`` over the flow set ``flows``, with its weights (:func:`transfer_weights`).

    The copy is built from ``model``'s recorded constructor arguments with ``flows`` in place of
    its V, on its device and in its dtype, in its ``training`` mode; ``model`` is unchanged.

    Args:
        model: a model over a flow set (one of :data:`SAVABLE` with a ``flows`` argument).
        flows: the new V, on the model's gspace.
        flow_dependent: as in :func:`transfer_weights`.

    Raises:
        TypeError: for a model without a ``flows`` argument, or ``flows`` that is not a FlowSet.
        ValueError: as in :func:`transfer_weights`.

    Example:
        >>> import torch
        >>> from escnn import gspaces, nn as enn
        >>> from flow_escnn import FlowSet
        >>> from flow_escnn.nn import FERNN
        >>> from flow_escnn.models import with_flows
        >>> gs = gspaces.rot2dOnR2(4)
        >>> model = FERNN(enn.FieldType(gs, [gs.trivial_repr]), enn.FieldType(gs, [gs.regular_repr]),
        ...               FlowSet.translations(gs, 1))
        >>> wider = with_flows(model, FlowSet.translations(gs, 2))
        >>> len(wider.flows), torch.equal(wider.cells[0].U.conv.weights, model.cells[0].U.conv.weights)
        (25, True)
    """
    if not isinstance(flows, FlowSet):
        raise TypeError(f"flows must be a FlowSet, got {type(flows).__name__}")
    try:
        args = init_args(model)
    except TypeError:
        raise TypeError(f"with_flows rebuilds models that record their construction ({sorted(SAVABLE)}), got "
                        f"{type(model).__name__}: build the target yourself and call transfer_weights") from None
    if "flows" not in args:
        raise TypeError(f"{type(model).__name__} has no flow set V to change (no flows argument)")
    target = type(model)(**{**args, "flows": flows})
    for p in model.parameters():
        target.to(device=p.device, dtype=p.dtype)
        break
    transfer_weights(model, target, flow_dependent=flow_dependent)
    theirs = dict(target.named_parameters())
    for name, p in model.named_parameters():  # frozen parameters stay frozen
        if not p.requires_grad and name in theirs:
            theirs[name].requires_grad_(False)
    return target.train(model.training)
