"""Every fine-tuning option changes what it claims to change, on weights loaded with from_pretrained
(a freshly built model hid bugs here: transformers 5 skips re-initialising tensors marked as loaded)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel, TrainerCallback, TrainingArguments

import recipes.full_finetune as full_finetune
import recipes.gradual_unfreeze as gradual_unfreeze
from hf_transfer import defaults
from hf_transfer.engine.optim import discriminative_lrs
from hf_transfer.engine.trainer import TransferTrainer
from hf_transfer.engine.unfreezing import GradualUnfreezing
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.models.loading import ModelArguments, build_classifier, resolve_checkpoint
from hf_transfer.models.partial_transfer import reinitialize_groups
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args


@pytest.fixture(scope="module")
def pretrained_bert_dir(tmp_path_factory):
    """A tiny BERT whose weights are far from any fresh init (every tensor + 1), saved with save_pretrained."""
    from transformers import AutoTokenizer

    from hf_transfer import assets

    path = tmp_path_factory.mktemp("pretrained-bert")
    tokenizer = AutoTokenizer.from_pretrained(assets.bundled_checkpoint_path("bundled:minilm-l6"))
    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
        )
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    "pooling", ["auto", "mean"]
)  # native BertForSequenceClassification, and our TransferClassifier
def test_reinit_groups_really_reinitialises_a_from_pretrained_model(pretrained_bert_dir, pooling):
    model = build_classifier(
        resolve_checkpoint(ModelArguments(pretrained_bert_dir)),
        ["a", "b"],
        ModelArguments(pretrained_bert_dir, pooling=pooling),
    )
    groups = layer_groups(model)
    chosen = [g for g in groups if g.name == "block.2"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert reinitialize_groups(model, chosen) == chosen[0].numel()
    for name, parameter in model.named_parameters():
        moved = not torch.equal(before[name], parameter)
        assert moved == ("encoder.layer.2." in name), name
    norm = next(p for n, p in model.named_parameters() if n.endswith("encoder.layer.2.output.LayerNorm.weight"))
    assert torch.equal(norm, torch.ones_like(norm)), "re-initialised as BERT initialises, not left at the loaded value"


def test_train_bn_really_trains_batchnorm_of_frozen_groups(tmp_path, image_dir):
    """Head-only phase with --train_bn: frozen stages' BN affine parameters change, their convolutions and statistics do not."""
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
        train_bn=True,
        learning_rate=1e-2,
        phases=json.dumps([{"at_epoch": 0, "unfreeze": ["head"]}]),
    )
    after, before = load_file(out / "model.safetensors"), source.state_dict()
    bn_affine = [k for k in before if k.startswith("layer1.") and ".bn" in k and k.endswith((".weight", ".bias"))]
    assert bn_affine and all(not torch.equal(after["timm_model." + k], before[k]) for k in bn_affine)
    frozen = [k for k in before if k.startswith("layer1.") and (".conv" in k or "running_" in k)]
    assert frozen and all(torch.equal(after["timm_model." + k], before[k]) for k in frozen)


def test_at_epoch_phases_follow_epochs_under_max_steps(tmp_path, tiny_bert_dir, text_csv):
    results = gradual_unfreeze.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=9,
        save_strategy="no",
        load_best_model_at_end=False,
        phases=json.dumps([{"at_epoch": 0, "unfreeze": ["head"]}, {"at_epoch": 1, "unfreeze": ["block.1"]}]),
    )
    steps_per_epoch = math.ceil(results["train_samples"] / 4)
    thaws = {g["name"]: g["thaws_at_step"] for g in results["layer_groups"]}
    assert thaws["block.1"] == steps_per_epoch, (thaws, steps_per_epoch)


