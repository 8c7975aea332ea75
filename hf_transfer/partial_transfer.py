"""Partial transfer: keep the first K layer groups, re-initialise the rest (for a large domain shift)."""

from __future__ import annotations

from torch import nn

from .layer_groups import LayerGroup


def reinitialize_groups(model: nn.Module, groups: list[LayerGroup]) -> int:
    """Re-initialise every module whose parameters all belong to `groups`; returns how many parameters changed.

    transformers models use their own `_init_weights` (the distribution they were pretrained from);
    other modules their `reset_parameters`.
    """
    owned = {id(p) for g in groups for p in g.parameters.values()}
    init = getattr(model, "_init_weights", None)
    changed = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if not own or not all(id(p) in owned for p in own):
            continue
        if init is not None:
            init(module)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            continue
        changed += sum(p.numel() for p in own)
    return changed
