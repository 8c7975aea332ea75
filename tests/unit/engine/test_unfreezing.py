"""Gradual unfreezing: frozen really is frozen, thawed layers learn, resume is exact, DDP ranks agree."""

import json

import pytest
import torch
from conftest import run_on_two_ranks
from safetensors.torch import load_file

import recipes.gradual_unfreeze as gradual_unfreeze
from hf_transfer import defaults
from hf_transfer.engine.unfreezing import GradualUnfreezing, Phase, default_phases
from hf_transfer.models.layer_groups import layer_groups

HEAD_THEN_BLOCK1 = [{"at_epoch": 0, "unfreeze": ["head"]}, {"at_epoch": 1, "unfreeze": ["block.1"]}]


def common(tiny_bert_dir, text_csv, out, **extra):
    return dict(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(out),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        lr_factor=2.0,
        load_best_model_at_end=False,
        **extra,
    )


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after["bert." + k]) for k in keys)


def test_default_phases_thaw_from_the_output_end():
    phases = default_phases(4, epochs_per_phase=2)
    assert [(p.at_epoch, p.unfreeze) for p in phases] == [(0, [3]), (2, [2]), (4, [1]), (6, [0])]
    with pytest.raises(Exception, match="exactly one of at_epoch / at_step"):
        Phase(unfreeze=["head"])


def test_frozen_groups_get_no_gradient_and_do_not_change_thawed_ones_do(tmp_path, tiny_bert_dir, text_csv):
    before = load_file(f"{tiny_bert_dir}/model.safetensors")
    grads_seen = {}

    from transformers import TrainerCallback

    class InspectGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads_seen.setdefault(state.global_step, {n: p.grad is not None for n, p in model.named_parameters()})

    original = gradual_unfreeze.training.make_trainer

    def make_trainer(job, **kwargs):
        return original(job, callbacks=[InspectGradients()], **kwargs)

    gradual_unfreeze.training.make_trainer = make_trainer
    try:
        results = gradual_unfreeze.run(
            **common(
                tiny_bert_dir,
                text_csv,
                tmp_path / "out",
                num_train_epochs=3,
                save_strategy="no",
                phases=json.dumps(HEAD_THEN_BLOCK1),
            )
        )
    finally:
        gradual_unfreeze.training.make_trainer = original
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert not changed(before, after, "embeddings.") and not changed(before, after, "encoder.layer.0.")
    assert changed(before, after, "encoder.layer.1.")
    first = grads_seen[0]
    assert not any(has for n, has in first.items() if "encoder.layer" in n or "embeddings" in n), (
        "head-only phase: no grads below the head"
    )
    assert any(has for n, has in first.items() if "classifier" in n)
    last = grads_seen[max(grads_seen)]
    assert any(has for n, has in last.items() if "encoder.layer.1." in n) and not any(
        has for n, has in last.items() if "encoder.layer.0." in n
    )
    steps = {g["name"]: g["thaws_at_step"] for g in results["layer_groups"]}
    assert steps["head"] == 0 and steps["block.0"] is None and steps["block.1"] > 0


def test_logs_carry_every_groups_lr_and_the_bodys_highest(tmp_path, tiny_bert_dir, text_csv):
    """Trainer alone logs the embeddings' LR, 0 until they thaw; our logs name each group's."""
    from transformers import TrainerCallback

    logged = []

    class KeepLogs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if "learning_rate" in logs:
                logged.append((state.epoch, dict(logs)))

    original = gradual_unfreeze.training.make_trainer
    gradual_unfreeze.training.make_trainer = lambda job, **kwargs: original(job, callbacks=[KeepLogs()], **kwargs)
    try:
        gradual_unfreeze.run(
            **common(
                tiny_bert_dir,
                text_csv,
                tmp_path / "out",
                num_train_epochs=2,
                save_strategy="no",
                logging_strategy="steps",
                logging_steps=1,
                lr_scheduler_type="constant",
                warmup_steps=3,  # a constant schedule has no warm-up of its own; block.1 re-warms over 3 steps
                phases=json.dumps(HEAD_THEN_BLOCK1),
            )
        )
    finally:
        gradual_unfreeze.training.make_trainer = original
    first = [logs for epoch, logs in logged if epoch < 1]  # the LR logged after a step is the next step's
    later = [logs for epoch, logs in logged if epoch >= 1]
    assert first and later
    assert all(
        logs["learning_rate/head"] > 0 and logs["learning_rate/block.1"] == 0 and logs["learning_rate"] == 0
        for logs in first
    )
    assert all(
        logs["learning_rate/block.1"] > 0 and logs["learning_rate"] == logs["learning_rate/block.1"] for logs in later
    )
    assert all(logs["learning_rate/embeddings"] == 0 for _, logs in logged)
    ramp = [logs["learning_rate/block.1"] for logs in later]
    assert ramp[0] == pytest.approx(ramp[-1] / 3) and ramp[2] == pytest.approx(ramp[-1])  # re-warmed, then flat


