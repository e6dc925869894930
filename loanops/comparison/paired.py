"""Paired decisions as a frame: the columns the comparison reads, checked, for one challenger.

A paired record holds the champion's fields under the decision log's usual names and the
challenger's beside them, prefixed ``challenger_`` (the shared interface of the decision log).
Records no challenger scored have null challenger columns and are not pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from loanops.decisions.record import DECISIONS

PAIRED_COLUMNS: Final = (
    "request_id",
    "decided_at",
    "model_version",
    "probability",
    "decision",
    "arm",
    "challenger_version",
    "challenger_probability",
    "challenger_decision",
)
"""Columns every paired frame needs; segments' columns and ``defaulted`` are optional."""


class NoPairedDecisionsError(ValueError):
    """The window holds no decision scored by both models, so there is nothing to compare."""


@dataclass(frozen=True)
class Pairs:
    """One challenger version's paired decisions, as arrays aligned row for row.

    Attributes:
        frame: The rows, with every column they came with (segments, outcome).
        champion_pd: The champion's default probability.
        challenger_pd: The challenger's.
        champion_approves: True where the champion approved.
        challenger_approves: True where the challenger approved.
        challenger_version: The challenger's registered version.
        champion_versions: The champion versions among the rows, sorted (the production alias
            can move inside a window).
    """

    frame: pd.DataFrame
    champion_pd: np.ndarray
    challenger_pd: np.ndarray
    champion_approves: np.ndarray
    challenger_approves: np.ndarray
    challenger_version: str
    champion_versions: tuple[str, ...]

    @property
    def rows(self) -> int:
        return len(self.frame)


def challenger_versions(frame: pd.DataFrame) -> list[str]:
    """The challenger versions that scored any row, the most recently seen last."""
    if "challenger_version" not in frame:
        return []
    scored = frame[frame["challenger_version"].notna()]
    latest = scored.groupby(scored["challenger_version"].astype(str))["decided_at"].max()
    return [str(version) for version in latest.sort_values().index]


def pairs_of(frame: pd.DataFrame, challenger_version: str | None = None) -> Pairs:
    """The rows of `frame` that `challenger_version` scored beside the champion.

    Args:
        frame: Decisions with at least `PAIRED_COLUMNS` (as `read_decisions` returns them).
        challenger_version: Which challenger; None takes the one seen most recently.

    Raises:
        ValueError: A column is missing, or a paired row has a bad probability or decision.
        NoPairedDecisionsError: No row was scored by that challenger (or by any).
    """
    missing = [name for name in PAIRED_COLUMNS if name not in frame]
    if missing:
        raise ValueError(f"the decisions lack the paired columns {missing}")
    if frame.empty:
        raise NoPairedDecisionsError("the window holds no decisions")
    versions = challenger_versions(frame)
    if not versions:
        raise NoPairedDecisionsError(
            f"none of the {len(frame):,} decisions was scored by a challenger"
        )
    chosen = versions[-1] if challenger_version is None else str(challenger_version)
    if chosen not in versions:
        raise NoPairedDecisionsError(
            f"challenger v{chosen} scored none of the {len(frame):,} decisions; "
            f"challengers seen: {', '.join('v' + v for v in versions)}"
        )
    rows = frame[frame["challenger_version"].astype("string") == chosen].reset_index(drop=True)
    champion_pd = _probabilities(rows["probability"], "probability")
    challenger_pd = _probabilities(rows["challenger_probability"], "challenger_probability")
    return Pairs(
        frame=rows,
        champion_pd=champion_pd,
        challenger_pd=challenger_pd,
        champion_approves=_approvals(rows["decision"], "decision"),
        challenger_approves=_approvals(rows["challenger_decision"], "challenger_decision"),
        challenger_version=chosen,
        champion_versions=tuple(sorted(rows["model_version"].astype(str).unique())),
    )


def _probabilities(values: pd.Series, name: str) -> np.ndarray:
    p = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(p) & (p >= 0) & (p <= 1))
    if bad.any():
        raise ValueError(f"{name} must lie in [0, 1]; {int(bad.sum())} paired rows do not")
    return p


def _approvals(values: pd.Series, name: str) -> np.ndarray:
    text = values.astype("string")
    bad = ~text.isin(list(DECISIONS)).fillna(False).to_numpy(dtype=bool)
    if bad.any():
        raise ValueError(
            f"{name} must be one of {sorted(DECISIONS)}; {int(bad.sum())} paired rows are not"
        )
    return (text == "approve").to_numpy(dtype=bool)
