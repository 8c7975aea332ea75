"""Freezing that really freezes: no gradients, and BatchNorm that neither learns statistics nor
normalises with batch statistics (Lightning #15062).

Two separate switches, because they answer different questions:
- gradients (`requires_grad`): does a layer's weight learn?
- BatchNorm statistics (eval mode forced by a forward pre-hook): does a BatchNorm layer re-estimate its
  running mean / variance from the current batch? On a few hundred images in batches of 16 it should
  not, whatever its learning rate: batch statistics of a small, shifted data set poison the pretrained
  ones. Fine-tuning recipes therefore keep every BatchNorm's statistics frozen by default, trained
  layers included, and let them update only when asked (`--update_bn_statistics`, for large batches).

Neither switch touches the optimizer, so an optimizer built once over all parameters stays valid as
layers freeze and thaw.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

_BN_HOOK = "_hf_transfer_frozen_bn_hook"


def _force_eval(module: nn.Module, _inputs) -> None:
    module.training = False


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or type(module).__name__ in {
        "BatchNormAct2d",
        "FrozenBatchNorm2d",
    }


def _modules(modules: nn.Module | Iterable[nn.Module]) -> list[nn.Module]:
    return [modules] if isinstance(modules, nn.Module) else list(modules)


def batchnorm_layers(modules: nn.Module | Iterable[nn.Module]) -> list[nn.Module]:
    return [sub for module in _modules(modules) for sub in module.modules() if is_batchnorm(sub)]


def freeze_batchnorm_statistics(modules: nn.Module | Iterable[nn.Module]) -> int:
    """Every BatchNorm inside normalises with, and never updates, its running statistics. Returns how many."""
    layers = batchnorm_layers(modules)
    for layer in layers:
        if not hasattr(layer, _BN_HOOK):
            setattr(layer, _BN_HOOK, layer.register_forward_pre_hook(_force_eval))
        layer.eval()
    return len(layers)


def release_batchnorm_statistics(modules: nn.Module | Iterable[nn.Module]) -> None:
    """BatchNorm inside follows train / eval mode again (batch statistics in training, running averages updated)."""
    for layer in batchnorm_layers(modules):
        handle = getattr(layer, _BN_HOOK, None)
        if handle is not None:
            handle.remove()
            delattr(layer, _BN_HOOK)


def freeze(modules: nn.Module | Iterable[nn.Module], train_bn: bool = False) -> None:
    """Stop gradients; BatchNorm keeps its running statistics and uses them (eval mode) in every forward.

    train_bn=True leaves BatchNorm's affine weight and bias trainable (fastai's default); its running
    statistics stay frozen either way.
    """
    for module in _modules(modules):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    for layer in batchnorm_layers(modules):
        if train_bn:
            for parameter in layer.parameters(recurse=False):
                parameter.requires_grad_(True)
    freeze_batchnorm_statistics(modules)


def unfreeze(modules: nn.Module | Iterable[nn.Module], update_bn_statistics: bool = False) -> None:
    """Train these modules again. Their BatchNorm statistics stay frozen unless `update_bn_statistics`."""
    for module in _modules(modules):
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    if update_bn_statistics:
        release_batchnorm_statistics(modules)


def batchnorm_parameter_ids(model: nn.Module) -> set[int]:
    """ids of every BatchNorm affine parameter of the model."""
    return {id(p) for layer in batchnorm_layers(model) for p in layer.parameters(recurse=False)}


def set_group_trainable(
    group,
    trainable: bool,
    train_bn: bool = False,
    update_bn_statistics: bool = False,
    batchnorms: Iterable[nn.Module] = (),
    eligible: set[str] | None = None,
) -> None:
    """Freeze or thaw one LayerGroup: its parameters, and those of `batchnorms` (the model's BatchNorm layers) it owns.

    `eligible` (parameter names in the group) limits what may ever be thawed: on a peft-wrapped model only the
    adapter and the head, never the base peft froze. Names, not objects: engines such as FSDP replace the objects.
    """
    may_thaw = {id(p) for name, p in group.parameters.items() if eligible is None or name in eligible}
    for parameter in group.parameters.values():
        if id(parameter) in may_thaw:
            parameter.requires_grad_(trainable)
    owned = {id(p) for p in group.parameters.values()}
    for module in batchnorms:
        if any(id(p) in owned for p in module.parameters(recurse=False)):
            may_train = eligible is None or all(id(p) in may_thaw for p in module.parameters(recurse=False))
            if trainable and may_train:
                unfreeze(module, update_bn_statistics=update_bn_statistics)
            elif not trainable:
                freeze(module, train_bn=train_bn and may_train)


def count_parameters(model: nn.Module) -> dict:
    """Parameters of the model a user serves: peft's frozen copy of a retrained head (`original_module`,
    kept beside `modules_to_save`) is left out, so a head is counted once, as after merging."""
    served = [p for name, p in model.named_parameters() if ".original_module." not in f".{name}"]
    total = sum(p.numel() for p in served)
    trainable = sum(p.numel() for p in served if p.requires_grad)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100.0 * trainable / max(total, 1), 4),
    }