def test_lr_is_zero_until_a_group_thaws_then_follows_the_schedule():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20)
    )
    groups = layer_groups(model)
    callback = GradualUnfreezing(groups, default_phases(len(groups)), rewarm_steps=4)
    callback.resolve(num_training_steps=50, steps_per_epoch=10)
    head, block1 = len(groups) - 1, len(groups) - 3
    assert callback.start_step[head] == 0 and callback.start_step[block1] == 20
    flat = lambda step: 1.0  # noqa: E731
    m = callback.lr_multiplier(block1, flat)
    assert m(19) == 0.0 and m(20) == pytest.approx(0.25) and m(23) == pytest.approx(1.0)
    assert callback.lr_multiplier(head, flat)(0) == 1.0  # the first phase is not re-warmed
    default = GradualUnfreezing(groups, default_phases(len(groups)))  # re-warms over the run's warm-up length
    default.resolve(num_training_steps=50, steps_per_epoch=10, warmup_steps=5)
    m = default.lr_multiplier(block1, flat)
    assert m(19) == 0.0 and m(20) == pytest.approx(0.2) and m(24) == pytest.approx(1.0)
    default.resolve(num_training_steps=100, steps_per_epoch=10, warmup_steps=10)  # the same schedule, another run
    assert default.lr_multiplier(block1, flat)(20) == pytest.approx(0.1), "the first run's warm-up length stuck"


