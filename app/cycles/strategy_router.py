"""The strategies a project may use, with their parameters: the dashboard's list."""

from __future__ import annotations

from fastapi import APIRouter

from app.cycles.schemas import StrategyOut
from app.deps import CurrentUser
from worker.ml.strategy_params import catalogue

router = APIRouter(prefix="/strategies", tags=["cycles"])

# Declared once at import: the list cannot change while the process runs.
_CATALOGUE = [StrategyOut.model_validate(entry) for entry in catalogue()]


@router.get("", response_model=list[StrategyOut])
def list_strategies(actor: CurrentUser) -> list[StrategyOut]:
    return _CATALOGUE
