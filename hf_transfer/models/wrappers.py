"""Looking through the wrappers engines put around a model (DDP, FSDP, peft, torch.compile, activation
checkpointing): the inner model, and parameter names that are the same before and after wrapping."""

from __future__ import annotations

from torch import nn


def is_peft_model(model: nn.Module) -> bool:
    """By class, not name: FSDP2's fully_shard renames the class (FSDPPeftModel...)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """Look through DDP / peft wrappers; return the inner model and its name prefix."""
    prefix = ""
    while True:
        if hasattr(model, "module") and type(model).__name__ in {"DistributedDataParallel", "DataParallel"}:
            model, prefix = model.module, prefix + "module."
        elif is_peft_model(model) and hasattr(model, "base_model"):
            model, prefix = model.base_model.model, prefix + "base_model.model."
        else:
            return model, prefix


# Name parts that engines insert between a model and its parameters: DDP / DataParallel ("module."), FSDP1 with
# use_orig_params, activation checkpointing, torch.compile. Peft's "base_model.model." is part of the model itself.
WRAPPER_NAME_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def canonical_name(name: str) -> str:
    """A parameter's name with wrapper parts removed: the same for a model before and after DDP / FSDP / compile."""
    for part in WRAPPER_NAME_PARTS:
        name = name.replace(part, "")
    while name.startswith("module."):
        name = name[len("module.") :]
    return name


def live_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """{canonical name: parameter} of the model as it is now (wrapped or not)."""
    return {canonical_name(name): parameter for name, parameter in model.named_parameters()}
