"""Compare transfer strategies on the same data, epochs and seeds: feature extraction, full fine-tuning
with one flat LR, and gradual unfreezing with discriminative LRs. Prints mean and spread per strategy
and writes every run's figures to --output (JSON).

    python scripts/compare_strategies.py --task text  --seeds 1 2 3
    python scripts/compare_strategies.py --task image --seeds 1 2 3 --image_size 64 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune
import recipes.gradual_unfreeze as gradual_unfreeze

TASKS = {
    "text": {"model_name_or_path": "bundled:minilm-l6", "dataset_name": "bundled:rotten_tomatoes", "max_eval_samples": 500},
    "image": {"model_name_or_path": "bundled:efficientnet-lite0", "dataset_name": "bundled:fashion_mnist", "max_eval_samples": 500,
              "max_test_samples": 1000},
}
STRATEGIES = {"feature_extraction": feature_extraction.run, "full_finetune": full_finetune.run, "gradual_unfreeze": gradual_unfreeze.run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="text")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--output", default=None, help="JSON file for every run's figures")
    args = parser.parse_args()

    common = {**TASKS[args.task], "max_train_samples_per_class": args.per_class, "num_train_epochs": args.epochs,
              "save_strategy": "no", "load_best_model_at_end": False, "disable_tqdm": True}
    if args.image_size:
        common["image_size"] = args.image_size
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for name in args.strategies:
                result = STRATEGIES[name](**common, seed=seed, output_dir=str(pathlib.Path(scratch) / f"{name}-{seed}"))
                runs.append({"strategy": name, "seed": seed, **{k: result[k] for k in ("test_accuracy", "test_f1_macro", "train_runtime", "trainable_params")}})
                print(json.dumps(runs[-1]), flush=True)
    print(f"\n{args.task}: {args.per_class} per class, {args.epochs:g} epochs, seeds {args.seeds} (test accuracy, mean ± stdev)")
    for name in args.strategies:
        accuracies = [r["test_accuracy"] for r in runs if r["strategy"] == name]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        runtime = statistics.mean(r["train_runtime"] for r in runs if r["strategy"] == name)
        print(f"  {name:20s} {100 * statistics.mean(accuracies):6.2f}% ± {100 * spread:4.2f}   (train {runtime:6.1f} s)")
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps({"config": vars(args), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
