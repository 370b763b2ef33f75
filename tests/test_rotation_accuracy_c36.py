"""The C36 configuration of ``benchmarks/rotation_accuracy.py``: a C36 FERNN (1 regular field),
analytic blobs rotating 10 degrees per frame, co-moving mode, error at t = 9 (90 degrees, the
first frame whose output transport is exact), against escnn's own static error at 10 degrees.

The recurrent filter is scaled by 0.5 (contractive), as in the benchmark's flat-in-T rows: the
seeded weights amplify any perturbation of the state (measured 0.028 = 3.5x escnn at t = 9 with
bicubic), so with them the bound would measure the recurrence, not the transport.
Measured: escnn 0.0081, bicubic 0.0077 (0.95x), bilinear (the control) 0.0324 (4.0x).

With the seeded weights themselves, the issue's target holds for the default interpolation:
cubic6 0.0082 (1.01x escnn), bicubic (the control, the previous default) 0.028 (3.5x).
"""
from __future__ import annotations

from benchmarks.rotation_accuracy import escnn_static_error, flow_errors
from flow_escnn.flows._tables import DEFAULT_INTERPOLATION

C36 = dict(n=36, fields=1, seed=0)
BOUND = 1.5  # times escnn's static error at the same angle


def test_c36_comoving_bicubic_within_escnn_static_error_at_10_degrees():
    floor = escnn_static_error(**C36)
    assert 1e-3 < floor < 5e-2  # a real, non-degenerate floor
    errors = {
        interpolation: flow_errors(interpolation, "comoving", 10, recurrent_scale=0.5, **C36)
        for interpolation in ("bicubic", "bilinear")
    }
    assert all(list(e) == [9] for e in errors.values())  # t = 9 is the only exact frame below 10
    assert errors["bicubic"][9] <= BOUND * floor
    assert errors["bilinear"][9] > BOUND * floor  # control: the same bound flags bilinear


def test_c36_default_interpolation_within_escnn_static_error_with_seeded_weights():
    floor = escnn_static_error(**C36)
    errors = {i: flow_errors(i, "comoving", 10, **C36)[9] for i in (DEFAULT_INTERPOLATION, "bicubic")}
    assert DEFAULT_INTERPOLATION == "cubic6"
    assert errors["cubic6"] <= BOUND * floor
    assert errors["bicubic"] > BOUND * floor  # control: the same bound flags bicubic
