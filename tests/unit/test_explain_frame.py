"""`Explainer.reasons_frame` gives, for every row, exactly what `Explainer.reasons` gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from loanops.data import synthetic as syn
from loanops.evaluate import CostMatrix
from loanops.explain import Explainer, favourable_values
from loanops.features import split_frame
from loanops.schema import Feature, FeatureSchema, Target
from serving.scorer.compiled import CompiledScorer

TOY = FeatureSchema(
    name="toy",
    target=Target(name="y", positive=1, negative=0),
    features=(
        Feature(name="debt", kind="float", description="Debt.", minimum=0, risk="increasing"),
        Feature(name="income", kind="float", description="Income.", minimum=0),
        Feature(name="tenure", kind="category", categories=("new", "old"), description="Tenure."),
        Feature(name="region", kind="category", categories=("n", "s"), description="Region."),
    ),
).with_reasons(
    {"debt": "Debt is high", "income": "Income is low", "tenure": "New", "region": "Region"}
)
FAVOURABLE = {"debt": 0.0, "income": 50.0, "tenure": "old", "region": "n"}


def _toy_pd(debt: Any, income: Any, tenure: Any, region: Any) -> Any:
    # Tenure and region weigh the same, so their reasons tie and order must follow the schema.
    return 0.05 + 0.02 * debt - 0.001 * income + 0.1 * (tenure == "new") + 0.1 * (region == "s")


def toy_rows(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.array([_toy_pd(r["debt"], r["income"], r["tenure"], r["region"]) for r in rows])


def toy_frame(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(
        _toy_pd(frame["debt"], frame["income"], frame["tenure"], frame["region"]), dtype=float
    )


def as_tuples(reasons: Sequence[Any]) -> list[tuple[str, str, str]]:
    return [(r.code, r.feature, r.text) for r in reasons]


def test_frame_reasons_equal_row_reasons_on_a_transparent_scorer() -> None:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            # Some rows sit at the favourable value, some have ties, some have no reason at all.
            "debt": rng.choice([0.0, 0.0, 5.0, 10.0], n),
            "income": rng.choice([20.0, 50.0, 90.0], n),
            "tenure": rng.choice(["new", "old"], n),
            "region": rng.choice(["n", "s"], n),
        }
    )
    explainer = Explainer(TOY, FAVOURABLE, toy_rows)
    p = toy_frame(frame)

    for top in (1, 2, 4):
        batched = explainer.reasons_frame(frame, p, toy_frame, top=top)
        rows = frame.to_dict("records")
        one_by_one = [
            explainer.reasons(row, float(pi), top=top) for row, pi in zip(rows, p, strict=True)
        ]
        assert [as_tuples(r) for r in batched] == [as_tuples(r) for r in one_by_one]
        assert [[r.impact for r in rs] for rs in batched] == [
            pytest.approx([r.impact for r in rs]) for rs in one_by_one
        ]
    assert any(not r for r in batched), "some rows should have no reason"
    assert any(len(r) == 4 for r in batched)


def test_a_favourable_value_that_an_integer_column_cannot_hold_is_not_truncated() -> None:
    favourable = {**FAVOURABLE, "debt": 2.5, "tenure": "old"}
    frame = pd.DataFrame(
        {
            "debt": np.array([10, 3, 2], dtype=np.int64),
            "income": [20.0, 50.0, 90.0],
            "tenure": ["new", "old", "new"],
            "region": ["n", "s", "n"],
        }
    )
    explainer = Explainer(TOY, favourable, toy_rows)
    p = toy_frame(frame)

    batched = explainer.reasons_frame(frame, p, toy_frame)

    one_by_one = [
        explainer.reasons(row, float(pi), top=4)
        for row, pi in zip(frame.to_dict("records"), p, strict=True)
    ]
    assert [[(r.code, r.impact) for r in rs] for rs in batched] == [
        [(r.code, pytest.approx(r.impact)) for r in rs] for rs in one_by_one
    ]
    assert batched[0][0].impact == pytest.approx(0.02 * 7.5)


def test_frame_reasons_of_no_rows_and_of_a_frame_without_the_features() -> None:
    explainer = Explainer(TOY, FAVOURABLE, toy_rows)
    empty = pd.DataFrame({name: [] for name in TOY.feature_names})

    assert explainer.reasons_frame(empty, np.array([]), toy_frame) == []
    assert explainer.reasons_frame(pd.DataFrame({"x": [1, 2]}), np.ones(2), toy_frame) == [[], []]


@pytest.mark.parametrize("family", ["logreg", "hist_gbt"])
def test_frame_reasons_equal_row_reasons_on_a_compiled_model(family: str) -> None:
    from loanops.train import fit
    from tests.model.fitting import CONFIGS

    raw = syn.generate(4000, seed=3)
    splits = split_frame(raw, syn.SCHEMA, test_size=0.2, validation_size=0.25, seed=0)
    with threadpool_limits(limits=1):
        trained = fit(
            syn.SCHEMA,
            family,  # type: ignore[arg-type]
            CONFIGS[family],  # type: ignore[index]
            splits.train,
            splits.validation,
            CostMatrix(5.0, 1.0),
            0,
        )
    scorer = CompiledScorer.compile(trained.model, syn.SCHEMA)
    favourable = favourable_values(trained.predict_pd, splits.train.X, syn.SCHEMA, seed=0)
    explainer = Explainer(syn.SCHEMA, favourable, scorer.score_rows)
    sample = syn.SCHEMA.to_frame(raw.sample(200, random_state=1)).reset_index(drop=True)
    p = scorer.score_frame(sample)

    batched = explainer.reasons_frame(sample, p, scorer.score_frame, top=4)
    one_by_one = [
        explainer.reasons(row, float(pi), top=4)
        for row, pi in zip(sample.to_dict("records"), p, strict=True)
    ]

    assert [as_tuples(r) for r in batched] == [as_tuples(r) for r in one_by_one]
    for frame_reasons, row_reasons in zip(batched, one_by_one, strict=True):
        assert [r.impact for r in frame_reasons] == pytest.approx(
            [r.impact for r in row_reasons], abs=1e-12
        )
    assert sum(len(r) for r in batched) > 200
