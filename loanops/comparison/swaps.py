"""The swap set: which applicants one model approves and the other declines.

Two models that agree on most applicants differ where it matters, in the cells off the diagonal
of their 2×2 table of decisions. Each cell carries both models' PD distributions, so a reviewer
sees, for instance, that the applicants only the challenger approves are ones the champion
rated just above its threshold.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from loanops.comparison.paired import Pairs

QUANTILES: Final = (0.05, 0.25, 0.5, 0.75, 0.95)
"""The quantiles every `Distribution` reports."""

CellName = Literal["both_approve", "champion_only", "challenger_only", "both_decline"]
"""A cell of the swap table: `champion_only` holds applicants only the champion approves."""
CELLS: Final[tuple[CellName, ...]] = (
    "both_approve",
    "champion_only",
    "challenger_only",
    "both_decline",
)


class Distribution(BaseModel):
    """Mean and quantiles of some PDs; all None when there are none."""

    model_config = ConfigDict(frozen=True)

    count: int
    mean: float | None = None
    p05: float | None = None
    p25: float | None = None
    p50: float | None = None
    p75: float | None = None
    p95: float | None = None


def distribution(values: np.ndarray) -> Distribution:
    """The `Distribution` of `values`."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return Distribution(count=0)
    q = np.quantile(values, QUANTILES)
    return Distribution(
        count=len(values),
        mean=float(values.mean()),
        p05=float(q[0]),
        p25=float(q[1]),
        p50=float(q[2]),
        p75=float(q[3]),
        p95=float(q[4]),
    )


class SwapCell(BaseModel):
    """One cell of the swap table: its applicants, their share, and both models' PDs there."""

    model_config = ConfigDict(frozen=True)

    cell: CellName
    champion_approves: bool
    challenger_approves: bool
    count: int
    share: float
    champion_pd: Distribution
    challenger_pd: Distribution


class SwapSet(BaseModel):
    """The 2×2 table of both models' decisions on the same applicants."""

    model_config = ConfigDict(frozen=True)

    cells: tuple[SwapCell, ...]

    def cell(self, name: CellName) -> SwapCell:
        return next(cell for cell in self.cells if cell.cell == name)

    @property
    def champion_approval_rate(self) -> float:
        return self.cell("both_approve").share + self.cell("champion_only").share

    @property
    def challenger_approval_rate(self) -> float:
        return self.cell("both_approve").share + self.cell("challenger_only").share

    @property
    def swap_in(self) -> int:
        """Applicants only the challenger approves."""
        return self.cell("challenger_only").count

    @property
    def swap_out(self) -> int:
        """Applicants only the champion approves."""
        return self.cell("champion_only").count


def swap_set(pairs: Pairs) -> SwapSet:
    """Count each cell of the 2×2 decision table and describe both models' PDs in it."""
    champion, challenger = pairs.champion_approves, pairs.challenger_approves
    masks = {
        "both_approve": champion & challenger,
        "champion_only": champion & ~challenger,
        "challenger_only": ~champion & challenger,
        "both_decline": ~champion & ~challenger,
    }
    total = max(pairs.rows, 1)
    return SwapSet(
        cells=tuple(
            SwapCell(
                cell=name,
                champion_approves=name in ("both_approve", "champion_only"),
                challenger_approves=name in ("both_approve", "challenger_only"),
                count=int(masks[name].sum()),
                share=float(masks[name].sum() / total),
                champion_pd=distribution(pairs.champion_pd[masks[name]]),
                challenger_pd=distribution(pairs.challenger_pd[masks[name]]),
            )
            for name in CELLS
        )
    )
