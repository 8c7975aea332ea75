"""A frozen base kept in the precision autocast computes it in.

Under `--bf16` / `--fp16` autocast casts each Linear and convolution weight to half precision at every use. It
caches the cast of a weight that trains, but casts a frozen weight anew at each call and keeps that copy alive
for the backward pass (the input's gradient needs it): an adapter run holds the frozen base in fp32 *and* a
half-precision copy of it. Storing the frozen weights of those layers in half precision once drops both (about
0.3 GiB of a ViT-B/16 LoRA step) and computes the same numbers: autocast would round them the same way.
Only plain `nn.Linear` / `nn.Conv*d` layers are cast, whose forward is the one op autocast casts: subclasses may use
their weight otherwise (timm's weight-standardised convolutions normalise it first).
"""

from __future__ import annotations

import os

import torch
from torch import nn

CAST_BY_AUTOCAST = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def autocast_dtype(training_args) -> torch.dtype | None:
    """The half precision a run computes its Linear and convolution layers in (--bf16 / --fp16), or None."""
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None


def fsdp_requested(training_args) -> bool:
    """FSDP through `--fsdp` or `accelerate launch` with an FSDP config."""
    return bool(training_args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def keep_frozen_base_in_compute_precision(model: nn.Module, training_args, peft_method: str) -> str | None:
    """An adapter run's frozen base stored in its autocast precision, where that computes the same numbers. Returns
    the dtype's name, or None where the base stays as loaded: full precision, FSDP (it flattens a block's
    parameters into one tensor of one dtype), and methods that use the base weight beyond the layer's own op
    (DoRA normalises it; IA3, LoHa and LoKr on timm CNNs came out different)."""
    dtype = autocast_dtype(training_args)
    if dtype is None or peft_method != "lora" or fsdp_requested(training_args):
        return None
    store_frozen_weights_in(model, dtype)
    return str(dtype).removeprefix("torch.")


def store_frozen_weights_in(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the frozen weights and biases of plain Linear / convolution layers to `dtype`; trainable tensors stay
    as they are. Returns the number of values cast."""
    cast = 0
    for module in model.modules():
        if type(module) not in CAST_BY_AUTOCAST:
            continue
        for parameter in module.parameters(recurse=False):
            if not parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)
                cast += parameter.numel()
    return cast
