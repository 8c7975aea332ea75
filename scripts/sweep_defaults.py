"""Choose a recipe's defaults on a validation split: run a grid of settings and print validation accuracy only.

The test split is never looked at (it is capped at a handful of examples and its figures are dropped), and
no best-epoch selection is done, so each setting is judged by its final-epoch validation accuracy. A setting's
UPPER-CASE keys set constants of `hf_transfer.defaults` for its runs (rules that are not command-line options, such as
full fine-tuning's FULL_FINETUNE_HEAD_L2_CHOICE).

    python scripts/sweep_defaults.py --recipe full_finetune --task image_fmnist --per_class 50 \
        --grid '[{"learning_rate": 1e-4}, {"learning_rate": 1e-3}]' --seeds 0 --output sweep.jsonl
    python scripts/sweep_defaults.py --recipe gradual_unfreeze --task image_mnist --per_class 5 --epochs 5 --seeds 0 1 2 \
        --grid '[{"GRADUAL_UNFREEZE_HEAD_L2_CHOICE": "best"}, {"GRADUAL_UNFREEZE_HEAD_L2_CHOICE": "one_se"}]'
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import pathlib
import statistics
import tempfile
from unittest import mock

from hf_transfer import defaults

TASKS = {
    "text": {"model_name_or_path": "bundled:minilm-l6", "dataset_name": "bundled:rotten_tomatoes"},
    "image_fmnist": {
        "model_name_or_path": "bundled:efficientnet-lite0",
        "dataset_name": "bundled:fashion_mnist",
        "image_size": 64,
    },
    "image_mnist": {
        "model_name_or_path": "bundled:efficientnet-lite0",
        "dataset_name": "bundled:mnist",
        "image_size": 64,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help="module name under recipes/, e.g. full_finetune")
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--max_eval_samples", type=int, default=500)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--grid", required=True, help="JSON list of argument dicts, one per setting")
    parser.add_argument("--output", default=None, help="append one JSON line per run here")
    args = parser.parse_args()

    recipe = importlib.import_module(f"recipes.{args.recipe}")
    grid = json.loads(args.grid)
    for setting in grid:
        if unknown := [k for k in setting if k.isupper() and not hasattr(defaults, k)]:
            parser.error(f"hf_transfer.defaults has no constant {unknown[0]}")
    common = {
        **TASKS[args.task],
        "max_train_samples_per_class": args.per_class,
        "max_eval_samples": args.max_eval_samples,
        "max_test_samples": 10,
        "num_train_epochs": args.epochs,
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "disable_tqdm": True,
    }
    summary = []
    with tempfile.TemporaryDirectory() as scratch:
        for index, setting in enumerate(grid):
            accuracies = []
            constants = {k: v for k, v in setting.items() if k.isupper()}
            options = {k: v for k, v in setting.items() if not k.isupper()}
            for seed in args.seeds:
                with (
                    mock.patch.multiple(defaults, **constants) if constants else contextlib.nullcontext()
                ):  # restored after the run
                    result = recipe.run(
                        **common, **options, seed=seed, output_dir=str(pathlib.Path(scratch) / f"run-{index}-{seed}")
                    )
                accuracies.append(result["eval_accuracy"])
                record = {
                    "recipe": args.recipe,
                    "task": args.task,
                    "per_class": args.per_class,
                    "seed": seed,
                    "setting": setting,
                    "eval_accuracy": result["eval_accuracy"],
                    "eval_loss": result.get("eval_loss"),
                    "train_runtime": result["train_runtime"],
                }
                if args.output:
                    with open(args.output, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
            summary.append((setting, statistics.mean(accuracies)))
    print(f"\n{args.recipe} on {args.task}, {args.per_class} per class, validation accuracy (final epoch):")
    for setting, accuracy in summary:
        print(f"  {100 * accuracy:6.2f}%  {json.dumps(setting)}")


if __name__ == "__main__":
    main()
