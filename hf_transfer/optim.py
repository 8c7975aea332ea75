"""Discriminative (layer-wise) learning rates as absolute per-group LRs in the optimizer itself.

Each layer group gets its own param groups with an absolute `lr`, so any scheduler that scales
`initial_lr` (all of Trainer's) gives every group base LR x schedule — nothing depends on a scale
factor that only one scheduler knows about (ANCHORS failure 4). The optimizer is built once over
all parameters, frozen ones included, so unfreezing never adds param groups (failures 1 and 3).
"""

from __future__ import annotations

import math

import torch

from .errors import TransferError
from .layer_groups import LayerGroup
from .trainer import decays


def discriminative_lrs(num_groups: int, head_lr: float, factor: float | None = None, lrs: list[float] | None = None) -> list[float]:
    """LR per group, input to output: explicit `lrs`, or `head_lr / factor**distance_from_head`.

    factor 10 is the seeds' rule, 2.6 ULMFiT's; LLRD's decay d in 0.65-0.95 is factor 1/d.
    """
    if lrs is not None:
        if len(lrs) != num_groups:
            raise TransferError(f"{len(lrs)} learning rates given for {num_groups} layer groups: give one per group (input to output)")
        return [float(lr) for lr in lrs]
    factor = 1.0 if factor is None else float(factor)
    if factor <= 0:
        raise TransferError(f"discriminative LR factor {factor} must be positive (e.g. 2.6, or 10)")
    return [head_lr / factor ** (num_groups - 1 - i) for i in range(num_groups)]


def param_groups(groups: list[LayerGroup], lrs: list[float], weight_decay: float) -> list[dict]:
    """Two optimizer param groups per layer group (with / without weight decay), each with its absolute LR."""
    result = []
    for index, (group, lr) in enumerate(zip(groups, lrs)):
        decay = [p for n, p in group.parameters.items() if decays(n, p)]
        no_decay = [p for n, p in group.parameters.items() if not decays(n, p)]
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, ".no_decay")):
            if params:
                result.append({"params": params, "lr": lr, "weight_decay": wd, "layer_group": group.name + suffix, "layer_group_index": index})
    return result


def build_optimizer(groups: list[LayerGroup], lrs: list[float], weight_decay: float = 0.01, **adamw_kwargs) -> torch.optim.AdamW:
    """AdamW over every parameter of every group. Frozen parameters get no gradient, so AdamW skips them."""
    return torch.optim.AdamW(param_groups(groups, lrs, weight_decay), **adamw_kwargs)


def slanted_triangular(num_training_steps: int, cut_frac: float = 0.1, ratio: float = 32.0):
    """ULMFiT's slanted triangular multiplier: a short linear rise to 1, a long linear decay to 1/ratio."""
    cut = max(1, math.floor(num_training_steps * cut_frac))

    def multiplier(step: int) -> float:
        p = step / cut if step < cut else 1 - (step - cut) / max(1, cut * (1 / cut_frac - 1))
        return (1 + max(p, 0.0) * (ratio - 1)) / ratio

    return multiplier