def test_resuming_mid_schedule_matches_the_uninterrupted_run(tmp_path, tiny_bert_dir, text_csv):
    full = tmp_path / "full"
    phases = json.dumps(
        [
            {"at_epoch": 0, "unfreeze": ["head"]},
            {"at_epoch": 1, "unfreeze": ["neck", "block.1"]},
            {"at_epoch": 3, "unfreeze": ["block.0", "embeddings"]},
        ]
    )
    gradual_unfreeze.run(
        **common(
            tiny_bert_dir,
            text_csv,
            full,
            num_train_epochs=4,
            save_strategy="epoch",
            save_total_limit=None,
            phases=phases,
            keep_checkpoints=True,
        )
    )
    checkpoints = sorted(full.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    middle = checkpoints[1]  # after epoch 2: block.1 thawed, block.0 not yet
    resumed = tmp_path / "resumed"
    gradual_unfreeze.run(
        **common(
            tiny_bert_dir,
            text_csv,
            resumed,
            num_train_epochs=4,
            save_strategy="no",
            phases=phases,
            resume_from_checkpoint=str(middle),
        )
    )
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    before = load_file(f"{tiny_bert_dir}/model.safetensors")
    assert changed(before, a, "encoder.layer.0."), "block.0 thawed after the resume point and must have trained"


@pytest.mark.parametrize("update_bn_statistics", [False, True])
def test_batchnorm_statistics_stay_pretrained_unless_asked(tmp_path, image_dir, update_bn_statistics):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet10t", num_classes=2)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    out = tmp_path / "out"
    gradual_unfreeze.run(
        model_name_or_path="resnet10t",
        weights=str(tmp_path / "w.safetensors"),
        train_dir=str(image_dir),
        output_dir=str(out),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        save_strategy="no",
        load_best_model_at_end=False,
        image_size=32,
        update_bn_statistics=update_bn_statistics,
        phases=json.dumps([{"at_epoch": 0, "unfreeze": ["head"]}, {"at_epoch": 1, "unfreeze": ["stage.3"]}]),
    )
    after = load_file(out / "model.safetensors")
    stem_stats = [k for k in source.state_dict() if k.startswith("conv1.") and "running_" in k]
    assert stem_stats
    for key in stem_stats:  # a frozen group's statistics never move
        assert torch.equal(after["timm_model." + key], source.state_dict()[key]), key
    thawed = [k for k in source.state_dict() if k.startswith("layer4.") and "running_mean" in k]
    thawed_moved = any(not torch.equal(after["timm_model." + k], source.state_dict()[k]) for k in thawed)
    assert thawed_moved == update_bn_statistics, (
        "a thawed stage re-estimates its statistics only with --update_bn_statistics"
    )
    thawed_weights = [k for k in source.state_dict() if k.startswith("layer4.") and k.endswith("conv1.weight")]
    assert any(not torch.equal(after["timm_model." + k], source.state_dict()[k]) for k in thawed_weights), (
        "the thawed stage trains"
    )


@pytest.mark.parametrize("head_phase", ["steps", "cached"])
def test_two_process_ddp_ranks_agree_and_thawed_layers_change(tmp_path, tiny_bert_dir, text_csv, head_phase):
    """cached: each rank extracts half the features, all fit the same head from the gathered whole."""
    out = tmp_path / "out"
    rank0, rank1 = run_on_two_ranks(
        "gradual_unfreeze",
        [
            "--model_name_or_path",
            tiny_bert_dir,
            "--train_file",
            text_csv,
            "--num_train_epochs",
            "3",
            "--per_device_train_batch_size",
            "2",
            "--learning_rate",
            "0.01",
            "--lr_factor",
            "2",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
            "--phases",
            json.dumps(HEAD_THEN_BLOCK1),
            "--head_phase",
            head_phase,
            "--feature_cache_dir",
            tmp_path / "cache",
        ],
        out,
    )
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks diverged at {key}"
    before = load_file(f"{tiny_bert_dir}/model.safetensors")
    assert changed(before, rank0, "encoder.layer.1."), "the block thawed mid-run must have trained"
    assert not changed(before, rank0, "encoder.layer.0.")
    assert ("head_phase_fit" in json.loads((out / "run_details.json").read_text())) == (head_phase == "cached")


def test_callback_and_optimizer_work_on_a_plain_trainer(tmp_path):
    """The notebook path of the README: a user's own Trainer, our optimizer and callback."""
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    from hf_transfer.engine.optim import build_optimizer, discriminative_lrs

    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20)
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = layer_groups(model)
    optimizer = build_optimizer(groups, discriminative_lrs(len(groups), 1e-2, factor=2.6))
    data = [{"input_ids": torch.randint(0, 50, (6,)), "labels": torch.tensor(i % 2)} for i in range(16)]
    args = TrainingArguments(
        str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    unfreezing = GradualUnfreezing(
        groups, [{"at_epoch": 0, "unfreeze": ["head"]}, {"at_epoch": 1, "unfreeze": ["block.1"]}]
    )
    Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None), callbacks=[unfreezing]).train()
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert any(n.startswith("classifier") for n in moved) and any(n.startswith("bert.encoder.layer.1.") for n in moved)
    assert not any(n.startswith(("bert.encoder.layer.0.", "bert.embeddings.")) for n in moved)


def test_default_phases_after_a_cached_head_phase_start_with_the_top_group():
    phases = default_phases(4, epochs_per_phase=2, head_fitted=True)
    assert [(p.at_epoch, p.unfreeze) for p in phases] == [(0, [3, 2]), (2, [1]), (4, [0])]
    assert [(p.at_epoch, p.unfreeze) for p in default_phases(4, head_fitted=True, keep_frozen=2)] == [(0, [3, 2])]


