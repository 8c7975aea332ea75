"""Fine-tuning with cross-entropy and a supervised contrastive loss together (Gunel et al. 2021, "Supervised
Contrastive Learning for Pre-trained Language Model Fine-tuning"): while the classifier trains, the features its head
reads are pulled together within a class and apart across classes over every pair of the batch. Off by default: on
the bundled few-shot text sets it helped one and hurt the other (docs/results/fewshot.md).
"""

from __future__ import annotations

import dataclasses
import math

from .. import defaults
from ..engine.trainer import TransferTrainer
from ..errors import TransferError
from ..features.extraction import capturing_inputs, new_head
from .losses import supervised_contrastive


@dataclasses.dataclass
class SupConArguments:
    supcon_weight: float = dataclasses.field(
        default=defaults.FULL_FINETUNE_SUPCON_WEIGHT,
        metadata={
            "help": "weight w of a supervised contrastive loss on the head's input features: the run minimises "
            "(1 - w) * cross-entropy + w * SupCon (Gunel et al. 2021; their few-shot setting: 0.9); 0: off"
        },
    )
    supcon_temperature: float = dataclasses.field(
        default=defaults.SUPCON_TEMPERATURE,
        metadata={"help": "softmax temperature of that loss over cosine similarities"},
    )

    def check(self, args) -> None:
        if not 0 <= self.supcon_weight < 1:
            raise TransferError(
                f"--supcon_weight {self.supcon_weight:g}: must be at least 0 and below 1 (at 1 the head never trains)"
            )
        if self.supcon_temperature <= 0:
            raise TransferError(f"--supcon_temperature {self.supcon_temperature:g}: must be above 0")
        if self.supcon_weight == 0 and "supcon_temperature" in args.explicit:
            print("--supcon_temperature: not used, --supcon_weight 0 turns the contrastive loss off")


class SupConFineTuningTrainer(TransferTrainer):
    """Trains on (1 - weight) * cross-entropy + weight * SupCon of the head's input features; evaluation and the
    loss reported for validation are cross-entropy alone."""

    def __init__(self, *args, supcon_weight: float, temperature: float, **kwargs):
        super().__init__(*args, **kwargs)
        guard = self.divergence_guard
        if supcon_weight and guard.chance_loss is not None:
            # The floor under which a high loss is not divergence: the joint loss of guessing (uniform logits,
            # identical features, so SupCon is log(batch - 1)).
            batch = max(3, self.args.per_device_train_batch_size)
            guard.chance_loss = (1 - supcon_weight) * guard.chance_loss + supcon_weight * math.log(batch - 1)
        if supcon_weight and self.args.n_gpu > 1:
            raise TransferError(
                "--supcon_weight: torch DataParallel splits each batch over GPUs, so no replica sees the whole batch; "
                "run with `accelerate launch` (one process per GPU) or --supcon_weight 0"
            )
        self.supcon_weight, self.temperature = supcon_weight, temperature
        try:
            self.head = new_head(self.model) if supcon_weight else None
        except TransferError as exc:
            raise TransferError(f"--supcon_weight needs the features the head reads: {exc}") from None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not (model.training and self.supcon_weight):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]  # read first: a label smoother pops it from inputs
        with capturing_inputs(self.head) as captured:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        contrastive = supervised_contrastive(captured[-1].flatten(1), labels, self.temperature)
        loss = (1 - self.supcon_weight) * loss + self.supcon_weight * contrastive
        return (loss, outputs) if return_outputs else loss
