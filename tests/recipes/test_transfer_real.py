"""Real pretrained weights on real data: a fine-tuned model beats chance by a wide margin on held-out data.

Sized for 2 CPU cores (small subsets, 96 px images); the docs' figures come from the full-size runs.
"""

import json

import pytest

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune

pytestmark = pytest.mark.slow
TEXT = {
    "model_name_or_path": "bundled:minilm-l6",
    "dataset_name": "bundled:rotten_tomatoes",
    "max_seq_length": 64,
    "max_eval_samples": 200,
    "max_test_samples": 500,
}
IMAGES = {
    "model_name_or_path": "bundled:efficientnet-lite0",
    "dataset_name": "bundled:fashion_mnist",
    "image_size": 96,
    "max_eval_samples": 100,
    "max_test_samples": 300,
}


def test_text_feature_extraction_beats_chance_and_a_plain_logistic_regression(tmp_path):
    options = {**TEXT, "max_train_samples_per_class": 100, "feature_cache_dir": str(tmp_path / "cache")}
    results = feature_extraction.run(**options, output_dir=str(tmp_path / "out"))
    assert results["test_accuracy"] > 0.62, results["test_accuracy"]  # chance: 0.5 (balanced-ish test set)
    assert results["trainable_params"] == 384 * 2 + 2
    # the reference: scikit-learn's default LogisticRegression (C=1, raw features) on the very same cached features
    features = cached_splits(options)
    reference = plain_logistic_regression(features["train"], features["test"])
    assert results["test_accuracy"] >= reference - 0.005, (results["test_accuracy"], reference)


def cached_splits(options: dict) -> dict:
    from hf_transfer.features.cache import FeatureCacheArguments, cache_options, cached_features
    from hf_transfer.features.extraction import ExtractionSettings
    from hf_transfer.features.head_fitting import HeadFitArguments
    from hf_transfer.pipeline import training
    from hf_transfer.pipeline.arguments import parse_recipe_args

    args = parse_recipe_args(
        feature_extraction.DEFAULTS,
        [],
        {**options, "output_dir": "unused"},
        extra_dataclasses=(FeatureCacheArguments, HeadFitArguments),
    )
    job = training.prepare(args, native=False)
    cached, status = cached_features(
        job.model,
        job.datasets,
        job.collator,
        ExtractionSettings(),
        **cache_options(args.option(FeatureCacheArguments)),
    )
    assert set(status.values()) == {"hit"}  # the recipe's own features
    return {split: dataset.tensors for split, dataset in cached.items()}


def plain_logistic_regression(train, test) -> float:
    """Test accuracy of scikit-learn's default LogisticRegression objective, fitted to convergence (as the benchmark does)."""
    import torch

    from scripts.benchmark_head import plain_logistic_regression as fit

    linear = torch.nn.Linear(train[0].shape[1], int(train[1].max()) + 1)
    fit(linear, train)
    with torch.no_grad():
        return (linear(test[0]).argmax(1) == test[1]).float().mean().item()


def test_text_full_finetune_beats_chance(tmp_path):
    results = full_finetune.run(
        **TEXT,
        max_train_samples_per_class=100,
        num_train_epochs=4,
        output_dir=str(tmp_path / "out"),
        save_strategy="no",
        load_best_model_at_end=False,
    )
    assert results["test_accuracy"] > 0.62, results["test_accuracy"]


def test_image_feature_extraction_beats_chance(tmp_path):
    results = feature_extraction.run(**IMAGES, max_train_samples_per_class=20, output_dir=str(tmp_path / "out"))
    assert results["test_accuracy"] > 0.5, results["test_accuracy"]  # chance: 0.1


def test_image_full_finetune_beats_chance(tmp_path):
    results = full_finetune.run(
        **IMAGES,
        max_train_samples_per_class=20,
        num_train_epochs=5,
        learning_rate=5e-4,
        output_dir=str(tmp_path / "out"),
        save_strategy="no",
        load_best_model_at_end=False,
    )
    assert results["test_accuracy"] > 0.5, results["test_accuracy"]  # chance: 0.1


def test_text_lora_beats_chance_and_the_reloaded_adapter_scores_the_same(tmp_path):
    import numpy as np
    import torch

    import recipes.lora_bert as lora_bert
    from hf_transfer import load_adapter
    from hf_transfer.data.loading import DataArguments, load_labelled_data

    out = tmp_path / "out"
    results = lora_bert.run(
        **TEXT,
        max_train_samples_per_class=100,
        num_train_epochs=4,
        learning_rate=1e-3,
        output_dir=str(out),
        save_strategy="no",
        load_best_model_at_end=False,
    )
    assert results["test_accuracy"] > 0.62, results["test_accuracy"]
    assert results["trainable_params"] < 0.01 * results["total_params"]
    test = load_labelled_data(
        DataArguments(dataset_name=TEXT["dataset_name"], max_test_samples=TEXT["max_test_samples"]),
        seed=42,
        modality="text",
    ).splits["test"]
    model, tokenizer = load_adapter(str(out))
    predictions = []
    with torch.no_grad():
        for start in range(0, len(test), 100):
            batch = tokenizer(
                list(test["text"][start : start + 100]),
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            predictions.append(model(**batch).logits.argmax(-1).numpy())
    labels = np.array(
        [
            label if isinstance(label, (int, np.integer)) else results["label_names"].index(label)
            for label in test["label"]
        ]
    )
    assert np.mean(np.concatenate(predictions) == labels) == pytest.approx(results["test_accuracy"], abs=1e-9)


def test_a_diverging_learning_rate_is_caught_restored_and_lowered(tmp_path, request, capsys):
    """Full fine-tuning of EfficientNet-Lite0 at 30x its learning rate: without the guard the loss explodes and the
    run ends at chance; with it the weights go back, the rates come down and the run ends far above chance."""
    options = {
        "model_name_or_path": "bundled:efficientnet-lite0",
        "dataset_name": "bundled:mnist",
        "image_size": 32,
        "max_train_samples_per_class": 20,
        "max_eval_samples": 200,
        "max_test_samples": 400,
        "num_train_epochs": 3,
        "learning_rate": 1e-2,
        "seed": 0,
        "feature_cache_dir": str(tmp_path / "cache"),
    }
    guarded = full_finetune.run(**options, output_dir=str(tmp_path / "guarded"))
    assert "training diverged at step" in capsys.readouterr().out
    assert (
        guarded["divergence_restores"] >= 1
        and guarded["divergence_events"][0]["loss"] > 4 * guarded["divergence_events"][0]["level"]
    )
    assert guarded["test_accuracy"] > 0.5, guarded["test_accuracy"]  # chance: 0.1
    saved = json.loads((tmp_path / "guarded" / "all_results.json").read_text())
    assert saved["divergence_restores"] == guarded["divergence_restores"]

    request.getfixturevalue("divergence_guard_off")
    unguarded = full_finetune.run(**options, output_dir=str(tmp_path / "unguarded"))
    assert unguarded["test_accuracy"] < 0.3, unguarded["test_accuracy"]  # what a run without the guard ends at
