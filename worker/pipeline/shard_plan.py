"""What sharded scoring needs, frozen by the train task and read by every shard and the merge.

The plan is one ``.npz`` blob (content-addressed, so a redelivered train task that trains
the same model writes the same name); its hash goes on the cycle as
``metrics["sharding"]["plan_sha256"]``. It holds the cycle's inputs as snapshotted at claim
time (so a label arriving mid-scoring cannot shift the candidate order between shards), the
strategy actually used, the budget, the checkpoint, the seeded candidate subset and the
arrays recorded during training (dispersion). No schema change: it is a blob plus one key.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.ml.data import shard_bounds
from worker.ml.strategies import Strategy, get_strategy
from worker.pipeline.snapshot import CycleInputs, ItemRefs

_REFS = ("labelled", "candidates", "test")
_RECORDED = "recorded__"


@dataclass(frozen=True)
class ScoringPlan:
    inputs: CycleInputs
    strategy: str  # the strategy that scores (the cycle's, never the cold-start "random")
    params: dict[str, Any]
    budget: int
    score_batch: int  # batch size of every scoring pool; shards start at multiples of it
    checkpoint_sha256: str
    subset: np.ndarray | None  # (M,) sorted candidate positions, or None = all N candidates
    recorded: dict[str, np.ndarray] = field(default_factory=dict)  # rows = scored pool (M)
    bounds: list[tuple[int, int]] = field(default_factory=list)

    @property
    def scored(self) -> int:
        """M: how many candidates are scored (the subset's size, or N)."""
        return len(self.subset) if self.subset is not None else len(self.inputs.candidates)

    def make_strategy(self) -> Strategy:
        return get_strategy(self.strategy, **self.params)

    def to_bytes(self) -> bytes:
        inp = self.inputs
        meta = {
            "cycle_id": inp.cycle_id,
            "project_id": inp.project_id,
            "number": inp.number,
            "strategy": inp.strategy,
            "params": inp.params,
            "seed": inp.seed,
            "batch_size": inp.batch_size,
            "labels_per_item": inp.labels_per_item,
            "model_spec": inp.model_spec,
            "labels_remaining": inp.labels_remaining,
            "labelled_set_hash": inp.labelled_set_hash,
            "test_unlabelled": inp.test_unlabelled,
            "aggregation": inp.aggregation,
            "labels_spent": inp.labels_spent,
            "init_checkpoint": inp.init_checkpoint,
            "plan": {
                "strategy": self.strategy,
                "params": self.params,
                "budget": self.budget,
                "score_batch": self.score_batch,
                "checkpoint_sha256": self.checkpoint_sha256,
                "bounds": [list(b) for b in self.bounds],
            },
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps(meta, sort_keys=True)),
            "counts": np.asarray(inp.counts, dtype=np.int64),
            "test_labels": np.asarray(inp.test_labels, dtype=np.int64),
        }
        if inp.targets is not None:
            arrays["targets"] = np.asarray(inp.targets, dtype=np.float64)
        if inp.votes is not None:
            arrays["votes"] = np.asarray(inp.votes, dtype=np.int64)
        for name in _REFS:
            arrays.update(_refs_arrays(name, getattr(inp, name)))
        if self.subset is not None:
            arrays["subset"] = np.asarray(self.subset, dtype=np.int64)
        for key, value in self.recorded.items():
            arrays[_RECORDED + key] = np.asarray(value)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ScoringPlan:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays["meta"]))
        plan = meta["plan"]
        inputs = CycleInputs(
            cycle_id=meta["cycle_id"],
            project_id=meta["project_id"],
            number=meta["number"],
            strategy=meta["strategy"],
            params=meta["params"],
            seed=meta["seed"],
            batch_size=meta["batch_size"],
            labels_per_item=meta["labels_per_item"],
            model_spec=meta["model_spec"],
            labels_remaining=meta["labels_remaining"],
            labelled=_refs_from(arrays, "labelled"),
            counts=arrays["counts"],
            candidates=_refs_from(arrays, "candidates"),
            test=_refs_from(arrays, "test"),
            test_labels=arrays["test_labels"],
            labelled_set_hash=meta["labelled_set_hash"],
            test_unlabelled=meta.get("test_unlabelled", 0),
            targets=arrays.get("targets"),
            aggregation=meta.get("aggregation", "votes"),
            labels_spent=meta.get("labels_spent", 0),
            votes=arrays.get("votes"),
            init_checkpoint=meta.get("init_checkpoint"),
        )
        return cls(
            inputs=inputs,
            strategy=plan["strategy"],
            params=plan["params"],
            budget=plan["budget"],
            score_batch=plan["score_batch"],
            checkpoint_sha256=plan["checkpoint_sha256"],
            subset=arrays.get("subset"),
            recorded={k[len(_RECORDED) :]: v for k, v in arrays.items() if k.startswith(_RECORDED)},
            bounds=[(int(a), int(b)) for a, b in plan["bounds"]],
        )


def plan_bounds(scored: int, score_batch: int, shard_size: int) -> list[tuple[int, int]]:
    """Shards of at most ``shard_size`` items (but at least one scoring batch), balanced.

    Every shard except the last holds whole scoring batches (the shard rule in
    ``strategies/base.py``), so a ``shard_size`` below the batch size means one batch per shard.
    """
    per_shard = max(1, shard_size // score_batch) * score_batch
    return shard_bounds(scored, score_batch, max(1, math.ceil(scored / per_shard)))


def recorded_rows(
    recorded: Mapping[str, np.ndarray], n: int, subset: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Training-time arrays (recorded over all N candidates) restricted to the scored rows."""
    if subset is None:
        return {k: np.asarray(v) for k, v in recorded.items()}
    out = {}
    for key, value in recorded.items():
        arr = np.asarray(value)
        out[key] = arr[subset] if len(arr) == n else arr
    return out


def _refs_arrays(name: str, refs: ItemRefs) -> dict[str, np.ndarray]:
    # Hashes as (N, 32) bytes: a quarter of the size of hex strings, before compression.
    digests = np.frombuffer(b"".join(bytes.fromhex(h) for h in refs.hashes), dtype=np.uint8)
    kinds, index = np.unique(np.asarray(refs.media_types, dtype=str), return_inverse=True)
    return {
        f"{name}_ids": np.asarray(refs.ids, dtype=np.int64),
        f"{name}_sha256": digests.reshape(len(refs), 32),
        f"{name}_media_kinds": kinds if len(refs) else np.zeros(0, dtype="U1"),
        f"{name}_media": index.astype(np.int32).reshape(len(refs)),
    }


def _refs_from(arrays: Mapping[str, np.ndarray], name: str) -> ItemRefs:
    kinds = [str(k) for k in arrays[f"{name}_media_kinds"]]
    return ItemRefs(
        ids=[int(i) for i in arrays[f"{name}_ids"]],
        hashes=[bytes(row).hex() for row in arrays[f"{name}_sha256"]],
        media_types=[kinds[int(i)] for i in arrays[f"{name}_media"]],
    )
