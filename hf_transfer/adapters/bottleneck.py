"""Bottleneck adapters (Houlsby et al. 2019): down-project, non-linearity, up-project, plus a residual.

Each adapter is a child module of the projection it follows (the attention output and the
feed-forward output of every block) and is applied by a forward hook that is the adapter's own bound
method, so every hook calls its own adapter (no closure over a loop variable) and the base weights keep
their names. The up-projection starts at zero: before training the adapted model computes exactly what
the pretrained one did.
"""

from __future__ import annotations

import json
import pathlib

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.activations import ACT2FN

from ..errors import TransferError
from .targets import matches

CONFIG_NAME = "bottleneck_config.json"
WEIGHTS_NAME = "bottleneck_model.safetensors"
CHILD = "adapter"


class BottleneckAdapter(nn.Module):
    def __init__(self, features: int, bottleneck: int, activation: str = "gelu"):
        super().__init__()
        if activation not in ACT2FN:
            raise TransferError(f"--adapter_activation '{activation}' is unknown: use e.g. gelu, relu, silu, tanh")
        self.down = nn.Linear(features, bottleneck)
        self.activation = ACT2FN[activation]
        self.up = nn.Linear(bottleneck, features)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # the adapter starts as the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.activation(self.down(hidden)))

    def after_projection(self, _module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        return self(output)


def add_bottleneck_adapters(
    model: nn.Module, targets: list[str], reduction_factor: int = 16, activation: str = "gelu"
) -> list[str]:
    """Attach an adapter after every Linear matching `targets`; returns their full names."""
    if reduction_factor < 1:
        raise TransferError(f"--adapter_reduction_factor {reduction_factor} must be at least 1")
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and any(matches(name, t) for t in targets):
            if hasattr(module, CHILD):
                raise TransferError(f"'{name}' already has a bottleneck adapter")
            adapter = BottleneckAdapter(
                module.out_features, max(1, module.out_features // reduction_factor), activation
            )
            adapter.to(device=module.weight.device, dtype=module.weight.dtype)
            module.add_module(CHILD, adapter)
            module.register_forward_hook(adapter.after_projection)
            wrapped.append(name)
    if not wrapped:
        raise TransferError(
            f"--target_modules {', '.join(targets)} match no Linear layer: no bottleneck adapter was added"
        )
    return wrapped


def adapter_state(model: nn.Module, extra_modules: list[str]) -> dict[str, torch.Tensor]:
    """The adapters' weights and those of `extra_modules` (the head), by their names in `model`."""
    adapters = tuple(name + "." for name, module in model.named_modules() if isinstance(module, BottleneckAdapter))
    prefixes = adapters + tuple(m + "." for m in extra_modules)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}


def save_bottleneck(model: nn.Module, folder: pathlib.Path, config: dict) -> None:
    save_file(adapter_state(model, config["modules_to_save"]), str(folder / WEIGHTS_NAME))
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))


def load_bottleneck(model: nn.Module, folder: pathlib.Path) -> dict:
    """Re-attach the saved adapters to a freshly built base and load their (and the head's) weights exactly."""
    config = json.loads((folder / CONFIG_NAME).read_text())
    add_bottleneck_adapters(model, config["target_modules"], config["reduction_factor"], config["activation"])
    saved = load_file(str(folder / WEIGHTS_NAME))
    expected = adapter_state(model, config["modules_to_save"])
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    reshaped = sorted(k for k in set(saved) & set(expected) if saved[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        raise TransferError(
            f"'{folder / WEIGHTS_NAME}' does not fit the rebuilt model ({len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(reshaped)} of another shape, e.g. '{(missing or unexpected or reshaped)[0]}'): was it saved from a different base model?"
        )
    model.load_state_dict(saved, strict=False)
    return config
