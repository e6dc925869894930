"""A batch job in shadow: the job's challenger scores each chunk's decisions before they are
recorded.

The result file is the champion's alone, written by the chunk task before the challenger is
ever asked; the record task, which runs behind every chunk still to score, adds the challenger's
probability, decision and reasons to the chunk's decisions (`shadow_decisions`), so that the log
holds one paired record per row, `arm` = champion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from loanops.decisions.segments import paired_types
from serving.batch.chunks import INPUT_PREFIX, decide_rows
from serving.batch.validation import validate_chunk

if TYPE_CHECKING:
    from serving.model import LoadedModel


class ShadowError(Exception):
    """The challenger cannot shadow these decisions; they are recorded as the champion's."""


def shadow_decisions(decisions: pa.Table, challenger: LoadedModel, *, top_reasons: int) -> pa.Table:
    """A chunk's decisions (`ScoredChunk.decisions`) with the challenger's beside them.

    The features are the ones the champion scored, as validated; they are validated again under
    the challenger's schema, which must be the champion's.

    Raises:
        ShadowError: when the challenger's schema differs, or it refuses a row the champion
            scored.
        Exception: whatever the challenger raises while scoring.
    """
    names = [name for name in decisions.column_names if name.startswith(INPUT_PREFIX)]
    inputs = decisions.select(names).rename_columns(
        [name.removeprefix(INPUT_PREFIX) for name in names]
    )
    if set(inputs.column_names) != set(challenger.schema.feature_names):
        raise ShadowError(
            f"challenger v{challenger.version} reads other features than the job's champion"
        )
    checked = validate_chunk(inputs, challenger.schema)
    refused = [reason for reason in checked.rejections if reason is not None]
    if refused:
        raise ShadowError(
            f"challenger v{challenger.version} refuses {len(refused)} rows the champion "
            f"scored, the first for {refused[0]}"
        )
    decided = decide_rows(checked.frame(slice(None)), challenger, top_reasons=top_reasons)
    n = decisions.num_rows
    kinds = paired_types()
    columns: dict[str, pa.Array] = {
        "arm": pa.repeat("champion", n).dictionary_encode(),
        "challenger_version": pa.repeat(challenger.version, n).dictionary_encode(),
        "challenger_threshold": pa.repeat(pa.scalar(float(challenger.threshold), pa.float64()), n),
        "challenger_probability": pa.array(decided.probability, pa.float64()),
        "challenger_decision": pa.array(decided.decision, pa.string()).dictionary_encode(),
        "challenger_reasons": pa.array(decided.reasons, pa.string()),
    }
    metadata = decisions.schema.metadata
    for name, column in columns.items():
        decisions = decisions.append_column(pa.field(name, kinds[name]), column.cast(kinds[name]))
    return decisions.replace_schema_metadata(metadata)
