"""Compare transfer strategies on the same data, budget, seeds and held-out test set: feature extraction,
full fine-tuning, gradual unfreezing with discriminative LRs, and LoRA, each with its recipe's defaults.

Every run's figures go to --output (JSON lines); runs already there are skipped, so an interrupted
comparison continues where it stopped. Prints a markdown table: mean ± standard deviation over seeds of
test accuracy and macro-F1, trainable parameters and train time, per examples-per-class size.

    python scripts/compare_strategies.py --task text --per_class 20 100 --seeds 1 2 3 --output text.jsonl
    python scripts/compare_strategies.py --task fashion_mnist --per_class 20 100 --image_size 64 --output fmnist.jsonl
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
import recipes.peft_finetune as peft_finetune

TASKS = {
    "text": {"model_name_or_path": "bundled:minilm-l6", "dataset_name": "bundled:rotten_tomatoes", "max_eval_samples": 500},
    "fashion_mnist": {"model_name_or_path": "bundled:efficientnet-lite0", "dataset_name": "bundled:fashion_mnist", "max_eval_samples": 500,
                      "max_test_samples": 1000},
    "mnist": {"model_name_or_path": "bundled:efficientnet-lite0", "dataset_name": "bundled:mnist", "max_eval_samples": 500},
}
STRATEGIES = {
    "feature_extraction": (feature_extraction.run, {}),
    "full_finetune": (full_finetune.run, {}),
    "gradual_unfreeze": (gradual_unfreeze.run, {}),
    "lora": (peft_finetune.run, {"peft_method": "lora"}),
}
FIGURES = ("test_accuracy", "test_f1_macro", "eval_accuracy", "train_runtime", "trainable_params", "kept_epoch")


def _done(output: pathlib.Path | None) -> list[dict]:
    if output is None or not output.is_file():
        return []
    return [json.loads(line) for line in output.read_text().splitlines() if line.strip()]


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.2f} ± {scale * spread:.2f}"


def table(runs: list[dict], strategies: list[str]) -> str:
    lines = ["| per class | strategy | test accuracy | test macro-F1 | trainable params | train time (s) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for per_class in sorted({r["per_class"] for r in runs}):
        for name in strategies:
            chosen = [r for r in runs if r["per_class"] == per_class and r["strategy"] == name]
            if chosen:
                lines.append(f"| {per_class} | {name} | {_mean_std([r['test_accuracy'] for r in chosen])} | "
                             f"{_mean_std([r['test_f1_macro'] for r in chosen])} | {chosen[0]['trainable_params']:,} | "
                             f"{statistics.mean(r['train_runtime'] for r in chosen):.0f} | {len(chosen)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="text")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--per_class", type=int, nargs="+", default=[100])
    parser.add_argument("--epochs", type=float, default=None,
                        help="one epoch budget for every strategy that trains the backbone (default: each recipe's own); "
                             "feature extraction keeps its head epochs on cached features, which take seconds")
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--output", default=None, help="JSON-lines file of every run's figures; finished runs in it are not redone")
    args = parser.parse_args()

    output = pathlib.Path(args.output) if args.output else None
    runs = [r for r in _done(output) if r["task"] == args.task and (r.get("image_size"), r.get("epochs")) == (args.image_size, args.epochs)]
    common = {**TASKS[args.task], "disable_tqdm": True}
    if args.image_size:
        common["image_size"] = args.image_size
    with tempfile.TemporaryDirectory() as scratch:
        for per_class in args.per_class:
            for seed in args.seeds:
                for name in args.strategies:
                    if any(r["strategy"] == name and r["seed"] == seed and r["per_class"] == per_class for r in runs):
                        continue
                    run, options = STRATEGIES[name]
                    if args.epochs and name != "feature_extraction":
                        options = {**options, "num_train_epochs": args.epochs}
                    result = run(**common, **options, max_train_samples_per_class=per_class, seed=seed,
                                 output_dir=str(pathlib.Path(scratch) / f"{name}-{per_class}-{seed}"))
                    runs.append({"task": args.task, "strategy": name, "per_class": per_class, "seed": seed,
                                 "image_size": args.image_size, "epochs": args.epochs, **{k: result.get(k) for k in FIGURES}})
                    if output is not None:
                        with output.open("a") as handle:
                            handle.write(json.dumps(runs[-1]) + "\n")
    chosen = [r for r in runs if r["seed"] in args.seeds and r["per_class"] in args.per_class and r["strategy"] in args.strategies]
    print(f"\n{args.task}: seeds {args.seeds}, test accuracy and macro-F1 in %, mean ± stdev\n")
    print(table(chosen, args.strategies))


if __name__ == "__main__":
    main()
