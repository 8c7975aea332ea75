"""`Trainer` with the toolkit's optimizer rules.

- No weight decay on biases or any norm (BatchNorm included).
- Optional layer groups with absolute per-group LRs (discriminative / layer-wise), the optimizer
  built once over all of them, from the model Trainer hands over (groups bound to it by parameter name,
  so DDP / FSDP wrappers are seen through) with Trainer's `--optim` / `--optim_args`.
- Optional gradual unfreezing: each group's LR multiplier is 0 until its phase, then Trainer's own
  schedule (linear, cosine, ... with warmup) or ULMFiT's slanted triangular one.
- Every layer group's LR in the logs (`learning_rate/<group>`); `learning_rate` is the body's highest.
- Checkpoints (the best epoch, `--resume_from_checkpoint`) loaded back under the model's current weight names,
  every weight or an error: `Trainer`'s own reload skips the weights transformers 5 renamed (see checkpoint_loading).
- A divergence guard (`divergence`): a non-finite or exploding loss restores the last good weights and lowers the
  learning rates instead of training on at chance; what it knows is saved in every checkpoint and read back on resume.
- Best-checkpoint selection that breaks ties on the selection metric by validation loss: on a small
  validation set several epochs often share the top accuracy, and keeping the first of them can throw
  away every later phase of a schedule.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, get_scheduler

from ..models.architectures import decays
from .divergence import DivergenceGuard


def base_schedule(trainer_args, num_training_steps: int, schedule: str | None = None):
    """Trainer's LR multiplier as a function of the step (one of its scheduler types, or slanted_triangular)."""
    from .optim import slanted_triangular

    if schedule == "slanted_triangular":
        return slanted_triangular(num_training_steps)
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_scheduler(
        trainer_args.lr_scheduler_type,
        probe,
        num_warmup_steps=trainer_args.get_warmup_steps(num_training_steps),
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=trainer_args.lr_scheduler_kwargs,
    )
    if not hasattr(scheduler, "lr_lambdas"):
        raise ValueError(
            f"lr_scheduler_type '{trainer_args.lr_scheduler_type}' is not a per-step multiplier: use linear, cosine, constant_with_warmup, ..."
        )
    return scheduler.lr_lambdas[0]