def test_cached_head_phase_trains_from_a_fitted_head_and_thaws_the_top_group_at_once(
    tmp_path, tiny_bert_dir, text_csv
):
    """--head_phase cached: training begins from the logistic regression fitted on the frozen layers' features (not a
    random head), the group below the head trains from step 0, and a second run reads the features from disk."""
    from transformers import TrainerCallback

    from hf_transfer.engine.finetuning import FineTuningArguments
    from hf_transfer.features.cache import FeatureCacheArguments
    from hf_transfer.features.extraction import extract_features, new_head
    from hf_transfer.features.head_fitting import fit_head
    from hf_transfer.pipeline import training
    from hf_transfer.pipeline.arguments import parse_recipe_args

    at_start = {}

    class HeadAtStart(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            at_start.update({k: v.detach().clone() for k, v in new_head(model).state_dict().items()})

    original = gradual_unfreeze.training.make_trainer
    gradual_unfreeze.training.make_trainer = lambda job, **kwargs: original(job, callbacks=[HeadAtStart()], **kwargs)
    options = dict(
        num_train_epochs=2, save_strategy="no", head_phase="cached", feature_cache_dir=str(tmp_path / "cache")
    )
    try:
        results = gradual_unfreeze.run(**common(tiny_bert_dir, text_csv, tmp_path / "out", **options))
    finally:
        gradual_unfreeze.training.make_trainer = original
    assert set(results["head_phase_fit"]["feature_cache"].values()) == {"extracted"}

    arguments = common(tiny_bert_dir, text_csv, tmp_path / "reference")
    args = parse_recipe_args(
        gradual_unfreeze.DEFAULTS,
        [],
        arguments,
        extra_dataclasses=(FineTuningArguments, gradual_unfreeze.ScheduleArguments, FeatureCacheArguments),
    )
    job = training.prepare(args, learning_rates=defaults.GRADUAL_UNFREEZE_LEARNING_RATES)
    features = {s: extract_features(job.model, job.datasets[s], job.collator).tensors for s in ("train", "validation")}
    head = new_head(job.model)
    fit_head(
        head,
        features["train"],
        features["validation"],
        solver="lbfgs",
        training_args=args.training,
        choice=defaults.GRADUAL_UNFREEZE_HEAD_L2_CHOICE,
    )
    for key, value in head.state_dict().items():
        assert torch.allclose(at_start[key], value, atol=1e-5), f"training did not start from the fitted head ({key})"

    steps_per_epoch = 6  # 24 rows, 10% held out for validation -> 21 training rows / batch 4
    thaws = {g["name"]: g["thaws_at_step"] for g in results["layer_groups"]}
    assert (
        thaws["head"] == 0
        and thaws["neck"] == 0
        and thaws["block.1"] == steps_per_epoch
        and thaws["block.0"] == 2 * steps_per_epoch
    )

    again = gradual_unfreeze.run(
        **common(tiny_bert_dir, text_csv, tmp_path / "again", **{**options, "num_train_epochs": 1})
    )
    assert set(again["head_phase_fit"]["feature_cache"].values()) == {"hit"}
    assert again["head_phase_fit"]["head_l2"] == results["head_phase_fit"]["head_l2"]


def test_cached_head_phase_resumes_to_the_uninterrupted_run(tmp_path, tiny_bert_dir, text_csv):
    options = dict(num_train_epochs=3, head_phase="cached", feature_cache_dir=str(tmp_path / "cache"))
    full = tmp_path / "full"
    gradual_unfreeze.run(
        **common(
            tiny_bert_dir,
            text_csv,
            full,
            save_strategy="epoch",
            save_total_limit=None,
            keep_checkpoints=True,
            **options,
        )
    )
    middle = min(full.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed = tmp_path / "resumed"
    gradual_unfreeze.run(
        **common(tiny_bert_dir, text_csv, resumed, save_strategy="no", resume_from_checkpoint=str(middle), **options)
    )
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_cached_head_phase_with_an_mlp_head_says_it_trains_through_steps(tmp_path, tiny_bert_dir, text_csv, capsys):
    results = gradual_unfreeze.run(
        **common(
            tiny_bert_dir,
            text_csv,
            tmp_path / "out",
            max_steps=1,
            save_strategy="no",
            eval_strategy="no",
            head="mlp",
            head_phase="cached",
            feature_cache_dir=str(tmp_path / "cache"),
        )
    )
    assert "--head_phase cached fits a linear head" in capsys.readouterr().out
    assert "head_phase_fit" not in results and not (tmp_path / "cache").exists()


def test_the_head_is_fitted_first_by_default_for_images_not_for_text(
    tmp_path, tiny_vit_dir, image_dir, tiny_bert_dir, text_csv
):
    """--head_phase defaults per modality (chosen on validation): cached for images, steps for text."""
    quick = dict(
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        load_best_model_at_end=False,
        feature_cache_dir=str(tmp_path / "cache"),
    )
    image = gradual_unfreeze.run(
        model_name_or_path=tiny_vit_dir, train_dir=str(image_dir), output_dir=str(tmp_path / "image"), **quick
    )
    text = gradual_unfreeze.run(
        model_name_or_path=tiny_bert_dir, train_file=str(text_csv), output_dir=str(tmp_path / "text"), **quick
    )
    assert "head_phase_fit" in image and "head_phase_fit" not in text
    assert {g["name"]: g["thaws_at_step"] for g in text["layer_groups"]}["neck"] != 0, "text keeps its head-only phase"
