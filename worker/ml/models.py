"""The three classifiers: a small CNN (MNIST-sized), ResNet-18 (CIFAR-sized) and an MLP.

All share one shape so strategies can treat them alike::

    features(x): (B, *input_shape) -> (B, F)     penultimate representation
    forward(x) = head(dropout(features(x)))      logits (B, C)

The dropout sits only between the features and the head. That keeps MC-dropout (BALD) exact
and cheap: features are computed once and only the head is re-run per dropout mask.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor, nn

from worker.ml.run_encoders import backbone_of_spec, describe_spec
from worker.ml.spec import ModelSpec


class Classifier(nn.Module):
    """Base class: a feature extractor ``body``, optional dropout and a linear ``head``."""

    num_classes: int
    feature_dim: int
    head: nn.Linear
    dropout: nn.Module
    arch: str
    weights_sha256: str | None = None  # a pretrained backbone's weights file

    def __init__(
        self, body: nn.Module, feature_dim: int, num_classes: int, dropout: float, arch: str
    ) -> None:
        super().__init__()
        self.body = body
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.arch = arch
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def dropout_p(self) -> float:
        """Dropout probability in front of the head (0.0 when there is none)."""
        return float(self.dropout.p) if isinstance(self.dropout, nn.Dropout) else 0.0

    def features(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, F) penultimate features."""
        out: Tensor = self.body(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, C) logits."""
        out: Tensor = self.head(self.dropout(self.features(x)))
        return out


class SmallCNN(Classifier):
    """conv5-32 > ReLU > pool2 > conv5-64 > ReLU > pool2 > fc-128 > ReLU (features) > head."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, dropout: float) -> None:
        channels, height, width = input_shape
        side_h = ((height - 4) // 2 - 4) // 2
        side_w = ((width - 4) // 2 - 4) // 2
        body = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * side_h * side_w, 128),
            nn.ReLU(),
        )
        super().__init__(body, 128, num_classes, dropout, "small_cnn")


class ResNet18(Classifier):
    """torchvision ResNet-18 with the CIFAR stem: 3x3 stride-1 conv1 and no max-pool."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, dropout: float) -> None:
        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        # Same init torchvision gives its own conv layers, so the swap changes only the shape.
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
        fc = net.fc
        net.fc = nn.Identity()
        super().__init__(net, fc.in_features, num_classes, dropout, "resnet18")
        self.head = fc


class MLP(Classifier):
    """Flatten > [Linear > ReLU] per hidden size (last activation = features) > head."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        dropout: float,
        hidden_sizes: tuple[int, ...],
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        super().__init__(nn.Sequential(*layers), width, num_classes, dropout, "mlp")


class Pretrained(Classifier):
    """A configured torchvision backbone (``worker/ml/backbones.py``), or the project's
    pretraining run (``worker/ml/run_encoders.py``), and a new head.

    Fine-tuned: (B, 3, H, W) images in, the backbone trains with the head. Frozen: the
    backbone's features are computed once per item by the pipeline (the embedding cache), so
    this model takes (B, F) embeddings and its body is the identity: only the head trains,
    and strategies' features are the embeddings themselves.
    """

    def __init__(self, spec: ModelSpec) -> None:
        feature_dim, sha256 = describe_spec(spec)
        body: nn.Module = nn.Identity() if spec.frozen else backbone_of_spec(spec)
        super().__init__(body, feature_dim, spec.num_classes, spec.dropout, "pretrained")
        self.weights_sha256 = sha256


def build_model(spec: ModelSpec, seed: int) -> Classifier:
    """Build the network ``spec`` names, initialised from ``seed`` alone.

    The global RNG is forked, seeded and restored, so the weights do not depend on (and do not
    change) the caller's RNG state. The model is on the CPU in train mode.
    """
    spec.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Classifier
        if spec.name == "small_cnn":
            model = SmallCNN(spec.input_shape, spec.num_classes, spec.dropout)
        elif spec.name == "resnet18":
            model = ResNet18(spec.input_shape, spec.num_classes, spec.dropout)
        elif spec.name == "mlp":
            model = MLP(spec.input_shape, spec.num_classes, spec.dropout, spec.hidden_sizes)
        elif spec.name == "pretrained":
            model = Pretrained(spec)
        else:  # pragma: no cover - validate() rejects unknown names
            raise ValueError(f"unknown model name {spec.name!r}")
    return model
