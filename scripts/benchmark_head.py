"""The feature-extraction head three ways, on the same cached features: the L-BFGS logistic regression with L2 and
scaling chosen on validation (the default), AdamW with the recipe's schedule (1e-3, 30 epochs, cosine, batch 16, best
epoch on validation: what the head's Trainer run did before), and a plain L2 logistic regression (scikit-learn's
default objective, C=1 on raw features, fitted to convergence). Prints validation and test accuracy and the seconds
each fit takes beside the seconds the backbone took to extract the features.

    python scripts/benchmark_head.py                                  # the bundled set-ups below
    python scripts/make_check_sets.py --output_dir check_sets && python scripts/benchmark_head.py --check_sets check_sets
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_transfer.features.cache import FeatureCacheArguments, cached_features
from hf_transfer.features.extraction import ExtractionSettings
from hf_transfer.features.head_fitting import HeadFitArguments, fit_by_gradient_steps, fit_logistic_regression
from hf_transfer.models.freezing import freeze
from hf_transfer.models.transfer_classifier import ClassificationHead
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args
from recipes.feature_extraction import DEFAULTS

TEXT = {"model_name_or_path": "bundled:minilm-l6"}
IMAGES = {"model_name_or_path": "bundled:efficientnet-lite0", "image_size": 64}
BUNDLED = {
    "Rotten Tomatoes, 40/class": {
        **TEXT,
        "dataset_name": "bundled:rotten_tomatoes",
        "max_train_samples_per_class": 40,
        "max_test_samples": 2000,
    },
    "Rotten Tomatoes, 100/class": {
        **TEXT,
        "dataset_name": "bundled:rotten_tomatoes",
        "max_train_samples_per_class": 100,
        "max_test_samples": 2000,
    },
    "2012 convention speeches, 100/class": {
        **TEXT,
        "dataset_name": "bundled:convention_speeches_2012",
        "max_train_samples_per_class": 100,
    },
    "Fashion-MNIST 64 px, 100/class": {
        **IMAGES,
        "dataset_name": "bundled:fashion_mnist",
        "max_train_samples_per_class": 100,
        "max_test_samples": 1000,
    },
}


def check_set_ups(root: str) -> dict:
    def splits(kind: str, name: str) -> dict:
        return {
            f"{split}_{kind}": f"{root}/{name}/{split}" + (".csv" if kind == "file" else "")
            for split in ("train", "validation", "test")
        }

    return {
        "debate statements (check set), 40/class": {
            **TEXT,
            **splits("file", "debates"),
            "max_train_samples_per_class": 40,
        },
        "UCI digits 64 px (check set), 40/class": {
            **IMAGES,
            **splits("dir", "digits"),
            "max_train_samples_per_class": 40,
        },
    }


def features_of(options: dict):
    args = parse_recipe_args(
        DEFAULTS, [], {**options, "output_dir": "unused"}, extra_dataclasses=(FeatureCacheArguments, HeadFitArguments)
    )
    job = training.prepare(args, native=False)
    freeze(job.model.backbone)
    start = time.perf_counter()
    cached, status = cached_features(
        job.model, job.datasets, job.collator, ExtractionSettings.of_run(job.args.training)
    )
    return {split: d.tensors for split, d in cached.items()}, time.perf_counter() - start, status, args.training


def accuracy(head, split) -> float:
    with torch.no_grad():
        return (head(split[0]).argmax(1) == split[1]).float().mean().item()


def plain_logistic_regression(linear, train, C: float = 1.0) -> None:
    """scikit-learn's LogisticRegression() objective divided by n: mean cross-entropy + ||W||^2 / (2 C n)."""
    x, y = train
    optimizer = torch.optim.LBFGS(
        linear.parameters(), max_iter=2000, line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-12
    )

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + linear.weight.pow(2).sum() / (2 * C * len(y))
        loss.backward()
        return loss

    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer.step(closure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check_sets", default=None, help="folder written by scripts/make_check_sets.py: add its two sets"
    )
    options = parser.parse_args()
    set_ups = {**BUNDLED, **(check_set_ups(options.check_sets) if options.check_sets else {})}
    print(
        "| set-up | train | L-BFGS, L2 on validation (default) | AdamW 30 epochs (previous head) | plain logistic regression, C=1 | "
        "fit s: L-BFGS / AdamW | extraction s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, set_up in set_ups.items():
        splits, extraction_seconds, status, training_args = features_of(set_up)
        dim, classes = splits["train"][0].shape[1], int(splits["train"][1].max()) + 1
        row, seconds = {}, {}
        for method in ("lbfgs", "adamw", "plain"):
            head = ClassificationHead(dim, classes, "linear", dropout=0.1 if method == "adamw" else 0.0)
            start = time.perf_counter()
            if method == "lbfgs":
                fit_logistic_regression(head.layers[1], splits["train"], splits["validation"])
            elif method == "adamw":
                fit_by_gradient_steps(head, splits["train"], splits["validation"], training_args)
            else:
                plain_logistic_regression(head.layers[1], splits["train"])
            seconds[method] = time.perf_counter() - start
            head.eval()
            row[method] = (
                f"{100 * accuracy(head, splits['validation']):.1f} / {100 * accuracy(head, splits['test']):.1f}"
            )
        cached = "cached" if set(status.values()) == {"hit"} else f"{extraction_seconds:.1f}"
        print(
            f"| {name} | {len(splits['train'][1])} | {row['lbfgs']} | {row['adamw']} | {row['plain']} | "
            f"{seconds['lbfgs']:.1f} / {seconds['adamw']:.1f} | {cached} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
