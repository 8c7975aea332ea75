"""Parameter-efficient transfer: train a small adapter and the new head, keep the base frozen.

`attach` puts peft's LoRA / DoRA / LoHa / LoKr / IA3, or our bottleneck adapters, on a classifier,
with the new head always trained beside the adapter (peft's `modules_to_save`; peft #310, #577);
`AdapterGradientCheck` stops a run whose adapters get no gradient. Saving, loading and merging
adapters live in `adapter_files.py`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers import TrainerCallback

from .. import defaults
from ..errors import TransferError
from ..models.freezing import count_parameters, freeze, is_batchnorm
from ..models.layer_groups import top_level_modules
from ..models.wrappers import canonical_name, is_peft_model, live_parameters, unwrap
from ..options import split_list
from . import bottleneck
from .targets import head_modules, resolve_targets, within


@dataclasses.dataclass
class AdapterArguments:
    """Which adapter, and where it goes (names as in peft and Hugging Face's peft examples)."""

    peft_method: str = dataclasses.field(
        default="lora", metadata={"help": "lora | dora | loha | lokr | ia3 | bottleneck"}
    )
    lora_r: int = dataclasses.field(default=defaults.LORA_R, metadata={"help": "rank (LoRA, DoRA, LoHa, LoKr)"})
    lora_alpha: int = dataclasses.field(
        default=defaults.LORA_ALPHA, metadata={"help": "scaling numerator: updates are scaled by alpha / r"}
    )
    lora_dropout: float = dataclasses.field(
        default=defaults.LORA_DROPOUT,
        metadata={
            "help": "dropout on the adapter's input (LoRA, DoRA; LoHa / LoKr: module dropout). 0 as in peft: 0.1 scored the same on "
            "validation and keeps a mask per adapted layer for the backward pass"
        },
    )
    lora_bias: str = dataclasses.field(
        default="none", metadata={"help": "none | lora_only | all: which biases train (LoRA, DoRA)"}
    )
    target_modules: str | None = dataclasses.field(
        default=None, metadata={"help": "comma-separated module names (default: by architecture)"}
    )
    feedforward_modules: str | None = dataclasses.field(
        default=None, metadata={"help": "IA3: targets whose inputs are scaled (default: by architecture)"}
    )
    modules_to_save: str | None = dataclasses.field(
        default=None, metadata={"help": "comma-separated modules trained in full and saved (default: the new head)"}
    )
    adapter_reduction_factor: int = dataclasses.field(
        default=16, metadata={"help": "bottleneck: hidden size / adapter size"}
    )
    adapter_activation: str = dataclasses.field(
        default="gelu", metadata={"help": "bottleneck: non-linearity between down- and up-projection"}
    )


def _peft_config(args: AdapterArguments, targets: list[str], feedforward: list[str], heads: list[str]):
    from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig

    common = {"target_modules": targets, "modules_to_save": heads}
    if args.lora_bias not in ("none", "lora_only", "all"):
        raise TransferError(f"--lora_bias '{args.lora_bias}' is not one of none, lora_only, all")
    if args.peft_method in ("lora", "dora"):
        return LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            bias=args.lora_bias,
            use_dora=args.peft_method == "dora",
            **common,
        )
    if args.peft_method == "loha":
        return LoHaConfig(r=args.lora_r, alpha=args.lora_alpha, module_dropout=args.lora_dropout, **common)
    if args.peft_method == "lokr":
        return LoKrConfig(r=args.lora_r, alpha=args.lora_alpha, module_dropout=args.lora_dropout, **common)
    return IA3Config(feedforward_modules=feedforward, **common)


def attach(model: nn.Module, args: AdapterArguments, *, gradient_checkpointing: bool = False) -> nn.Module:
    """Freeze the base, add the adapter, keep the head trainable. Returns the model to train."""
    if args.lora_r < 1:
        raise TransferError(f"--lora_r {args.lora_r} must be at least 1")
    heads = split_list(args.modules_to_save) or head_modules(model)
    names = {name for name, _ in model.named_modules()}
    unknown = [h for h in heads if h not in names]
    if unknown:
        raise TransferError(
            f"--modules_to_save '{unknown[0]}' is not a module of {type(model).__name__}: top-level modules are {top_level_modules(model)}"
        )
    targets, feedforward = resolve_targets(
        model, args.peft_method, split_list(args.target_modules), split_list(args.feedforward_modules)
    )
    if args.peft_method == "bottleneck":
        freeze(model)
        bottleneck.add_bottleneck_adapters(model, targets, args.adapter_reduction_factor, args.adapter_activation)
        for head in heads:
            model.get_submodule(head).requires_grad_(True)
        model._hf_transfer_bottleneck = {
            "method": "bottleneck",
            "target_modules": targets,
            "reduction_factor": args.adapter_reduction_factor,
            "activation": args.adapter_activation,
            "modules_to_save": heads,
        }
        adapted = model
    else:
        from peft import get_peft_model

        try:
            adapted = get_peft_model(model, _peft_config(args, targets, feedforward, heads))
        except ValueError as exc:  # e.g. a rank the layer shapes do not allow
            raise TransferError(
                f"peft cannot put {args.peft_method} on {type(model).__name__}: {str(exc).splitlines()[0]}"
            ) from None
    return_what_the_base_returns(adapted)
    # A frozen base includes its BatchNorm statistics (Lightning #15062): peft freezes BN's weights but
    # leaves the layers in train mode, where they would normalise with batch statistics and drift.
    inner = unwrap(adapted)[0]
    for name, module in inner.named_modules():
        if is_batchnorm(module) and not within(name, heads):
            freeze(module)
    if gradient_checkpointing:
        # Reentrant checkpointing drops gradients when no input of a checkpointed block requires grad
        # (frozen embeddings): make the embedding output require grad (transformers #26221, peft #1142).
        enable = getattr(inner, "enable_input_require_grads", None)
        if enable is not None:
            enable()
    return adapted


