"""The scorecard family: monotone bins, risk WoE, and a points table that adds up to the PD."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io

from loanops.registry import SKOPS_TRUSTED_TYPES
from loanops.scorecard import WoEEncoder, points_table
from loanops.train import TrainedModel
from tests.factories import LENDING_CLUB, lending_club_frame
from tests.model.fitting import fit_model


@cache
def scorecard() -> TrainedModel:
    return fit_model(LENDING_CLUB, lending_club_frame(), "scorecard").model


def encoder(model: TrainedModel) -> WoEEncoder:
    pipeline = model.model.calibrated_classifiers_[0].estimator.estimator
    transformer: WoEEncoder = pipeline.named_steps["preprocess"].transformers_[0][1]
    return transformer


def test_bins_of_declared_numbers_get_riskier_in_the_declared_direction() -> None:
    bins = {b.name: b for b in encoder(scorecard()).bins_}
    for feature in LENDING_CLUB.features:
        if feature.risk is None or len(bins[feature.name].woe) < 2:
            continue
        woe = np.array(bins[feature.name].woe)
        steps = np.diff(woe) if feature.risk == "increasing" else -np.diff(woe)
        assert (steps >= -1e-12).all(), (feature.name, woe)
    assert len(bins["int_rate"].woe) >= 3  # the strongest number is really binned


def test_each_applicants_points_add_up_to_the_models_pd() -> None:
    model = scorecard()
    card = points_table(model.model)
    points = {(row.feature, row.bin): row.points for row in card.rows}
    frame = LENDING_CLUB.to_frame(lending_club_frame().head(200))
    expected = model.predict_pd(frame)
    for i in range(len(frame)):
        total = card.base_points
        for bins in encoder(model).bins_:
            (index,) = bins.bin_of(frame[bins.name].iloc[i : i + 1])
            total += points[(bins.name, "missing" if index == -1 else bins.labels()[index])]
        assert card.pd_of_score(total) == pytest.approx(expected[i], abs=1e-12)


def test_riskier_bins_cost_points_and_information_values_rank_the_grade_first() -> None:
    card = points_table(scorecard().model)
    rates = [row for row in card.rows if row.feature == "int_rate" and row.bin != "missing"]
    assert [row.points for row in rates] == sorted((row.points for row in rates), reverse=True)
    ranked = sorted(card.information_values, key=card.information_values.__getitem__)
    assert set(ranked[-2:]) == {"sub_grade", "int_rate"}
    assert all(value >= 0 for value in card.information_values.values())


def test_an_unseen_category_carries_no_evidence_and_a_missing_number_its_own() -> None:
    bins = {b.name: b for b in encoder(scorecard()).bins_}
    state = bins["addr_state"]
    woe = state.woe_of(pd.Series(["no such state", None], dtype=object))
    assert woe[0] == 0.0
    assert woe[1] == state.missing_woe
    income = bins["annual_inc"]
    assert income.woe_of(pd.Series([np.nan]))[0] == income.missing_woe


def test_the_scorecard_round_trips_through_skops_with_the_registrys_trusted_types() -> None:
    model = scorecard()
    blob = skops.io.dumps(model.model)
    assert set(skops.io.get_untrusted_types(data=blob)) <= set(SKOPS_TRUSTED_TYPES)
    loaded = skops.io.loads(blob, trusted=SKOPS_TRUSTED_TYPES)
    frame = LENDING_CLUB.to_frame(lending_club_frame().head(500))
    assert np.array_equal(loaded.predict_proba(frame), model.model.predict_proba(frame))


def test_the_model_card_shows_the_points_table_and_information_values(tmp_path: Path) -> None:
    from loanops.card import write_card
    from tests.unit.test_model_card import make_card

    model = scorecard()
    card = make_card(scorecard=points_table(model.model))
    markdown, page = write_card(card, tmp_path)
    text = markdown.read_text()
    assert "## Points table" in text and "## Information values" in text
    assert "| int_rate | [-∞, " in text
    html = page.read_text()
    assert "<h2>Points table</h2>" in html
    assert html.count("<td>sub_grade</td>") >= 2  # a points row and its information value
