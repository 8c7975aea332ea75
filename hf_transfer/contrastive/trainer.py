"""Contrastive training through `Trainer`: batches in which every class present has several examples, and a loss on
the features the classification head would see (so the head fitted afterwards reads exactly what was trained)."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch

from .. import defaults
from ..engine.trainer import TransferTrainer
from ..errors import TransferError
from ..features.extraction import head_inputs
from .losses import LOSSES


class ClassBalancedOrder(torch.utils.data.Sampler):
    """Indices whose consecutive runs of `batch_size` hold `per_class` examples of each of several classes, so an
    in-batch loss always finds positives (P×K batches, Hermans et al. 2017). Every example once per epoch; a new
    order each epoch, drawn from `seed` and the epoch."""

    def __init__(self, labels, batch_size: int, seed: int):
        self.labels = np.asarray(labels)
        self.classes = np.unique(self.labels)
        self.per_class = max(2, batch_size // max(1, len(self.classes)))
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1  # a fresh order next time even where nobody calls set_epoch
        chunks, keys = [], []
        for label in self.classes:
            rows = rng.permutation(np.flatnonzero(self.labels == label))
            pieces = [rows[i : i + self.per_class] for i in range(0, len(rows), self.per_class)]
            # spread each class's chunks evenly over the epoch, at a random phase
            keys += [(k + rng.random()) / len(pieces) for k in range(len(pieces))]
            chunks += pieces
        return iter(int(i) for k in np.argsort(keys, kind="stable") for i in chunks[k])


class ContrastiveTrainer(TransferTrainer):
    """Trains the body (or its adapter) with a contrastive loss on the head's input features; the head is untouched."""

    def __init__(self, *args, train_labels, loss: str = "supcon", temperature: float = 0.07, **kwargs):
        super().__init__(*args, chance_loss=None, **kwargs)  # a contrastive loss has no "guess" level
        self.train_labels = list(train_labels)
        self.loss_fn, self.temperature = LOSSES[loss], temperature

    def _get_train_sampler(self, train_dataset=None):
        return ClassBalancedOrder(self.train_labels, self.args.per_device_train_batch_size, self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        features = head_inputs(model, inputs).flatten(1)
        loss = self.loss_fn(features, labels, self.temperature)
        return (loss, {"features": features}) if return_outputs else loss


@dataclasses.dataclass
class ContrastiveArguments:
    contrastive_loss: str = dataclasses.field(
        default=defaults.CONTRASTIVE_LOSS,
        metadata={
            "help": f"{' | '.join(LOSSES)}: the in-batch loss the body trains with (docs/recipes/contrastive_finetune.md)"
        },
    )
    temperature: float = dataclasses.field(
        default=defaults.CONTRASTIVE_TEMPERATURE,
        metadata={"help": "supcon: softmax temperature over cosine similarities; triplet: the soft margin's scale"},
    )
    head_l2: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "L2 strength of the head's logistic regression (default: chosen on validation; without a validation "
            f"split {defaults.CONTRASTIVE_HEAD_L2:g})"
        },
    )
    contrastive_min_steps: int = dataclasses.field(
        default=defaults.CONTRASTIVE_MIN_STEPS,
        metadata={
            "help": "train at least this many optimizer steps, with more epochs when --num_train_epochs gives fewer "
            "(a few-shot split is one or two batches an epoch); not used when --num_train_epochs or --max_steps is given"
        },
    )

    def check(self, args) -> None:
        """Bad values are one line; options that the contrastive phase has no use for are named in one line."""
        if self.contrastive_loss not in LOSSES:
            raise TransferError(f"--contrastive_loss {self.contrastive_loss!r}: choose one of {', '.join(LOSSES)}")
        if self.temperature <= 0:
            raise TransferError(f"--temperature {self.temperature:g}: must be above 0")
        if self.contrastive_min_steps < 0:
            raise TransferError(f"--contrastive_min_steps {self.contrastive_min_steps}: must be 0 or more")
        if "contrastive_min_steps" in args.explicit and ({"num_train_epochs", "max_steps"} & set(args.explicit)):
            print("--contrastive_min_steps: not used, --num_train_epochs / --max_steps set the length")
        if unused := [f"--{k}" for k in UNUSED_BY_THE_CONTRASTIVE_PHASE if k in args.explicit]:
            print(
                f"{', '.join(unused)}: not used by contrastive fine-tuning (it trains for --num_train_epochs without "
                "checkpoints or per-epoch validation, then fits the head on validation)"
            )


def epochs_for_min_steps(options: ContrastiveArguments, args, examples: int) -> float:
    """The epochs that give at least `options.contrastive_min_steps` optimizer steps on `examples` (the recipe's own
    epochs when those give more, or when the user set the length)."""
    training = args.training
    if (
        not options.contrastive_min_steps
        or {"num_train_epochs", "max_steps"} & set(args.explicit)
        or training.max_steps > 0
    ):
        return training.num_train_epochs
    batch = training.per_device_train_batch_size * training.gradient_accumulation_steps * training.world_size
    per_epoch = max(1, math.ceil(examples / batch))
    return max(training.num_train_epochs, math.ceil(options.contrastive_min_steps / per_epoch))


# Options of a classification run that the contrastive phase has no use for: no epoch is chosen on validation
# (there are no logits to score until the head is fitted), and nothing is checkpointed to resume from.
UNUSED_BY_THE_CONTRASTIVE_PHASE = (
    "eval_strategy",
    "save_strategy",
    "load_best_model_at_end",
    "metric_for_best_model",
    "resume_from_checkpoint",
)


def phase_arguments(training_args):
    """The run's TrainingArguments for the contrastive phase: no evaluation, no checkpoints, no best-epoch reload."""
    from transformers.trainer_utils import IntervalStrategy, SaveStrategy

    phase = copy.copy(training_args)
    phase.eval_strategy = IntervalStrategy.NO
    phase.save_strategy = SaveStrategy.NO
    phase.load_best_model_at_end = False
    return phase
