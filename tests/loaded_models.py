"""Loaded models built in the test process, without a registry: for unit tests of serving code."""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from loanops.data import synthetic as syn
from loanops.evaluate import CostMatrix
from loanops.explain import Explainer, favourable_values
from loanops.features import split_frame
from loanops.registry import ModelCard
from loanops.train import fit
from serving.model import LoadedModel
from serving.scorer.compiled import CompiledScorer
from tests.model.fitting import CONFIGS


def compiled_logreg(
    rows: int, version: str, *, row_variants: bool = False, **favourable: Any
) -> LoadedModel:
    """A compiled logistic regression on `rows` synthetic loans; it declines about a fifth.

    Args:
        rows: loans drawn (seed 11) to train, validate and test on.
        version: the version it is loaded as.
        row_variants: explain single rows through the scorer's row variants, as serving does.
        favourable: arguments to `favourable_values`.
    """
    schema = syn.SCHEMA
    raw = syn.generate(rows, seed=11)
    splits = split_frame(raw, schema, test_size=0.2, validation_size=0.25, seed=0)
    with threadpool_limits(limits=1):
        trained = fit(
            schema,
            "logreg",
            CONFIGS["logreg"],
            splits.train,
            splits.validation,
            CostMatrix(5, 1),
            0,
        )
    scorer = CompiledScorer.compile(trained.model, schema)
    values = favourable_values(trained.predict_pd, splits.train.X, schema, **favourable)
    card = ModelCard(
        threshold=float(np.quantile(trained.predict_pd(splits.validation.X), 0.8)),
        family="logreg",
        params=CONFIGS["logreg"],
        dataset="synthetic",
        dataset_sha256="test",
        cost_false_approve=5.0,
        cost_false_decline=1.0,
        feature_schema=schema.model_dump(mode="json"),
        favourable_values=values,
    )
    variants = scorer.score_row_variants if row_variants else None
    return LoadedModel(
        name="loan-default",
        version=version,
        run_id=None,
        card=card,
        scorer=scorer,
        explainer=Explainer(schema, values, scorer.score_rows, variants),
        input_example=[],
    )
