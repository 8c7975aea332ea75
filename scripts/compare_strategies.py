"""Compare transfer strategies on the same data, budget, seeds and held-out test set: zero-shot (strategy 0, text: no
labels at all, the floor every other strategy has to beat), feature extraction,
full fine-tuning (its head fitted on frozen features first, LP-FT; `random_head`: from a random head), gradual
unfreezing with discriminative LRs, LoRA, bottleneck adapters, and the same architecture from random
initialisation (no transfer), each with its recipe's defaults.

Every run's figures go to --output (JSON lines); runs already there are skipped, so an interrupted
comparison continues where it stopped. Writes, next to it (or to --report_dir): results.csv (one row per
run), comparison.md (mean ± standard deviation over seeds of test accuracy and macro-F1, trainable
parameters and train time, per examples-per-class size, with negative transfer flagged: random
initialisation matching or beating a pretrained start, and the fewest examples per class at which each strategy
beats zero-shot) and three PNG plots (accuracy vs examples per
class, vs trainable parameters, vs train time). Frozen features come from the on-disk feature cache.

    python scripts/compare_strategies.py --task text --per_class 20 100 --seeds 1 2 3 --output text.jsonl
    python scripts/compare_strategies.py --task fashion_mnist --per_class 20 100 --image_size 64 --output fmnist.jsonl
    python scripts/compare_strategies.py --model_name_or_path ./my-vit --train_dir photos/ --test_dir photos_test/ --output mine.jsonl
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
import recipes.zero_shot as zero_shot
from hf_transfer.engine.console import command_line_output
from hf_transfer.errors import TransferError

TASKS = {
    "text": {
        "model_name_or_path": "bundled:minilm-l6",
        "dataset_name": "bundled:rotten_tomatoes",
        "max_eval_samples": 500,
    },
    "fashion_mnist": {
        "model_name_or_path": "bundled:efficientnet-lite0",
        "dataset_name": "bundled:fashion_mnist",
        "max_eval_samples": 500,
        "max_test_samples": 1000,
    },
    "mnist": {
        "model_name_or_path": "bundled:efficientnet-lite0",
        "dataset_name": "bundled:mnist",
        "max_eval_samples": 500,
    },
}
STRATEGIES = {
    "zero_shot": (zero_shot.run, {}),  # label names in a template; the training examples are not used
    "feature_extraction": (feature_extraction.run, {}),
    "full_finetune": (full_finetune.run, {}),
    "random_head": (full_finetune.run, {"head_phase": "none"}),  # full fine-tuning without LP-FT's fitted head
    "gradual_unfreeze": (gradual_unfreeze.run, {}),
    "lora": (peft_finetune.run, {"peft_method": "lora"}),
    "bottleneck": (peft_finetune.run, {"peft_method": "bottleneck"}),
    # no transfer: full fine-tuning of fresh weights, BatchNorm re-estimating statistics it never had
    "random_init": (full_finetune.run, {"random_init": True, "update_bn_statistics": True, "head_phase": "none"}),
}
DEFAULT_STRATEGIES = ["zero_shot", "feature_extraction", "full_finetune", "gradual_unfreeze", "lora", "random_init"]
DATA_OPTIONS = (
    "model_name_or_path",
    "dataset_name",
    "train_file",
    "validation_file",
    "test_file",
    "train_dir",
    "validation_dir",
    "test_dir",
    "text_column_name",
    "label_column_name",
)
FIGURES = ("test_accuracy", "test_f1_macro", "eval_accuracy", "train_runtime", "trainable_params", "kept_epoch")


def _done(output: pathlib.Path | None) -> list[dict]:
    if output is None or not output.is_file():
        return []
    return [json.loads(line) for line in output.read_text().splitlines() if line.strip()]


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.2f} ± {scale * spread:.2f}"


def _mean(runs: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in runs)


def negative_transfer(runs: list[dict], per_class: int) -> list[str]:
    """Pretrained strategies that random initialisation matches or beats (mean test accuracy) at this size."""
    by_strategy = {
        name: [r for r in runs if r["per_class"] == per_class and r["strategy"] == name]
        for name in {r["strategy"] for r in runs}
    }
    scratch = by_strategy.pop("random_init", [])
    if not scratch:
        return []
    return sorted(
        name
        for name, chosen in by_strategy.items()
        if chosen and _mean(chosen, "test_accuracy") <= _mean(scratch, "test_accuracy")
    )


def beats_zero_shot(runs: list[dict]) -> list[str]:
    """For each strategy, the fewest examples per class at which its mean test accuracy is above zero-shot's."""
    floor = [r["test_accuracy"] for r in runs if r["strategy"] == "zero_shot"]
    if not floor:
        return []
    level, notes = statistics.mean(floor), []
    for name in dict.fromkeys(r["strategy"] for r in runs if r["strategy"] != "zero_shot"):
        sizes = sorted({r["per_class"] for r in runs if r["strategy"] == name})
        above = [
            k
            for k in sizes
            if _mean([r for r in runs if r["strategy"] == name and r["per_class"] == k], "test_accuracy") > level
        ]
        notes.append(f"{name} from {above[0]} per class" if above else f"{name} at none of {sizes} per class")
    return [f"Zero-shot (no labels) scores {100 * level:.1f}%; beaten by " + ", ".join(notes) + "."]


