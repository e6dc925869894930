"""A window of the decision log as the comparison reads it: paired decisions, outcomes joined in.

`read_paired` reads the window through `read_decisions` (the paired columns come with every
decision; records written before challengers existed read back as the champion's alone) and
joins each decision's outcome, where one is recorded, through `read_labelled`. Only the inputs
the declared segments need are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine

from loanops.decisions.read import InputKind, read_decisions
from loanops.outcomes import read_labelled
from loanops.schema import FeatureSchema


def segment_inputs(schema: FeatureSchema) -> dict[str, InputKind]:
    """The logged inputs the schema's segments split on, each read as its feature's kind.

    A segment on a column that is not a model input (a protected attribute kept for review) is
    never in the log, so it is left out here and from the report.
    """
    features = {f.name: f for f in schema.features}
    return {
        s.column: "text" if features[s.column].is_categorical else "number"
        for s in schema.segments
        if s.column in features
    }


def read_paired(
    engine: Engine,
    start: datetime | None,
    end: datetime | None,
    *,
    model_name: str,
    inputs: Mapping[str, InputKind],
) -> pd.DataFrame:
    """The window's decisions of `model_name`, with ``defaulted`` (nullable) joined in.

    Args:
        engine: Engine of a migrated decision-log database.
        start: Earliest ``decided_at`` included (timezone-aware); None for no lower bound.
        end: First ``decided_at`` excluded; None for no upper bound.
        model_name: The registered model whose decisions are read (the champion's name).
        inputs: Input keys to read beside the decisions, and their kinds.

    Returns:
        `read_decisions`' columns (reasons left out), then ``defaulted``: True or False where an
        outcome is recorded, missing where none is yet.
    """
    decisions = read_decisions(
        engine, start, end, model_name=model_name, inputs=dict(inputs), reasons=False
    )
    labelled = read_labelled(engine, start, end, model_name=model_name, inputs={}, reasons=False)
    outcome = pd.Series(
        labelled["defaulted"].astype("boolean").to_numpy(), index=labelled["request_id"]
    )
    decisions["defaulted"] = decisions["request_id"].map(outcome).astype("boolean")
    return decisions
