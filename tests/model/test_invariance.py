"""Invariance: inputs that must not matter do not change the score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.factories import applicants_frame, risky_applicant, safe_applicant
from tests.model.fitting import Fitted


def test_extra_columns_and_the_label_itself_do_not_change_the_score(
    lending_club_model: Fitted,
) -> None:
    raw = lending_club_model.raw_test
    reference = lending_club_model.score(raw.drop(columns=["Class"]))
    flipped = raw.assign(Class=np.where(raw["Class"] == "bad", "good", "bad"))
    with_id = raw.assign(id=np.arange(len(raw)), note="free text")
    for frame in (raw, flipped, with_id):
        np.testing.assert_array_equal(lending_club_model.score(frame), reference)


def test_fitted_model_itself_ignores_extra_columns(lending_club_model: Fitted) -> None:
    X = lending_club_model.splits.test.X
    reference = lending_club_model.model.predict_pd(X)
    labels = lending_club_model.raw_test["Class"]
    extended = X.assign(id=np.arange(len(X)), Class=labels)
    np.testing.assert_allclose(
        lending_club_model.model.predict_pd(extended), reference, rtol=0, atol=1e-12
    )


def test_column_order_does_not_change_the_score(lending_club_model: Fitted) -> None:
    raw = lending_club_model.raw_test
    reference = lending_club_model.score(raw)
    shuffled = raw[list(np.random.default_rng(0).permutation(raw.columns))]
    np.testing.assert_array_equal(lending_club_model.score(shuffled), reference)
    np.testing.assert_array_equal(lending_club_model.score(raw[raw.columns[::-1]]), reference)


def test_row_order_and_index_labels_do_not_change_a_rows_score(
    lending_club_model: Fitted,
) -> None:
    raw = lending_club_model.raw_test
    reference = lending_club_model.score(raw)
    order = np.random.default_rng(1).permutation(len(raw))
    reordered = raw.iloc[order].reset_index(drop=True)
    np.testing.assert_allclose(lending_club_model.score(reordered), reference[order], atol=1e-12)


def test_a_row_scores_the_same_alone_as_inside_any_batch(lending_club_model: Fitted) -> None:
    raw = lending_club_model.raw_test
    reference = lending_club_model.score(raw)
    rng = np.random.default_rng(2)
    for position in rng.choice(len(raw), 10, replace=False):
        alone = lending_club_model.score(raw.iloc[[position]])
        assert abs(alone[0] - reference[position]) <= 1e-12
        others = raw.iloc[rng.choice(len(raw), 50, replace=False)]
        batch = pd.concat([others.iloc[:25], raw.iloc[[position]], others.iloc[25:]])
        assert abs(lending_club_model.score(batch)[25] - reference[position]) <= 1e-12


def test_batch_composition_of_factory_applicants(lending_club_model: Fitted) -> None:
    safe, risky = safe_applicant(), risky_applicant()
    together = lending_club_model.score(applicants_frame(safe, risky, safe))
    alone = [lending_club_model.score(applicants_frame(row))[0] for row in (safe, risky)]
    np.testing.assert_allclose(together, [alone[0], alone[1], alone[0]], rtol=0, atol=1e-12)
