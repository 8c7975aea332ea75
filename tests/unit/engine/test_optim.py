"""Discriminative LRs are absolute per-group LRs that every Trainer scheduler respects."""

import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from hf_transfer.engine.optim import build_optimizer, discriminative_lrs, slanted_triangular
from hf_transfer.errors import TransferError
from hf_transfer.models.layer_groups import layer_groups


def tiny_bert():
    return BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20)
    )


def test_factor_and_explicit_lrs():
    assert discriminative_lrs(3, 1e-3, factor=10) == pytest.approx([1e-5, 1e-4, 1e-3])
    assert discriminative_lrs(2, 1e-3, lrs=[1, 2]) == [1.0, 2.0]
    with pytest.raises(TransferError, match="3 learning rates given for 2 layer groups"):
        discriminative_lrs(2, 1e-3, lrs=[1, 2, 3])


def test_a_range_spreads_the_body_geometrically_and_keeps_the_head_apart():
    lrs = discriminative_lrs(5, head_lr=1e-3, body_lr=1e-4, lowest_lr=1e-6)  # four body groups, then the head
    assert lrs == pytest.approx([1e-6, 1e-6 * 100 ** (1 / 3), 1e-6 * 100 ** (2 / 3), 1e-4, 1e-3])
    assert discriminative_lrs(4, head_lr=1e-3, body_lr=1e-4) == pytest.approx([1e-4, 1e-4, 1e-4, 1e-3])
    assert discriminative_lrs(4, head_lr=1e-3, body_lr=1e-4, factor=10) == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3])
    with pytest.raises(TransferError, match="at most the top block's"):
        discriminative_lrs(4, head_lr=1e-3, body_lr=1e-4, lowest_lr=1e-3)


def test_param_groups_carry_absolute_lrs_and_no_decay_on_biases_and_norms():
    model = tiny_bert()
    groups = layer_groups(model)
    lrs = discriminative_lrs(len(groups), 1e-3, factor=2.6)
    optimizer = build_optimizer(groups, lrs, weight_decay=0.1)
    assert sum(len(pg["params"]) for pg in optimizer.param_groups) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    for pg in optimizer.param_groups:
        assert pg["lr"] == pytest.approx(lrs[pg["layer_group_index"]])
        for p in pg["params"]:
            name = names[id(p)]
            no_decay = name.endswith(".bias") or "LayerNorm" in name
            assert pg["weight_decay"] == (0.0 if no_decay else 0.1), name


@pytest.mark.parametrize("scheduler", ["linear", "cosine"])
def test_plain_trainer_scheduler_scales_every_group_from_its_own_base_lr(tmp_path, scheduler):
    model = tiny_bert()
    groups = layer_groups(model)
    lrs = discriminative_lrs(len(groups), 1e-3, factor=10)
    optimizer = build_optimizer(groups, lrs)
    data = [{"input_ids": torch.randint(0, 50, (6,)), "labels": torch.tensor(i % 2)} for i in range(16)]
    args = TrainingArguments(
        str(tmp_path),
        max_steps=8,
        per_device_train_batch_size=2,
        warmup_steps=2,
        lr_scheduler_type=scheduler,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    seen = []
    trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None))
    original_step = optimizer.step

    def step(*a, **k):
        seen.append([pg["lr"] for pg in optimizer.param_groups])
        return original_step(*a, **k)

    optimizer.step = step
    trainer.train()
    schedule = trainer.lr_scheduler.lr_lambdas[0]
    for step_index in (0, 1, 3, 7):
        multiplier = schedule(step_index)
        for pg, lr in zip(optimizer.param_groups, seen[step_index]):
            assert lr == pytest.approx(lrs[pg["layer_group_index"]] * multiplier), (step_index, pg["layer_group"])
    assert len({round(math.log10(lrs[i])) for i in range(len(lrs))}) == len(lrs)


def test_slanted_triangular_rises_then_decays():
    f = slanted_triangular(100, cut_frac=0.1, ratio=32)
    assert f(0) == pytest.approx(1 / 32) and f(10) == pytest.approx(1.0)
    assert f(5) > f(0) and f(50) < f(10) and f(100) == pytest.approx(1 / 32)
