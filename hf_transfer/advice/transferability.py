"""How well a frozen checkpoint suits a labelled data set, measured from one forward pass and no fine-tuning.

- LogME (You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021): the
  log of the maximum evidence of the labels given the features under a Bayesian linear model, per example.
  Higher is better; it ranks checkpoints for a task.
- Linear-probe and k-nearest-neighbour accuracy on the validation split: what frozen features alone reach.
- BatchNorm shift: how far the data's activations sit from the statistics BatchNorm stored during pretraining,
  in pretraining standard deviations; a direct reading of domain distance that only BatchNorm models carry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..data.loading import per_class_rows
from ..models.freezing import is_batchnorm


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the per-example log evidence of a one-vs-rest target (You et al., 2021, Algorithm 1)."""
    f, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    n, d = f.shape
    eigenvalues, eigenvectors = np.linalg.eigh(f.T @ f)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    evidences = []
    for label in np.unique(labels):
        y = (labels == label).astype(np.float64)
        projected = eigenvectors.T @ (f.T @ y)
        alpha, beta = 1.0, 1.0
        for _ in range(11):  # a fixed point; the paper sees convergence in two or three steps
            gamma = (eigenvalues / (eigenvalues + alpha / beta)).sum()
            m = eigenvectors @ (projected * beta / (alpha + beta * eigenvalues))
            alpha_de = (m * m).sum() + 1e-5
            beta_de = ((y - f @ m) ** 2).sum() + 1e-5
            new_alpha, new_beta = gamma / alpha_de, (n - gamma) / beta_de
            converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < 0.01
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        evidence = (
            d / 2 * np.log(alpha)
            + n / 2 * np.log(beta)
            - 0.5 * np.log(alpha + beta * eigenvalues).sum()
            - beta / 2 * beta_de
            - alpha / 2 * alpha_de
            - n / 2 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def _standardise(train: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (other - mean) / std


def linear_probe_accuracy(train_x, train_y, val_x, val_y, *, l2: float = 1e-3, steps: int = 200) -> float:
    """Validation accuracy of an L2-regularised multinomial logistic regression on standardised features."""
    x, v = _standardise(torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(val_x, dtype=torch.float32))
    y, val_y = torch.as_tensor(train_y, dtype=torch.long), np.asarray(val_y)
    classes = int(max(y.max().item(), val_y.max())) + 1
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * (weight * weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (v @ weight + bias).argmax(1).numpy()
    return float((predicted == val_y).mean())


def knn_accuracy(train_x, train_y, val_x, val_y, *, k: int = 10) -> float:
    """Validation accuracy of a cosine-similarity k-nearest-neighbour vote (ties to the nearest neighbour's class)."""
    x, v = _standardise(torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(val_x, dtype=torch.float32))
    x, v = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(v, dim=1)
    y = torch.as_tensor(train_y, dtype=torch.long)
    k = min(k, len(y))
    similarity, nearest = (v @ x.T).topk(k, dim=1)
    votes = torch.zeros(len(v), int(y.max()) + 1).scatter_add_(1, y[nearest], similarity.clamp_min(0) + 1e-6)
    return float((votes.argmax(1).numpy() == np.asarray(val_y)).mean())


@torch.no_grad()
def cross_validated(score, x, y, *, folds: int = 5, seed: int = 0) -> float:
    """`score(train_x, train_y, held_x, held_y)` averaged over stratified folds of one labelled set, weighted by
    fold size: the measurement when no validation split is held out."""
    from ..features.head_fitting import stratified_folds

    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    fold = stratified_folds(y, folds, seed)
    total = 0.0
    for k in range(folds):
        held = fold == k
        if held.any() and not held.all():
            total += score(x[~held], y[~held], x[held], y[held].numpy()) * int(held.sum())
    return total / len(y)


LABEL_SIZES = (1, 2, 4, 8, 16, 32, 64)  # examples per class tried when asking how many labels beat zero-shot


@torch.no_grad()
def labels_to_beat(floor: float, train_x, train_y, val_x=None, val_y=None, *, draws: int = 3) -> int | None:
    """The fewest labelled examples per class (of LABEL_SIZES, up to what the smallest class has) at which a linear
    probe, averaged over `draws` seeded draws, is more accurate than `floor` on validation (without one: on the
    training examples the draw left out). None when no size available beats it."""
    x, y = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(train_y, dtype=torch.long)
    smallest = int(torch.bincount(y).min())
    for size in (k for k in LABEL_SIZES if k <= smallest):
        scores = []
        for draw in range(draws):
            chosen = torch.zeros(len(y), dtype=torch.bool)
            chosen[per_class_rows(pd.Series(y.numpy()), size, seed=draw)] = True
            held_x, held_y = (val_x, val_y) if val_x is not None else (x[~chosen], y[~chosen].numpy())
            if len(held_y) == 0:
                return None
            with torch.enable_grad():
                scores.append(linear_probe_accuracy(x[chosen], y[chosen], held_x, held_y))
        if float(np.mean(scores)) > floor:
            return size
    return None


def batchnorm_shift(model: torch.nn.Module, batches) -> float | None:
    """Mean over the backbone's BatchNorm layers and channels of |data mean - stored mean| / stored std, from
    `model.features(**batch)` over the batches given (None without BatchNorm).

    The stored running statistics summarise the pretraining data at every layer; 0 means the new data looks
    like it, values near or above 1 mean a shift as large as the pretraining spread itself.
    """
    layers = [m for m in model.backbone.modules() if is_batchnorm(m) and m.running_mean is not None]
    if not layers:
        return None
    sums = {id(m): [0.0, 0] for m in layers}

    def record(module, inputs):
        x = inputs[0].float()
        dims = [0] + list(range(2, x.dim()))
        sums[id(module)][0] = sums[id(module)][0] + x.sum(dim=dims)
        sums[id(module)][1] += x.numel() // x.shape[1]

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model.features(**batch)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    shifts = []
    for m in layers:
        total, count = sums[id(m)]
        if count:
            shifts.append(
                ((total / count - m.running_mean.float()).abs() / (m.running_var.float() + m.eps).sqrt()).mean().item()
            )
    return float(np.mean(shifts)) if shifts else None
