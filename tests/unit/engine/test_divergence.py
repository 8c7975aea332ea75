"""The divergence guard: an exploding or non-finite loss puts the last good weights back and lowers the learning rates."""

import math
import types

import pytest
import torch
from transformers import TrainerControl, TrainerState

from hf_transfer.engine.divergence import DivergenceGuard


def setup(chance_loss=math.log(2)):
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    guard = DivergenceGuard(chance_loss)
    state, control = TrainerState(), TrainerControl()
    args = types.SimpleNamespace(device=torch.device("cpu"), learning_rate=1e-2)
    guard.on_train_begin(args, state, control, model=model, optimizer=optimizer)
    return model, optimizer, schedule, guard, state, control, args


def step(guard, loss, model, optimizer, schedule, state, control, args, corrupt=False):
    state.global_step += 1
    if corrupt:  # what a diverging update does to the weights
        with torch.no_grad():
            model.weight.add_(100.0)
    guard.observe(torch.tensor(loss))
    guard.on_step_end(args, state, control, model=model, optimizer=optimizer, lr_scheduler=schedule)


def test_an_exploding_loss_restores_the_last_good_weights_and_halves_the_learning_rates():
    model, optimizer, schedule, guard, state, control, args = setup()
    for loss in (0.6, 0.5, 0.4, 0.35, 0.3):
        step(guard, loss, model, optimizer, schedule, state, control, args)
    guard.on_epoch_end(args, state, control, model=model, optimizer=optimizer)  # a healthy epoch: kept
    good = model.weight.detach().clone()
    step(guard, 2.5, model, optimizer, schedule, state, control, args, corrupt=True)  # one spike: patience
    assert guard.events == [] and not torch.equal(model.weight, good)
    step(guard, 3.0, model, optimizer, schedule, state, control, args, corrupt=True)
    assert torch.equal(model.weight, good)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-3) and schedule.base_lrs == [pytest.approx(3e-3)]
    assert guard.summary()["divergence_restores"] == 1 and guard.events[0]["restored_step"] == 5


def test_a_non_finite_loss_restores_at_once_and_noise_below_chance_does_not():
    model, optimizer, schedule, guard, state, control, args = setup()
    for loss in (0.05, 0.04, 0.03, 0.5, 0.6, 0.04):  # 10x jumps, but below the loss of guessing (ln 2)
        step(guard, loss, model, optimizer, schedule, state, control, args)
    assert guard.events == []
    start = model.weight.detach().clone()
    step(guard, float("nan"), model, optimizer, schedule, state, control, args, corrupt=True)
    assert torch.equal(model.weight, start) and guard.summary()["divergence_restores"] == 1


def test_training_stops_after_the_last_allowed_restore():
    model, optimizer, schedule, guard, state, control, args = setup()
    for _ in range(guard.max_restores + 1):
        step(guard, float("inf"), model, optimizer, schedule, state, control, args)
    assert control.should_training_stop and guard.events[-1]["action"] == "stopped"


def test_a_collapse_back_to_guessing_counts_even_without_an_explosion():
    model, optimizer, schedule, guard, state, control, args = setup(chance_loss=math.log(2))
    for loss in (0.3, 0.25, 0.2, 0.2):  # it had learned: under half the loss of guessing
        step(guard, loss, model, optimizer, schedule, state, control, args)
    for loss in (0.7, 0.71):  # 3.5x its level (under the explosion factor), but no better than a coin
        step(guard, loss, model, optimizer, schedule, state, control, args)
    assert guard.summary()["divergence_restores"] == 1
    assert json_safe(guard.summary())


def json_safe(summary):
    import json

    return json.loads(json.dumps(summary, allow_nan=False))
