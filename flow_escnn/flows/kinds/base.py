"""The flow-kind record: everything the package needs to know about one kind of flow, in one object.

A *data velocity* is a row ``(vx, vy, degrees_per_frame)``: integer pixels per frame (x along
the last array axis, y up) and an angular velocity in degrees per frame (counter-clockwise
about the grid centre), the units a user types and the data generators draw. A model's
:class:`~flow_escnn.flows._flowset.FlowSet` counts rotations in steps of :math:`360/N` degrees of
its gspace's :math:`C_N`; :func:`degrees_to_steps` / :func:`steps_to_degrees` convert, and a
:class:`FlowKind` builds a model's V from data velocities (:meth:`FlowKind.model_flows`).

Each kind (translation, rotation, roto-translation) is one :class:`FlowKind` in its own file of
:mod:`flow_escnn.flows.kinds`: its velocity-set string syntax, its defaults, the validation of a
data velocity, how the data move (offset digits or centred ones), the model's V, and the labels
and speeds the plots show. Data, CLI and plots ask the kind; none compares kind names.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple

from flow_escnn._validate import non_negative_int
from flow_escnn.flows._flowset import FlowSet

__all__ = [
    "FlowKind",
    "Row",
    "degrees_to_steps",
    "steps_to_degrees",
    "translation_velocities",
    "rotation_velocities",
    "parse_steps",
    "MODEL_PARAMS",
]

#: The parameters of a model's V that flow kinds read (config fields / CLI options of the same names):
#: ``flow_radius`` R (the translations :math:`[-R, R]^d`) and ``flow_steps`` (rotation steps of
#: :math:`360/N` degrees per frame, a tuple of integers).
MODEL_PARAMS: Dict[str, str] = {
    "flow_radius": "translations of the model's V: all integer velocities in [-R, R]^d",
    "flow_steps": "rotations of the model's V: steps of 360/N degrees per frame",
}

Row = Tuple[int, int, float]


def degrees_to_steps(degrees: float, n: int) -> Tuple[int, bool]:
    """The nearest whole number of :math:`360/n`-degree steps, and whether it is exact (1e-9)."""
    steps = float(degrees) * n / 360.0
    k = int(round(steps))
    return k, abs(steps - k) <= 1e-9


def steps_to_degrees(k: int, n: int) -> float:
    """``k`` rotation steps of :math:`C_n` in degrees."""
    return 360.0 * int(k) / int(n)


def translation_velocities(radius: int) -> List[Tuple[int, int]]:
    """All integer velocities :math:`(v_x, v_y)` with :math:`\\max(|v_x|, |v_y|) \\le r`, ordered
    lexicographically like :meth:`FlowSet.translations <flow_escnn.flows._flowset.FlowSet.translations>`."""
    r = non_negative_int(radius, "radius")
    return [(vx, vy) for vx in range(-r, r + 1) for vy in range(-r, r + 1)]


def rotation_velocities(max_degrees: float = 40.0, step: float = 10.0) -> List[float]:
    """Angular velocities :math:`\\{-m, -m+s, \\dots, m\\}` in degrees per frame (``m`` a multiple of ``s``)."""
    m, s = float(max_degrees), float(step)
    if not (math.isfinite(m) and math.isfinite(s)) or m < 0 or s <= 0:
        raise ValueError(f"need max_degrees >= 0 and step > 0, got max_degrees={max_degrees!r}, step={step!r}")
    n = m / s
    if abs(n - round(n)) > 1e-9:
        raise ValueError(f"max_degrees={max_degrees!r} is not a multiple of step={step!r}")
    return [float(k * s) for k in range(-int(round(n)), int(round(n)) + 1)]


def parse_steps(text: str) -> List[int]:
    """Rotation steps of a model's V: ``"K"`` -> ``[-K, ..., K]``; ``"k1,k2,..."`` -> that list."""
    s = "".join(str(text).split())
    try:
        if "," in s:
            steps = [int(p) for p in s.split(",") if p]
        else:
            k = int(s)
            if k < 0:
                raise ValueError
            steps = list(range(-k, k + 1))
    except ValueError:
        raise ValueError(
            f"cannot read the rotation steps {text!r}: expected 'K' (steps -K..K of 360/N degrees per frame) "
            "or a list of integers 'k1,k2,...'"
        ) from None
    if not steps or len(set(steps)) != len(steps):
        raise ValueError(f"the rotation steps {text!r} must be a non-empty list without duplicates")
    return steps


