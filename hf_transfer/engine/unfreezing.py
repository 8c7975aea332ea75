"""Gradual unfreezing as a TrainerCallback whose state is a pure function of the global step.

- The optimizer is built once over all groups (hf_transfer.optim); unfreezing only flips
  `requires_grad` and BatchNorm mode, never adds param groups.
- Which groups train at step s depends only on s, so a run resumed from any checkpoint takes the
  same path as the uninterrupted one; nothing needs saving in the checkpoint.
- Under DDP the model is wrapped with every parameter trainable (so every parameter is in DDP's
  reducer) and frozen afterwards, in on_train_begin; frozen parameters are then simply unused,
  which `find_unused_parameters=True` allows. Unfrozen later, their gradients are all-reduced.
- Only parameters that were trainable when the callback was made ever thaw: on a peft-wrapped model
  that is the adapter and the head, never the base peft froze.
- Groups are bound by parameter name to the model training runs (`on_train_begin`): under FSDP2 every
  parameter is a new object after wrapping, and flipping the old ones would freeze nothing.
- BatchNorm statistics stay frozen in thawed groups too unless `update_bn_statistics` (see freezing).
- A group thawing mid-run re-warms its LR over the run's warm-up length unless `rewarm_steps` says otherwise: the
  first groups start under the run's warm-up, and a pretrained group that starts moving at the peak LR can wreck
  the features the fitted layers above it read (EfficientNet-Lite0 at 1e-3 diverged three steps after a thaw in
  every seed tried; estimating its Adam moments first at LR 0 did not prevent it, the re-warm did).
"""

from __future__ import annotations

import dataclasses
import math

from transformers import TrainerCallback

from ..errors import TransferError
from ..models.freezing import batchnorm_layers, freeze_batchnorm_statistics, set_group_trainable
from ..models.layer_groups import LayerGroup, bind, select_groups


@dataclasses.dataclass
class Phase:
    """From `at_epoch` (or `at_step`) on, the `unfreeze` groups (names, indices, regexes) train too, at `lr` if given."""

    unfreeze: list
    at_epoch: float | None = None
    at_step: int | None = None
    lr: float | None = None

    def __post_init__(self):
        if (self.at_epoch is None) == (self.at_step is None):
            raise TransferError(
                f"an unfreezing phase needs exactly one of at_epoch / at_step, got {dataclasses.asdict(self)}"
            )
        if isinstance(self.unfreeze, (str, int)):
            self.unfreeze = [self.unfreeze]


def default_phases(
    num_groups: int, epochs_per_phase: float = 1.0, head_fitted: bool = False, keep_frozen: int = 0
) -> list[Phase]:
    """ULMFiT's schedule: the head alone, then one more group from the output end every `epochs_per_phase`.

    `head_fitted`: the head-only phase already happened on cached features (LP-FT, Kumar et al. 2022), so the
    head and the top group train from step 0 and every later group thaws one phase earlier. The first
    `keep_frozen` groups never thaw.
    """
    order = list(range(num_groups - 1, -1, -1))  # output end first
    starts = [[i] for i in order]
    if head_fitted and num_groups > 1:
        starts = [[order[0], order[1]], *[[i] for i in order[2:]]]
    phases = [
        Phase(unfreeze=[i for i in members if i >= keep_frozen], at_epoch=n * epochs_per_phase)
        for n, members in enumerate(starts)
    ]
    return [p for p in phases if p.unfreeze]


