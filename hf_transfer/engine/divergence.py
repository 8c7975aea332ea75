"""A guard against training that diverges: a non-finite loss, or a loss far above its own running level, restores
the last good weights and lowers every learning rate, instead of training on at chance.

The step loss is compared with the median of the last healthy steps: `patience` consecutive steps above `factor`
times that level (and above the loss of guessing, for classification), or back at the loss of guessing after the
level had fallen to half of it (a collapse to chance), count as divergence, as does one non-finite loss. Weights
(the parameters the optimizer updates, and buffers such as BatchNorm statistics) and the optimizer's state are
kept, in host memory, at the start and at the end of every epoch that ended healthy; on divergence both are put
back and every learning rate (the schedule's base rates with it) is multiplied by `lr_factor`, warming up again
from zero over the run's warm-up length or one epoch, whichever is longer: the moments put back may be those of
the first step (none), and a fresh Adam's first steps move every weight by the full learning rate, which
mid-schedule is itself a shock. Every checkpoint carries the guard's state (and its snapshot where that is not
the checkpoint's own state), so a resumed run restores and warms up as the uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import statistics

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from .. import defaults

STATE_FILE = "divergence_guard.json"  # in each checkpoint folder, beside trainer_state.json
SNAPSHOT_FILE = "divergence_guard_snapshot-rank{rank}.safetensors"  # each rank's own: FSDP snapshots hold shards
OPTIMIZER_SNAPSHOT_FILE = "divergence_guard_optimizer-rank{rank}.pt"


def _to_host(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    return value


def _say(state, line: str) -> None:
    if state.is_world_process_zero:  # every rank restores alike; one line per run
        print(line)


class DivergenceGuard(TrainerCallback):
    def __init__(
        self,
        chance_loss: float | None,
        *,
        factor: float = defaults.DIVERGENCE_FACTOR,
        patience: int = 2,
        window: int = 20,
        lr_factor: float = defaults.DIVERGENCE_LR_FACTOR,
        max_restores: int = 3,
    ):
        self.chance_loss, self.factor, self.patience, self.window = chance_loss, factor, patience, window
        self.lr_factor, self.max_restores = lr_factor, max_restores
        self.events: list[dict] = []
        self._healthy: list[float] = []
        self._pending = 0.0
        self._strikes = 0
        self._snapshot: dict | None = None  # weights, and the optimizer's state beside them
        self._optimizer_state: dict | None = None
        self._snapshot_step = 0
        self._initial_lr = 0.0
        self._rewarms: list[dict] = []  # each restore's re-warm ramp: {"start": step, "length": steps}

    # --- fed by TransferTrainer.training_step: the loss of every micro-batch, already divided for accumulation
    def observe(self, loss: torch.Tensor) -> None:
        self._pending = self._pending + loss.detach().float()

    def level(self) -> float | None:
        return statistics.median(self._healthy[-self.window :]) if len(self._healthy) >= 3 else None

    def _step_loss(self, device) -> float:
        loss, self._pending = self._pending, 0.0
        loss = torch.as_tensor(loss, dtype=torch.float32)
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # every rank decides alike
            loss = loss.to(device)
            torch.distributed.all_reduce(loss)
            loss = loss / torch.distributed.get_world_size()
        return float(loss)

    def _is_bad(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        level = self.level()
        if level is None:
            return False
        if self.chance_loss is not None and level <= self.chance_loss / 2 and loss >= self.chance_loss:
            return True  # it had learned, and now guesses
        return loss > self.factor * level and (self.chance_loss is None or loss > self.chance_loss)

    def _take_snapshot(self, model, optimizer, step: int) -> None:
        updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self._snapshot = {
            name: value.detach().to("cpu", copy=True)
            for name, value in [*model.named_parameters(), *model.named_buffers()]
            if id(value) in updated or not isinstance(value, torch.nn.Parameter)
        }
        self._optimizer_state = _to_host(getattr(optimizer, "optimizer", optimizer).state_dict())
        self._snapshot_step = step

    def _restore(self, model, optimizer, lr_scheduler, args=None, state=None) -> None:
        live = dict([*model.named_parameters(), *model.named_buffers()])
        with torch.no_grad():
            for name, value in self._snapshot.items():
                live[name].copy_(value.to(live[name].device))
        inner = getattr(optimizer, "optimizer", optimizer)
        rates = [group["lr"] for group in inner.param_groups]
        inner.load_state_dict(self._optimizer_state)  # moves the state back to each parameter's device
        for group, rate in zip(inner.param_groups, rates):
            group["lr"] = rate * self.lr_factor
        schedule = getattr(lr_scheduler, "scheduler", lr_scheduler)
        if hasattr(schedule, "base_lrs"):
            schedule.base_lrs = [lr * self.lr_factor for lr in schedule.base_lrs]
        if hasattr(schedule, "lr_lambdas") and state is not None and state.max_steps:
            epoch = math.ceil(state.max_steps / max(state.num_train_epochs, 1))
            ramp = {"start": state.global_step, "length": max(args.get_warmup_steps(state.max_steps), epoch, 2)}
            self._rewarms.append(ramp)
            self._rewarm_schedule(lr_scheduler, ramp)
            for group, base, rule in zip(inner.param_groups, schedule.base_lrs, schedule.lr_lambdas):
                group["lr"] = base * rule(schedule.last_epoch)  # the next step is the warm-up's first

    @staticmethod
    def _rewarm_schedule(lr_scheduler, ramp: dict) -> None:
        """Every rate of the schedule times a ramp from zero over `length` steps from `start`."""
        schedule = getattr(lr_scheduler, "scheduler", lr_scheduler)
        start, length = ramp["start"], ramp["length"]
        schedule.lr_lambdas = [
            (lambda step, inner=f: inner(step) * min(1.0, max(step - start + 1, 0) / length))
            for f in schedule.lr_lambdas
        ]

    # --- checkpoints: what the guard knows travels with them, so a resumed run decides as the uninterrupted one
    def save(self, folder: str, step: int, rank: int = 0) -> None:
        """Into a checkpoint folder: the guard's state, and its last good weights and optimizer state when they are
        not the checkpoint's own (the epoch ended mid-spike, or a restore went back past it)."""
        state = {
            "events": self.events,
            "healthy": self._healthy[-self.window :],
            "strikes": self._strikes,
            "snapshot_step": self._snapshot_step,
            "rewarms": self._rewarms,
        }
        if rank == 0:  # every rank decides alike: one state
            with open(os.path.join(folder, STATE_FILE), "w") as file:
                json.dump(state, file)
        if self._snapshot is not None and self._snapshot_step != step:
            snapshot = {k: v.contiguous() for k, v in self._snapshot.items()}
            save_file(snapshot, os.path.join(folder, SNAPSHOT_FILE.format(rank=rank)))
            torch.save(self._optimizer_state, os.path.join(folder, OPTIMIZER_SNAPSHOT_FILE.format(rank=rank)))

    def load(self, folder: str, rank: int = 0) -> None:
        """Before training resumes from `folder`. The schedule loaded from the checkpoint has its lowered base rates,
        and gets its re-warm ramp back at on_train_begin (a checkpoint stores a schedule's numbers, not its functions)."""
        path = os.path.join(folder, STATE_FILE)
        if not os.path.isfile(path):  # a checkpoint written before the guard saved its state
            return
        with open(path) as file:
            state = json.load(file)
        self.events, self._healthy, self._strikes = state["events"], state["healthy"], state["strikes"]
        self._snapshot_step, self._rewarms = state["snapshot_step"], state["rewarms"]
        snapshot = os.path.join(folder, SNAPSHOT_FILE.format(rank=rank))
        if os.path.isfile(snapshot):
            self._snapshot = load_file(snapshot)
            optimizer = os.path.join(folder, OPTIMIZER_SNAPSHOT_FILE.format(rank=rank))
            self._optimizer_state = torch.load(optimizer, weights_only=True)

    # --- Trainer callbacks
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if optimizer is not None and self._snapshot is None:  # a resumed run keeps the snapshot its checkpoint carried
            self._take_snapshot(model, optimizer, state.global_step)
        if self._rewarms and hasattr(getattr(lr_scheduler, "scheduler", lr_scheduler), "lr_lambdas"):
            for (
                ramp
            ) in self._rewarms:  # a resumed run: as the uninterrupted one wrapped its schedule, once per restore
                self._rewarm_schedule(lr_scheduler, ramp)
        self._initial_lr = args.learning_rate

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        loss = self._step_loss(args.device)
        if not self._is_bad(loss):
            self._strikes = 0
            self._healthy.append(loss)
            return
        self._strikes += 1
        if math.isfinite(loss) and self._strikes < self.patience:
            return
        level = self.level()
        self._strikes = 0
        if self._snapshot is None:
            return
        if len(self.events) >= self.max_restores:
            self._restore(model, optimizer, lr_scheduler, args, state)
            control.should_training_stop = True
            self.events.append(
                {
                    "step": state.global_step,
                    "loss": loss,
                    "level": level,
                    "restored_step": self._snapshot_step,
                    "action": "stopped",
                }
            )
            _say(
                state,
                f"training diverged again at step {state.global_step} (loss {loss:.3g}) after {self.max_restores} restores: "
                f"stopped with the weights of step {self._snapshot_step}; try a learning rate well below "
                f"{self._initial_lr:.2g}; recorded in all_results.json",
            )
            return
        self._restore(model, optimizer, lr_scheduler, args, state)
        rates = sorted(
            {lr for lr in getattr(getattr(lr_scheduler, "scheduler", lr_scheduler), "base_lrs", []) if lr > 0}
        )
        self.events.append(
            {
                "step": state.global_step,
                "loss": loss,
                "level": level,
                "restored_step": self._snapshot_step,
                "lr_factor": self.lr_factor,
            }
        )
        why = (
            "not finite"
            if not math.isfinite(loss)
            else f"{loss / level:.1f}x its running level {level:.3g}"
            if loss > self.factor * level
            else f"back at the loss of guessing {self.chance_loss:.3g} from {level:.3g}"
        )
        _say(
            state,
            f"training diverged at step {state.global_step} (loss {loss:.3g}, {why}): restored the weights of step "
            f"{self._snapshot_step} and multiplied every learning rate by {self.lr_factor:g} (peak now "
            f"{', '.join(f'{r:.2g}' for r in rates[-3:])}, warming up again); recorded in all_results.json",
        )

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if optimizer is not None and self._strikes == 0:
            self._take_snapshot(model, optimizer, state.global_step)

    @staticmethod
    def _json_number(value: float | None):
        return value if value is None or math.isfinite(value) else str(value)  # JSON has no NaN / Infinity

    def summary(self) -> dict:
        """What all_results.json records: how many times training was restored, and each event."""
        restores = sum("action" not in e for e in self.events)
        return {
            "divergence_restores": restores,
            "divergence_stopped": any("action" in e for e in self.events),
            "divergence_events": [
                {k: self._json_number(v) if k in ("loss", "level") else v for k, v in event.items()}
                for event in self.events
            ],
        }
