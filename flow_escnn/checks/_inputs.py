"""Validation of what the user hands to the checks, and running the model.

The checks treat the model as a black box ``model(x)`` on a sequence
``x: [B, T, C, H, W]`` (``[B, T, C, D, H, W]`` when the input type's gspace is 3D). This
module validates ``x`` against the input field type, coerces flows and fiber elements,
calls the model (under ``torch.no_grad()``, in whatever train/eval mode the caller left
it) and wraps its output as a :class:`ModelOutput`, either *plain* (``[B, T', C', H', W']``,
``[B, T', C', D', H', W']`` on volumes, of a given escnn ``FieldType``) or *lifted* (a
:class:`~flow_escnn.lifted.LiftedTensor` ``[B, T', V, C', H', W']`` or
``[B, T', V, C', D', H', W']``).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Union

import torch

from flow_escnn._compat import enn
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows._generator import FlowGenerator
from flow_escnn.flows._plans import spatial_dims
from flow_escnn.flows._volume import VolumeGenerator
from flow_escnn.lifted import LiftedFieldType, LiftedTensor
from flow_escnn.sequences import SequenceTensor

__all__ = [
    "FlowsLike",
    "ModelOutput",
    "validate_input",
    "coerce_flows",
    "coerce_elements",
    "check_model_mode",
    "run_model",
]

FlowsLike = Union[FlowGenerator, VolumeGenerator, FlowSet, Sequence[int], Sequence[Any]]
"""One flow (a :class:`FlowGenerator` or a velocity ``(vx, vy)`` / ``(vx, vy, k)``; on a 3D gspace a
:class:`~flow_escnn.flows._volume.VolumeGenerator` or a velocity ``(vx, vy, vz)`` /
``(vx, vy, vz, kx, ky, kz)``), a :class:`FlowSet`, or a sequence of flows."""

#: The names of the grid axes of a frame, by the number of spatial dimensions.
_AXES = {2: "H, W", 3: "D, H, W"}
#: The lengths of a velocity tuple, by the number of spatial dimensions.
_VELOCITY_LENGTHS = {2: (2, 3), 3: (3, 6)}
_VELOCITY_FORMS = {2: "(vx, vy) / (vx, vy, k)", 3: "(vx, vy, vz) / (vx, vy, vz, kx, ky, kz)"}


def validate_input(x: Any, in_type: Any) -> None:
    """Check that ``x`` is a floating tensor ``[B, T, C, H, W]`` with ``C == in_type.size``
    (``[B, T, C, D, H, W]`` when ``in_type`` lives on a 3D gspace).

    Raises:
        TypeError: when ``x`` is not a tensor or ``in_type`` not an escnn ``FieldType``.
        ValueError: on a wrong rank, an empty axis, a channel mismatch or an integer dtype.
    """
    if not isinstance(in_type, enn.FieldType):
        raise TypeError(
            f"in_type must be an escnn FieldType describing the input channels, got {type(in_type).__name__}"
        )
    nd = spatial_dims(in_type.gspace)
    layout = f"[B, T, C, {_AXES[nd]}]"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != 3 + nd:
        volume = f" (in_type lives on the 3D gspace {in_type.gspace.name})" if nd == 3 else ""
        raise ValueError(
            f"x must be a sequence {layout} ({3 + nd} dims){volume}, got shape {tuple(x.shape)}; "
            "add a time axis with x.unsqueeze(1) for a single frame"
        )
    b, t, c = x.shape[:3]
    if t < 1:
        raise ValueError(f"x must have T >= 1 frames, got shape {tuple(x.shape)}")
    if b < 1 or min(x.shape[3:]) < 1:
        raise ValueError(f"x must have non-empty batch and grid axes, got shape {tuple(x.shape)}")
    if c != in_type.size:
        raise ValueError(
            f"x has C={c} channels (dim 2 of {layout}) but in_type has size {in_type.size}; "
            "pass the in_type of the model's input fields"
        )
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be a floating tensor (the check runs in x's dtype), got {x.dtype}")


def _is_velocity(obj: Any, nd: int = 2) -> bool:
    return (
        isinstance(obj, (tuple, list))
        and len(obj) in _VELOCITY_LENGTHS[nd]
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in obj)
    )


def _is_generator(obj: Any) -> bool:
    return isinstance(obj, (FlowGenerator, VolumeGenerator))


def _coerce_one(gspace: Any, mu: Any) -> Any:
    nd = spatial_dims(gspace)
    if _is_generator(mu):
        if mu.gspace != gspace:
            raise ValueError(f"flow {mu} is defined on gspace {mu.gspace}, but in_type lives on {gspace}")
        return mu
    if _is_velocity(mu, nd):
        vel = tuple(mu)
        try:
            if nd == 3:
                return FlowSet.as_generator(gspace, vel)
            return FlowGenerator(gspace, vel[:2], vel[2] if len(vel) == 3 else 0)
        except ValueError as exc:
            raise ValueError(f"invalid flow {mu!r} on {gspace}: {exc}") from None
    if nd == 3:
        raise TypeError(
            "a flow on a 3D gspace is a VolumeGenerator or a velocity tuple (vx, vy, vz) / (vx, vy, vz, kx, ky, kz) "
            f"of integers, got {mu!r}"
        )
    raise TypeError(
        f"a flow is a FlowGenerator or a velocity tuple (vx, vy) / (vx, vy, k) of integers, got {mu!r}"
    )


def coerce_flows(gspace: Any, flows: FlowsLike) -> List[Any]:
    """Normalise ``flows`` to a non-empty list of generators on ``gspace`` (duplicates removed):
    :class:`FlowGenerator` s on a planar gspace, :class:`~flow_escnn.flows._volume.VolumeGenerator` s on a 3D one.

    Raises:
        TypeError: on an object that is not a flow, a FlowSet or a sequence of flows.
        ValueError: on an empty collection, a non-integer velocity, or a flow on another gspace.
    """
    if isinstance(flows, FlowSet):
        if flows.gspace != gspace:
            raise ValueError(f"FlowSet {flows!r} is defined on {flows.gspace}, but in_type lives on {gspace}")
        items: List[Any] = list(flows)
    elif _is_generator(flows) or _is_velocity(flows, spatial_dims(gspace)):
        items = [flows]
    elif isinstance(flows, (list, tuple)):
        items = list(flows)
    else:
        nd = spatial_dims(gspace)
        generator = "VolumeGenerator" if nd == 3 else "FlowGenerator"
        raise TypeError(
            f"flows must be a {generator}, a velocity tuple {_VELOCITY_FORMS[nd]}, a FlowSet, "
            f"or a list of those; got {type(flows).__name__}"
        )
    if not items:
        raise ValueError("flows is empty: give at least one input flow mu to check")
    out: List[Any] = []
    for mu in items:
        gen = _coerce_one(gspace, mu)
        if gen not in out:
            out.append(gen)
    return out


def coerce_elements(gspace: Any, elements: Optional[Sequence[Any]]) -> List[Any]:
    """Fiber-group elements to check: ``elements`` validated, or all of the fiber group if None.

    Raises:
        TypeError: when ``elements`` is not a sequence.
        ValueError: on an empty sequence or an element of another group.
    """
    group = gspace.fibergroup
    if elements is None:
        return list(group.elements)
    if not isinstance(elements, (list, tuple)):
        elements = [elements] if getattr(elements, "group", None) is not None else elements
        if not isinstance(elements, (list, tuple)):
            raise TypeError(f"elements must be a list of {group} elements, got {type(elements).__name__}")
    if not elements:
        raise ValueError(f"elements is empty: pass None to check every element of {group}")
    out = []
    helper = "" if spatial_dims(gspace) == 3 else " or flow_escnn.flows.rotation_element"
    for g in elements:
        if getattr(g, "group", None) != group:
            raise ValueError(
                f"{g!r} is not an element of the fiber group {group} of {gspace}; "
                f"build one with gspace.fibergroup.element(...){helper}"
            )
        if g not in out:
            out.append(g)
    return out


def check_model_mode(model: Callable[..., Any], allow_training: bool) -> None:
    """Refuse a ``torch.nn.Module`` left in training mode unless ``allow_training``.

    The checks never change the model's mode themselves: dropout or batch statistics
    would make two calls differ for reasons unrelated to equivariance, so the user
    should call ``model.eval()`` first (or opt in with ``allow_training=True``).

    Only the module's own ``training`` flag is read (what ``model.eval()`` sets); submodules
    that deliberately keep another state are the module's business.

    Raises:
        ValueError: when the model is a ``torch.nn.Module`` with ``model.training`` True.
    """
    if allow_training or not isinstance(model, torch.nn.Module):
        return
    if model.training:
        raise ValueError(
            f"the model ({type(model).__name__}) is in training mode; call model.eval() before checking "
            "equivariance (dropout / batch statistics change outputs between calls), or pass allow_training=True"
        )


@dataclass
class ModelOutput:
    """A validated model output.

    Attributes:
        tensor: ``[B, T', C', H, W]`` (plain) or ``[B, T', V, C', H, W]`` (lifted); ``D, H, W`` on volumes.
        field_type: escnn ``FieldType`` of each frame (of each V slice when lifted).
        lifted_type: the :class:`LiftedFieldType` for lifted outputs, else None.
    """

    tensor: torch.Tensor
    field_type: Any
    lifted_type: Optional[LiftedFieldType] = None

    @property
    def is_lifted(self) -> bool:
        return self.lifted_type is not None

    @property
    def kind(self) -> str:
        return "lifted" if self.is_lifted else "plain"

    @property
    def num_frames(self) -> int:
        return int(self.tensor.shape[1])

    @property
    def num_slices(self) -> int:
        return len(self.lifted_type) if self.lifted_type is not None else 1

    def as_lifted(self, tensor: Optional[torch.Tensor] = None) -> LiftedTensor:
        if self.lifted_type is None:
            raise ValueError("not a lifted output")
        return LiftedTensor(self.tensor if tensor is None else tensor, self.lifted_type)


def _wrap_output(y: Any, x: torch.Tensor, in_type: Any, out_type: Any) -> ModelOutput:
    b = x.shape[0]
    gspace = in_type.gspace
    nd = spatial_dims(gspace)
    axes = _AXES[nd]
    if isinstance(y, SequenceTensor):  # a typed plain sequence: its type is the out_type
        if out_type is not None and out_type not in (y.type, y.type.field_type):
            raise ValueError(f"out_type {out_type!r} does not match the type of the model's output {y.type!r}")
        y, out_type = y.tensor, y.type.field_type
    if isinstance(y, LiftedTensor):
        if not y.is_sequence:
            raise ValueError(
                f"the model returned a single lifted frame {tuple(y.shape)}; the checks need a sequence "
                f"[B, T', V, C, {axes}]. Wrap the model to return y.tensor.unsqueeze(1) as a LiftedTensor and "
                "set time_offset to the input time that frame corresponds to"
            )
        lt = y.type
        if lt.gspace != gspace:
            raise ValueError(f"the model's lifted output lives on {lt.gspace} but in_type on {gspace}")
        if out_type is not None and out_type != lt and out_type != lt.field_type:
            raise ValueError(
                f"out_type {out_type!r} does not match the type of the model's LiftedTensor output {lt!r}; "
                "omit out_type for lifted outputs"
            )
        tensor, field_type, lifted = y.tensor, lt.field_type, lt
    elif isinstance(y, torch.Tensor):
        if out_type is None:
            raise ValueError(
                "the model returned a plain tensor, so out_type (the escnn FieldType of its channels) is "
                "required to know how its output transforms"
            )
        if isinstance(out_type, LiftedFieldType):
            raise ValueError(
                "out_type is a LiftedFieldType but the model returned a plain tensor; return a LiftedTensor"
            )
        if not isinstance(out_type, enn.FieldType):
            raise TypeError(f"out_type must be an escnn FieldType, got {type(out_type).__name__}")
        if out_type.gspace != gspace:
            raise ValueError(f"out_type lives on {out_type.gspace} but in_type on {gspace}")
        if y.dim() != 3 + nd:
            raise ValueError(
                f"the model returned shape {tuple(y.shape)}; a plain output must be a sequence [B, T', C, {axes}]"
            )
        if y.shape[2] != out_type.size:
            raise ValueError(
                f"the model's output has C={y.shape[2]} channels (dim 2) but out_type has size {out_type.size}"
            )
        tensor, field_type, lifted = y, out_type, None
    else:
        raise TypeError(
            f"the model returned {type(y).__name__}; expected a torch.Tensor [B, T', C, {axes}] or a "
            f"flow_escnn.lifted.LiftedTensor [B, T', V, C, {axes}]"
        )
    if tensor.shape[0] != b:
        raise ValueError(f"the model's output has batch size {tensor.shape[0]}, input has {b}")
    if tensor.shape[1] < 1:
        raise ValueError(f"the model's output has no frames (shape {tuple(tensor.shape)})")
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"the model's output has dtype {tensor.dtype}; expected a floating dtype")
    return ModelOutput(tensor, field_type, lifted)


def run_model(model: Callable[..., Any], x: torch.Tensor, in_type: Any, out_type: Any = None) -> ModelOutput:
    """Call ``model(x)`` under ``torch.no_grad()`` and validate its output.

    The model receives a fresh copy of ``x`` so that in-place edits cannot leak
    between calls.

    Raises:
        TypeError / ValueError: when the output is neither a plain ``[B, T', C', H, W]``
            (``[B, T', C', D, H, W]`` on volumes) tensor with a matching ``out_type`` nor a lifted sequence.
    """
    with torch.no_grad():
        y = model(x.clone())
    return _wrap_output(y, x, in_type, out_type)
