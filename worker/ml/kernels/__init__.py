"""Performance-critical acquisition kernels: plain PyTorch on tensors and modules.

Each batched kernel has a literal ``*_reference`` twin that the tests check it against and the
benchmark (``python -m worker.bench``) times it against.
"""

from worker.ml.kernels.dispersion import DispersionRecorder, dispersion_from_predictions
from worker.ml.kernels.gradnorm import gradnorm_scores, gradnorm_scores_reference
from worker.ml.kernels.kcenter import (
    greedy_k_center,
    greedy_k_center_reference,
    greedy_k_center_with_distances,
)
from worker.ml.kernels.noise_stability import (
    noise_deviations,
    noise_deviations_reference,
    noise_generator,
    sample_noise,
)

__all__ = [
    "DispersionRecorder",
    "dispersion_from_predictions",
    "gradnorm_scores",
    "gradnorm_scores_reference",
    "greedy_k_center",
    "greedy_k_center_reference",
    "greedy_k_center_with_distances",
    "noise_deviations",
    "noise_deviations_reference",
    "noise_generator",
    "sample_noise",
]