def _as_autocast_returns(module, args, output):
    if (
        isinstance(output, torch.Tensor)
        and output.is_floating_point()
        and torch.is_autocast_enabled(output.device.type)
    ):
        return output.to(torch.get_autocast_dtype(output.device.type))
    return None


def return_what_the_base_returns(model: nn.Module) -> None:
    """Under autocast a Linear / convolution returns half precision, and LoRA's layers return what their base layer
    does; peft's LoHa / LoKr layers return their input's fp32. DeBERTa masks half-precision attention scores with
    the minimum of its query projection's dtype, so under --bf16 / --fp16 it stopped with "value cannot be converted
    to type c10::BFloat16 without overflow". A hook gives those layers their base layer's output dtype."""
    from peft.tuners.lycoris_utils import LycorisLayer

    for module in model.modules():
        if isinstance(module, LycorisLayer):
            module.register_forward_hook(_as_autocast_returns)


def undistributed(model: nn.Module) -> nn.Module:
    return model.module if type(model).__name__ == "DistributedDataParallel" else model


def method(model: nn.Module) -> str | None:
    """'peft', 'bottleneck', or None for a model without an adapter."""
    inner = undistributed(model)
    if is_peft_model(inner):
        return "peft"
    return "bottleneck" if hasattr(inner, "_hf_transfer_bottleneck") else None


def describe(model: nn.Module) -> dict:
    """The resolved placement, for all_results.json and the card: which modules carry adapters, which train in full."""
    inner = undistributed(model)
    if method(inner) == "peft":
        config = next(iter(inner.peft_config.values()))
        targets = config.target_modules
        return {
            "target_modules": sorted(targets) if isinstance(targets, (set, list)) else targets,
            "modules_to_save": list(config.modules_to_save or []),
        }
    config = getattr(inner, "_hf_transfer_bottleneck", {})
    return {"target_modules": config.get("target_modules"), "modules_to_save": config.get("modules_to_save")}


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters that are not the head: what must receive gradients."""
    inner, _ = unwrap(model)
    heads = getattr(inner, "_hf_transfer_bottleneck", {}).get("modules_to_save", [])
    return {
        n: p
        for n, p in model.named_parameters()
        if p.requires_grad and "modules_to_save" not in n and not any(n.startswith(f"{h}.") for h in heads)
    }


def trainable_report(model: nn.Module) -> str:
    counts = count_parameters(model)
    return f"trainable params: {counts['trainable_params']:,} || all params: {counts['total_params']:,} || trainable%: {counts['trainable_percent']:.4f}"


class AdapterGradientCheck(TrainerCallback):
    """Stops training at the first optimizer step if no adapter parameter is reached by the backward pass.

    A frozen base plus reentrant activation checkpointing, or a target list that misses every layer
    the loss depends on, would otherwise train only the head while reporting success.
    """

    def __init__(self, parameters: dict[str, nn.Parameter]):
        self.parameters = parameters
        self.checked = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:  # the wrapped model's own tensors (FSDP2 replaces every parameter), matched by name
            live = live_parameters(model)
            self.parameters = {
                name: live.get(canonical_name(name), parameter) for name, parameter in self.parameters.items()
            }

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.checked or not self.parameters:
            return
        grads = [p.grad.detach() for p in self.parameters.values() if p.grad is not None]
        if any(not bool(torch.isfinite(g).all()) for g in grads):
            return  # an fp16 step that overflowed (the loss scaler skips it): judge the first finite one
        self.checked = True
        # None means the adapters are cut off from the loss; zeros are legitimate (a head initialised to zero,
        # as MobileViT's is, passes no gradient back in the first step)
        if not grads:
            raise TransferError(
                f"no gradient reached the {len(self.parameters)} adapter tensors (e.g. '{next(iter(self.parameters))}'): "
                "with --gradient_checkpointing drop use_reentrant=True, and check --target_modules"
            )
