"""A student built from its teacher by keeping a subset of the teacher's blocks (DistilBERT, Sanh et al. 2019).

The student is a copy of the teacher with some transformer blocks removed: embeddings, the kept blocks and
the head start from the teacher's weights, so distillation starts close to the teacher rather than from
scratch. The config is updated to the new depth, so the saved student loads with `from_pretrained` and
`pipeline()` like any checkpoint of its architecture.
"""

from __future__ import annotations

import copy

import numpy as np
from torch import nn

from ..errors import TransferError


def default_layers(num_blocks: int, num_layers: int | None = None) -> list[int]:
    """`num_layers` blocks (half, rounded up, by default) spread evenly from the first to the last: for 12 blocks
    and 6 kept this is DistilBERT's 0, 2, 4, 7, 9, 11."""
    num_layers = (num_blocks + 1) // 2 if num_layers is None else num_layers
    if not 1 <= num_layers <= num_blocks:
        raise TransferError(
            f"--student_num_layers {num_layers} is out of range: the teacher has {num_blocks} blocks (pick 1 to {num_blocks})"
        )
    return sorted({int(i) for i in np.round(np.linspace(0, num_blocks - 1, num_layers))})


def parse_layers(text: str, num_blocks: int) -> list[int]:
    """'0,2,4' -> [0, 2, 4], checked against the teacher's depth."""
    try:
        layers = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise TransferError(
            f"--student_layers '{text}' must be block indices separated by commas (e.g. 0,2,4)"
        ) from None
    if not layers:
        raise TransferError(f"--student_layers '{text}' names no block: give indices such as 0,2,4")
    bad = [i for i in layers if not 0 <= i < num_blocks]
    if bad:
        raise TransferError(
            f"--student_layers: block {bad[0]} is out of range, the teacher has blocks 0 to {num_blocks - 1}"
        )
    if len(set(layers)) != len(layers) or layers != sorted(layers):
        raise TransferError(f"--student_layers '{text}' must list distinct blocks in increasing order")
    return layers


def transformer_blocks(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(owner, attribute, blocks): the model's list of transformer blocks, asked of the architecture registry."""
    from ..models.architectures import block_path, lookup
    from ..models.layer_groups import base_module, block_list
    from ..models.transfer_classifier import TransferClassifier

    inner = model.backbone if isinstance(model, TransferClassifier) else model
    if getattr(inner, "timm_model", None) is not None:
        raise TransferError(
            f"a student cannot be cut from a timm model ({type(inner).__name__}): timm rebuilds a model from its architecture "
            "name, which fixes its depth, so a shallower copy would not reload; pass a smaller checkpoint as the student "
            "with --model_name_or_path"
        )
    if not hasattr(inner, "config"):
        raise TransferError(
            f"a student cannot be cut from a {type(inner).__name__}: it has no transformers config to rebuild a shallower "
            "copy from; pass a smaller checkpoint as the student with --model_name_or_path"
        )
    _, base = base_module(inner)
    entry = lookup(inner)
    if entry is not None and entry.shared_blocks:
        raise TransferError(
            f"a student cannot be cut from {entry.name}: {entry.shared_blocks.split(':')[0]}; pass a student with --model_name_or_path"
        )
    if entry is not None and len(entry.blocks) == 1:
        path = block_path(base, entry.blocks[0])
    else:
        found = block_list(base)
        if found is None or (entry is not None and len(entry.blocks) > 1):
            raise TransferError(
                f"cannot find one list of blocks in a {type(inner).__name__}: pass a student with --model_name_or_path"
            )
        path = found[0]
    owner_path, _, attribute = path.rpartition(".")
    owner = base.get_submodule(owner_path) if owner_path else base
    blocks = getattr(owner, attribute)
    shapes = (
        {tuple((n, tuple(p.shape)) for n, p in block.named_parameters()) for block in blocks}
        if isinstance(blocks, nn.ModuleList)
        else set()
    )
    if len(shapes) != 1:  # stages of a hierarchical model; ModernBERT's first block, which has no attention norm
        raise TransferError(
            f"a student cannot be cut from a {type(inner).__name__}: its blocks are not all alike (their parameters differ "
            "in name or shape); pass a smaller checkpoint as the student with --model_name_or_path"
        )
    return owner, attribute, blocks


def student_from_teacher(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A copy of `teacher` keeping only `layers` of its blocks, every config that records the depth updated."""
    student = copy.deepcopy(teacher)
    owner, attribute, blocks = transformer_blocks(student)
    setattr(owner, attribute, nn.ModuleList([blocks[i] for i in layers]))
    for config in _depth_configs(student):
        if getattr(config, "layer_types", None) is not None and len(config.layer_types) == len(blocks):
            config.layer_types = [config.layer_types[i] for i in layers]
        config.num_hidden_layers = len(layers)
    for position, block in enumerate(getattr(owner, attribute)):
        for module in block.modules():  # decoder-style blocks number themselves for their caches
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    return student


def _depth_configs(model: nn.Module) -> list:
    """Every config object in the model that holds `num_hidden_layers` (TransferClassifier keeps the backbone's twice)."""
    configs = [m.config for m in model.modules() if hasattr(getattr(m, "config", None), "num_hidden_layers")]
    nested = getattr(getattr(model, "config", None), "backbone_config", None)
    if nested is not None and hasattr(nested, "num_hidden_layers"):
        configs.append(nested)
    unique = {id(c): c for c in configs}
    if not unique:
        raise TransferError(
            f"a {type(model).__name__} does not record its depth as num_hidden_layers: pass a student with --model_name_or_path"
        )
    return list(unique.values())
