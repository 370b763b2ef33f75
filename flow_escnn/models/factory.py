"""Models from configs: the one place a config section becomes a gspace, field types, a V and a model.

Every task (``flow_escnn.experiments``) builds its model here, from a resolved
:class:`~flow_escnn.models.config.ModelConfig` subclass; nothing else constructs the
task models from configs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import torch

from flow_escnn._compat import enn, gspaces
from flow_escnn._validate import positive_int
from flow_escnn.flows.flowset import FlowSet
from flow_escnn.models.classifier import SequenceClassifier
from flow_escnn.models.predictor import NextFramePredictor
from flow_escnn.nn.baselines import Conv3DClassifier

if TYPE_CHECKING:  # the configs import this module
    from flow_escnn.models.config import ClassifierConfig, ModelConfig, PredictorConfig

__all__ = [
    "SO2_GROUP",
    "SO2_FREQUENCIES",
    "make_gspace",
    "field_types",
    "model_flows",
    "build_predictor",
    "build_classifier",
    "count_parameters",
]

#: ``group`` of the continuous rotation group SO(2) (``rot2dOnR2(-1)``, escnn's convention).
SO2_GROUP = -1
#: On SO(2) a hidden "field" of the configs is the irreps of frequencies 0..3 (1 + 2 + 2 + 2 = 7 channels).
SO2_FREQUENCIES = 3


def make_gspace(group: int) -> Any:
    """``trivialOnR2()`` for ``group == 1``, ``rot2dOnR2(-1)`` (SO(2)) for -1, else ``rot2dOnR2(group)``."""
    if group == SO2_GROUP:
        return gspaces.rot2dOnR2(-1)
    positive_int(group, "group")
    return gspaces.trivialOnR2() if group == 1 else gspaces.rot2dOnR2(group)


def field_types(config: "ModelConfig", in_fields: int = 1) -> Tuple[Any, Any]:
    """``(in_type, hidden_type)``: ``in_fields`` trivial (grayscale) fields in; F regular fields hidden
    (regular fields of the trivial group are single channels; on SO(2) F x irreps 0..3)."""
    gs = make_gspace(config.group)
    in_type = enn.FieldType(gs, [gs.trivial_repr] * positive_int(in_fields, "in_fields"))
    if config.group == SO2_GROUP:
        block = [gs.irrep(k) for k in range(SO2_FREQUENCIES + 1)]
        return in_type, enn.FieldType(gs, block * config.hidden_field_count())
    hidden_type = enn.FieldType(gs, [gs.regular_repr] * config.hidden_field_count())
    return in_type, hidden_type


def model_flows(config: "ModelConfig", gspace: Any) -> FlowSet:
    """The model's V for a *resolved* config (``FlowSet.identity`` for a model without flows)."""
    if not config.has_flows:
        return FlowSet.identity(gspace)
    kind = config.kind
    if (kind.translates and config.flow_radius is None) or (kind.rotates and config.flow_steps is None):
        raise ValueError(
            f"the config leaves the model's V open (flow_radius={config.flow_radius!r}, "
            f"flow_steps={config.flow_steps!r}); call config.resolve() first"
        )
    return kind.model_flows(gspace, config.flow_radius, config.flow_steps_list())


def _encoder_kwargs(c: "ModelConfig") -> dict:
    """The encoder arguments of a model section (``grnn`` is ``fernn`` over the identity V)."""
    if c.model == "grnn_plus":
        return {"cell": "grnn_plus", "num_layers": c.num_layers, "nonlinearity": c.nonlinearity,
                "velocity_kernel_size": c.velocity_kernel_size, "init": "auto"}
    return {"cell": c.cell, "num_layers": c.num_layers, "interpolation": c.interpolation,
            **({"nonlinearity": c.nonlinearity} if c.cell == "fernn" else {})}


def build_predictor(config: "PredictorConfig", checkpoint: bool = False) -> NextFramePredictor:
    """The next-frame model of a config: ``forward(x [B, T_in, C, H, W], P) -> [B, P, C, H, W]``.

    The config is resolved first. The model has ``encoder`` (the lifted hidden sequence
    ``[B, T, |V|, C, H, W]``) and ``flows`` (its V), which the plots use. ``checkpoint``
    switches on gradient checkpointing (same function, less memory, more compute).
    """
    c = config.resolve()
    in_type, hidden_type = field_types(c)
    gs = in_type.gspace
    # the decoder's ReLUs need permutation fields: on SO(2) as many trivial channels as the hidden type has
    decoder_type = enn.FieldType(gs, [gs.trivial_repr] * hidden_type.size) if c.group == SO2_GROUP else None
    return NextFramePredictor(
        in_type, hidden_type, model_flows(c, gs), decoder_layers=c.decoder_layers, pool=c.pool,
        kernel_size=c.kernel_size, output_activation=c.output_activation, checkpoint=checkpoint,
        decoder_type=decoder_type, **_encoder_kwargs(c),
    )


def build_classifier(config: "ClassifierConfig", num_classes: int, checkpoint: bool = False) -> torch.nn.Module:
    """The sequence classifier of a config (one grayscale input field; circular padding, since moved
    clips wrap around the torus): :class:`~flow_escnn.models.SequenceClassifier` (``checkpoint``:
    gradient checkpointing of its recurrence) or, for ``conv3d``, :class:`~flow_escnn.models.Conv3DClassifier`."""
    c = config.resolve()
    positive_int(num_classes, "num_classes")
    if c.model == "conv3d":
        return Conv3DClassifier(1, num_classes, channels=c.conv3d_channel_list(), kernel_size=c.kernel_size,
                                padding_mode="circular")
    in_type, hidden_type = field_types(c)
    return SequenceClassifier(in_type, hidden_type, model_flows(c, in_type.gspace), num_classes,
                              kernel_size=c.kernel_size, checkpoint=checkpoint, **_encoder_kwargs(c))


def count_parameters(model: torch.nn.Module) -> int:
    """The number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