class FlowKind:
    """One kind of flow (subclasses in :mod:`flow_escnn.flows.kinds` define the specifics).

    Attributes:
        name: the name configs and the CLI use (``--flow NAME``).
        translates, rotates: which parts of a velocity the kind uses; the data generators offset
            the digits of a translating kind and centre those of a purely rotating one.
        syntax: the velocity-set string syntax, for messages.
        default_sets: default ``(train, test)`` velocity-set strings.
        default_data: default velocity-set string of the data generators.
        heatmap: whether the plots draw a ``(vx, vy)`` heat map per model.
        params: the parameters of the model's V this kind reads (keys of :data:`MODEL_PARAMS`);
            :meth:`default_params` covers a set of data velocities with them and
            :meth:`model_flows` builds V from them.
        order: where the kind stands in :data:`~flow_escnn.flows.kinds.FLOW_KINDS` (choices, docs).
        dimension: the base space the kind serves: 2 (planar gspaces; the kinds of
            :data:`~flow_escnn.flows.kinds.FLOW_KINDS`, which the data, the configs and the CLI take) or
            3 (volumes; :data:`~flow_escnn.flows.kinds.VOLUME_FLOW_KINDS`).
    """

    name: str = ""
    translates: bool = False
    rotates: bool = False
    syntax: str = ""
    default_sets: Tuple[str, str] = ("", "")
    default_data: str = ""
    heatmap: bool = False
    params: Tuple[str, ...] = ()
    order: int = 100
    dimension: int = 2

    # -- velocity sets -----------------------------------------------------------------------------
    def parse(self, text: str) -> List[Row]:
        """Rows of a velocity-set string (see :attr:`syntax`); ``ValueError`` naming the syntax."""
        if not isinstance(text, str) or not text.strip():
            raise self.bad(str(text), "empty")
        rows = self._parse("".join(text.split()), text)
        if not rows:
            raise self.bad(text, "empty")
        return [self.check(r) for r in rows]

    def _parse(self, s: str, text: str) -> List[Any]:
        raise NotImplementedError

    def check(self, velocity: Any) -> Row:
        """A data velocity of this kind as a row ``(vx, vy, degrees)``; ``ValueError`` otherwise.

        Accepts a :class:`~flow_escnn.flows._generator.FlowGenerator`, a triple, and the kind's
        short forms (a pair for translations, a number for rotations).
        """
        vx, vy, w = self._row(velocity)
        vx, vy = whole_pixels(vx, "vx"), whole_pixels(vy, "vy")
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise ValueError(f"angular velocity must be a number of degrees per frame, got {w!r}") from None
        if not math.isfinite(w):
            raise ValueError(f"angular velocity must be finite, got {w!r}")
        if not self.rotates and w != 0.0:
            raise ValueError(f"flow={self.name!r} got a rotating velocity {velocity!r}; use a kind that rotates")
        if not self.translates and (vx, vy) != (0, 0):
            raise ValueError(f"flow={self.name!r} got a translating velocity {velocity!r}; use a kind that translates")
        return vx, vy, w

    def _row(self, v: Any) -> Tuple[Any, Any, Any]:
        if hasattr(v, "translation") and hasattr(v, "angle"):  # a FlowGenerator
            (vx, vy), w = v.translation, math.degrees(v.angle)
            return vx, vy, w
        try:
            t = tuple(v)
        except TypeError:
            raise ValueError(self.hint(v)) from None
        if len(t) != 3:
            raise ValueError(self.hint(v))
        return t

    def hint(self, v: Any) -> str:
        return f"a velocity for flow={self.name!r} is (vx, vy, degrees_per_frame) or a FlowGenerator, got {v!r}"

    def bad(self, text: str, why: str = "") -> ValueError:
        extra = f" ({why})" if why else ""
        return ValueError(f"cannot read the velocity set {text!r} for flow={self.name!r}{extra}; expected {self.syntax}")

    # -- the model's V -----------------------------------------------------------------------------
    def model_flows(self, gspace: Any, **params: Any) -> FlowSet:
        """The model's V on ``gspace`` from this kind's :attr:`params` (e.g. ``flow_radius=1``)."""
        raise NotImplementedError

    def default_params(self, rows: Sequence[Row], steps_per_turn: int) -> Tuple[Dict[str, Any], List[str]]:
        """The smallest :attr:`params` whose V covers the data velocities ``rows``, and notes on what
        V cannot cover exactly (e.g. angles that are not whole steps of :math:`360/N`)."""
        values: Dict[str, Any] = {}
        notes: List[str] = []
        if "flow_radius" in self.params:
            values["flow_radius"] = int(max(max(abs(r[0]), abs(r[1])) for r in rows))
        if "flow_steps" in self.params:
            pairs = [degrees_to_steps(r[2], steps_per_turn) for r in rows]
            values["flow_steps"] = tuple(sorted({k for k, _ in pairs}))
            if not all(ok for _, ok in pairs):
                notes.append(
                    f"training angles {sorted({r[2] for r in rows})} are not all multiples of 360/{steps_per_turn} = "
                    f"{360.0 / steps_per_turn:g} degrees: V uses the nearest steps {list(values['flow_steps'])}"
                )
        return values, notes

    def check_params(self, params: Dict[str, Any]) -> None:
        """Refuse parameters this kind does not read (``ValueError`` naming them and the kind's)."""
        extra = sorted(k for k, v in params.items() if v is not None and k not in self.params)
        if extra:
            raise ValueError(f"flow={self.name!r} builds V from {list(self.params)}, not {extra}")

    # -- plots -------------------------------------------------------------------------------------
    def key(self, row: Any) -> str:
        """A readable key of a row: ``"(1,-1)"``, ``"30deg"``, ``"(1,0)@30deg"``."""
        trans, rot = f"({int(row[0])},{int(row[1])})", f"{float(row[2]):g}deg"
        if self.translates and self.rotates:
            return f"{trans}@{rot}"
        return trans if self.translates else rot

    def speed(self, row: Any) -> float:
        """A scalar speed for plots: :math:`\\max(|v_x|, |v_y|)`, or :math:`|\\omega|` for pure rotations."""
        if self.translates:
            return float(max(abs(row[0]), abs(row[1])))
        return abs(float(row[2]))

    @property
    def speed_label(self) -> str:
        """The axis label of :meth:`speed`."""
        return "speed: max(|vx|, |vy|) [px/frame]" if self.translates else "|angular velocity| [deg/frame]"

    def __repr__(self) -> str:
        return f"FlowKind({self.name!r})"


