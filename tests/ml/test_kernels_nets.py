"""Small networks following the ``Classifier`` contract, shared by the kernel tests.

Contract (as worker/ml/models.py): ``forward(x) -> (B, C)`` logits, ``features(x) -> (B, F)``,
``head: nn.Linear`` with ``forward(x) == head(features(x))`` in eval mode.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn


class TinyCNN(nn.Module):
    """The small CNN's shape, shrunk: conv3-4 > ReLU > pool2 > conv3-6 > ReLU > pool2 > fc-16 >
    ReLU > dropout > fc-C, on (1, 14, 14) inputs."""

    input_shape = (1, 14, 14)

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(6 * 2 * 2, 16),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(16, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))


class _Block(nn.Module):
    """A residual block written like torchvision's: in-place ReLU after BN, ``out += identity``."""

    def __init__(self, channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, groups=2)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.down = nn.Sequential(
            nn.Conv2d(channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class BNConvNet(nn.Module):
    """Conv + BatchNorm (eval mode uses running statistics) with in-place ops, on (3, 8, 8)."""

    input_shape = (3, 8, 8)

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True)
        )
        self.block = _Block(4, 8, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bn_feat = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.bn_feat(self.pool(self.block(self.stem(x))).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MixedNet(nn.Module):
    """Every other layer kind the gradient-norm hooks handle: dilated strided conv with bias,
    GroupNorm, LayerNorm and a Linear applied to (B, L, in); on (2, 9, 9)."""

    input_shape = (2, 9, 9)

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 6, 3, stride=2, padding=2, dilation=2)
        self.gn = nn.GroupNorm(3, 6)
        self.token = nn.Linear(6, 5)
        self.ln = nn.LayerNorm(5)
        self.fc = nn.Linear(5, 7)
        self.head = nn.Linear(7, num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.gn(self.conv(x)))  # (B, 6, H', W')
        tokens = h.flatten(2).transpose(1, 2)  # (B, L, 6)
        t = self.ln(torch.relu(self.token(tokens)))  # (B, L, 5)
        return torch.tanh(self.fc(t.mean(dim=1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ScaledNet(nn.Module):
    """A parameter outside any known layer (and a layer used twice): needs the generic path."""

    input_shape = (6,)

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 6))
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return torch.tanh(self.shared(torch.tanh(self.shared(x * self.scale))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class TwiceNet(nn.Module):
    """Only known layers, but one of them runs twice per forward pass."""

    input_shape = (6,)

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return torch.tanh(self.shared(torch.tanh(self.shared(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class InPlaceNet(nn.Module):
    """Writes into a layer's input after the layer ran (legal since fc2's weight is frozen, so
    autograd does not keep that input): the hooks must work from a copy."""

    input_shape = (6,)

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc2.weight.requires_grad_(False)
        self.head = nn.Linear(6, num_classes)

    def features(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        out = torch.tanh(self.fc2(h))
        h.mul_(0.5)  # changes fc1's recorded output, which is fc2's recorded input
        return out + h.sum(dim=1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def make_net(cls: type[nn.Module], seed: int = 0) -> nn.Module:
    """Build ``cls`` from ``seed`` without touching the global RNG; BN layers get non-trivial
    affine parameters and running statistics, as after training."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = cls()
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net


def make_pool(shape: tuple[int, ...], n: int, seed: int = 0) -> Tensor:
    """(n, *shape) standard-normal inputs from a private generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g)


NETS = [TinyCNN, BNConvNet, MixedNet]


@pytest.mark.parametrize("cls", [*NETS, ScaledNet, TwiceNet, InPlaceNet])
def test_net_follows_the_classifier_contract(cls: type[nn.Module]) -> None:
    net = make_net(cls).eval()
    x = make_pool(cls.input_shape, 3)  # type: ignore[attr-defined]
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.head(net.features(x)))  # type: ignore[operator]
