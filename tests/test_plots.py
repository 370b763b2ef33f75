"""The experiment figures (issue 25, item 14), read from matplotlib's Figure objects, not pixels.

Colour bars on the image grids, what each title says, plain tick labels on narrow log axes, and
every text inside the figure without overlaps (window extents after ``fig.canvas.draw()``).
"""
from __future__ import annotations

import re
from itertools import combinations
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch
from matplotlib.image import AxesImage

from flow_escnn.experiments import _plots
from flow_escnn.experiments._config import ExperimentConfig, build_model, velocity_key
from flow_escnn.experiments._plots import (
    VAL_CURVE_TITLE,
    frames_label,
    moving_frame_figure,
    moving_frame_states,
    mse_per_step_figure,
    mse_vs_velocity_figure,
    prediction_columns,
    predictions_figure,
    rollout_figure,
    val_curves_figure,
)
from tests.tiny import TINY


# -- helpers: what a drawn figure shows ------------------------------------------------------------------
def _colorbar(ax: Any) -> Any:
    return getattr(ax, "_colorbar", None)


def _image_axes(fig: Any) -> List[Any]:
    return [ax for ax in fig.axes if _colorbar(ax) is None and ax.images]


def _in_view(axis: Any, loc: float) -> bool:
    lo, hi = sorted(axis.get_view_interval())
    return lo - 1e-12 * abs(hi) <= loc <= hi + 1e-12 * abs(hi)


def _texts(fig: Any) -> List[Any]:
    """Every visible, non-empty text the figure draws (titles, axis labels, tick labels), legends aside."""
    texts = [t for t in [fig._suptitle, *fig.texts] if t is not None]
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            locs = axis.get_majorticklocs()
            for tick, loc in zip(axis.get_major_ticks(len(locs)), locs):
                if _in_view(axis, loc):
                    texts += [tick.label1, tick.label2]
    unique = list({id(t): t for t in texts}.values())  # the suptitle is one of fig.texts too
    return [t for t in unique if t.get_visible() and t.get_text().strip()]


def assert_texts_fit(fig: Any) -> None:
    """Each text lies inside the figure, and no two texts overlap (after a redraw too: no drift)."""
    fig.canvas.draw()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
    assert boxes
    outside = [text for text, b in boxes
               if b.x0 < page.x0 - 0.5 or b.y0 < page.y0 - 0.5 or b.x1 > page.x1 + 0.5 or b.y1 > page.y1 + 0.5]
    assert not outside, f"texts (partly) outside the figure: {outside}"
    overlapping = []
    for (ta, a), (tb, b) in combinations(boxes, 2):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        if w > 0.5 and h > 0.5:
            overlapping.append((ta, tb))
    assert not overlapping, f"overlapping texts: {overlapping[:5]}"


def assert_every_image_has_a_colorbar(fig: Any, skip_rgb: bool = True) -> List[Any]:
    """Every scalar image sits beside a colour bar of its colour map and value range; returns the bars."""
    bars = [_colorbar(ax) for ax in fig.axes if _colorbar(ax) is not None]
    assert bars, "no colour bar"
    scales = {(b.mappable.get_cmap().name, b.mappable.norm.vmin, b.mappable.norm.vmax) for b in bars}
    for ax in _image_axes(fig):
        for im in ax.images:
            assert isinstance(im, AxesImage)
            if skip_rgb and im.get_array().ndim == 3:
                continue
            assert (im.get_cmap().name, im.norm.vmin, im.norm.vmax) in scales, ax.get_title()
    return bars


def _row_times(axes_row: List[Any]) -> List[int]:
    return [int(ax.get_title().removeprefix("t=")) for ax in axes_row if ax.get_title()]


def _grid(fig: Any) -> List[List[Any]]:
    """The image axes by row (top to bottom), each row left to right."""
    rows: Dict[int, List[Any]] = {}
    for ax in fig.axes:
        if _colorbar(ax) is None:
            rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(ax)
    return [sorted(r, key=lambda a: a.get_subplotspec().colspan.start) for _, r in sorted(rows.items())]