def test_gradual_unfreezing_on_a_peft_model_thaws_only_the_adapter(tmp_path, tiny_bert_dir):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"]))
    trainable_before = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    groups = layer_groups(model)
    unfreezing = GradualUnfreezing(
        groups, [{"at_step": 0, "unfreeze": ["head"]}, {"at_step": 2, "unfreeze": list(range(len(groups)))}]
    )
    data = [{"input_ids": torch.randint(0, 1000, (6,)), "labels": torch.tensor(i % 2)} for i in range(16)]
    args = TrainingArguments(
        str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        learning_rate=1e-2,
    )
    trainer = TransferTrainer(
        model=model,
        args=args,
        train_dataset=data,
        layer_groups=groups,
        group_lrs=discriminative_lrs(len(groups), 1e-2),
        unfreezing=unfreezing,
    )
    trainer.train()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable_before
    for name, value in frozen_before.items():
        assert torch.equal(value, model.get_parameter(name)), f"the peft base changed: {name}"
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if "lora_B" in n), (
        "the adapter trained"
    )


def test_data_seed_zero_is_not_ignored(tiny_bert_dir, tmp_path):
    from conftest import write_text_table

    table = write_text_table(tmp_path / "t", rows_per_class=40)

    def train_texts(**seeds):
        args = parse_recipe_args(
            {},
            [],
            {
                "model_name_or_path": tiny_bert_dir,
                "train_file": str(table),
                "output_dir": str(tmp_path / "o"),
                "max_train_samples_per_class": 5,
                **seeds,
            },
        )
        return sorted(training.prepare(args).data.splits["train"]["text"])

    assert train_texts(seed=42, data_seed=0) == train_texts(seed=0)
    assert train_texts(seed=42, data_seed=0) != train_texts(seed=42)


def test_best_epoch_ties_go_to_the_lower_validation_loss(tmp_path):
    model = torch.nn.Linear(2, 2)
    args = TrainingArguments(
        str(tmp_path),
        report_to="none",
        use_cpu=True,
        metric_for_best_model="accuracy",
        save_strategy="epoch",
        eval_strategy="epoch",
        load_best_model_at_end=True,
    )
    trainer = TransferTrainer(model=model, args=args, eval_dataset=[{"x": 0}])
    kept = []
    for step, (accuracy, loss) in enumerate([(0.8, 0.9), (0.9, 0.7), (0.9, 0.5), (0.9, 0.6), (0.85, 0.1)], start=1):
        trainer.state.global_step = step
        metrics = {"eval_accuracy": accuracy, "eval_loss": loss}
        trainer.state.log_history.append({**metrics, "step": step})
        if trainer._determine_best_metric(metrics, None):
            kept.append(step)
    assert kept == [1, 2, 3] and trainer.state.best_global_step == 3


class RecordGroupLearningRates(TrainerCallback):
    def __init__(self):
        self.lrs = None

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if self.lrs is None:
            self.lrs = {pg["layer_group"]: pg["lr"] for pg in optimizer.param_groups}


