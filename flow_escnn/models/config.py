"""The config family of the task models: one model section, one subclass per task head.

:class:`ModelConfig` holds what every flow model needs (the cell, the group, the widths,
the kind of flow and the model's :math:`V`); :class:`PredictorConfig` adds the next-frame
decoder and :class:`ClassifierConfig` the classification baselines. A task's experiment
config (``flow_escnn.experiments``) subclasses one of them and adds its data and training
fields, so a saved config stays one flat dictionary and the model section is validated and
built in one place (:mod:`flow_escnn.models.factory`).

Model names
-----------
* ``fernn``: the cell over the model's V (``flow_radius`` / ``flow_steps`` of ``flow``);
* ``grnn``: the same over ``FlowSet.identity`` (the G-RNN, same parameter count);
* ``grnn_plus``: learned per-velocity kernels in place of the transport (translations only);
* ``conv3d`` (classifiers only): the 3D-CNN baseline.

The model's V is ``flow``'s :meth:`~flow_escnn.flows.kinds.FlowKind.model_flows` with
``flow_radius`` R (translations :math:`[-R, R]^2`) and ``flow_steps`` (``"K"`` for
:math:`-K..K` or ``"k1,k2,..."`` steps of :math:`360/N` degrees per frame, N = ``group``).
:meth:`ModelConfig.resolve` fills the ones left ``None`` from :meth:`ModelConfig.flow_rows`
(a task's training velocities) so that V covers them.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar, Collection, Dict, List, Optional, Sequence, Tuple, TypeVar

from flow_escnn._validate import non_negative_int, odd_positive_int, one_of, optional_positive_int, positive_int
from flow_escnn.flows.kinds import FLOW_KINDS, FlowKind, flow_kind, parse_steps
from flow_escnn.flows.tables import DEFAULT_INTERPOLATION, INTERPOLATIONS
from flow_escnn.models.factory import SO2_FREQUENCIES, SO2_GROUP, make_gspace, model_flows
from flow_escnn.models.program import OUTPUT_ACTIVATIONS
from flow_escnn.nn.nonlinearity import CELL_NONLINEARITIES, FIELD_NONLINEARITIES
from flow_escnn.nn.pooling import VELOCITY_POOLS

__all__ = ["ModelConfig", "PredictorConfig", "ClassifierConfig", "GATED_CELLS", "FLOW_MODELS"]

logger = logging.getLogger(__name__)

#: Cells of the ``fernn`` / ``grnn`` models (``grnn_plus`` has its own plain cell).
GATED_CELLS = ("fernn", "gru", "lstm")
#: Models with a flow set V of their own (``grnn`` has V = {0}; ``conv3d`` none).
FLOW_MODELS = ("fernn", "grnn_plus")

C = TypeVar("C", bound="ModelConfig")


@dataclasses.dataclass
class ModelConfig:
    """The model section every task config shares (see the module docstring)."""

    MODELS: ClassVar[Tuple[str, ...]] = ("fernn", "grnn", "grnn_plus")

    model: str = "fernn"
    cell: str = "fernn"
    group: int = 1
    hidden_channels: Optional[int] = None
    hidden_fields: Optional[int] = None
    num_layers: int = 1
    nonlinearity: str = "relu"  # of the plain (fernn) cell; tanh keeps long rollouts bounded
    kernel_size: int = 3
    flow: str = "translation"
    flow_radius: Optional[int] = None
    flow_steps: Optional[str] = None
    velocity_kernel_size: int = 5
    interpolation: str = DEFAULT_INTERPOLATION  # of flows that are not grid-exact (e.g. 45-degree rotations)

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type, data: Dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}")
        if "model" in data and "interpolation" not in data:
            data = {**data, "interpolation": "bilinear"}  # saved before the field existed: trained bilinear
        return cls(**data)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    # -- derived quantities --------------------------------------------------------------------------
    @property
    def kind(self) -> FlowKind:
        """The :class:`~flow_escnn.flows.kinds.FlowKind` of ``flow``."""
        return flow_kind(self.flow)

    @property
    def has_flows(self) -> bool:
        """Whether the model has a V of its own (``flow_radius`` / ``flow_steps`` apply)."""
        return self.model in FLOW_MODELS

    @property
    def channels_per_field(self) -> int:
        """Channels of one hidden field: N (a regular field of C_N), or 7 on SO(2) (irreps 0..3)."""
        return 2 * SO2_FREQUENCIES + 1 if self.group == SO2_GROUP else self.group

    @property
    def steps_per_turn(self) -> int:
        """Rotation steps in a turn: N, or 360 on SO(2) (whose steps are degrees)."""
        return 360 if self.group == SO2_GROUP else self.group

    def hidden_field_count(self) -> int:
        """F: ``hidden_fields``, or ``hidden_channels // channels_per_field`` (16 channels by default)."""
        if self.hidden_fields is not None:
            return self.hidden_fields
        channels = 16 if self.hidden_channels is None else self.hidden_channels
        return max(1, channels // self.channels_per_field)

    def flow_steps_list(self) -> Optional[List[int]]:
        return None if self.flow_steps is None else parse_steps(self.flow_steps)

    # -- which options this config uses ---------------------------------------------------------------
    def option_uses(self) -> Dict[str, Tuple[bool, str]]:
        """The fields only some models, cells or flow kinds use: ``{field: (used here, who uses it)}``.

        Subclasses add theirs. :meth:`check_given` refuses a field given for a config that does
        not use it, so an option is never recorded while changing nothing.
        """
        flows = self.has_flows and self.model != "conv3d"
        moving = " and ".join(FLOW_MODELS)
        translating = ", ".join(n for n, k in FLOW_KINDS.items() if k.translates)
        rotating = ", ".join(n for n, k in FLOW_KINDS.items() if k.rotates)
        cells = self.model in ("fernn", "grnn")
        return {
            "flow_radius": (flows and self.kind.translates, f"models {moving} with flow kinds {translating}"),
            "flow_steps": (flows and self.kind.rotates, f"models {moving} with flow kinds {rotating}"),
            "interpolation": (flows and self.kind.rotates, f"models {moving} with flow kinds {rotating}"),
            "velocity_kernel_size": (self.model == "grnn_plus", "model grnn_plus"),
            "cell": (cells, "models fernn and grnn"),
            "nonlinearity": (self.model != "conv3d" and self.cell == "fernn", "the plain cell (--cell fernn)"),
            **{name: (self.model != "conv3d", "the recurrent models (not conv3d)")
               for name in ("group", "hidden_channels", "hidden_fields", "num_layers")},
        }

    def check_given(self, given: Collection[str]) -> None:
        """Refuse the fields in ``given`` (e.g. the options a user passed) that this config does not use.

        Raises:
            ValueError: naming the option, what this config is, and which configs take it.
        """
        uses = self.option_uses()
        for name in given:
            if name in uses and not uses[name][0]:
                option = "--" + name.replace("_", "-")
                what = f"model {self.model!r}"
                if self.model != "conv3d":
                    what += f" (cell {self.cell!r}, flow {self.flow!r})"
                raise ValueError(f"{option} does nothing for {what}: it applies to {uses[name][1]}; drop it")

    # -- hooks of the task configs -------------------------------------------------------------------
    def flow_rows(self) -> Sequence[Tuple[int, int, float]]:
        """The data velocities ``(vx, vy, degrees)`` a default V must cover (a task's training set)."""
        raise ValueError(
            f"{type(self).__name__} has no training velocities to derive V from: give flow_radius / flow_steps"
        )

    def grid_shape(self) -> Optional[Tuple[int, int]]:
        """The frame size ``(H, W)`` V must be distinct on (None: not checked)."""
        return None

    # -- validation and defaults ---------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when the model section is inconsistent."""
        one_of(self.model, self.MODELS, "model")
        one_of(self.cell, GATED_CELLS, "cell")
        if self.model not in ("fernn", "grnn") and self.cell != "fernn":
            raise ValueError(
                f"model {self.model!r} has no gated cells, only the plain (non-gated) cell; drop --cell or use --cell fernn"
            )
        if self.group != SO2_GROUP and (isinstance(self.group, bool) or not isinstance(self.group, int) or self.group < 1):
            raise ValueError(f"group must be N >= 1 (rot2dOnR2(N)) or -1 (SO(2)), got {self.group!r}")
        positive_int(self.num_layers, "num_layers")
        odd_positive_int(self.kernel_size, "kernel_size")
        odd_positive_int(self.velocity_kernel_size, "velocity_kernel_size")
        for name in ("hidden_channels", "hidden_fields"):
            optional_positive_int(getattr(self, name), name)
        if self.hidden_channels is not None and self.hidden_fields is not None:
            raise ValueError("give either hidden_channels or hidden_fields, not both")
        per = self.channels_per_field
        if self.hidden_channels is not None and self.hidden_channels % per:
            what = (f"{per}: SO(2) fields (irreps 0..3) have {per} channels" if self.group == SO2_GROUP else
                    f"the group order N={per}: regular fields of C_{per} have {per} channels")
            raise ValueError(
                f"hidden_channels={self.hidden_channels} is not a multiple of {what} each; use hidden_fields instead"
            )
        one_of(self.nonlinearity, CELL_NONLINEARITIES, "nonlinearity")
        if self.nonlinearity != "relu" and self.cell != "fernn":
            raise ValueError("--nonlinearity applies to the plain cell (--cell fernn); gru and lstm use sigmoid/tanh gates")
        if self.group == SO2_GROUP:
            if self.cell != "fernn" or self.model == "grnn_plus":
                raise ValueError("group -1 (SO(2)) has irreps hidden fields: use the plain cell (--cell fernn) of "
                                 "model fernn or grnn; gated cells and grnn_plus act channel by channel")
            if self.nonlinearity not in FIELD_NONLINEARITIES:
                raise ValueError(
                    f"group -1 (SO(2)) has irreps hidden fields, on which the pointwise {self.nonlinearity!r} is not "
                    f"equivariant: pass --nonlinearity {' or '.join(FIELD_NONLINEARITIES)}"
                )
        one_of(self.interpolation, INTERPOLATIONS, "interpolation")
        kind = self.kind
        if self.flow_radius is not None:
            non_negative_int(self.flow_radius, "flow_radius")
        self.flow_steps_list()
        if not self.has_flows and (self.flow_radius is not None or self.flow_steps is not None):
            who = "the G-RNN has no flow set (V = {0})" if self.model == "grnn" else f"model {self.model!r} has no flow set"
            raise ValueError(f"{who}; flow_radius / flow_steps apply to {' and '.join(FLOW_MODELS)}")
        self.check_given([n for n in ("flow_radius", "flow_steps") if getattr(self, n) is not None])
        if self.has_flows and kind.rotates and self.group == 1:
            raise ValueError(
                f"a {self.model} over rotation flows needs a rotation group: pass group N >= 2 (rot2dOnR2(N)); "
                "its V then holds rotations by multiples of 360/N degrees per frame"
            )
        if self.model == "grnn_plus" and kind.rotates:
            raise ValueError("model 'grnn_plus' (learned per-velocity kernels) is implemented for translation flows only")

    def fill_defaults(self) -> None:
        """Fill the ``None`` fields in place (called by :meth:`resolve` on a copy; extend in subclasses)."""
        self.hidden_fields = self.hidden_field_count()
        self.hidden_channels = None
        if not self.has_flows:
            return
        rows = None
        if self.flow_radius is None and self.kind.translates:
            rows = self.flow_rows()
            self.flow_radius = self.kind.default_radius(rows)
        if self.flow_steps is None and self.kind.rotates:
            rows = self.flow_rows() if rows is None else rows
            ks, exact = self.kind.default_steps(rows, self.steps_per_turn)
            if not exact:
                logger.warning(
                    "training angles %s are not all multiples of 360/%d = %g degrees: V uses the nearest steps %s",
                    sorted({r[2] for r in rows}), self.steps_per_turn, 360.0 / self.steps_per_turn, ks,
                )
            self.flow_steps = ",".join(str(k) for k in ks) + ("," if len(ks) == 1 else "")

    def resolve(self: C) -> C:
        """Validate and return a copy with every ``None`` default filled in (and V checked on the grid)."""
        self.validate()
        c = dataclasses.replace(self)
        c.fill_defaults()
        c.validate()
        grid = c.grid_shape()
        if c.has_flows and grid is not None:  # an aliased V would train duplicate slices without a word
            try:
                model_flows(c, make_gspace(c.group)).check_distinct_on(grid)
            except ValueError as exc:
                raise ValueError(f"{exc} (the model's V comes from --flow-radius / --flow-steps, by default "
                                 "from the training velocities)") from None
        return c


@dataclasses.dataclass
class PredictorConfig(ModelConfig):
    """:class:`ModelConfig` plus the decoder of a :class:`~flow_escnn.models.NextFramePredictor`."""

    decoder_layers: int = 2
    output_activation: str = "sigmoid"  # frames are in [0, 1]; bounds what is fed back
    pool: str = "max"

    def validate(self) -> None:
        super().validate()
        non_negative_int(self.decoder_layers, "decoder_layers")
        one_of(self.output_activation, OUTPUT_ACTIVATIONS, "output_activation")
        one_of(self.pool, VELOCITY_POOLS, "pool")
        if self.group == SO2_GROUP and self.pool != "mean":
            raise ValueError("group -1 (SO(2)): the max over V is not equivariant on irreps fields; pass --pool mean")


@dataclasses.dataclass
class ClassifierConfig(ModelConfig):
    """:class:`ModelConfig` plus the 3D-CNN baseline of the classification tasks."""

    MODELS: ClassVar[Tuple[str, ...]] = ("fernn", "grnn", "grnn_plus", "conv3d")

    conv3d_channels: str = "16,32"

    def conv3d_channel_list(self) -> List[int]:
        """``conv3d_channels`` as integers (``ValueError`` unless a list of positive integers)."""
        try:
            chans = [int(c) for c in self.conv3d_channels.split(",") if c.strip()]
        except (AttributeError, ValueError):
            chans = []
        if not chans or any(c < 1 for c in chans):
            raise ValueError(
                f"conv3d_channels must be a list of positive integers like '16,32', got {self.conv3d_channels!r}"
            )
        return chans

    def option_uses(self) -> Dict[str, Tuple[bool, str]]:
        return {**super().option_uses(), "conv3d_channels": (self.model == "conv3d", "model conv3d")}

    def validate(self) -> None:
        super().validate()
        self.conv3d_channel_list()
