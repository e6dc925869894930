"""What the API is serving."""

from __future__ import annotations

from fastapi import APIRouter

from loanops.scorecard import POINTS_TO_DOUBLE_ODDS, Scorecard
from serving.deps import ApiKeyDep, AppState, ModelDep, StateDep
from serving.schemas import (
    ERROR_RESPONSES,
    ChallengerInfo,
    ModelInfo,
    ScorecardBin,
    ScorecardInfo,
)

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[ApiKeyDep])


@router.get("/model", response_model=ModelInfo, responses=ERROR_RESPONSES)
async def model_info(state: StateDep, model: ModelDep) -> ModelInfo:
    """The version serving, its run, threshold and metrics, and the last failed reload."""
    error = state.holder.last_error
    return ModelInfo(
        name=model.name,
        ref=str(state.holder.ref),
        version=model.version,
        run_id=model.run_id,
        family=model.card.family,
        threshold=model.threshold,
        metrics=model.metrics,
        loaded_at=model.loaded_at,
        last_reload_error=error.message if error else None,
        last_reload_error_version=error.version if error else None,
        last_reload_error_at=error.at if error else None,
        reload_failures=state.holder.reload_failures,
        scorecard=_scorecard(model.scorecard),
        challenger=_challenger(state),
    )


def _challenger(state: AppState) -> ChallengerInfo | None:
    holder = state.challenger
    if holder is None:
        return None
    error = holder.last_error
    return ChallengerInfo(
        alias=str(holder.ref.alias),
        version=holder.version,
        state=holder.state,
        share=state.settings.serving.challenger_share,
        last_error=error.message if error else None,
        last_error_stage=error.stage if error else None,
        last_error_at=error.at if error else None,
    )


def _scorecard(card: Scorecard | None) -> ScorecardInfo | None:
    if card is None:
        return None
    return ScorecardInfo(
        base_points=round(card.base_points, 2),
        points_to_double_odds=POINTS_TO_DOUBLE_ODDS,
        bins=[
            ScorecardBin(feature=r.feature, bin=r.bin, points=round(r.points, 2)) for r in card.rows
        ],
        information_values={k: round(v, 4) for k, v in card.information_values.items()},
    )