class GradualUnfreezing(TrainerCallback):
    def __init__(
        self,
        groups: list[LayerGroup],
        phases: list[Phase | dict] | None = None,
        train_bn: bool = False,
        rewarm_steps: int | None = None,
        update_bn_statistics: bool = False,
    ):
        self.groups = groups
        self.phases = [p if isinstance(p, Phase) else Phase(**p) for p in (phases or default_phases(len(groups)))]
        self.train_bn = train_bn
        self.update_bn_statistics = update_bn_statistics
        self.rewarm_steps = rewarm_steps  # as asked; None: the run's warm-up length, known in resolve()
        self.rewarm_length = rewarm_steps  # what resolve() settled on (the asked value is kept for a second run)
        self.eligible = {
            name for g in groups for name, p in g.parameters.items() if p.requires_grad
        }  # names: see bind()
        if len(self.eligible) != sum(len(g) for g in groups):
            frozen = sum(p.numel() for g in groups for name, p in g.parameters.items() if name not in self.eligible)
            print(
                f"gradual unfreezing: {frozen:,} parameters were frozen before it started (e.g. a peft base) and stay frozen; "
                "only the adapter / trainable parameters of each group thaw"
            )
        index = {id(g): i for i, g in enumerate(groups)}
        self._phase_groups = [[index[id(g)] for g in select_groups(groups, p.unfreeze)] for p in self.phases]
        self.start_step: list[int | None] | None = None  # per group, once the step count is known
        self._trainable: list[bool] | None = None
        self._batchnorms: list = []  # the model's BatchNorm layers, found in on_train_begin
        for group in groups:  # everything eligible trainable until training starts (DDP must see every parameter)
            set_group_trainable(group, True, eligible=self.eligible)

    def bind(self, model) -> None:
        """Act on `model`'s live parameters (the wrapped model training runs), matched by name."""
        self.groups = bind(self.groups, model)

    def eligible_ids(self) -> set[int]:
        return {id(p) for g in self.groups for name, p in g.parameters.items() if name in self.eligible}

    # -------------------------------------------------------------- the schedule

    def group_lrs(self, default_lrs: list[float]) -> list[float]:
        """Base LR per group: the phase's `lr` for the groups it unfreezes, else the discriminative default."""
        lrs = list(default_lrs)
        for phase, members in zip(self.phases, self._phase_groups):
            if phase.lr is not None:
                for i in members:
                    lrs[i] = phase.lr
        return lrs

    def resolve(self, num_training_steps: int, steps_per_epoch: int, warmup_steps: int = 0) -> None:
        """Turn at_epoch into steps (optimizer steps per epoch, so it holds with --max_steps too); the first
        phase that names a group decides when it thaws. `warmup_steps`: the run's, the default re-warm length."""
        self.rewarm_length = warmup_steps if self.rewarm_steps is None else self.rewarm_steps
        start: list[int | None] = [None] * len(self.groups)
        for phase, members in zip(self.phases, self._phase_groups):
            step = phase.at_step if phase.at_step is not None else int(round(phase.at_epoch * steps_per_epoch))
            for i in members:
                start[i] = step if start[i] is None else min(start[i], step)
        self.start_step = start

    def trainable_at(self, step: int) -> list[bool]:
        return [s is not None and step >= s for s in self.start_step]

    def lr_multiplier(self, group_index: int, base_schedule, trains_while_frozen: bool = False):
        """The group's LR multiplier: 0 while frozen, then the base schedule (re-warmed over rewarm_length).

        `trains_while_frozen`: BatchNorm affine parameters under train_bn follow the base schedule from step 0.
        """

        def multiplier(step: int) -> float:
            if trains_while_frozen:
                return base_schedule(step)
            start = self.start_step[group_index]
            if start is None or step < start:
                return 0.0
            warm = min(1.0, (step - start + 1) / self.rewarm_length) if self.rewarm_length and start > 0 else 1.0
            return base_schedule(step) * warm

        return multiplier

    # -------------------------------------------------------------- applying it

    def apply(self, step: int) -> None:
        wanted = self.trainable_at(step)
        for i, (group, trainable) in enumerate(zip(self.groups, wanted)):
            if self._trainable is None or self._trainable[i] != trainable:
                set_group_trainable(
                    group,
                    trainable,
                    train_bn=self.train_bn,
                    update_bn_statistics=self.update_bn_statistics,
                    batchnorms=self._batchnorms,
                    eligible=self.eligible,
                )
        self._trainable = wanted

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if self.start_step is None:  # a plain Trainer; TransferTrainer resolves before building its scheduler
            steps_per_epoch = (
                math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
                if train_dataloader is not None
                else state.max_steps
            )
            self.resolve(state.max_steps, max(1, steps_per_epoch))
        if args.world_size > 1 and args.ddp_find_unused_parameters is False:
            raise TransferError(
                "gradual unfreezing under DDP needs ddp_find_unused_parameters=True (frozen layers get no gradient)"
            )
        if model is not None:
            self.bind(model)
        self._batchnorms = batchnorm_layers(model) if model is not None else []
        if model is not None and not self.update_bn_statistics:
            freeze_batchnorm_statistics(self._batchnorms)
        self._trainable = None
        self.apply(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self.apply(state.global_step)
