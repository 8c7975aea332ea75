"""Freezing that really freezes: no gradients, and BatchNorm that neither learns statistics nor
normalises with batch statistics (ANCHORS failure 8).

Freezing only flips `requires_grad` and hooks BatchNorm; it never touches the optimizer, so an
optimizer built once over all parameters stays valid as layers freeze and thaw.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

_BN_HOOK = "_hf_transfer_frozen_bn_hook"


def _force_eval(module: nn.Module, _inputs) -> None:
    module.training = False


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or type(module).__name__ in {"BatchNormAct2d", "FrozenBatchNorm2d"}


def freeze(modules: nn.Module | Iterable[nn.Module], train_bn: bool = False) -> None:
    """Stop gradients; BatchNorm keeps its running statistics and uses them (eval mode) in every forward.

    train_bn=True leaves BatchNorm's affine weight and bias trainable (fastai's default); its running
    statistics stay frozen either way.
    """
    for module in [modules] if isinstance(modules, nn.Module) else modules:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        for sub in module.modules():
            if is_batchnorm(sub):
                if train_bn:
                    for parameter in sub.parameters(recurse=False):
                        parameter.requires_grad_(True)
                if not hasattr(sub, _BN_HOOK):
                    setattr(sub, _BN_HOOK, sub.register_forward_pre_hook(_force_eval))
                sub.eval()


def unfreeze(modules: nn.Module | Iterable[nn.Module]) -> None:
    """Train these modules again, BatchNorm statistics included."""
    for module in [modules] if isinstance(modules, nn.Module) else modules:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
        for sub in module.modules():
            handle = getattr(sub, _BN_HOOK, None)
            if handle is not None:
                handle.remove()
                delattr(sub, _BN_HOOK)


def set_group_trainable(group, trainable: bool, train_bn: bool = False, batchnorms: Iterable[nn.Module] = ()) -> None:
    """Freeze or thaw one LayerGroup: its parameters, and those of `batchnorms` (the model's BatchNorm layers) it owns."""
    for parameter in group.parameters.values():
        parameter.requires_grad_(trainable)
    owned = {id(p) for p in group.parameters.values()}
    for module in batchnorms:
        if any(id(p) in owned for p in module.parameters(recurse=False)):
            if trainable:
                unfreeze(module)
            else:
                freeze(module, train_bn=train_bn)


def count_parameters(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": round(100.0 * trainable / max(total, 1), 4)}
