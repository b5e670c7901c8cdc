"""Which pipeline runs a cycle: acquisition or label cleaning, by the cycle's kind."""

from __future__ import annotations

from app.core.enums import ProjectKind
from app.cycles.models import Cycle
from worker.pipeline import fair_share
from worker.pipeline.acquire import run_acquire_cycle
from worker.pipeline.clean import run_clean_cycle
from worker.pipeline.runtime import Runtime


def run_cycle_of_any_kind(
    rt: Runtime, cycle_id: int, task_id: str | None = None, takeover: bool = False
) -> str:
    """Run the cycle for task message ``task_id``; it claims the cycle only if waiting, or
    begun by this same message, or with ``takeover`` (``worker.pipeline.transitions.claim``)."""
    with rt.factory() as db:
        cycle = db.get(Cycle, cycle_id)
        kind = cycle.kind if cycle is not None else None
    if kind is None:
        return "no such cycle"
    if kind is ProjectKind.clean:
        return run_clean_cycle(rt, cycle_id, task_id=task_id, takeover=takeover)
    if fair_share.gives_way(rt.factory, cycle_id):
        fair_share.defer(cycle_id)
        return "giving way to another project's cycle"
    return run_acquire_cycle(rt, cycle_id, task_id=task_id, takeover=takeover)
