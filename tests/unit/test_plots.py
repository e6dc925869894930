"""The training run's and the model card's plots read as saved: no clipped label, no legend over a
bar, every count legible on its cell (`tests.figures`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from loanops.card import segment_table
from loanops.card_render import plot_segments
from loanops.data import synthetic as syn
from loanops.evaluate import (
    plot_calibration,
    plot_confusion,
    plot_importance,
    plot_precision_recall,
    plot_roc,
)
from tests.factories import calibrated_scores
from tests.figures import (
    clipped_texts,
    contrast_ratio,
    crowded_tick_labels,
    illegible_cell_texts,
    legends_over_bars,
    problems,
)

# Score ranges of a low-default book (LendingClub's 5 %) up to a risky one. Around a 0.17 top
# the y ticks take three decimals (0.025 steps), which is where a fixed margin clipped the label.
SCORE_RANGES = [(0.002, 0.05), (0.002, 0.17), (0.01, 0.5)]
CURVES: dict[str, Callable[[np.ndarray, np.ndarray], Figure]] = {
    "roc": plot_roc,
    "precision_recall": plot_precision_recall,
    "calibration": plot_calibration,
    "confusion": lambda y, p: plot_confusion(y, p, float(np.quantile(p, 0.8))),
}


@pytest.mark.parametrize("name", CURVES)
@pytest.mark.parametrize(("low", "high"), SCORE_RANGES)
def test_score_plots_keep_every_label_on_the_canvas(name: str, low: float, high: float) -> None:
    y, p = calibrated_scores(3000, seed=0, low=low, high=high)
    assert problems(CURVES[name](y, p)) == []


def test_calibration_keeps_its_y_label_with_three_decimal_ticks() -> None:
    y, p = calibrated_scores(3000, seed=0, low=0.002, high=0.17)
    figure = plot_calibration(y, p)
    assert clipped_texts(figure) == []
    ticks = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert any(len(t.split(".")[-1]) == 3 for t in ticks), "the case this test is for"


def test_confusion_counts_contrast_with_their_cells() -> None:
    # Most loans are approved repayers, so that cell is the darkest navy of the colour map.
    y, p = calibrated_scores(3000, seed=0, low=0.01, high=0.3)
    figure = plot_confusion(y, p, threshold=0.25)
    assert illegible_cell_texts(figure) == []
    colours = {t.get_text(): t.get_color() for t in figure.axes[0].texts}
    assert len(colours) == 4 and set(colours.values()) == {"white", "black"}


def test_importance_keeps_long_feature_names() -> None:
    names = [f"a_rather_long_feature_name_{i}" for i in range(15)]
    importance = pd.Series(np.linspace(0.05, 0.0005, 15), index=names)
    assert problems(plot_importance(importance)) == []


def test_segment_legend_covers_no_bar() -> None:
    # Low incomes default most: the income-band panel's tallest bars are on its left.
    frame = syn.generate(3000, seed=0)
    y, p = frame["default"].to_numpy(), frame["pd_true"].to_numpy()
    figure = plot_segments(segment_table(frame, syn.SCHEMA.segments, y, p, threshold=0.12))
    assert len(figure.axes) == 4
    assert legends_over_bars(figure) == []
    assert clipped_texts(figure) == []


def test_the_checks_see_clipped_and_crowded_labels_a_covered_bar_and_dark_on_dark() -> None:
    # The checks themselves must be able to fail, or the tests above prove nothing.
    clipped = Figure(figsize=(3, 3))
    clipped.subplots().set_ylabel("a label much too long for the margin of a small figure " * 2)
    assert [line.split(" at ")[0] for line in clipped_texts(clipped)] == [
        f"axes 0 y label {clipped.axes[0].get_ylabel()!r}"
    ]
    crowded = Figure(figsize=(3, 3))
    crowded.subplots().set_xticks(range(8), [f"long label {i}" for i in range(8)])
    assert len(crowded_tick_labels(crowded)) == 7
    covered = Figure(figsize=(3, 3))
    bars = covered.subplots()
    bars.bar([0, 1], [1.0, 1.0], label="tall")
    bars.legend(loc="upper left")
    assert len(legends_over_bars(covered)) == 1
    dark = Figure(figsize=(2, 2))
    cells = dark.subplots()
    cells.imshow([[0.0, 1.0]], cmap="Blues")
    cells.text(1, 0, "7", color="black")
    cells.text(0, 0, "8", color="black")
    assert illegible_cell_texts(dark) == ["'7' in cell (0, 1): contrast 1.6 < 4.5"]


def test_contrast_ratio_is_wcag() -> None:
    assert contrast_ratio((0, 0, 0), (1, 1, 1)) == pytest.approx(21.0)
    assert contrast_ratio((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) == pytest.approx(1.0)
