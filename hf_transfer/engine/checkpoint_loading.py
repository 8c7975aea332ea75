"""Load a `Trainer` checkpoint back into the live model, under the names the model uses now.

transformers 5 renamed the modules of several architectures (ViT, DeiT, BEiT, DINOv2, Swin …: `attention.q_proj`
for `attention.attention.query`), and `save_pretrained` writes their weights under the original names. `Trainer`
reloads its checkpoints (`load_best_model_at_end`, `resume_from_checkpoint`) with a plain
`load_state_dict(strict=False)`, so every renamed weight is skipped without an error: "the best epoch" keeps the
last epoch's encoder under the best epoch's head, and a resumed run restarts its encoder from the pretrained weights
(transformers #43701, #48805). Here the names are mapped back with the same conversion `save_pretrained` applied,
and any weight that still does not match is an error, not a warning.
"""

from __future__ import annotations

import json
import pathlib

import torch
from torch import nn

from ..errors import TransferError

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"


def saved_to_live_names(model: nn.Module) -> dict[str, str]:
    """Each weight's name as `save_pretrained` writes it -> its name in `model.state_dict()`.

    Found by running transformers' own reverse conversion (`revert_weight_conversion`, what `save_pretrained`
    calls) on placeholder tensors and seeing where each one lands; only renamings are supported, not weights that
    are split or merged on saving (fused MoE experts), which a classification backbone does not have.
    """
    from transformers.core_model_loading import revert_weight_conversion

    placeholders = {name: torch.empty(0) for name in model.state_dict()}
    owner = {id(tensor): name for name, tensor in placeholders.items()}
    reverted = revert_weight_conversion(model, dict(placeholders))
    converted = sorted(saved for saved, tensor in reverted.items() if id(tensor) not in owner)
    if converted:
        raise TransferError(
            f"{type(model).__name__} saves {len(converted)} weights in a converted layout ({', '.join(converted[:3])} …) "
            "that cannot be mapped back one to one: pass --load_best_model_at_end false and do not resume this run"
        )
    return {saved: owner[id(tensor)] for saved, tensor in reverted.items()}


def read_checkpoint(folder: str | pathlib.Path) -> dict[str, torch.Tensor] | None:
    """The weights of a checkpoint folder: safetensors (one file or shards), else a torch file loaded with
    weights_only=True; None when it holds neither (an FSDP or adapter checkpoint)."""
    from safetensors.torch import load_file

    folder = pathlib.Path(folder)
    if (folder / WEIGHTS).is_file():
        return load_file(str(folder / WEIGHTS), device="cpu")
    if (folder / WEIGHTS_INDEX).is_file():
        shards = sorted(set(json.loads((folder / WEIGHTS_INDEX).read_text())["weight_map"].values()))
        return {
            name: tensor for shard in shards for name, tensor in load_file(str(folder / shard), device="cpu").items()
        }
    if (folder / TORCH_WEIGHTS).is_file():
        return torch.load(folder / TORCH_WEIGHTS, map_location="cpu", weights_only=True)
    return None


def load_checkpoint(model: nn.Module, folder: str | pathlib.Path) -> bool:
    """Copy a checkpoint's weights into `model` in place; False when the folder holds no whole-model weights.

    Every weight of the model must come back, except those `save_pretrained` leaves out because they share
    storage with one that is saved (tied embeddings) or that the model asks not to save.
    """
    saved = read_checkpoint(folder)
    if saved is None:
        return False
    names = saved_to_live_names(model)
    state = {names.get(name, name): tensor for name, tensor in saved.items()}
    result = model.load_state_dict(state, strict=False)
    live = model.state_dict()
    loaded_storage = {live[name].data_ptr() for name in state if name in live}
    not_saved = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    missing = [
        name for name in result.missing_keys if name not in not_saved and live[name].data_ptr() not in loaded_storage
    ]
    if missing or result.unexpected_keys:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(result.unexpected_keys[:3])}" if result.unexpected_keys else "",
            )
            if part
        )
        raise TransferError(
            f"checkpoint '{folder}' does not match {type(model).__name__} ({len(missing)} weights missing, "
            f"{len(result.unexpected_keys)} unexpected: {detail}): it was written by another model or another "
            "transformers version; resume from a checkpoint of this run's model"
        )
    return True
