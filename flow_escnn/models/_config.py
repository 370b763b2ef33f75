"""The config family of the task models: one model section, one subclass per task head.

:class:`ModelConfig` holds what every flow model needs (the model, the cell, the group, the
widths, the kind of flow and the model's :math:`V`); :class:`PredictorConfig` adds the
next-frame decoder and :class:`ClassifierConfig` the classification baselines. A task's
experiment config (``flow_escnn.experiments``) subclasses one of them and adds its data and
training fields, so a saved config stays one flat dictionary and the model section is
validated in one place and built in one place (:mod:`flow_escnn.models._factory`).

Resolved once
-------------
A config as written by a user leaves fields ``None`` (the model's V, the hidden width, ...).
:meth:`ModelConfig.resolve` validates it, fills every default and returns a **resolved**
copy: frozen (assigning to it raises; :meth:`~ModelConfig.replace` gives a changed, unresolved
copy), fully explicit (what checkpoints save) and carrying what resolution computed (its
gspace, field types, velocity rows and V), so nothing downstream parses or builds them again.
``resolve()`` of a resolved config returns it unchanged, and the factory
(:mod:`flow_escnn.models._factory`) takes resolved configs only.

Model names
-----------
* ``fernn``: the cell over the model's V (the flow kind's parameters, e.g. ``flow_radius``);
* ``grnn``: the same over ``FlowSet.identity`` (the G-RNN, same parameter count);
* a cell kind that is a model of its own (:attr:`flow_escnn.nn.CellKind.model`: ``grnn_plus``,
  learned per-velocity kernels in place of the transport, translations only);
* ``conv3d`` (classifiers only): the 3D-CNN baseline.

The model's V is ``flow``'s :meth:`~flow_escnn.flows.kinds.FlowKind.model_flows` with the
kind's parameters (:attr:`~flow_escnn.flows.kinds.FlowKind.params`): ``flow_radius`` R
(translations :math:`[-R, R]^2`) and ``flow_steps`` (``"K"`` for :math:`-K..K`, ``"k1,k2,..."``
or a sequence of integers: steps of :math:`360/N` degrees per frame, N = ``group``).
:meth:`ModelConfig.resolve` fills the ones left ``None`` from :meth:`ModelConfig.flow_rows` (a
task's training velocities, through :meth:`~flow_escnn.flows.kinds.FlowKind.default_params`)
so that V covers them.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, ClassVar, Collection, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from flow_escnn._compat import enn, gspaces
from flow_escnn._validate import (bounded_float, non_negative_int, odd_positive_int, one_of, optional_positive_int,
                                  positive_int)
from flow_escnn.flows._flowset import FlowSet
from flow_escnn.flows.kinds import FLOW_KINDS, MODEL_PARAMS, FlowKind, flow_kind, parse_steps
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION, INTERPOLATIONS
from flow_escnn.models._program import OUTPUT_ACTIVATIONS
from flow_escnn.models._world import IMAGINE
from flow_escnn.nn.cell_kinds import CELL_KINDS, CELLS, CellKind
from flow_escnn.nn._nonlinearity import CELL_NONLINEARITIES, FIELD_NONLINEARITIES
from flow_escnn.nn._conv import AUTO_PADDING, PADDING_MODES
from flow_escnn.nn._pooling import VELOCITY_POOLS

__all__ = [
    "ModelConfig",
    "PredictorConfig",
    "ClassifierConfig",
    "WorldModelConfig",
    "TURNS",
    "RECURRENT_MODELS",
    "FLOW_MODELS",
    "SO2_GROUP",
    "SO2_FREQUENCIES",
    "make_gspace",
]

logger = logging.getLogger(__name__)

#: ``group`` of the continuous rotation group SO(2) (``rot2dOnR2(-1)``, escnn's convention).
SO2_GROUP = -1
#: On SO(2) a hidden "field" of the configs is the irreps of frequencies 0..3 (1 + 2 + 2 + 2 = 7 channels).
SO2_FREQUENCIES = 3

#: The cell kinds that are models of their own (``model=`` names), from the cell-kind registry.
_OWN_MODELS: Dict[str, CellKind] = {kind.model: kind for kind in CELL_KINDS.values() if kind.model is not None}
#: The recurrent models: ``fernn`` and ``grnn`` (any ``cell=`` of :data:`~flow_escnn.nn.CELLS`), then the
#: cell kinds that are models of their own.
RECURRENT_MODELS: Tuple[str, ...] = ("fernn", "grnn", *_OWN_MODELS)
#: Models with a flow set V of their own (``grnn`` has V = {0}; ``conv3d`` none).
FLOW_MODELS: Tuple[str, ...] = ("fernn", *_OWN_MODELS)

C = TypeVar("C", bound="ModelConfig")


@functools.lru_cache(maxsize=None)
def make_gspace(group: int) -> Any:
    """``trivialOnR2()`` for ``group == 1``, ``rot2dOnR2(-1)`` (SO(2)) for -1, else ``rot2dOnR2(group)``
    (one gspace per group, shared: gspaces are immutable)."""
    if group == SO2_GROUP:
        return gspaces.rot2dOnR2(-1)
    positive_int(group, "group")
    return gspaces.trivialOnR2() if group == 1 else gspaces.rot2dOnR2(group)


@dataclasses.dataclass
class ModelConfig:
    """The model section every task config shares (see the module docstring)."""

    MODELS: ClassVar[Tuple[str, ...]] = RECURRENT_MODELS
    #: ``identity_init`` when not given, for the cells that take it (0: escnn's random init)
    DEFAULT_IDENTITY_INIT: ClassVar[float] = 0.0

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
    flow_steps: Optional[Union[str, Sequence[int]]] = None
    velocity_kernel_size: int = 5
    interpolation: str = DEFAULT_INTERPOLATION  # of flows that are not grid-exact (e.g. 45-degree rotations)
    #: recurrent ``W`` of every layer starts as this gain x the centre-tap identity plus a tenth of its random
    #: init (:meth:`~flow_escnn.nn.SteerableConv.init_identity_`, the IRNN initialisation); 0: escnn's random
    #: init; None: the task's ``DEFAULT_IDENTITY_INIT`` where the cell has one gate, else 0. A gain > 0 needs a
    #: one-gate cell.
    identity_init: Optional[float] = None

    # -- frozen once resolved ------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get("_resolution") is not None:
            raise dataclasses.FrozenInstanceError(
                f"a resolved {type(self).__name__} is frozen (cannot set {name!r}): use .replace({name}=...) for a "
                "changed copy, then .resolve() it"
            )
        object.__setattr__(self, name, value)

    @property
    def resolved(self) -> bool:
        """Whether this config came out of :meth:`resolve` (then it is frozen and fully explicit)."""
        return self.__dict__.get("_resolution") is not None

    def _memo(self, key: str, compute: Any) -> Any:
        """``compute()``, computed once per resolved config (every time on an unresolved one)."""
        memo = self.__dict__.get("_resolution")
        if memo is None:
            return compute()
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    # -- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The fields as plain JSON-able values (``flow_steps`` as a list)."""
        d = dataclasses.asdict(self)
        if isinstance(d.get("flow_steps"), tuple):
            d["flow_steps"] = list(d["flow_steps"])
        return d

    @classmethod
    def from_dict(cls: type, data: Dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}")
        if "model" in data and "interpolation" not in data:
            data = {**data, "interpolation": "bilinear"}  # saved before the field existed: trained bilinear
        if "model" in data and "padding_mode" in names and "padding_mode" not in data:
            data = {**data, "padding_mode": "circular"}  # saved before the field existed: circular was the default
        return cls(**data)

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (unresolved, so mutable: :meth:`resolve` it again)."""
        return dataclasses.replace(self, **changes)

    # -- derived quantities --------------------------------------------------------------------------
    @property
    def kind(self) -> FlowKind:
        """The :class:`~flow_escnn.flows.kinds.FlowKind` of ``flow``."""
        return flow_kind(self.flow)

    @property
    def model_padding(self) -> str:
        """The ``padding_mode`` the factory builds the recurrent models with: ``padding_mode`` as given;
        ``"auto"`` (the default) is ``"circular"`` when the flow kind translates (the data wrap around the
        torus) and ``"zeros"`` for a purely rotating kind (centred digits; the paper's rotation models pad
        with zeros), the same for the G-RNN baseline (whose :math:`V = \\{0\\}` alone would keep it circular,
        :func:`~flow_escnn.nn._conv.resolve_padding`) as for the FERNN of that task."""
        given = getattr(self, "padding_mode", AUTO_PADDING)
        if given != AUTO_PADDING:
            return given
        return "circular" if self.kind.translates else "zeros"

    @property
    def own_model(self) -> Optional[CellKind]:
        """The cell kind that *is* this model (``grnn_plus``), or None."""
        return _OWN_MODELS.get(self.model)

    @property
    def layer_kind(self) -> str:
        """The cell kind of the recurrent layers: ``cell``, or the kind the model is."""
        own = self.own_model
        return self.cell if own is None else own.name

    @property
    def has_flows(self) -> bool:
        """Whether the model has a V of its own (the flow kind's parameters apply)."""
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
        """``flow_steps`` as a list of integers (``"K"``: ``-K..K``), or None."""
        if self.flow_steps is None:
            return None
        if isinstance(self.flow_steps, str):
            return parse_steps(self.flow_steps)
        return parse_steps(",".join(str(k) for k in self.flow_steps) + ",")

    def flow_params(self) -> Dict[str, Any]:
        """The flow kind's parameters of V (:attr:`~flow_escnn.flows.kinds.FlowKind.params`) as given."""
        values = {"flow_radius": self.flow_radius, "flow_steps": self.flow_steps_list()}
        return {name: values[name] for name in self.kind.params}

    # -- what resolution builds once -----------------------------------------------------------------
    @property
    def gspace(self) -> Any:
        """The gspace of ``group`` (:func:`make_gspace`)."""
        return make_gspace(self.group)

    def field_types(self, in_fields: int = 1) -> Tuple[Any, Any]:
        """``(in_type, hidden_type)``: ``in_fields`` trivial (grayscale) fields in; F regular fields hidden
        (regular fields of the trivial group are single channels; on SO(2) F x irreps 0..3)."""

        def build() -> Tuple[Any, Any]:
            gs = self.gspace
            in_type = enn.FieldType(gs, [gs.trivial_repr] * positive_int(in_fields, "in_fields"))
            if self.group == SO2_GROUP:
                block = [gs.irrep(k) for k in range(SO2_FREQUENCIES + 1)]
                return in_type, enn.FieldType(gs, block * self.hidden_field_count())
            return in_type, enn.FieldType(gs, [gs.regular_repr] * self.hidden_field_count())

        return self._memo(f"field_types{in_fields}", build)

    @property
    def flows(self) -> FlowSet:
        """The model's V (``FlowSet.identity`` for a model without flows); needs a resolved config."""

        def build() -> FlowSet:
            if not self.has_flows:
                return FlowSet.identity(self.gspace)
            params = self.flow_params()
            if any(v is None for v in params.values()):
                raise ValueError(f"the config leaves the model's V open ({params}); call config.resolve() first")
            return self.kind.model_flows(self.gspace, **params)

        return self._memo("flows", build)

    # -- which options this config uses ---------------------------------------------------------------
    def option_uses(self) -> Dict[str, Tuple[bool, str]]:
        """The fields only some models, cells or flow kinds use: ``{field: (used here, who uses it)}``.

        Subclasses add theirs. :meth:`check_given` refuses a field given for a config that does
        not use it, so an option is never recorded while changing nothing.
        """
        flows = self.has_flows
        moving = " and ".join(FLOW_MODELS)
        uses = {
            name: (flows and name in self.kind.params,
                   f"models {moving} with flow kinds {', '.join(n for n, k in FLOW_KINDS.items() if name in k.params)}")
            for name in MODEL_PARAMS
        }
        rotating = ", ".join(n for n, k in FLOW_KINDS.items() if k.rotates)
        recurrent = self.model in RECURRENT_MODELS
        uses.update({
            "interpolation": (flows and self.kind.rotates, f"models {moving} with flow kinds {rotating}"),
            "velocity_kernel_size": (self.own_model is not None and self.own_model.cell.learned_transport,
                                     f"models {', '.join(m for m, k in _OWN_MODELS.items() if k.cell.learned_transport)}"),
            "cell": (self.model in ("fernn", "grnn"), "models fernn and grnn"),
            "identity_init": (recurrent and self.takes_identity_init,
                              "the recurrent models with one-gate cells (" + ", ".join(
                                  n for n, k in CELL_KINDS.items() if k.gates == 1) + ") and a nonlinearity other "
                              "than gated (their W maps the hidden fields to themselves)"),
            "nonlinearity": (recurrent and CELL_KINDS[self.layer_kind].takes_nonlinearity,
                             "the cells that take one (" + ", ".join(n for n, k in CELL_KINDS.items()
                                                                      if k.takes_nonlinearity) + ")"),
            **{name: (recurrent, "the recurrent models (not conv3d)")
               for name in ("group", "hidden_channels", "hidden_fields", "num_layers")},
        })
        return uses

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
                if self.model in RECURRENT_MODELS:
                    what += f" (cell {self.layer_kind!r}, flow {self.flow!r})"
                raise ValueError(f"{option} does nothing for {what}: it applies to {uses[name][1]}; drop it")

    # -- hooks of the task configs -------------------------------------------------------------------
    def flow_rows(self) -> Sequence[Tuple[int, int, float]]:
        """The data velocities ``(vx, vy, degrees)`` a default V must cover (a task's training set)."""
        raise ValueError(
            f"{type(self).__name__} has no training velocities to derive V from: give "
            f"{' / '.join(self.kind.params)}"
        )

    def grid_shape(self) -> Optional[Tuple[int, int]]:
        """The frame size ``(H, W)`` V must be distinct on (None: not checked)."""
        return None

    # -- validation and defaults ---------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when the model section is inconsistent."""
        one_of(self.model, self.MODELS, "model")
        one_of(self.cell, CELLS, "cell")
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
        layer = CELL_KINDS[self.layer_kind]
        if self.nonlinearity != "relu" and not layer.takes_nonlinearity:
            raise ValueError(f"--nonlinearity applies to the plain cell (--cell fernn); {self.layer_kind} uses "
                             "sigmoid/tanh gates")
        if self.group == SO2_GROUP:
            if not layer.field_nonlinearities:
                raise ValueError(
                    "group -1 (SO(2)) has irreps hidden fields: use the plain cell (--cell fernn) of model fernn or "
                    f"grnn; {self.layer_kind} acts channel by channel"
                )
            if self.nonlinearity not in FIELD_NONLINEARITIES:
                raise ValueError(
                    f"group -1 (SO(2)) has irreps hidden fields, on which the pointwise {self.nonlinearity!r} is not "
                    f"equivariant: pass --nonlinearity {' or '.join(FIELD_NONLINEARITIES)}"
                )
        one_of(self.interpolation, INTERPOLATIONS, "interpolation")
        if self.identity_init is not None:
            g = bounded_float(self.identity_init, "identity_init (a gain; 0: escnn's random init)")
            if g > 0 and self.model not in RECURRENT_MODELS:
                raise ValueError(f"identity_init starts a recurrent W; model {self.model!r} has none: drop it")
            if g > 0 and not self.takes_identity_init:
                what = (f"cell {self.layer_kind!r} computes {layer.gates} gates" if layer.gates != 1 else
                        "the gated nonlinearity computes field gates")
                raise ValueError(
                    f"identity_init starts a recurrent W that maps the hidden fields to themselves, but {what} with "
                    "its W: use the plain cell (--cell fernn) with a pointwise or norm nonlinearity, or drop identity_init")
        kind = self.kind
        if self.flow_radius is not None:
            non_negative_int(self.flow_radius, "flow_radius")
        self.flow_steps_list()
        if not self.has_flows and (self.flow_radius is not None or self.flow_steps is not None):
            who = "the G-RNN has no flow set (V = {0})" if self.model == "grnn" else f"model {self.model!r} has no flow set"
            raise ValueError(f"{who}; flow_radius / flow_steps apply to {' and '.join(FLOW_MODELS)}")
        self.check_given([n for n in MODEL_PARAMS if getattr(self, n) is not None])
        if self.has_flows and kind.rotates and self.group == 1:
            raise ValueError(
                f"a {self.model} over rotation flows needs a rotation group: pass group N >= 2 (rot2dOnR2(N)); "
                "its V then holds rotations by multiples of 360/N degrees per frame"
            )
        if self.own_model is not None and self.own_model.cell.learned_transport and kind.rotates:
            raise ValueError(f"model {self.model!r} (learned per-velocity kernels) is implemented for translation flows "
                             "only")

    @property
    def takes_identity_init(self) -> bool:
        """Whether the cell's ``W`` maps the hidden fields to themselves (one gate, no field gates), so that
        ``identity_init`` can start it near the identity."""
        return CELL_KINDS[self.layer_kind].gates == 1 and self.nonlinearity != "gated"

    def fill_defaults(self) -> None:
        """Fill the ``None`` fields in place (called by :meth:`resolve` on a copy; extend in subclasses)."""
        if self.identity_init is None:
            self.identity_init = self.DEFAULT_IDENTITY_INIT if self.takes_identity_init else 0.0
        self.hidden_fields = self.hidden_field_count()
        self.hidden_channels = None
        steps = self.flow_steps_list()
        self.flow_steps = None if steps is None else tuple(steps)
        if not self.has_flows:
            return
        missing = [name for name, value in self.flow_params().items() if value is None]
        if missing:
            values, notes = self.kind.default_params(self.flow_rows(), self.steps_per_turn)
            for note in notes:
                logger.warning("%s", note)
            for name in missing:
                setattr(self, name, values[name])

    def resolve(self: C) -> C:
        """The validated, frozen copy with every default filled in, V checked on the grid (the
        module docstring); a resolved config is returned as it is.

        Example:
            >>> from flow_escnn.models import PredictorConfig, build_predictor
            >>> c = PredictorConfig(flow_radius=1, hidden_channels=4).resolve()
            >>> c.resolved, len(c.flows), c.hidden_fields, c.resolve() is c
            (True, 9, 4, True)
            >>> c.hidden_fields = 8
            Traceback (most recent call last):
            ...
            dataclasses.FrozenInstanceError: a resolved PredictorConfig is frozen (cannot set 'hidden_fields'): ...
            >>> build_predictor(c.replace(decoder_layers=1).resolve()).flows is not None
            True
        """
        if self.resolved:
            return self
        self.validate()
        c = dataclasses.replace(self)
        c.fill_defaults()
        c.validate()
        object.__setattr__(c, "_resolution", {})
        grid = c.grid_shape()
        if c.has_flows and grid is not None:  # an aliased V would train duplicate slices without a word
            try:
                c.flows.check_distinct_on(grid)
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
    padding_mode: str = AUTO_PADDING  # auto: circular for a translating flow kind, zeros for a rotating one

    def validate(self) -> None:
        super().validate()
        one_of(self.padding_mode, (AUTO_PADDING, *PADDING_MODES), "padding_mode")
        non_negative_int(self.decoder_layers, "decoder_layers")
        one_of(self.output_activation, OUTPUT_ACTIVATIONS, "output_activation")
        one_of(self.pool, VELOCITY_POOLS, "pool")
        if self.group == SO2_GROUP and self.pool != "mean":
            raise ValueError("group -1 (SO(2)): the max over V is not equivariant on irreps fields; pass --pool mean")


@dataclasses.dataclass
class ClassifierConfig(ModelConfig):
    """:class:`ModelConfig` plus the pooling over V of the recurrent classifiers and the 3D-CNN baseline
    of the classification tasks. On SO(2) (``group=-1``) the pooling over each field is the norm."""

    MODELS: ClassVar[Tuple[str, ...]] = (*RECURRENT_MODELS, "conv3d")

    conv3d_channels: str = "16,32"
    pool: str = "max"
    padding_mode: str = AUTO_PADDING  # of the recurrent models (conv3d pads circularly)

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
        return {**super().option_uses(), "conv3d_channels": (self.model == "conv3d", "model conv3d"),
                "pool": (self.model in RECURRENT_MODELS, "the recurrent models (not conv3d)"),
                "padding_mode": (self.model in RECURRENT_MODELS, "the recurrent models (not conv3d)")}

    def validate(self) -> None:
        super().validate()
        self.conv3d_channel_list()
        one_of(self.padding_mode, (AUTO_PADDING, *PADDING_MODES), "padding_mode")
        one_of(self.pool, VELOCITY_POOLS, "pool")
        if self.group == SO2_GROUP and self.pool != "mean" and self.model in RECURRENT_MODELS:
            raise ValueError("group -1 (SO(2)): the max over V is not equivariant on irreps fields; pass --pool mean")


#: ``turns`` of a world model's data and actions: none, quarter turns (exact), 45-degree turns (interpolated).
TURNS = ("none", "90", "45")


@dataclasses.dataclass
class WorldModelConfig(ModelConfig):
    """:class:`ModelConfig` plus the world of a :class:`~flow_escnn.models.WorldModel`: its map, its view
    window, its self-motion and its decoder.

    ``model="fernn"`` is FloWM over the flow kind's :math:`V` (translations; ``flow_radius``),
    ``model="grnn"`` the same with :math:`V = \\{0\\}`. ``self_motion=False`` ignores the actions in the
    transport; ``action_input=True`` feeds them as input planes (the action-concat baseline).
    ``imagine="carry"`` writes nothing past the given views and only carries the map by self-motion
    and flows while it is read out, instead of feeding the predictions back as views (``"feedback"``,
    FloWM). ``bias``: biases in :math:`U` and the
    decoder (FloWM has none). ``turns``
    says which turns the actions hold, so that the group can carry them: quarter turns need a group
    with a 90-degree rotation (``group`` a multiple of 4, or SO(2)); 45-degree turns need 8 (or SO(2))
    and :math:`V = \\{0\\}` (a 45-degree turn does not map integer velocities to integer velocities).
    """

    MODELS: ClassVar[Tuple[str, ...]] = ("fernn", "grnn")

    world_size: int = 32
    view_size: int = 16
    self_motion: bool = True
    action_input: bool = False
    turns: str = "none"
    imagine: str = "feedback"
    bias: bool = False
    decoder_layers: int = 1
    output_activation: str = "identity"
    pool: str = "max"

    @property
    def turn_degrees(self) -> int:
        """The turn of one action in degrees (0: no turns)."""
        return 0 if self.turns == "none" else int(self.turns)

    def validate(self) -> None:
        super().validate()
        for name in ("world_size", "view_size"):
            positive_int(getattr(self, name), name)
        if self.view_size > self.world_size or (self.world_size - self.view_size) % 2:
            raise ValueError(f"view_size={self.view_size} must be at most world_size={self.world_size}, and the "
                             "difference even (the view sits at the centre of the map)")
        for name in ("self_motion", "action_input", "bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        one_of(self.turns, TURNS, "turns")
        one_of(self.imagine, IMAGINE, "imagine")
        non_negative_int(self.decoder_layers, "decoder_layers")
        one_of(self.output_activation, OUTPUT_ACTIVATIONS, "output_activation")
        one_of(self.pool, VELOCITY_POOLS, "pool")
        if self.kind.rotates:
            raise ValueError(f"a world model's objects move by translations: flow must be a translating kind without "
                             f"rotations, got {self.flow!r}")
        if self.turn_degrees:
            per = self.steps_per_turn * self.turn_degrees / 360
            if per != int(per):
                raise ValueError(f"turns of {self.turn_degrees} degrees need a group with that rotation: pass --group "
                                 f"{360 // self.turn_degrees} (or a multiple of it), or -1 for SO(2); got group "
                                 f"{self.group}")
            if self.turn_degrees % 90 and self.model != "grnn" and self.flow_radius not in (None, 0):
                raise ValueError(f"a {self.turn_degrees}-degree turn does not map integer velocities to integer "
                                 "velocities: with --turns 45 use --model grnn (V = {0}), or quarter turns")
        if self.group == SO2_GROUP and self.pool != "mean":
            raise ValueError("group -1 (SO(2)): the max over V is not equivariant on irreps fields; pass --pool mean")
