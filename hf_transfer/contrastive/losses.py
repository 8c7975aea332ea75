"""Losses on a batch of embeddings and their labels that use every pair of the batch in one forward pass.

SetFit (Tunstall et al. 2022) samples sentence pairs and trains each with a cosine-similarity loss, one pair per
row of a batch; here the same objective (and two others) is applied to all n(n-1)/2 pairs of a batch at once,
so a batch of 32 examples gives 496 pairs for the cost of 32 forward passes.
"""

from __future__ import annotations

import torch
from torch import nn


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SupCon (Khosla et al. 2020, L_out): each example pulls every other example of its class towards it, against
    all other examples of the batch, on unit-normalised embeddings. Examples without a positive in the batch are skipped."""
    z = nn.functional.normalize(embeddings.float(), dim=-1)
    positives, _ = _pair_masks(labels)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    counts = positives.sum(1)
    anchors = counts > 0
    if not anchors.any():
        return embeddings.sum() * 0.0  # no two examples of a class in this batch: nothing to learn from it
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)[anchors] / counts[anchors]
    return -mean_log_prob.mean()


def cosine_pairs(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SetFit's CosineSimilarityLoss (cosine of a pair regressed on 1 for same class, 0 for other), on every pair of
    the batch; same-class and other-class pairs weigh equally, as SetFit's balanced pair sampling makes them."""
    z = nn.functional.normalize(embeddings.float(), dim=-1)
    positives, negatives = _pair_masks(labels)
    cosine = z @ z.T
    losses = []
    if positives.any():
        losses.append((cosine[positives] - 1).pow(2).mean())
    if negatives.any():
        losses.append(cosine[negatives].pow(2).mean())
    return torch.stack(losses).mean() if losses else embeddings.sum() * 0.0


def batch_hard_triplet(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Batch-hard triplets (Hermans et al. 2017): for each anchor its farthest positive and nearest negative, soft
    margin, on cosine distances of unit-normalised embeddings."""
    z = nn.functional.normalize(embeddings.float(), dim=-1)
    positives, negatives = _pair_masks(labels)
    distance = 1 - z @ z.T
    anchors = positives.any(1) & negatives.any(1)
    if not anchors.any():
        return embeddings.sum() * 0.0
    hardest_positive = distance.masked_fill(~positives, float("-inf")).amax(1)
    hardest_negative = distance.masked_fill(~negatives, float("inf")).amin(1)
    return nn.functional.softplus((hardest_positive - hardest_negative)[anchors] / temperature).mean()


LOSSES = {"supcon": supervised_contrastive, "cosine_pairs": cosine_pairs, "triplet": batch_hard_triplet}
