"""The advisor: transferability scores behave as their papers say, every rule of the decision table fires, and on
real weights and real data the pretrained checkpoint outranks the same architecture with random weights."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from hf_transfer import assets, defaults
from hf_transfer.advice import rules as strategy_rules
from hf_transfer.advice.rules import Measurements, recommend
from hf_transfer.advice.transferability import batchnorm_shift, knn_accuracy, linear_probe_accuracy, logme
from hf_transfer.engine import finetuning
from hf_transfer.features.head_fitting import resolve_solver


def clusters(seed=0, n=60, classes=3, dim=16, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = np.arange(n) % classes
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


def test_scores_separate_informative_labels_from_shuffled_ones():
    x, y = clusters()
    val_x, val_y = x + 0.1 * np.random.default_rng(2).normal(size=x.shape).astype(np.float32), y
    shuffled = np.random.default_rng(3).permutation(y)
    assert logme(x, y) > logme(x, shuffled) + 0.5
    assert linear_probe_accuracy(x, y, val_x, val_y) == 1.0
    assert knn_accuracy(x, y, val_x, val_y) == 1.0
    assert linear_probe_accuracy(x, shuffled, val_x, val_y) < 0.7
    assert knn_accuracy(x, shuffled, val_x, val_y) < 0.7


def test_logme_ranks_pretrained_features_above_random_ones_once_examples_outnumber_dimensions():
    """You et al. assume more examples than feature dimensions; below that the advisor ranks by the linear probe."""
    from hf_transfer.advice.advise import ranking_score

    x, y = clusters(n=200, dim=16, spread=1.0)
    noise = np.random.default_rng(4).normal(size=x.shape).astype(np.float32) * x.std()
    assert logme(x, y) > logme(noise, y)
    assert ranking_score([measured(train_examples=2000, feature_size=1280)]) == "logme"
    assert (
        ranking_score([measured(train_examples=2000), measured(train_examples=80, feature_size=384)]) == "linear_probe"
    )


def test_batchnorm_shift_reads_distance_from_the_stored_statistics():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.BatchNorm1d(4)
            self.backbone.running_mean.fill_(1.0)
            self.backbone.running_var.fill_(4.0)

        def features(self, x):
            return self.backbone(x)

    model = Tiny()
    same = torch.full((8, 4), 1.0)
    shifted = torch.full((8, 4), 5.0)  # 4 above the stored mean = 2 stored standard deviations
    assert batchnorm_shift(model, [{"x": same}]) == pytest.approx(0.0, abs=1e-3)
    assert batchnorm_shift(model, [{"x": shifted}]) == pytest.approx(2.0, abs=1e-3)
    assert torch.equal(model.backbone.running_mean, torch.ones(4))  # measuring does not move the statistics
    model.backbone = torch.nn.Linear(4, 4)
    assert batchnorm_shift(model, [{"x": same}]) is None


def measured(**changes):
    base = dict(
        checkpoint="ckpt",
        modality="image",
        train_examples=1000,
        classes=10,
        smallest_class=100,
        validation_examples=500,
        parameters=5_000_000,
        feature_size=1280,
        linear_probe=0.8,
        knn=0.75,
        logme=0.1,
        majority_share=0.1,
        batchnorm_shift=0.3,
        seconds=1.0,
    )
    return Measurements(**{**base, **changes})


def test_every_rule_of_the_decision_table_fires():
    assert recommend(measured()).strategy == "full_finetune"
    assert recommend(measured(smallest_class=strategy_rules.FEW_SHOT - 1)).strategy == "feature_extraction"
    assert recommend(measured(linear_probe=strategy_rules.CEILING)).strategy == "feature_extraction"
    large = recommend(measured(parameters=strategy_rules.LARGE_MODEL + 1))
    assert large.strategy == "lora" and large.options["peft_method"] == "lora"
    far = recommend(measured(batchnorm_shift=strategy_rules.FAR_DOMAIN, smallest_class=strategy_rules.LARGE_DATA))
    assert far.strategy == "full_finetune" and far.options["update_bn_statistics"] is True
    assert "update_bn_statistics" not in recommend(measured(batchnorm_shift=strategy_rules.FAR_DOMAIN)).options
    text = recommend(measured(modality="text", batchnorm_shift=None))
    assert text.options["learning_rate"] == 5e-5 and "no BatchNorm" in text.reasons[0]


def test_advised_options_are_the_recipes_own_defaults():
    import recipes.feature_extraction as fe
    import recipes.full_finetune as ft
    import recipes.peft_finetune as peft

    table = strategy_rules.RECIPES
    assert (
        table["full_finetune"]["learning_rate"] == defaults.BODY_LEARNING_RATES
        and table["full_finetune"]["epochs"] == ft.DEFAULTS["num_train_epochs"]
    )
    assert table["feature_extraction"]["head_solver"] == resolve_solver(
        fe.HeadFitArguments.head_solver, torch.nn.Linear(4, 2)
    )
    assert (
        set(table["lora"]["learning_rate"].values()) == {defaults.ADAPTER_LEARNING_RATES["lora"]}
        and table["lora"]["epochs"] == peft.DEFAULTS["num_train_epochs"]
    )
    assert {finetuning.head_learning_rate(finetuning.FineTuningArguments(), m) for m in ("text", "image")} == set(
        defaults.HEAD_LEARNING_RATES.values()
    )
    advised = recommend(measured(linear_probe=0.5))  # an image set that fine-tunes: the head's LR is the recipe's own
    assert advised.strategy == "full_finetune" and advised.options[
        "head_learning_rate"
    ] == finetuning.head_learning_rate(finetuning.FineTuningArguments(), "image")


@pytest.fixture(scope="module")
def random_minilm(tmp_path_factory):
    """The bundled MiniLM folder (tokenizer, mean pooling) with its weights re-drawn: same architecture, no transfer."""
    from transformers import BertConfig, BertModel

    source = assets.bundled_checkpoint_path("bundled:minilm-l6")
    target = tmp_path_factory.mktemp("random-minilm") / "minilm"
    shutil.copytree(source, target)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(source)).save_pretrained(target)
    return str(target)


def test_advisor_ranks_pretrained_weights_above_random_ones_on_real_data(random_minilm, tmp_path):
    """Rotten Tomatoes, 40 per class, from the command line: ranking, report, advice.json, and a runnable command."""
    out = tmp_path / "advice"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_transfer.advise",
            "--model_name_or_path",
            random_minilm,
            "bundled:minilm-l6",
            "--dataset_name",
            "bundled:rotten_tomatoes",
            "--max_train_samples_per_class",
            "40",
            "--max_eval_samples",
            "200",
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    outcome = json.loads((out / "advice.json").read_text())
    pretrained, scratch = outcome["ranking"]
    assert pretrained["checkpoint"] == "bundled:minilm-l6" and scratch["checkpoint"] == random_minilm
    assert outcome["ranked_by"] == "linear_probe"  # 80 examples < 384 dimensions: LogME's ranking is not trusted there
    assert pretrained["linear_probe"] > scratch["linear_probe"] + 0.05
    assert (
        pretrained["train_examples"] == 80
        and pretrained["smallest_class"] == 40
        and pretrained["batchnorm_shift"] is None
    )
    assert outcome["advice"]["strategy"] == "full_finetune"
    # strategy 0: the pretrained encoder's zero-shot classifier beats chance, the random one's does not, and the report
    # says from how many labels per class a probe beats it
    assert pretrained["zero_shot"] > 0.53 and abs(scratch["zero_shot"] - 0.5) < pretrained["zero_shot"] - 0.5
    assert pretrained["labels_to_beat_zero_shot"] in (1, 2, 4, 8, 16, 32)
    assert f"beats it from {pretrained['labels_to_beat_zero_shot']} labelled example" in completed.stdout
    assert outcome["command"].startswith(
        "python recipes/full_finetune.py --model_name_or_path bundled:minilm-l6 --dataset_name bundled:rotten_tomatoes"
    )
    from hf_transfer.advice.advise import _command
    from hf_transfer.advice.rules import Advice

    advice = Advice(
        "full_finetune", "recipes/full_finetune.py", {"num_train_epochs": 10, "learning_rate": 5e-5}, ["", ""]
    )
    command = _command(
        advice,
        measured(checkpoint="ckpt"),
        ["--train_file", "t.csv", "--num_train_epochs", "3", "--output_dir", "x"],
        {"bf16": True},
    )
    assert (
        command
        == "python recipes/full_finetune.py --model_name_or_path ckpt --train_file t.csv --num_train_epochs 3 --bf16 --learning_rate 5e-05"
    )
    assert (
        "1. bundled:minilm-l6" in completed.stdout
        and "fewer than" in completed.stdout
        and outcome["command"] in completed.stdout
    )


def test_advice_errors_are_one_line(tmp_path):
    from hf_transfer.advice.advise import advise
    from hf_transfer.errors import TransferError

    with pytest.raises(TransferError, match="names a checkpoint twice"):
        advise(["--model_name_or_path", "bundled:minilm-l6", "bundled:minilm-l6"], output_dir=str(tmp_path))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_transfer.advise",
            "--model_name_or_path",
            str(tmp_path / "missing"),
            "--output_dir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        completed.returncode == 2
        and completed.stderr.strip().startswith("error:")
        and len(completed.stderr.strip().splitlines()) == 1
    )
    assert not (tmp_path / "o").exists()
    callable_ = subprocess.run(
        [sys.executable, "-c", "import hf_transfer; print(callable(hf_transfer.advise))"],
        capture_output=True,
        text=True,
    )
    assert callable_.stdout.strip() == "True", callable_.stderr[-500:]


def test_auto_runs_the_pick_with_the_advised_options_and_the_users_overrides(tmp_path):
    """Fashion-MNIST at 32 px: 3 per class is few-shot (frozen features); 20 per class fine-tunes, with the user's epochs."""
    from recipes.auto import run

    data = {
        "model_name_or_path": "bundled:efficientnet-lite0",
        "dataset_name": "bundled:fashion_mnist",
        "image_size": 32,
        "max_eval_samples": 50,
        "max_test_samples": 50,
    }
    few = run(**data, max_train_samples_per_class=3, output_dir=str(tmp_path / "few"))
    assert few["advice"]["strategy"] == "feature_extraction"
    assert json.loads((tmp_path / "few" / "run_details.json").read_text())["recipe"] == "feature_extraction"
    measured = json.loads((tmp_path / "few" / "advice.json").read_text())["ranking"][0]["seconds"]
    assert few["advice_seconds"] == measured > 0  # what choosing cost, for a user timing auto against a fixed recipe

    more = run(["--num_train_epochs", "1"], **data, max_train_samples_per_class=20, output_dir=str(tmp_path / "more"))
    written = json.loads((tmp_path / "more" / "run_details.json").read_text())
    assert more["advice"]["strategy"] == "full_finetune" and written["recipe"] == "full_finetune"
    assert written["epochs_trained"] == 1  # the user's value beats the advised 10
    assert written["training_config"]["learning_rate"] == pytest.approx(3e-4)  # the advised body rate


def test_labels_to_beat_zero_shot_grows_with_the_floor_and_is_none_when_nothing_beats_it():
    import torch

    from hf_transfer.advice.transferability import labels_to_beat

    generator = torch.Generator().manual_seed(0)
    y = torch.arange(2).repeat(40)
    x = torch.randn(80, 8, generator=generator) + 0.8 * y[:, None]  # separable with noise
    easy, hard = labels_to_beat(0.0, x, y), labels_to_beat(0.75, x, y)
    assert easy == 1 and hard is not None and hard > easy
    assert labels_to_beat(1.0, x, y) is None, "nothing beats a perfect floor"
