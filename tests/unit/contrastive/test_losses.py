"""The in-batch contrastive losses and the class-balanced batches they need."""

import numpy as np
import pytest
import torch

from hf_transfer.contrastive.losses import LOSSES
from hf_transfer.contrastive.trainer import ClassBalancedOrder


def clustered(labels, spread):
    """Unit vectors around one direction per class; `spread` is how far examples stray from it."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(int(labels.max()) + 1, 16, generator=generator), dim=-1)
    return centres[labels] + spread * torch.randn(len(labels), 16, generator=generator)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_is_lower_when_classes_cluster_and_trains_towards_it(name):
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    loss = LOSSES[name]
    assert loss(clustered(labels, 0.05), labels) < loss(clustered(labels, 2.0), labels)
    # a few gradient steps on free embeddings pull same-class examples together
    points = clustered(labels, 2.0).requires_grad_()
    optimizer = torch.optim.Adam([points], lr=0.05)

    def same_minus_other():
        z = torch.nn.functional.normalize(points.detach(), dim=-1)
        cosine, same = z @ z.T, labels[:, None] == labels[None, :]
        off = ~torch.eye(len(labels), dtype=torch.bool)
        return (cosine[same & off].mean() - cosine[~same].mean()).item()

    before = same_minus_other()
    for _ in range(100):
        optimizer.zero_grad()
        loss(points, labels).backward()
        optimizer.step()
    assert same_minus_other() > before + 0.3


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_batch_without_any_pair_of_a_class_gives_zero_and_a_gradient(name):
    points = torch.randn(3, 8, requires_grad=True)
    value = LOSSES[name](points, torch.tensor([0, 1, 2]))
    value.backward()
    if name != "cosine_pairs":  # other-class pairs alone still teach cosine_pairs something
        assert value.item() == 0.0


def test_class_balanced_order_puts_several_examples_of_each_class_in_every_batch():
    labels = np.repeat(np.arange(6), 16)  # 6 classes x 16, batches of 32: 5 of a class per batch
    order = ClassBalancedOrder(labels, batch_size=32, seed=0)
    first = list(order)
    assert sorted(first) == list(range(len(labels)))  # every example once per epoch
    for start in range(0, len(first), 32):
        counts = np.bincount(labels[first[start : start + 32]], minlength=6)
        assert (counts[counts > 0] >= 2).all()
    assert list(order) != first  # a new order next epoch
    many = ClassBalancedOrder(np.repeat(np.arange(40), 4), batch_size=16, seed=0)  # more classes than fit a batch
    batch = np.repeat(np.arange(40), 4)[list(many)[:16]]
    assert (np.bincount(batch)[np.bincount(batch) > 0] >= 2).all()
