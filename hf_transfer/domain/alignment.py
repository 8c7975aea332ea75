"""Losses that pull the pooled features of a source and a target domain together.

- DANN (Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks"): a domain classifier learns to
  tell source from target features, behind a gradient-reversal layer that makes the backbone work against
  it; the reversal weight ramps from 0 to 1 as 2 / (1 + exp(-10 p)) - 1 over training progress p.
- CORAL (Sun & Saenko 2016, "Deep CORAL"): the distance between the two feature covariances.
- MMD (Long et al. 2015, "Learning Transferable Features with Deep Adaptation Networks"): the maximum mean
  discrepancy under a sum of Gaussian kernels whose bandwidths follow the median pairwise distance.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight):
        ctx.weight = weight
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.weight * grad_output, None


def reverse_gradient(features: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity going forward; multiplies the gradient by -weight going back."""
    return _ReverseGradient.apply(features, weight)


def dann_weight(progress: float) -> float:
    """Ganin et al.'s schedule: 0 at the start of training, close to 1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


class DomainClassifier(nn.Module):
    """Source (0) or target (1), from pooled features: a small MLP as in DANN."""

    def __init__(self, in_features: int, hidden_size: int = 256):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden_size), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden_size, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features).squeeze(-1)


def dann_loss(classifier: DomainClassifier, source: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """Binary cross-entropy of the domain classifier on both domains' features, seen through the reversal layer."""
    features = reverse_gradient(torch.cat([source, target]).float(), weight)
    domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(features.device)
    return nn.functional.binary_cross_entropy_with_logits(classifier(features), domains)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||C_s - C_t||_F^2 / (4 d^2): zero when the two batches have the same covariance."""
    source, target = source.float(), target.float()
    dimension = source.shape[1]

    def covariance(x):
        centred = x - x.mean(dim=0, keepdim=True)
        return centred.T @ centred / max(len(x) - 1, 1)

    return (covariance(source) - covariance(target)).pow(2).sum() / (4 * dimension**2)


def mmd_loss(
    source: torch.Tensor, target: torch.Tensor, scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
) -> torch.Tensor:
    """Squared MMD under a sum of Gaussian kernels, bandwidths `scales` times the median squared distance (held
    constant for the gradient). The unbiased U-statistic (Gretton et al. 2012) leaves out every pair of an example
    with itself: the biased estimate is smallest when all features collapse to one point, which drags training there."""
    source, target = source.float(), target.float()
    both = torch.cat([source, target])
    squares = both.pow(2).sum(dim=1)
    distances = (squares[:, None] + squares[None, :] - 2 * both @ both.T).clamp_min(0)
    positive = distances.detach()[distances.detach() > 0]
    median = positive.median() if len(positive) else distances.new_tensor(1.0)
    kernel = sum(torch.exp(-distances / (scale * median)) for scale in scales)
    n, m = len(source), len(target)
    if n < 2 or m < 2:
        return kernel.new_zeros(())
    within_source, within_target, across = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]

    def off_diagonal_mean(block):
        return (block.sum() - block.diagonal().sum()) / (len(block) * (len(block) - 1))

    cross = off_diagonal_mean(across) if n == m else across.mean()  # paired batches: the i != j U-statistic
    return off_diagonal_mean(within_source) + off_diagonal_mean(within_target) - 2 * cross
