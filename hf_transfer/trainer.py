"""`Trainer` with the toolkit's optimizer rules.

- No weight decay on biases or any norm (BatchNorm included).
- Optional layer groups with absolute per-group LRs (discriminative / layer-wise), the optimizer
  built once over all of them.
- Optional gradual unfreezing: each group's LR multiplier is 0 until its phase, then Trainer's own
  schedule (linear, cosine, ... with warmup) or ULMFiT's slanted triangular one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Trainer, get_scheduler


def decays(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay only on weight matrices / kernels: never on biases, norm scales or other 1-D parameters."""
    return parameter.ndim > 1 and not name.endswith(".bias")


def base_schedule(trainer_args, num_training_steps: int, schedule: str | None = None):
    """Trainer's LR multiplier as a function of the step (one of its scheduler types, or slanted_triangular)."""
    from .optim import slanted_triangular

    if schedule == "slanted_triangular":
        return slanted_triangular(num_training_steps)
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_scheduler(trainer_args.lr_scheduler_type, probe, num_warmup_steps=trainer_args.get_warmup_steps(num_training_steps),
                              num_training_steps=num_training_steps, scheduler_specific_kwargs=trainer_args.lr_scheduler_kwargs)
    if not hasattr(scheduler, "lr_lambdas"):
        raise ValueError(f"lr_scheduler_type '{trainer_args.lr_scheduler_type}' is not a per-step multiplier: use linear, cosine, constant_with_warmup, ...")
    return scheduler.lr_lambdas[0]


class TransferTrainer(Trainer):
    def __init__(self, *args, layer_groups=None, group_lrs: list[float] | None = None, unfreezing=None, schedule: str | None = None, **kwargs):
        self.layer_groups = layer_groups
        self.group_lrs = group_lrs
        self.unfreezing = unfreezing
        self.schedule = schedule
        if unfreezing is not None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), unfreezing]
        super().__init__(*args, **kwargs)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return [name for name, parameter in model.named_parameters() if decays(name, parameter)]

    def create_optimizer(self, model=None):
        if self.layer_groups is None or self.optimizer is not None:
            return super().create_optimizer(model)
        from .optim import build_optimizer

        lrs = self.unfreezing.group_lrs(self.group_lrs) if self.unfreezing is not None else self.group_lrs
        self.optimizer = build_optimizer(self.layer_groups, lrs, self.args.weight_decay,
                                         betas=(self.args.adam_beta1, self.args.adam_beta2), eps=self.args.adam_epsilon)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is not None or (self.unfreezing is None and self.schedule is None):
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer or self.optimizer
        schedule = base_schedule(self.args, num_training_steps, self.schedule)
        if self.unfreezing is None:
            lambdas = schedule
        else:
            self.unfreezing.resolve(num_training_steps, self.args.num_train_epochs)
            lambdas = [self.unfreezing.lr_multiplier(pg["layer_group_index"], schedule) for pg in optimizer.param_groups]
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        self._created_lr_scheduler = True
        return self.lr_scheduler
