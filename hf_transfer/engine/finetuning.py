"""How a pretrained body and a new head train together, for every recipe that trains a pretrained
backbone (full fine-tuning, gradual unfreezing, adapters).

- The new head gets its own learning rate: it starts from random weights while the body starts from
  good ones, so one LR for both either under-trains the head or damages the body (Howard & Ruder 2018,
  ULMFiT; Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features").
- The body's groups may spread their LRs as a range, input side lowest (fastai's `slice(lo, hi)`).
- BatchNorm keeps its pretrained running statistics unless the user asks otherwise (see `freezing`).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from .. import defaults
from ..errors import TransferError
from ..models.architectures import shared_blocks_note
from ..models.freezing import freeze_batchnorm_statistics, release_batchnorm_statistics
from ..models.layer_groups import LayerGroup, layer_groups
from ..options import split_list
from .optim import discriminative_lrs


@dataclasses.dataclass
class FineTuningArguments:
    head_learning_rate: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "LR of the new classification head (default: 1e-3); --learning_rate is the pretrained body's"
        },
    )
    lowest_learning_rate: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "LR of the input-side layer group, rising geometrically to --learning_rate at the top block "
            "(fastai's slice(lo, hi)); unset: one LR for the whole body"
        },
    )
    layer_group_patterns: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "layer groups as regexes, input to output, ';'-separated; the last is the head (default: ask the model)"
        },
    )
    update_bn_statistics: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "let BatchNorm re-estimate its running statistics from training batches (for large batches); "
            "default: keep the pretrained statistics"
        },
    )


def head_learning_rate(options: FineTuningArguments, modality: str) -> float:
    value = options.head_learning_rate
    return defaults.HEAD_LEARNING_RATES[modality] if value is None else float(value)


def body_and_head_groups(model: nn.Module, options: FineTuningArguments, explicit: set) -> list[LayerGroup] | None:
    """The model's layer groups, or None (one LR for everything, said in one line) for an architecture whose head
    we cannot find, unless the user asked for an LR that needs the groups: then the error says what to pass."""
    try:
        groups = layer_groups(model, split_list(options.layer_group_patterns, ";"))
    except TransferError as exc:
        asked = sorted({"head_learning_rate", "lowest_learning_rate", "layer_group_patterns"} & explicit)
        if asked:
            raise TransferError(f"--{asked[0]} needs the model's layer groups: {exc}") from None
        print(f"one learning rate for every layer: {exc}")
        return None
    note = shared_blocks_note(model)
    if note and options.lowest_learning_rate:
        print(note)
    return groups


def group_learning_rates(
    groups: list[LayerGroup],
    body_lr: float,
    options: FineTuningArguments,
    modality: str,
    factor: float | None = None,
    explicit: list[float] | None = None,
) -> list[float]:
    """Per-group LRs: the body at `body_lr` (a range down to --lowest_learning_rate, or `factor` per group); the last
    group, the head, apart. `explicit` gives every group's LR instead (checked: one per group)."""
    return discriminative_lrs(
        len(groups),
        head_learning_rate(options, modality),
        factor=factor,
        lrs=explicit,
        body_lr=body_lr,
        lowest_lr=options.lowest_learning_rate,
    )


def apply_batchnorm_policy(model: nn.Module, options: FineTuningArguments, random_init: bool = False) -> None:
    """Keep every BatchNorm's pretrained statistics unless --update_bn_statistics; says what it did when there is BatchNorm.
    A randomly initialised model has no statistics worth keeping: its BatchNorm always learns them from the batches."""
    if options.update_bn_statistics or random_init:
        release_batchnorm_statistics(model)
        return
    count = freeze_batchnorm_statistics(model)
    if count:
        print(
            f"BatchNorm: {count} layers keep their pretrained running statistics (--update_bn_statistics to re-estimate them)"
        )