def table(runs: list[dict], strategies: list[str]) -> str:
    lines = [
        "| per class | strategy | test accuracy | test macro-F1 | trainable params | train time (s) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for per_class in sorted({r["per_class"] for r in runs}):
        for name in strategies:
            chosen = [r for r in runs if r["per_class"] == per_class and r["strategy"] == name]
            if chosen:
                lines.append(
                    f"| {per_class} | {name} | {_mean_std([r['test_accuracy'] for r in chosen])} | "
                    f"{_mean_std([r['test_f1_macro'] for r in chosen])} | {chosen[0]['trainable_params']:,} | "
                    f"{_mean(chosen, 'train_runtime'):.0f} | {len(chosen)} |"
                )
        negative = negative_transfer(runs, per_class)
        if negative:
            notes.append(
                f"**Negative transfer at {per_class} per class**: random initialisation matches or beats {', '.join(negative)}."
            )
    notes += beats_zero_shot(runs)
    return "\n".join(lines + ([""] + notes if notes else []))


def write_csv(runs: list[dict], path: pathlib.Path) -> None:
    import csv

    columns = ["task", "strategy", "per_class", "seed", "image_size", "epochs", *FIGURES]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


def plot(runs: list[dict], strategies: list[str], folder: pathlib.Path, title: str) -> list[pathlib.Path]:
    """Accuracy vs examples per class (spread over seeds shaded), vs trainable parameters, vs train time."""
    from hf_transfer.runs.plots import _pyplot

    plt = _pyplot()
    written = []
    for x_key, name, log_x in (
        ("per_class", "accuracy_vs_examples_per_class.png", True),
        ("trainable_params", "accuracy_vs_trainable_params.png", True),
        ("train_runtime", "accuracy_vs_train_time.png", False),
    ):
        figure, axis = plt.subplots(figsize=(6, 4))
        for strategy in strategies:
            chosen = [r for r in runs if r["strategy"] == strategy]
            if not chosen:
                continue
            sizes = sorted({r["per_class"] for r in chosen})
            points = [[r for r in chosen if r["per_class"] == size] for size in sizes]
            xs = [sizes[i] if x_key == "per_class" else _mean(p, x_key) for i, p in enumerate(points)]
            means = [100 * _mean(p, "test_accuracy") for p in points]
            spread = [100 * (statistics.stdev(r["test_accuracy"] for r in p) if len(p) > 1 else 0.0) for p in points]
            axis.plot(xs, means, marker="o", label=strategy)
            axis.fill_between(
                xs, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)], alpha=0.2
            )
        axis.set(
            xlabel={
                "per_class": "training examples per class",
                "trainable_params": "trainable parameters",
                "train_runtime": "train time (s)",
            }[x_key],
            ylabel="test accuracy (%)",
            title=title,
        )
        if log_x:
            axis.set_xscale("log")
        if x_key == "per_class":
            sizes = sorted({r["per_class"] for r in runs})
            axis.set_xticks(sizes, [str(size) for size in sizes])
            axis.minorticks_off()
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        written.append(folder / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        default="text",
        help="a bundled data set and checkpoint (data options below override)",
    )
    for option in DATA_OPTIONS:
        parser.add_argument(f"--{option}", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--per_class", type=int, nargs="+", default=[100])
    parser.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="one epoch budget for every strategy that trains the backbone (default: each recipe's own); "
        "feature extraction fits its head to convergence on cached features, in seconds",
    )
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES, choices=list(STRATEGIES))
    parser.add_argument(
        "--output", default=None, help="JSON-lines file of every run's figures; finished runs in it are not redone"
    )
    parser.add_argument(
        "--report_dir",
        default=None,
        help="where results.csv, comparison.md and the plots go (default: beside --output, else .)",
    )
    args = parser.parse_args()
    command_line_output()

    output = pathlib.Path(args.output) if args.output else None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)  # before the first run, not after it
    mine = {k: getattr(args, k) for k in DATA_OPTIONS if getattr(args, k)}
    task = "custom" if mine else args.task
    runs = [
        r
        for r in _done(output)
        if r["task"] == task and (r.get("image_size"), r.get("epochs")) == (args.image_size, args.epochs)
    ]
    if mine.keys() - {"model_name_or_path"}:  # the user's own data: the task only lends its checkpoint as a default
        common = {"model_name_or_path": TASKS[args.task]["model_name_or_path"], **mine}
    else:
        common = {**TASKS[args.task], **mine}
    common["disable_tqdm"] = True
    if args.image_size:
        common["image_size"] = args.image_size
    skipped = set()
    with tempfile.TemporaryDirectory() as scratch:
        for per_class in args.per_class:
            for seed in args.seeds:
                for name in args.strategies:
                    if name in skipped or any(
                        r["strategy"] == name and r["seed"] == seed and r["per_class"] == per_class for r in runs
                    ):
                        continue
                    run, options = STRATEGIES[name]
                    if args.epochs and name not in ("feature_extraction", "zero_shot"):
                        options = {**options, "num_train_epochs": args.epochs}
                    try:
                        result = run(
                            **common,
                            **options,
                            max_train_samples_per_class=per_class,
                            seed=seed,
                            output_dir=str(pathlib.Path(scratch) / f"{name}-{per_class}-{seed}"),
                        )
                    except TransferError as exc:
                        if name != "zero_shot":
                            raise
                        print(f"zero_shot: skipped ({exc})")  # images, on a checkpoint without a text tower
                        skipped.add(name)
                        continue
                    runs.append(
                        {
                            "task": task,
                            "strategy": name,
                            "per_class": per_class,
                            "seed": seed,
                            "image_size": args.image_size,
                            "epochs": args.epochs,
                            **{k: result.get(k) for k in FIGURES},
                        }
                    )
                    if output is not None:
                        with output.open("a") as handle:
                            handle.write(json.dumps(runs[-1]) + "\n")
    args.strategies = [name for name in args.strategies if name not in skipped]
    chosen = [
        r
        for r in runs
        if r["seed"] in args.seeds and r["per_class"] in args.per_class and r["strategy"] in args.strategies
    ]
    report = pathlib.Path(args.report_dir) if args.report_dir else (output.parent if output else pathlib.Path("."))
    report.mkdir(parents=True, exist_ok=True)
    markdown = f"{task}: seeds {args.seeds}, test accuracy and macro-F1 in %, mean ± stdev\n\n{table(chosen, args.strategies)}\n"
    (report / "comparison.md").write_text(markdown)
    write_csv(chosen, report / "results.csv")
    figures = plot(chosen, args.strategies, report, task)
    print("\n" + markdown)
    print(f"written to {report}: results.csv, comparison.md, {', '.join(p.name for p in figures)}")


if __name__ == "__main__":
    main()
