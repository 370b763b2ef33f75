"""Models from configs: the one place a resolved config section becomes a model.

Every task (``flow_escnn.experiments``) builds its model here, from a *resolved*
:class:`~flow_escnn.models._config.ModelConfig` subclass (``config.resolve()``: validated, frozen,
with its gspace, field types and V built once); nothing else constructs the task models from
configs.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from flow_escnn._compat import enn
from flow_escnn._validate import positive_int
from flow_escnn.models._classifier import SequenceClassifier
from flow_escnn.models._config import SO2_GROUP, ClassifierConfig, ModelConfig, PredictorConfig, WorldModelConfig
from flow_escnn.models._predictor import NextFramePredictor
from flow_escnn.models._world import WorldModel
from flow_escnn.nn._baselines import Conv3DClassifier
from flow_escnn.nn._cells import FlowCellBase
from flow_escnn.nn.cell_kinds import CELL_KINDS

__all__ = ["build_predictor", "build_classifier", "build_world_model", "count_parameters"]


def _require_resolved(config: ModelConfig, what: str) -> None:
    if not isinstance(config, ModelConfig):
        raise TypeError(f"{what} takes a ModelConfig (e.g. PredictorConfig), got {type(config).__name__}")
    if not config.resolved:
        raise TypeError(f"{what} takes a resolved config (validated, every default filled): pass config.resolve()")


def _encoder_kwargs(c: ModelConfig) -> Dict[str, Any]:
    """The encoder arguments of a model section (``grnn`` is ``fernn`` over the identity V)."""
    kind = CELL_KINDS[c.layer_kind]
    kwargs: Dict[str, Any] = {"cell": kind.name, "num_layers": c.num_layers}
    if kind.takes_nonlinearity:
        kwargs["nonlinearity"] = c.nonlinearity
    if kind.cell.learned_transport:  # learned per-velocity kernels, shifts where they fit
        kwargs.update(velocity_kernel_size=c.velocity_kernel_size, init="auto")
    else:
        kwargs["interpolation"] = c.interpolation
    return kwargs


def _initialised(model: torch.nn.Module, c: ModelConfig) -> Any:
    """``model`` with every recurrent ``W`` started at ``c.identity_init`` x identity (when > 0)."""
    if c.identity_init:
        for module in model.modules():
            if isinstance(module, FlowCellBase):
                module.W.init_identity_(c.identity_init)
    return model


def build_predictor(config: PredictorConfig, checkpoint: bool = False) -> NextFramePredictor:
    """The next-frame model of a resolved config: ``forward(x [B, T_in, C, H, W], P) -> [B, P, C, H, W]``.

    The model has ``encoder`` (the lifted hidden sequence ``[B, T, |V|, C, H, W]``) and
    ``flows`` (its V), which the plots use. ``checkpoint`` switches on gradient checkpointing
    (same function, less memory, more compute).

    ``identity_init`` (when > 0) starts every recurrent ``W`` near the identity
    (:meth:`~flow_escnn.nn.SteerableConv.init_identity_`), as in the other builders.

    Raises:
        TypeError: for a config that is not resolved.
    """
    _require_resolved(config, "build_predictor")
    c = config
    in_type, hidden_type = c.field_types()
    gs = c.gspace
    # the decoder's ReLUs need permutation fields: on SO(2) as many trivial channels as the hidden type has
    decoder_type = enn.FieldType(gs, [gs.trivial_repr] * hidden_type.size) if c.group == SO2_GROUP else None
    return _initialised(NextFramePredictor(
        in_type, hidden_type, c.flows, decoder_layers=c.decoder_layers, pool=c.pool,
        kernel_size=c.kernel_size, output_activation=c.output_activation, checkpoint=checkpoint,
        decoder_type=decoder_type, padding_mode=c.model_padding, **_encoder_kwargs(c),
    ), c)


def build_classifier(config: ClassifierConfig, num_classes: int, checkpoint: bool = False) -> torch.nn.Module:
    """The sequence classifier of a resolved config (one grayscale input field; padding by
    :attr:`~flow_escnn.models.ModelConfig.model_padding`, circular for a translating flow kind, since moved
    clips wrap around the torus; ``pool`` over V, then the max over
    each field's fiber, or its norm on SO(2)): :class:`~flow_escnn.models.SequenceClassifier`
    (``checkpoint``: gradient checkpointing of its recurrence) or, for ``conv3d``,
    :class:`~flow_escnn.models.Conv3DClassifier`.

    Raises:
        TypeError: for a config that is not resolved.
    """
    _require_resolved(config, "build_classifier")
    c = config
    positive_int(num_classes, "num_classes")
    if c.model == "conv3d":
        return Conv3DClassifier(1, num_classes, channels=c.conv3d_channel_list(), kernel_size=c.kernel_size,
                                padding_mode="circular")
    in_type, hidden_type = c.field_types()
    # on SO(2) (irreps fields) only the norm of each field is invariant; elsewhere the max over the fiber
    group_pool = "norm" if c.group == SO2_GROUP else "max"
    return _initialised(SequenceClassifier(
        in_type, hidden_type, c.flows, num_classes, velocity_pool=c.pool, group_pool=group_pool,
        kernel_size=c.kernel_size, checkpoint=checkpoint, padding_mode=c.model_padding, **_encoder_kwargs(c),
    ), c)


def build_world_model(config: WorldModelConfig, checkpoint: bool = False) -> WorldModel:
    """The world model of a resolved config (:class:`~flow_escnn.models.WorldModel`): views ``[B, T, 1, v, v]``
    and actions ``[B, T + P, 3]`` in, ``[B, P, 1, v, v]`` out.

    Raises:
        TypeError: for a config that is not resolved.
    """
    _require_resolved(config, "build_world_model")
    c = config
    in_type, hidden_type = c.field_types()
    kwargs = _encoder_kwargs(c)
    return _initialised(WorldModel(
        in_type, hidden_type, c.flows, c.world_size, c.view_size, self_motion=c.self_motion,
        action_input=c.action_input, imagine=c.imagine, decoder_layers=c.decoder_layers, pool=c.pool,
        kernel_size=c.kernel_size,
        output_activation=c.output_activation, checkpoint=checkpoint, bias=c.bias, **kwargs,
    ), c)


def count_parameters(model: torch.nn.Module) -> int:
    """The number of trainable parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
