"""Strategy names the API accepts, kept here so the API process never imports torch.

A test checks these against the worker's registry (``worker.ml.strategies``).
"""

ACQUISITION_STRATEGIES = frozenset(
    {
        "random",
        "least_confidence",
        "margin",
        "entropy",
        "bald",
        "coreset",
        "badge",
        "noise_stability",
        "expected_gradnorm",
        "entropy_gradnorm",
        "dispersion",
        "ensemble_vote_entropy",
        "ensemble_consensus_entropy",
        "ensemble_mutual_information",
    }
)
# ActiveLab (``worker/ml/activelab.py``): a cleaning project's queue mixes unlabelled pool
# items with relabels, one label per entry, ranked together.
MIXED_QUEUE_STRATEGY = "activelab"
CLEANING_STRATEGIES = frozenset({"ce_minus_entropy", "joint", "random", MIXED_QUEUE_STRATEGY})
