"""Every Celery task the project sends: its name, its queue and what its first argument is,
declared once. The API sends by name (it never imports the worker's torch code), the worker
registers its functions under these names, Celery routes by them, and the logs name the first
argument by them; all read this table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_QUEUE = "default"
TRAIN_QUEUE = "train"  # training: cycles and cleaning's fold models
SCORE_QUEUE = "score"  # sharded scoring: any worker on it (GPU hosts) takes shards and merges
QUEUES = (DEFAULT_QUEUE, TRAIN_QUEUE, SCORE_QUEUE)

Message = tuple[str, list[Any], str]  # (task name, args, queue): what a sender sends


@dataclass(frozen=True)
class TaskName:
    name: str
    queue: str
    first_arg: str  # the field the first argument goes under on the task's log lines

    def message(self, args: list[Any]) -> Message:
        return (self.name, args, self.queue)


RUN_CYCLE = TaskName("annoloop.cycles.run", TRAIN_QUEUE, "cycle_id")
ADVANCE = TaskName("annoloop.cycles.advance", DEFAULT_QUEUE, "project_id")
REFRESH = TaskName("annoloop.cycles.refresh", DEFAULT_QUEUE, "project_id")
SCORE_SHARD = TaskName("annoloop.scoring.shard", SCORE_QUEUE, "cycle_id")
SCORE_MERGE = TaskName("annoloop.scoring.merge", SCORE_QUEUE, "cycle_id")
CLEANING_FOLD = TaskName("annoloop.cleaning.fold", TRAIN_QUEUE, "cycle_id")
CLEANING_MERGE = TaskName("annoloop.cleaning.merge", TRAIN_QUEUE, "cycle_id")
# Ensemble members train wherever cycles train; so does their join (it evaluates).
ENSEMBLE_MEMBER = TaskName("annoloop.ensemble.member", TRAIN_QUEUE, "cycle_id")
ENSEMBLE_JOIN = TaskName("annoloop.ensemble.join", TRAIN_QUEUE, "cycle_id")
# Self-supervised pretraining on a project's pool: a long training run like a cycle's.
PRETRAIN = TaskName("annoloop.pretraining.run", TRAIN_QUEUE, "pretraining_id")

ALL_TASKS = (
    RUN_CYCLE,
    ADVANCE,
    REFRESH,
    SCORE_SHARD,
    SCORE_MERGE,
    CLEANING_FOLD,
    CLEANING_MERGE,
    ENSEMBLE_MEMBER,
    ENSEMBLE_JOIN,
    PRETRAIN,
)