def _frames(n: int, size: int = 8, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * scale


# -- the frame label of predictions.png ------------------------------------------------------------------
@pytest.mark.parametrize("times, label", [
    ([4, 5, 6, 7, 8, 9, 10, 11, 12, 13], "t=4..13"),
    ([5, 7, 9, 11, 13, 15], "t=5..15 every 2"),
    ([7], "t=7"),
    ([3, 4], "t=3..4"),
    ([3, 9], "t=3, 9"),
    ([3, 5, 9], "t=3, 5, 9"),
])
def test_frames_label(times, label):
    assert frames_label(times) == label


@pytest.mark.parametrize("horizon", range(1, 41))
def test_prediction_columns_fit_and_end_at_the_last_frame(horizon):
    cols = prediction_columns(horizon, 10)
    assert 1 <= len(cols) <= 10 and cols[-1] == horizon - 1 and cols[0] >= 0
    assert len({b - a for a, b in zip(cols, cols[1:])}) <= 1  # evenly spaced
    if horizon <= 10:
        assert cols == list(range(horizon))


def test_predictions_title_names_the_frames_shown():
    """12 target frames from t=4 on, room for 10 columns: the grid shows t=4..13 and says so (not 4-15)."""
    fig = predictions_figure(_frames(4), _frames(12, seed=1), {"fernn": _frames(12, seed=2)}, title="test sequence 0")
    grid = _grid(fig)
    target, predicted = _row_times(grid[1]), _row_times(grid[2])
    assert target == predicted == list(range(4, 14))
    title = fig._suptitle.get_text()
    assert "test sequence 0" in title
    assert f"predicted frames {frames_label(target)}" in title
    assert re.search(r"\b15\b", title) is None
    assert _row_times(grid[0]) == [0, 1, 2, 3]


def test_predictions_title_with_given_times():
    times = [5, 7, 9, 11, 13, 15]
    fig = predictions_figure(_frames(4), _frames(6, seed=1), {"m": _frames(6)}, target_times=times)
    assert _row_times(_grid(fig)[1]) == times
    assert fig._suptitle.get_text() == "predicted frames t=5..15 every 2"
    with pytest.raises(ValueError, match="target_times"):
        predictions_figure(_frames(4), _frames(6), {"m": _frames(6)}, target_times=times[:-1])


# -- colour bars ------------------------------------------------------------------------------------------
def test_predictions_have_a_colorbar():
    fig = predictions_figure(_frames(4), _frames(12, seed=1), {"fernn": _frames(12, seed=2, scale=1.3)})
    (bar,) = assert_every_image_has_a_colorbar(fig)
    assert (bar.norm.vmin, bar.norm.vmax) == (0.0, 1.0)
    assert bar.ax.get_ylabel() == "pixel value"
    assert bar.extend == "max"  # predictions above 1 are clipped, and the bar says so


@pytest.fixture(scope="module")
def fernn_states() -> Tuple[torch.Tensor, Dict[str, Any], Any]:
    torch.manual_seed(0)
    config = ExperimentConfig(hidden_channels=3, decoder_layers=1, flow_radius=1, digits="synthetic").resolve()
    model = build_model(config)
    v = model.flows[model.flows.index((1, -1, 0))]
    x = _frames(6)
    return x, {"fernn": moving_frame_states(model, x, v)}, v


def test_hidden_state_images_have_colorbars(fernn_states):
    x, states, v = fernn_states
    h, k, nu = states["fernn"]
    signed = {"fernn": states["fernn"], "signed": (h - h.mean(), k - h.mean(), nu)}
    fig = moving_frame_figure(x, signed, v)
    bars = assert_every_image_has_a_colorbar(fig)
    assert len(bars) == 3  # the input, then one per model (its two rows share a scale)
    grid = _grid(fig)
    for r in (1, 3):  # h_t(nu) and psi_t(v)^-1 h_t of one model: one scale
        assert {(im.norm.vmin, im.norm.vmax) for ax in grid[r] + grid[r + 1] for im in ax.images} == {
            (grid[r][0].images[0].norm.vmin, grid[r][0].images[0].norm.vmax)}
    signed_norm = grid[3][0].images[0].norm
    assert signed_norm.vmin == -signed_norm.vmax < 0  # negative values are shown, not clipped at 0
    assert grid[1][0].images[0].norm.vmin == 0.0


def test_rollout_views_have_a_colorbar():
    views = _frames(5, seed=3)
    fig = rollout_figure(torch.rand(5, 3, 16, 16), views, {"FloWM": views, "G-RNN + action input": views},
                         [9, 10, 30, 60, 109], title="test episode 0")
    (bar,) = assert_every_image_has_a_colorbar(fig)
    assert bar.ax.get_ylabel() == "pixel value"


# -- titles ------------------------------------------------------------------------------------------------
def test_val_curve_title_says_what_it_shows():
    fig = val_curves_figure({"fernn": [{"step": 1, "val_mse": 0.3}, {"step": 2, "val_mse": 0.2}]})
    ax = fig.axes[0]
    assert ax.get_title() == VAL_CURVE_TITLE == "Validation MSE during training"
    assert "speed" not in ax.get_title().lower()
    assert ax.get_ylabel() == "validation MSE" and ax.get_xlabel() == "optimisation step"


# -- log axes ---------------------------------------------------------------------------------------------
def _ytick_texts(fig: Any, ax: Any = None) -> List[str]:
    fig.canvas.draw()
    ax = ax or fig.axes[0]
    texts = []
    for axis_ticks in (ax.yaxis.get_major_ticks(), ax.yaxis.get_minor_ticks()):
        for tick in axis_ticks:
            loc = tick.get_loc()
            if loc is not None and _in_view(ax.yaxis, loc) and tick.label1.get_visible() and tick.label1.get_text():
                texts.append(tick.label1.get_text())
    return texts


def _assert_plain(texts: List[str]) -> None:
    assert len(texts) >= 2, texts
    for text in texts:
        assert "$" not in text and "times" not in text and "\u00d7" not in text, texts
        float(text)  # a plain number


NARROW = {"fernn": [0.16375, 0.1641, 0.1648, 0.1652], "grnn": [0.1661, 0.1667, 0.1670, 0.1672]}


def test_narrow_log_axis_gets_plain_ticks():
    fig = mse_per_step_figure(NARROW, 2)
    assert fig.axes[0].get_yscale() == "log"
    texts = _ytick_texts(fig)
    _assert_plain(texts)
    lo, hi = fig.axes[0].get_ylim()
    assert all(lo <= float(t) <= hi for t in texts)


def test_narrow_val_curve_gets_plain_ticks():
    curve = [{"step": s, "val_mse": v} for s, v in zip(range(100, 500, 100), NARROW["fernn"])]
    _assert_plain(_ytick_texts(val_curves_figure({"fernn": curve})))


def test_narrow_mse_vs_velocity_gets_plain_ticks():
    config = ExperimentConfig(**TINY).resolve()
    keys = [velocity_key(r, config.flow) for r in config.test_velocity_array()]
    mses = {k: 0.2 + 0.01 * i / len(keys) for i, k in enumerate(keys)}
    fig = mse_vs_velocity_figure({"fernn": mses}, config)
    _assert_plain(_ytick_texts(fig, fig.axes[0]))
    assert_texts_fit(fig)


def test_wide_log_axis_keeps_decade_ticks():
    fig = mse_per_step_figure({"fernn": [1.0, 1e-1, 1e-2, 1e-3]}, 2)
    texts = _ytick_texts(fig)
    assert len(texts) >= 2
    assert all("10^" in t for t in texts), texts  # matplotlib's log labels, e.g. $\mathdefault{10^{-2}}$


# -- layout: every text inside the figure, none overlapping ------------------------------------------------
def test_prediction_grid_texts_fit():
    assert_texts_fit(predictions_figure(_frames(4), _frames(12, seed=1),
                                        {"fernn": _frames(12), "g-rnn with a longer name": _frames(12)},
                                        title="test sequence 0 (training velocities), trained to predict 4 frames"))


def test_moving_frame_texts_fit(fernn_states):
    x, states, v = fernn_states
    assert_texts_fit(moving_frame_figure(x, {**states, "another model": states["fernn"]}, v))


def test_rollout_texts_fit():
    views = _frames(8, seed=3)
    assert_texts_fit(rollout_figure(torch.rand(8, 3, 16, 16), views,
                                    {"FloWM": views, "no self-motion": views, "G-RNN + action input": views},
                                    [9, 10, 24, 38, 52, 66, 80, 109], title="test episode 0: a long title " * 3))


def test_curve_figures_texts_fit():
    assert_texts_fit(mse_per_step_figure(NARROW, 2))
    assert_texts_fit(val_curves_figure({"fernn": [{"step": 1, "val_mse": 0.3}, {"step": 2, "val_mse": 0.01}]}))


def test_the_checker_finds_clipped_and_overlapping_labels():
    """The layout check fails on the old flows.png layout: long vertical row labels in short rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, 3)
    for r in range(4):
        axes[r, 0].set_ylabel(f"roto-translation u=(4, 0), 90 deg/frame, row {r}", fontsize=9)
    with pytest.raises(AssertionError, match="outside the figure|overlapping"):
        assert_texts_fit(fig)


# -- write_plots end to end: the figures it saves ----------------------------------------------------------
def test_write_plots_predictions_label_and_titles(tmp_path, monkeypatch):
    """t_in=4, 12 predicted frames: the saved grid shows frames ending at t=15, and its title says which."""
    config = ExperimentConfig(**dict(TINY, t_in=4, t_out=4, horizon_factor=3)).resolve()
    from flow_escnn.experiments._datasets import ExperimentData
    from flow_escnn.experiments._evaluation import evaluate_model

    torch.manual_seed(0)
    data = ExperimentData(config)
    model = build_model(config)
    metrics = evaluate_model(model, config, data)
    metrics["val_curve"] = [{"step": 1, "val_mse": 0.3}, {"step": 2, "val_mse": 0.29}]
    saved: Dict[str, Any] = {}
    save = _plots._save

    def keep(fig, path):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        return save(fig, path)

    monkeypatch.setattr(_plots, "_save", keep)
    paths = _plots.write_plots(tmp_path, {"fernn": (model, metrics)}, config, data)
    assert all(p.is_file() for p in paths)
    fig = saved["predictions.png"]
    grid = _grid(fig)
    shown = _row_times(grid[1])
    horizon = config.extended_horizon
    assert shown == [config.t_in + j for j in prediction_columns(horizon)]
    assert shown[-1] == config.t_in + horizon - 1  # the last predicted frame is shown
    assert f"predicted frames {frames_label(shown)}" in fig._suptitle.get_text()
    assert saved["val_curve.png"].axes[0].get_title() == VAL_CURVE_TITLE
    for name in ("predictions.png", "hidden_moving_frame.png"):
        assert_every_image_has_a_colorbar(saved[name])
        assert_texts_fit(saved[name])
    if "predictions_unseen.png" in saved:
        unseen = saved["predictions_unseen.png"]
        assert f"predicted frames {frames_label(_row_times(_grid(unseen)[1]))}" in unseen._suptitle.get_text()
    assert np.isfinite(metrics["test_mse"])