def whole_pixels(value: Any, what: str) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer number of pixels per frame, got {value!r}") from None
    if not math.isfinite(v) or v != int(v):
        raise ValueError(
            f"{what} must be an integer number of pixels per frame, got {value!r} "
            "(integer translations keep the data an exact flow on the pixel grid)"
        )
    return int(v)


def read_int(item: str, kind: FlowKind, text: str) -> int:
    """An integer ``item`` of the velocity-set string ``text`` (``bad`` naming the syntax otherwise)."""
    value = read_float(item, kind, text)
    if value != int(value):
        raise kind.bad(text, f"{item!r} is not an integer number of pixels per frame")
    return int(value)


def read_int_lists(s: str, kind: FlowKind, text: str, names: Sequence[str]) -> List[Tuple[int, ...]]:
    """The list ``'a:b,c:d,...'`` of the velocity-set string ``text`` as integer tuples of
    ``len(names)`` entries (``names``, e.g. ``("vx", "vy")``, spell the expected item)."""
    rows = []
    for item in (p for p in s.split(",") if p):
        parts = item.split(":")
        if len(parts) != len(names):
            raise kind.bad(text, f"{item!r} is not {':'.join(names)!r}")
        rows.append(tuple(read_int(p, kind, text) for p in parts))
    return rows


def read_float(item: str, kind: FlowKind, text: str) -> float:
    """A finite number ``item`` of the velocity-set string ``text``."""
    try:
        value = float(item)
    except ValueError:
        raise kind.bad(text, f"{item!r} is not a number") from None
    if not math.isfinite(value):
        raise kind.bad(text, f"{item!r} is not finite")
    return value


def read_radius(item: str, kind: FlowKind, text: str) -> int:
    """A radius ``R >= 0`` in the velocity-set string ``text``."""
    r = read_int(item, kind, text)
    if r < 0:
        raise kind.bad(text, "the radius must be >= 0")
    return r


def read_angles(item: str, kind: FlowKind, text: str) -> List[float]:
    """``'M'`` or ``'M/S'`` in the velocity-set string ``text``: -M..M degrees in steps of S (default 10)."""
    m, _, s = item.partition("/")
    try:
        return rotation_velocities(read_float(m, kind, text), read_float(s, kind, text) if s else 10.0)
    except ValueError as exc:
        if "cannot read" in str(exc):
            raise
        raise kind.bad(text, str(exc)) from None
