"""Partial transfer: keep the first K layer groups, re-initialise the rest (for a large domain shift)."""

from __future__ import annotations

import torch
from torch import nn

from .layer_groups import LayerGroup

_LOADED_FLAG = (
    "_is_hf_initialized"  # transformers 5 marks loaded tensors with it and its init functions then skip them
)


def _owning_pretrained_models(model: nn.Module) -> dict[int, nn.Module]:
    """For every module, the innermost transformers `PreTrainedModel` it belongs to (whose `_init_weights` knows it)."""
    from transformers import PreTrainedModel

    owners: dict[int, nn.Module] = {}

    def walk(module: nn.Module, owner: nn.Module | None) -> None:
        owner = module if isinstance(module, PreTrainedModel) else owner
        if owner is not None:
            owners[id(module)] = owner
        for child in module.children():
            walk(child, owner)

    walk(model, None)
    return owners


@torch.no_grad()
def reinitialize_groups(model: nn.Module, groups: list[LayerGroup]) -> int:
    """Re-initialise every module whose parameters all belong to `groups`; returns how many parameters changed.

    transformers modules use the `_init_weights` of the pretrained model that holds them (the distribution
    they were pretrained from: a BERT inside our TransferClassifier uses BERT's), after clearing the
    "already loaded" marks that would make it skip them; other modules use their `reset_parameters`.
    """
    owned = {id(p) for g in groups for p in g.parameters.values()}
    owners = _owning_pretrained_models(model)
    changed = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if not own or not all(id(p) in owned for p in own):
            continue
        before = [p.detach().clone() for p in own]
        owner = owners.get(id(module))
        if owner is not None and hasattr(owner, "_init_weights"):
            for tensor in [module, *own, *module.buffers(recurse=False)]:
                if hasattr(tensor, _LOADED_FLAG):
                    delattr(tensor, _LOADED_FLAG)
            owner._init_weights(module)
        if all(torch.equal(b, p) for b, p in zip(before, own)) and hasattr(module, "reset_parameters"):
            module.reset_parameters()  # not a module the model's own init knows (e.g. a timm layer)
        changed += sum(p.numel() for b, p in zip(before, own) if not torch.equal(b, p))
    return changed
