"""The loop on the engine alone: the steps a worker's acquisition cycle runs
(``worker/pipeline/acquire.py``), on in-memory arrays instead of the database and blobs.

Same order of items as the service (pool rows in upload order = item-id order), same soft
targets, same seeds, same scoring batch and candidate subsetting (``select_batch`` is the
worker's own), so a run here selects what the API path selects.
"""

from __future__ import annotations

import time
from functools import partial
from typing import cast

import numpy as np

from worker.ml.ceal import fit, options_of
from worker.ml.data import ArrayDataset, LoaderPool, soft_targets
from worker.ml.device import resolve_device
from worker.ml.ensemble import EnsembleModel, ensemble_size, member_seed
from worker.ml.evaluation import evaluate
from worker.ml.models import Classifier, build_model
from worker.ml.networks import augmentation_for, build_network, objective_for
from worker.ml.spec import ModelSpec
from worker.ml.strategies import get_strategy
from worker.ml.training import TrainConfig
from worker.pipeline.acquire import select_batch
from worker.pipeline.common import SCORE_BATCH
from worker.sim.oracle import make_oracle
from worker.sim.protocol import Arrays, Protocol, base_strategy, cycle_seed, setup
from worker.sim.record import CycleRecord, RunRecord


def run_direct(
    protocol: Protocol, strategy_name: str, seed: int, arrays: Arrays | None = None
) -> RunRecord:
    """One (strategy, seed) run; pass ``arrays`` to load the data file once for many runs."""
    s = setup(protocol, seed, arrays)
    arrays = s.arrays
    oracle = make_oracle(protocol.oracle, arrays.labels, arrays.counts, seed)
    spec = ModelSpec.from_dict({**protocol.model, "num_classes": protocol.num_classes})
    device = resolve_device()
    shape = spec.input_shape

    # votes per pool position; a row with a vote is labelled, as in snapshot.load_inputs
    pos = {int(row): i for i, row in enumerate(s.pool)}
    votes = np.zeros((len(s.pool), protocol.num_classes), np.int64)
    for row in s.initial:
        votes[pos[int(row)], oracle.answer(int(row))] += 1
    test_pool = LoaderPool(ArrayDataset(arrays.images[s.test], input_shape=shape), SCORE_BATCH)
    test_labels = arrays.labels[s.test]

    record = RunRecord(protocol.name, "direct", strategy_name, seed)
    for k in range(protocol.cycles + 1):
        cseed = cycle_seed(seed, k)
        has = votes.sum(axis=1) > 0
        labelled, candidates = s.pool[has], s.pool[~has]
        params = protocol.strategy_params(strategy_name)
        strategy = get_strategy(base_strategy(strategy_name), **params)
        pool = LoaderPool(ArrayDataset(arrays.images[candidates], input_shape=shape), SCORE_BATCH)
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        train_set = ArrayDataset(
            arrays.images[labelled], soft_targets(votes[has]), input_shape=shape
        )
        config = TrainConfig.from_hparams(spec.hparams)
        ceal = options_of(params)
        # As the worker trains a cycle's network: with CEAL's stages when the params ask.
        fit_cycle = partial(
            fit,
            labelled=train_set,
            config=config,
            options=ceal,
            cycle_index=k,
            candidates=pool,
            pseudo_dataset=partial(_rows_dataset, arrays.images, candidates, shape),
            device=device,
            objective=objective_for(strategy, config),
        )
        members = ensemble_size(strategy)
        pseudo_labels = 0
        if members:
            # What the worker's member tasks and join do, one member after another
            # (= ensemble.train_ensemble without CEAL).
            nets = [build_model(spec, seed=member_seed(cseed, m)) for m in range(members)]
            for m, net in enumerate(nets):
                _, pseudo = fit_cycle(net, seed=member_seed(cseed, m))
                pseudo_labels += 0 if pseudo is None else len(pseudo)
            model = cast(Classifier, EnsembleModel(nets))
        else:
            model = cast(Classifier, build_network(strategy, spec, cseed))
            # Record per-epoch arrays (dispersion) on the seeded candidate subset only: the
            # rows select() keeps are the same, and with 1,000 of 8,000 candidates it is 8x
            # less work.
            cand = strategy.candidate_indices(len(candidates), cseed)
            cb = strategy.epoch_callback(pool if cand is None else pool.subset(cand))
            # BGADL: samples generated from the labelled items join the training set.
            augmenter = augmentation_for(strategy, cseed, device)
            _, pseudo = fit_cycle(model, seed=cseed, epoch_callback=cb, augment=augmenter)
            pseudo_labels = 0 if pseudo is None else len(pseudo)
            if augmenter is not None:
                generated = augmenter.generated
                timings["generated"] = float(0 if generated is None else len(generated))
        timings["train_s"] = time.perf_counter() - t0
        if ceal is not None:
            timings["pseudo_labels"] = float(pseudo_labels)

        t0 = time.perf_counter()
        accuracy = float(evaluate(model, test_pool, test_labels, device)["accuracy"])
        timings["evaluate_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        labelled_pool = LoaderPool(
            ArrayDataset(arrays.images[labelled], input_shape=shape), SCORE_BATCH
        )
        # The data set's row numbers are the items' ids (what the database id is in the API).
        selection = select_batch(
            strategy,
            model,
            pool,
            labelled_pool,
            device,
            cseed,
            protocol.batch_size,
            ids=candidates,
            labelled_targets=soft_targets(votes[has]),
        )
        timings["score_s"] = time.perf_counter() - t0
        selected = [int(candidates[int(i)]) for i in selection.indices]
        record.cycles.append(CycleRecord(k, int(votes.sum()), accuracy, selected, timings))
        if k < protocol.cycles:  # the last cycle's queue is left unlabelled
            for row in selected:
                votes[pos[row], oracle.answer(row)] += 1
    return record


def _rows_dataset(
    images: np.ndarray,
    candidates: np.ndarray,
    shape: tuple[int, ...],
    positions: np.ndarray,
    targets: np.ndarray,
) -> ArrayDataset:
    """The candidates at ``positions`` with the given targets (CEAL's pseudo-labelled set)."""
    return ArrayDataset(images[candidates[positions]], targets, input_shape=shape)
