"""Construction specs of modules: how a model was built, in plain data, so a whole model can be
saved or pickled.

escnn builds its representations from local functions, which pickle cannot store, so the
default pickling of a module holding escnn field types fails. A module whose class records its
constructor arguments (:func:`records_init`: the sequence layers, the baselines and the task
models) is instead written as its *spec*: the class, the constructor arguments as plain data
(:func:`flow_escnn.flows._spec.encode`: field types, gspaces and flow sets included) and its
``state_dict``. :func:`flow_escnn.models.save_model` / :func:`flow_escnn.models.load_model` store
it in a file; ``pickle`` / ``torch.save`` (``__reduce__``) and :func:`rebuild_module` use the same
spec, so such a module pickles and rebuilds with identical weights, buffers, dtype, device,
``training`` flag and frozen (``requires_grad=False``) parameters. What a spec does not hold is
lost: hooks, attributes set after construction, parameters shared with modules outside.
``copy.copy`` / ``copy.deepcopy`` keep their default behaviour (no rebuild).

Modules that hold escnn objects but no spec (:func:`refuses_pickle`: the cells, the steerable
convolution, :class:`~flow_escnn.nn.PerFrame`) refuse to pickle with a message saying what to
pickle instead.
"""
from __future__ import annotations

import copy
import functools
import inspect
from typing import Any, Dict, Type, TypeVar

import torch

from flow_escnn.flows._spec import decode, encode

__all__ = ["records_init", "init_args", "encode", "decode", "module_spec", "rebuild_module", "refuses_pickle"]

C = TypeVar("C")

#: What to pickle instead of a module that holds escnn objects without a spec.
PICKLE_ADVICE = (
    "pickle / torch.save the whole model instead (FERNN, FlowGRU, FlowLSTM, GRNN, GRNNPlus, NextFramePredictor, "
    "SequenceClassifier, Conv3DClassifier, and FlowSequential chains without PerFrame pickle through their "
    "construction spec), save it with flow_escnn.models.save_model and rebuild it with flow_escnn.models.load_model, "
    "or pickle its plain-PyTorch twin from export()"
)


def records_init(cls: C) -> C:
    """Class decorator: keep the arguments of the outermost ``__init__`` call in ``self._init_args``,
    and pickle instances through their spec (see the module docstring)."""
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

    wrapped.records_init = True  # type: ignore[attr-defined]
    cls.__init__ = wrapped  # type: ignore[misc]
    cls.__reduce_ex__ = _reduce_by_spec  # type: ignore[attr-defined]
    cls.__copy__ = _default_copy  # type: ignore[attr-defined]
    cls.__deepcopy__ = _default_deepcopy  # type: ignore[attr-defined]
    return cls


def refuses_pickle(cls: C) -> C:
    """Class decorator for modules that hold escnn objects but no spec: pickling raises ``TypeError``
    saying what to pickle instead (not escnn's ``Can't pickle local object``); copies stay default."""
    cls.__reduce_ex__ = _refuse_pickle  # type: ignore[attr-defined]
    cls.__copy__ = _default_copy  # type: ignore[attr-defined]
    cls.__deepcopy__ = _default_deepcopy  # type: ignore[attr-defined]
    return cls


def init_args(module: Any) -> Dict[str, Any]:
    """The recorded constructor arguments of a :func:`records_init` class instance."""
    try:
        return dict(module.__dict__["_init_args"])
    except KeyError:
        raise TypeError(f"{type(module).__name__} does not record its constructor arguments") from None


def module_spec(module: torch.nn.Module) -> Dict[str, Any]:
    """``{"args", "state_dict", "training", "frozen"}`` of a :func:`records_init` module (what
    :func:`rebuild_module` needs; ``args`` encoded as plain data)."""
    return {
        "args": encode(init_args(module)),
        "state_dict": module.state_dict(),
        "training": module.training,
        "frozen": [name for name, p in module.named_parameters() if not p.requires_grad],
    }


def rebuild_module(cls: Type[torch.nn.Module], spec: Dict[str, Any]) -> torch.nn.Module:
    """Build ``cls`` from a :func:`module_spec`: construct it from the decoded arguments, move it to the
    device and dtype of its saved parameters, load the ``state_dict``, restore ``training`` and frozen
    parameters."""
    state = spec["state_dict"]
    model = cls(**decode(spec["args"]))
    for name, _ in model.named_parameters():  # flow_escnn's layers keep all parameters in one dtype
        saved = state.get(name)
        if isinstance(saved, torch.Tensor) and saved.is_floating_point():
            model.to(device=saved.device, dtype=saved.dtype)
        break
    model.load_state_dict(state)
    for name in spec.get("frozen", ()):
        model.get_parameter(name).requires_grad_(False)
    return model.train(bool(spec.get("training", False)))


def _reduce_by_spec(self: torch.nn.Module, protocol: int = 2) -> Any:
    cls = type(self)
    if not getattr(cls.__init__, "records_init", False):
        raise TypeError(
            f"{cls.__name__} defines its own __init__ without recording its arguments, so it cannot be rebuilt "
            f"from a spec: decorate it with flow_escnn.nn._spec.records_init, or {PICKLE_ADVICE}"
        )
    return (rebuild_module, (cls, module_spec(self)))


def _refuse_pickle(self: torch.nn.Module, protocol: int = 2) -> Any:
    raise TypeError(
        f"cannot pickle a {type(self).__name__}: it holds escnn field types, which pickle cannot store "
        f"(escnn builds them from local functions); {PICKLE_ADVICE}"
    )


def _default_copy(self: Any) -> Any:
    """What ``copy.copy`` does without ``__reduce_ex__``: a new instance sharing the attributes."""
    new = type(self).__new__(type(self))
    new.__setstate__(self.__getstate__())
    return new


def _default_deepcopy(self: Any, memo: Dict[int, Any]) -> Any:
    """What ``copy.deepcopy`` does without ``__reduce_ex__``: a new instance with copied attributes."""
    new = type(self).__new__(type(self))
    memo[id(self)] = new
    new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
    return new
