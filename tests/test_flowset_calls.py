"""The FlowSet constructors share their call shapes: a radius-like number positionally or by keyword
(``translations(gs, R)``, ``rotations(gs, K)``, ``roto_translations(gs, R, K)``), lists of steps as
before, and one clear error for each wrong call."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from flow_escnn import FlowSet
from escnn import gspaces

C4 = gspaces.rot2dOnR2(4)
C8 = gspaces.rot2dOnR2(8)
D4 = gspaces.flipRot2dOnR2(4)
SO2 = gspaces.rot2dOnR2(-1)


def test_every_constructor_takes_its_radius_positionally_and_by_keyword():
    assert FlowSet.translations(C4, 1) == FlowSet.translations(C4, radius=1)
    assert FlowSet.rotations(C4, 1) == FlowSet.rotations(C4, steps=1) == FlowSet.rotations(C4, [-1, 0, 1])
    assert FlowSet.rotations(C8, np.int64(2)).velocities == [(0, 0, k) for k in (-2, -1, 0, 1, 2)]
    assert FlowSet.rotations(D4, 0) == FlowSet.rotations(D4, [0])
    assert (FlowSet.roto_translations(C4, 1, 1) == FlowSet.roto_translations(C4, radius=1, steps=1)
            == FlowSet.roto_translations(C4, 1, [-1, 0, 1]))
    assert len(FlowSet.roto_translations(C4, 1, 1)) == 27
    # on SO(2) a step is one degree, as for the CLI's --flow-steps K
    assert FlowSet.rotations(SO2, 2) == FlowSet.rotations(SO2, [-2, -1, 0, 1, 2])
    # control: the integer form is -K..K, not the one step K
    assert FlowSet.rotations(C8, 1) != FlowSet.rotations(C8, [1])
    assert FlowSet.rotations(C4, [0, 1]).velocities == [(0, 0, 0), (0, 0, 1)]


def test_the_signatures_line_up():
    def params(fn):
        return [(p.name, p.kind) for p in list(inspect.signature(fn).parameters.values())[1:]]

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert params(FlowSet.translations) == [("radius", positional)]
    assert params(FlowSet.rotations) == [("steps", positional)]
    assert params(FlowSet.roto_translations) == [("radius", positional), ("steps", positional)]


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: FlowSet.rotations(C4, "1"), TypeError, r"or an integer K for the steps -K..K, got str '1'"),
        (lambda: FlowSet.rotations(C4, 1.5), TypeError, "got float 1.5"),
        (lambda: FlowSet.rotations(C4, True), TypeError, "got bool True"),
        (lambda: FlowSet.rotations(C4, -1), ValueError, "K .* must be a non-negative integer, got -1"),
        (lambda: FlowSet.rotations(C4, 2), ValueError, r"K=2 gives the steps -2..2, .* use K <= 1"),
        (lambda: FlowSet.rotations(gspaces.trivialOnR2(), 1), ValueError, "has no rotations"),
        (lambda: FlowSet.roto_translations(C4, 1), TypeError, "roto_translations needs the rotation steps too"),
        (lambda: FlowSet.roto_translations(C4, 1, "1"), TypeError, "got str '1'"),
        (lambda: FlowSet.roto_translations(C4, -1, 1), ValueError, "radius must be a non-negative integer"),
        (lambda: FlowSet.translations(C4, [1]), TypeError, "radius must be a non-negative integer, got list"),
        (lambda: FlowSet.translations(C4, 1.5), ValueError, "radius must be a non-negative integer, got 1.5"),
    ],
)
def test_wrong_calls_say_what_to_pass(call, exc, message):
    with pytest.raises(exc, match=message):
        call()
