"""Strategy names the API accepts: those declared in ``worker/ml/strategy_params.py`` (torch-free,
so the API process never imports torch). A test holds them equal to the worker's registry.
"""

from worker.ml.strategy_params import ACQUISITION, CLEANING

ACQUISITION_STRATEGIES = frozenset(ACQUISITION)
# ActiveLab (``worker/ml/activelab.py``): a cleaning project's queue mixes unlabelled pool
# items with relabels, one label per entry, ranked together.
MIXED_QUEUE_STRATEGY = "activelab"
CLEANING_STRATEGIES = frozenset(CLEANING)
assert MIXED_QUEUE_STRATEGY in CLEANING_STRATEGIES
