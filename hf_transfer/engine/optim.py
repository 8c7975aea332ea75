"""Discriminative (layer-wise) learning rates as absolute per-group LRs in the optimizer itself.

Each layer group gets its own param groups with an absolute `lr`, so any scheduler that scales
`initial_lr` (all of Trainer's) gives every group base LR x schedule — nothing depends on a scale
factor that only one scheduler knows about (timm #2532, #2712). The optimizer is built once over
all parameters, frozen ones included, so unfreezing never adds param groups (transformers #20029, Lightning #6891, fastai #2133).
"""

from __future__ import annotations

import math

import torch

from ..errors import TransferError
from ..models.architectures import decays
from ..models.layer_groups import LayerGroup


def discriminative_lrs(
    num_groups: int,
    head_lr: float,
    factor: float | None = None,
    lrs: list[float] | None = None,
    body_lr: float | None = None,
    lowest_lr: float | None = None,
) -> list[float]:
    """LR per group, input to output; the last group is the new head, at `head_lr`.

    The pretrained body's top group (the last before the head) trains at `body_lr` (default
    `head_lr / factor`), and below it:
    - `lowest_lr`: fastai's `slice(lowest_lr, body_lr)`: the first group at `lowest_lr`, geometric in between;
    - `factor`: each group `factor` times slower than the one above (e.g. 10, or ULMFiT's 2.6; LLRD's decay d is 1/d);
    - neither: `body_lr` for the whole body.
    `lrs` gives every group's LR explicitly instead.
    """
    if lrs is not None:
        if len(lrs) != num_groups:
            raise TransferError(
                f"{len(lrs)} learning rates given for {num_groups} layer groups: give one per group (input to output)"
            )
        return [float(lr) for lr in lrs]
    if factor is not None and float(factor) <= 0:
        raise TransferError(f"discriminative LR factor {factor} must be positive (e.g. 2.6, or 10)")
    if factor is not None and lowest_lr is not None:
        raise TransferError("give either a lowest learning rate (a range) or an LR factor, not both")
    body = num_groups - 1
    top = float(body_lr) if body_lr is not None else head_lr / float(factor or 1.0)
    if lowest_lr is not None:
        lowest = float(lowest_lr)
        if not 0 < lowest <= top:
            raise TransferError(
                f"lowest learning rate {lowest:g} must be positive and at most the top block's {top:g}"
            )
        ratio = (top / lowest) ** (1 / (body - 1)) if body > 1 else 1.0
    else:
        ratio = float(factor or 1.0)
    return [top / ratio ** (body - 1 - i) for i in range(body)] + [float(head_lr)]


def param_groups(
    groups: list[LayerGroup], lrs: list[float], weight_decay: float, trains_while_frozen: set[int] = frozenset()
) -> list[dict]:
    """Optimizer param groups per layer group (with / without weight decay), each with its absolute LR.

    Parameters in `trains_while_frozen` (ids; BatchNorm affine parameters under train_bn) get param groups
    of their own, marked so that a gradual-unfreezing schedule gives them an LR while their layer group is frozen.
    """
    result = []
    for index, (group, lr) in enumerate(zip(groups, lrs)):
        named = list(group.parameters.items())
        always = [(n, p) for n, p in named if id(p) in trains_while_frozen]
        regular = [(n, p) for n, p in named if id(p) not in trains_while_frozen]
        for members, suffix, flag in ((regular, "", False), (always, ".train_bn", True)):
            decay = [p for n, p in members if decays(n, p)]
            no_decay = [p for n, p in members if not decays(n, p)]
            for params, wd, wd_suffix in ((decay, weight_decay, ""), (no_decay, 0.0, ".no_decay")):
                if params:
                    result.append(
                        {
                            "params": params,
                            "lr": lr,
                            "weight_decay": wd,
                            "layer_group": group.name + suffix + wd_suffix,
                            "layer_group_index": index,
                            "trains_while_frozen": flag,
                        }
                    )
    return result


def build_optimizer(
    groups: list[LayerGroup],
    lrs: list[float],
    weight_decay: float = 0.01,
    optimizer_class=torch.optim.AdamW,
    trains_while_frozen: set[int] = frozenset(),
    **optimizer_kwargs,
) -> torch.optim.Optimizer:
    """One optimizer (AdamW unless told) over every parameter of every group. Frozen parameters get no gradient, so it skips them."""
    optimizer_kwargs.pop("lr", None)  # every param group carries its own
    return optimizer_class(param_groups(groups, lrs, weight_decay, trains_while_frozen), **optimizer_kwargs)


def slanted_triangular(num_training_steps: int, cut_frac: float = 0.1, ratio: float = 32.0):
    """ULMFiT's slanted triangular multiplier: a short linear rise to 1, a long linear decay to 1/ratio."""
    cut = max(1, math.floor(num_training_steps * cut_frac))

    def multiplier(step: int) -> float:
        p = step / cut if step < cut else 1 - (step - cut) / max(1, cut * (1 / cut_frac - 1))
        return (1 + max(p, 0.0) * (ratio - 1)) / ratio

    return multiplier
