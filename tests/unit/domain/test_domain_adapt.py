"""Domain adaptation: the alignment losses and the gradient-reversal layer, pseudo-label selection, the recipe's
outputs and reports, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import pipeline_accuracy, run_on_two_ranks, write_image_folder, write_text_table

from hf_transfer.domain.alignment import (
    DomainClassifier,
    coral_loss,
    dann_loss,
    dann_weight,
    mmd_loss,
    reverse_gradient,
)
from hf_transfer.domain.pseudo_labels import select
from hf_transfer.errors import TransferError
from recipes import domain_adapt

QUICK = {"num_train_epochs": 1, "save_strategy": "no", "load_best_model_at_end": False}


# ---------------------------------------------------------------- losses


def test_gradient_reversal_flips_the_gradient_sign_and_scales_it():
    x = torch.randn(4, 3, requires_grad=True)
    weights = torch.randn(3)
    (x * weights).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    (reverse_gradient(x, 0.5) * weights).sum().backward()
    assert torch.allclose(x.grad, -0.5 * plain)
    assert torch.equal(reverse_gradient(x, 0.5), x)  # identity going forward
    assert dann_weight(0.0) == 0.0 and 0.99 < dann_weight(1.0) < 1.0 and dann_weight(0.1) < dann_weight(0.5)


def test_dann_pushes_the_features_against_the_domain_classifier():
    torch.manual_seed(0)
    source = (torch.randn(16, 8) + 2).requires_grad_()
    target = torch.randn(16, 8)
    classifier = DomainClassifier(8, 16).eval()  # no dropout: both passes see the same network
    loss = dann_loss(classifier, source, target, 1.0)
    loss.backward()
    reversed_grad = source.grad.clone()
    source.grad = None
    features = torch.cat([source, target])
    domains = torch.cat([torch.zeros(16), torch.ones(16)])
    torch.nn.functional.binary_cross_entropy_with_logits(classifier(features), domains).backward()
    assert torch.allclose(reversed_grad, -source.grad, atol=1e-6)
    assert all(p.grad is not None for p in classifier.parameters())


@pytest.mark.parametrize("loss", [coral_loss, mmd_loss])
def test_alignment_losses_are_zero_for_identical_batches_and_grow_with_the_shift(loss):
    torch.manual_seed(0)
    features = torch.randn(64, 16)
    assert loss(features, features.clone()).item() == pytest.approx(0.0, abs=1e-6)
    moving = features.clone().requires_grad_()
    loss(moving, features).backward()
    assert torch.isfinite(moving.grad).all(), "finite gradients where the batches meet (distance 0)"
    values = []
    for shift in (0.5, 1.0, 2.0):  # a widening (covariance) and moving (mean) target
        target = torch.randn(64, 16) * (1 + shift) + shift
        values.append(loss(features, target).item())
    assert values[0] < values[1] < values[2], values


def test_a_pseudo_label_round_never_keeps_a_prediction_below_the_threshold_and_balances_classes():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 3)) * 3
    logits[:, 0] += 2  # a bias toward class 0
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for threshold in (0.5, 0.8, 0.95):
        rows, _ = select(probabilities, threshold, balance=False)
        assert (probabilities[rows].max(1) >= threshold).all()
        assert len(rows) == (probabilities.max(1) >= threshold).sum()
        balanced, balanced_labels = select(probabilities, threshold, balance=True)
        assert (probabilities[balanced].max(1) >= threshold).all() and set(balanced) <= set(rows)
        counts = np.bincount(balanced_labels, minlength=3)
        assert counts.max() <= 2 * counts[counts > 0].min()
        assert np.array_equal(balanced_labels, probabilities[balanced].argmax(1))


# ---------------------------------------------------------------- the recipe on tiny checkpoints


def shifted_images(root, size=40):
    """The same shapes, inverted and tinted: white on black becomes coloured on white."""
    from PIL import Image

    write_image_folder(root / "plain", per_class=8, size=size)
    for path in (root / "plain").rglob("*.png"):
        pixels = 255 - np.asarray(Image.open(path).convert("RGB"))
        pixels = (pixels * np.array([1.0, 0.6, 0.3])).astype(np.uint8)
        out = root / "shifted" / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(out)
    return root / "plain", root / "shifted"


@pytest.mark.parametrize("method", ["dann", "coral", "mmd", "augment", "dann,pseudo_label"])
def test_each_method_runs_reports_both_models_and_saves_a_loadable_classifier(tmp_path, tiny_vit_dir, method):
    source, target = shifted_images(tmp_path)
    out = tmp_path / "out"
    results = domain_adapt.run(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(source),
        target_dir=str(target),
        method=method,
        output_dir=str(out),
        pseudo_label_threshold=0.3,
        pseudo_label_rounds=1,
        **QUICK,
    )
    for key in (
        "target_test_accuracy",
        "source_only_target_test_accuracy",
        "eval_accuracy",
        "source_only_eval_accuracy",
    ):
        assert key in results, key
    assert results["target_samples"] == 16 and results["methods"] == method.split(",")
    saved = json.loads((out / "run_details.json").read_text())
    assert saved["target_test_accuracy"] == results["target_test_accuracy"]
    assert "Adapted to the target domain" in (out / "README.md").read_text()
    keys = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(out / "model.safetensors")))
    assert not any(k.startswith("domain_classifier") for k in keys), "only the classifier is saved"
    if "pseudo_label" in method:
        assert (
            results["pseudo_label_rounds"][0]["kept"] >= 0
            and "pseudo_label_accuracy" in results["pseudo_label_rounds"][0]
        )


def test_alignment_changes_the_trained_weights(tmp_path, tiny_bert_dir):
    data = write_text_table(tmp_path / "train")
    target = tmp_path / "target.csv"
    pd.DataFrame(
        {"text": [f"the film {i} was {w}" for i, w in enumerate(["great", "bad", "superb", "awful"] * 4)]}
    ).to_csv(target, index=False)
    from safetensors.torch import load_file

    def weights(method, weight=1.0):
        out = tmp_path / f"{method}{weight}"
        domain_adapt.run(
            model_name_or_path=tiny_bert_dir,
            train_file=str(data),
            target_file=str(target),
            method=method,
            alignment_weight=weight,
            output_dir=str(out),
            seed=7,
            **QUICK,
        )
        return load_file(str(out / "model.safetensors"))

    key = "backbone.encoder.layer.0.attention.self.query.weight"
    coral, mmd, heavy = weights("coral"), weights("mmd"), weights("mmd", 10.0)
    assert not torch.equal(coral[key], mmd[key])
    assert not torch.equal(mmd[key], heavy[key]), "--alignment_weight did not change the model"


def test_each_alignment_loss_has_its_default_weight_unless_one_is_given():
    from hf_transfer.domain.adaptation import alignment_weights

    assert alignment_weights(["dann", "coral", "pseudo_label"], None) == {"dann": 0.1, "coral": 1.0}
    assert alignment_weights(["dann", "mmd"], 0.5) == {"dann": 0.5, "mmd": 0.5}


def test_pseudo_labelling_reloads_with_pipeline_in_a_fresh_process(tmp_path, tiny_bert_dir):
    data = write_text_table(tmp_path / "train")
    target = write_text_table(tmp_path / "target", rows_per_class=6)  # labelled: used to report only
    out = tmp_path / "out"
    results = domain_adapt.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(data),
        target_file=str(target),
        method="pseudo_label",
        pseudo_label_threshold=0.3,
        output_dir=str(out),
        **QUICK,
    )
    assert len(results["pseudo_label_rounds"]) >= 1 and results["target_test_samples"] == 12
    assert set(pipeline_accuracy(out, target, "text-classification")["labels"]) <= {"neg", "pos"}


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_bert_dir):
    data = write_text_table(tmp_path / "train")
    out = tmp_path / "never"
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"text": []}).to_csv(empty, index=False)
    unknown = tmp_path / "unknown.csv"
    pd.DataFrame({"text": ["x", "y"], "label": ["pos", "meh"]}).to_csv(unknown, index=False)
    target = write_text_table(tmp_path / "target", rows_per_class=3)
    cases = [
        ({}, "--target_file or --target_dir is required"),
        ({"target_file": str(empty)}, "empty"),
        ({"target_file": str(unknown)}, "never has"),
        ({"target_file": str(target), "method": "dann,telepathy"}, "--method"),
        ({"target_file": str(target), "method": "augment"}, "transforms images"),
        ({"target_file": str(target), "pseudo_label_threshold": 0.0}, "threshold"),
        ({"target_file": str(tmp_path / "missing.csv")}, "does not exist"),
    ]
    for options, message in cases:
        with pytest.raises(TransferError, match=message):
            domain_adapt.run(model_name_or_path=tiny_bert_dir, train_file=str(data), output_dir=str(out), **options)
        assert not out.exists(), options


def test_lora_is_the_trainable_part_when_asked(tmp_path, tiny_bert_dir):
    data = write_text_table(tmp_path / "train")
    target = write_text_table(tmp_path / "target", rows_per_class=4)
    out = tmp_path / "out"
    results = domain_adapt.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(data),
        target_file=str(target),
        method="coral",
        peft_method="lora",
        output_dir=str(out),
        **QUICK,
    )
    assert results["adapter"] == "peft" and results["trainable_params"] < results["total_params"] / 5
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    from hf_transfer import load_adapter

    model, _ = load_adapter(str(out))
    assert any("lora_B" in name and p.abs().sum() > 0 for name, p in model.named_parameters()), "the adapter trained"


def test_target_test_dir_cap_and_rounds_are_honoured(tmp_path, tiny_vit_dir):
    source, target = shifted_images(tmp_path)
    held_out = write_image_folder(tmp_path / "held_out", per_class=3)
    results = domain_adapt.run(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(source),
        target_dir=str(target),
        target_test_dir=str(held_out),
        max_target_samples=10,
        method="pseudo_label",
        pseudo_label_threshold=0.01,
        pseudo_label_rounds=2,
        output_dir=str(tmp_path / "out"),
        **QUICK,
    )
    assert results["target_samples"] == 10 and results["target_test_samples"] == 6
    assert [r["round"] for r in results["pseudo_label_rounds"]] == [1, 2]
    assert all(r["of"] == 10 and r["kept"] > 0 for r in results["pseudo_label_rounds"])


def test_a_named_target_data_set_is_read_unlabelled_and_scored_on_its_test_split(tmp_path, tiny_vit_dir):
    results = domain_adapt.run(
        model_name_or_path=tiny_vit_dir,
        dataset_name="bundled:mnist",
        max_train_samples_per_class=3,
        max_eval_samples=20,
        target_dataset_name="bundled:mnist_m",
        max_target_samples=20,
        max_test_samples=30,
        method="coral",
        output_dir=str(tmp_path / "out"),
        **QUICK,
    )
    assert results["target_samples"] == 20 and results["target_test_samples"] == 30
    assert "target_test_accuracy" in results and "source_only_target_test_accuracy" in results
    held_out = write_image_folder(
        tmp_path / "held_out", per_class=2, classes=("3", "7")
    )  # e.g. a validation split to tune on
    results = domain_adapt.run(
        model_name_or_path=tiny_vit_dir,
        dataset_name="bundled:mnist",
        max_train_samples_per_class=3,
        max_eval_samples=20,
        target_dataset_name="bundled:mnist_m",
        max_target_samples=20,
        target_test_dir=str(held_out),
        method="coral",
        output_dir=str(tmp_path / "out2"),
        **QUICK,
    )
    assert results["target_samples"] == 20 and results["target_test_samples"] == 4


def test_two_process_pseudo_labelling_scores_each_target_row_once_and_ranks_agree(tmp_path, tiny_bert_dir):
    data = write_text_table(tmp_path / "train")
    target = write_text_table(tmp_path / "target", rows_per_class=7)
    out = tmp_path / "out"
    rank0, rank1 = run_on_two_ranks(
        "domain_adapt",
        [
            "--model_name_or_path",
            tiny_bert_dir,
            "--train_file",
            data,
            "--target_file",
            target,
            "--method",
            "pseudo_label",
            "--pseudo_label_threshold",
            "0.3",
            "--pseudo_label_rounds",
            "1",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ],
        out,
    )
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "ranks diverged: they kept different pseudo-labels"
    results = json.loads((out / "run_details.json").read_text())
    scored = [json.loads((tmp_path / "out-ranks" / f"rank{r}-teacher.json").read_text()) for r in (0, 1)]
    rounds = len(results["pseudo_label_rounds"])
    assert rounds >= 1 and len(scored[0]) == len(scored[1]) == rounds
    assert [a + b for a, b in zip(*scored)] == [results["target_samples"]] * rounds, (
        scored,
        results["target_samples"],
    )