def test_full_finetune_head_and_lowest_learning_rates_reach_the_optimizer(
    tmp_path, pretrained_bert_dir, text_csv, monkeypatch
):
    recorder = RecordGroupLearningRates()
    original = full_finetune.training.make_trainer
    monkeypatch.setattr(
        full_finetune.training, "make_trainer", lambda job, **kw: original(job, callbacks=[recorder], **kw)
    )
    results = full_finetune.run(
        model_name_or_path=pretrained_bert_dir,
        train_file=str(text_csv),
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        save_strategy="no",
        load_best_model_at_end=False,
        lr_scheduler_type="constant",
        warmup_steps=0,
        learning_rate=1e-4,
        lowest_learning_rate=1e-6,
        head_learning_rate=3e-3,
    )
    lrs = {g["name"]: g["lr"] for g in results["layer_groups"]}
    assert (
        lrs["head"] == pytest.approx(3e-3)
        and lrs["embeddings"] == pytest.approx(1e-6)
        and lrs["neck"] == pytest.approx(1e-4)
    )
    assert lrs["embeddings"] < lrs["block.0"] < lrs["block.1"] < lrs["block.2"] < lrs["neck"]
    assert recorder.lrs["head"] == pytest.approx(3e-3) and recorder.lrs["embeddings"] == pytest.approx(1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("update_bn_statistics", [False, True])
def test_full_finetune_keeps_real_batchnorm_statistics_unless_asked(tmp_path, update_bn_statistics):
    """Real EfficientNet-Lite0 weights: by default every BatchNorm keeps its ImageNet statistics while its affine parameters train."""
    from hf_transfer import assets

    out = tmp_path / "out"
    full_finetune.run(
        model_name_or_path="bundled:efficientnet-lite0",
        dataset_name="bundled:mnist",
        max_train_samples_per_class=3,
        max_eval_samples=20,
        max_test_samples=20,
        image_size=32,
        num_train_epochs=1,
        output_dir=str(out),
        save_strategy="no",
        load_best_model_at_end=False,
        update_bn_statistics=update_bn_statistics,
    )
    after = load_file(out / "model.safetensors")
    imagenet = assets.efficientnet_lite0_state_dict()  # renamed to timm's keys

    running = [k for k in after if k.endswith("running_mean")]
    moved = [k for k in running if not torch.equal(after[k], imagenet[k.removeprefix("timm_model.")])]
    assert running and (len(moved) > 0) == update_bn_statistics, (len(moved), len(running))
    affine = [k for k in after if k.endswith("bn1.weight") and k.removeprefix("timm_model.") in imagenet]
    assert any(not torch.equal(after[k], imagenet[k.removeprefix("timm_model.")]) for k in affine), (
        "BN affine parameters still train"
    )


@pytest.mark.parametrize("select", [True, False])
def test_results_name_the_epoch_kept(tmp_path, tiny_bert_dir, text_csv, select):
    results = full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        load_best_model_at_end=select,
        save_strategy="epoch" if select else "no",
    )
    assert results["epochs_trained"] == 2
    if select:
        assert results["kept_because"] == "best validation accuracy" and results["kept_epoch"] in (1, 2)
    else:
        assert (results["kept_epoch"], results["kept_because"]) == (2, "last epoch")
    assert f"Weights kept: epoch {results['kept_epoch']:g} of 2" in (tmp_path / "out" / "README.md").read_text()


def test_an_architecture_without_known_groups_gets_one_lr_said_aloud_or_a_clear_error(capsys):
    from hf_transfer.engine.finetuning import FineTuningArguments, body_and_head_groups
    from hf_transfer.errors import TransferError

    unknown = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert body_and_head_groups(unknown, FineTuningArguments(), set()) is None
    assert "one learning rate for every layer: cannot find the layer groups of a Sequential" in capsys.readouterr().out
    with pytest.raises(TransferError, match="--head_learning_rate needs the model's layer groups"):
        body_and_head_groups(unknown, FineTuningArguments(head_learning_rate=1e-3), {"head_learning_rate"})


@pytest.mark.parametrize("head_phase", ["none", "cached"])
def test_full_finetune_head_phase_cached_starts_every_layer_from_the_fitted_head(
    tmp_path, pretrained_bert_dir, text_csv, monkeypatch, head_phase
):
    """LP-FT (Kumar et al. 2022): with --head_phase cached full fine-tuning begins from the logistic regression fitted on
    the pretrained body's features, and every layer trains from the first step; without it the head starts random."""
    from hf_transfer.engine.finetuning import FineTuningArguments
    from hf_transfer.features.cache import FeatureCacheArguments
    from hf_transfer.features.extraction import extract_features, new_head
    from hf_transfer.features.head_fitting import fit_head

    at_start, grads_first_step = {}, {}

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            at_start.update({k: v.detach().clone() for k, v in new_head(model).state_dict().items()})

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                grads_first_step.update({n: p.grad is not None for n, p in model.named_parameters()})

    original = full_finetune.training.make_trainer
    monkeypatch.setattr(
        full_finetune.training, "make_trainer", lambda job, **kw: original(job, callbacks=[Inspect()], **kw)
    )
    arguments = dict(
        model_name_or_path=pretrained_bert_dir, train_file=str(text_csv), pooling="mean", per_device_train_batch_size=4
    )
    results = full_finetune.run(
        **arguments,
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        save_strategy="no",
        load_best_model_at_end=False,
        head_phase=head_phase,
        feature_cache_dir=str(tmp_path / "cache"),
    )
    used = {
        n: has for n, has in grads_first_step.items() if ".pooler." not in n
    }  # mean pooling does not use BERT's pooler
    assert used and all(used.values()), "every layer trains from the first step"

    args = parse_recipe_args(
        full_finetune.DEFAULTS,
        [],
        {**arguments, "output_dir": str(tmp_path / "reference")},
        extra_dataclasses=(FineTuningArguments, full_finetune.HeadStartArguments, FeatureCacheArguments),
    )
    job = training.prepare(args, learning_rates=defaults.BODY_LEARNING_RATES)
    features = {s: extract_features(job.model, job.datasets[s], job.collator).tensors for s in ("train", "validation")}
    head = new_head(job.model)
    fit_head(
        head,
        features["train"],
        features["validation"],
        solver="lbfgs",
        training_args=args.training,
        choice=defaults.FULL_FINETUNE_HEAD_L2_CHOICE,
    )
    fitted = all(torch.allclose(at_start[k], v, atol=1e-5) for k, v in head.state_dict().items())
    assert fitted == (head_phase == "cached")
    assert ("head_phase_fit" in results) == (head_phase == "cached")
    if (
        head_phase == "cached"
    ):  # the fine-tuning start is the smallest head within one standard error, not the most accurate
        assert "one standard error" in results["head_phase_fit"]["kept_because"]
    assert ("first fitted as a logistic regression" in (tmp_path / "out" / "README.md").read_text()) == (
        head_phase == "cached"
    )