class TransferTrainer(Trainer):
    def __init__(
        self,
        *args,
        layer_groups=None,
        group_lrs: list[float] | None = None,
        unfreezing=None,
        schedule: str | None = None,
        chance_loss: float | str | None = "labels",
        **kwargs,
    ):
        """`chance_loss`: the loss of guessing, under which a high loss is not divergence (DivergenceGuard);
        "labels": the cross-entropy of a uniform guess over the model's labels; None: no such floor."""
        self.layer_groups = layer_groups
        self.group_lrs = group_lrs
        self.unfreezing = unfreezing
        self.schedule = schedule
        if unfreezing is not None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), unfreezing]
        if chance_loss == "labels":
            num_labels = getattr(getattr(kwargs.get("model"), "config", None), "num_labels", None)
            chance_loss = math.log(num_labels) if num_labels and num_labels > 1 else None
        self.divergence_guard = DivergenceGuard(chance_loss)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.divergence_guard]
        super().__init__(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.divergence_guard.observe(loss)
        return loss

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return [name for name, parameter in model.named_parameters() if decays(name, parameter)]

    def create_optimizer(self, model=None):
        if self.layer_groups is None or self.optimizer is not None:
            return super().create_optimizer(model)
        from ..models.freezing import batchnorm_parameter_ids
        from ..models.layer_groups import bind
        from .optim import build_optimizer

        model = (
            self.model if model is None else model
        )  # under FSDP1, the wrapped model: groups are bound to it by name
        self.layer_groups = bind(self.layer_groups, model)
        if self.unfreezing is not None:
            self.unfreezing.bind(model)
        lrs = self.unfreezing.group_lrs(self.group_lrs) if self.unfreezing is not None else self.group_lrs
        train_bn = self.unfreezing is not None and self.unfreezing.train_bn
        trains_while_frozen = batchnorm_parameter_ids(model) & self.unfreezing.eligible_ids() if train_bn else set()
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(
            self.args, model
        )  # honours --optim / --optim_args
        self.optimizer = build_optimizer(
            self.layer_groups, lrs, self.args.weight_decay, optimizer_class, trains_while_frozen, **optimizer_kwargs
        )
        return self.optimizer

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[
            1
        ]  # optimizer steps per epoch, whether the run is bounded by epochs or --max_steps
        return values

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is not None or (self.unfreezing is None and self.schedule is None):
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer or self.optimizer
        schedule = base_schedule(self.args, num_training_steps, self.schedule)
        if self.unfreezing is None:
            lambdas = schedule
        else:
            steps_per_epoch = getattr(self, "_steps_per_epoch", None) or math.ceil(
                num_training_steps / max(self.args.num_train_epochs, 1e-9)
            )
            self.unfreezing.resolve(
                num_training_steps, steps_per_epoch, self.args.get_warmup_steps(num_training_steps)
            )
            lambdas = [
                self.unfreezing.lr_multiplier(pg["layer_group_index"], schedule, pg.get("trains_while_frozen", False))
                for pg in optimizer.param_groups
            ]
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "learning_rate" in logs and self.layer_groups is not None and self.optimizer is not None:
            logs.update(self.group_learning_rates())
        super().log(logs, start_time)

    def group_learning_rates(self) -> dict[str, float]:
        """Every layer group's current LR as `learning_rate/<group>`, and as `learning_rate` the body's highest.

        Trainer logs the first param group's LR: the embeddings', which under gradual unfreezing stays 0 until
        they thaw, so a run that trains well would log a learning rate of 0.
        """
        rates: dict[str, float] = {}
        body = []
        for param_group in self.optimizer.param_groups:
            index = param_group.get("layer_group_index")
            if index is None or param_group.get("trains_while_frozen", False):
                continue  # an optimizer the user built, or BatchNorm affine parameters trained while their group is frozen
            rates.setdefault(f"learning_rate/{self.layer_groups[index].name}", param_group["lr"])
            if index < len(self.layer_groups) - 1:
                body.append(param_group["lr"])
        if body:
            rates["learning_rate"] = max(body)
        return rates

    def _loads_weights_itself(self, model) -> bool:
        """Whole-model weights saved by `save_pretrained`; DeepSpeed, FSDP and adapters keep Trainer's own loaders."""
        return isinstance(model, PreTrainedModel) and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if (self.args.load_best_model_at_end or resume_from_checkpoint) and self._loads_weights_itself(self.model):
            from .checkpoint_loading import saved_to_live_names

            saved_to_live_names(
                self.model
            )  # a model whose checkpoints cannot be read back is refused before training, not after
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Beside the optimizer and schedule in each checkpoint (so before Trainer pushes one): the guard's state, and
        each rank's snapshot of its own weights where the guard holds one that is not the checkpoint's."""
        super()._save_optimizer_and_scheduler(output_dir)
        self.divergence_guard.save(output_dir, self.state.global_step, rank=self.args.process_index)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """On resume (the checkpoint Trainer resolved), before on_train_begin: the guard's state back too."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.divergence_guard.load(checkpoint, rank=self.args.process_index)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from .checkpoint_loading import load_checkpoint

        model = self.model if model is None else model
        if not (self._loads_weights_itself(model) and load_checkpoint(model, resume_from_checkpoint)):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        from .checkpoint_loading import load_checkpoint

        if not (
            self._loads_weights_itself(self.model) and load_checkpoint(self.model, self.state.best_model_checkpoint)
        ):
            super()._load_best_model()

    def _determine_best_metric(self, metrics, trial) -> bool:
        """Trainer's rule (strictly better wins), plus: a tie on the metric goes to the lower validation loss."""
        previous_best, previous_step = self.state.best_metric, self.state.best_global_step
        if super()._determine_best_metric(metrics, trial):
            return True
        name = self.args.metric_for_best_model or ""
        name = name if name.startswith("eval_") else f"eval_{name}"
        if (
            previous_best is None
            or name == "eval_loss"
            or metrics.get(name) != previous_best
            or "eval_loss" not in metrics
        ):
            return False
        best_loss = next(
            (
                entry["eval_loss"]
                for entry in reversed(self.state.log_history)
                if entry.get("step") == previous_step and "eval_loss" in entry
            ),
            None,
        )
        if best_loss is None or not np.less(metrics["eval_loss"], best_loss):
            return False
        self.state.best_global_step = self.state.global_step
        return True