def test_full_finetune_head_phase_is_checked(tmp_path, tiny_bert_dir, text_csv, capsys):
    from hf_transfer.errors import TransferError

    common = dict(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        feature_cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(TransferError, match="--head_phase 'steps': choose one of none, cached"):
        full_finetune.run(**common, output_dir=str(tmp_path / "bad"), head_phase="steps")
    results = full_finetune.run(**common, output_dir=str(tmp_path / "mlp"), head="mlp", head_phase="cached")
    assert "not one Linear layer: it starts from its random initialisation" in capsys.readouterr().out
    assert "head_phase_fit" not in results and not (tmp_path / "cache").exists()


def test_on_an_accelerator_steps_do_not_wait_for_it_unless_the_user_says(tmp_path, monkeypatch):
    """On a GPU the defaults copy batches without blocking and read no step's loss back (Trainer's defaults make
    the host wait for the GPU twice a step); workers feed it. What the user sets wins. tests/scale_out/test_gpu.py checks
    on a real GPU that no step then synchronises."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    chosen = parse_recipe_args({}, argv=["--output_dir", str(tmp_path)]).training
    assert chosen.accelerator_config.non_blocking and chosen.dataloader_pin_memory
    assert not chosen.logging_nan_inf_filter
    assert chosen.dataloader_num_workers >= 1 and chosen.dataloader_persistent_workers
    asked = parse_recipe_args(
        {},
        argv=[
            "--output_dir",
            str(tmp_path),
            "--accelerator_config",
            '{"non_blocking": false}',
            "--logging_nan_inf_filter",
            "True",
            "--dataloader_num_workers",
            "0",
        ],
    ).training
    assert (
        not asked.accelerator_config.non_blocking
        and asked.logging_nan_inf_filter
        and asked.dataloader_num_workers == 0
    )
    # an --accelerator_config that does not mention non_blocking keeps it (as JSON, a file, or a dict from run())
    (tmp_path / "accelerator.json").write_text('{"even_batches": false}')
    for argv, overrides in (
        [["--accelerator_config", '{"split_batches": true}'], {}],
        [["--accelerator_config=" + str(tmp_path / "accelerator.json")], {}],
        [[], {"accelerator_config": {"split_batches": True}}],
    ):
        merged = parse_recipe_args(
            {}, argv=["--output_dir", str(tmp_path), *argv], overrides=overrides
        ).training.accelerator_config
        assert merged.non_blocking and (merged.split_batches or not merged.even_batches), (argv, overrides)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    on_cpu = parse_recipe_args({}, argv=["--output_dir", str(tmp_path)]).training
    assert not on_cpu.accelerator_config.non_blocking and on_cpu.logging_nan_inf_filter and on_cpu.use_cpu
