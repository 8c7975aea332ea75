"""Check the advisor against an exhaustive comparison: its pick vs the best strategy found, in points, and its cost.

Reads the JSON lines `compare_strategies.py` wrote, runs the advisor on the same data at every examples-per-class
size found there (with the first seed's training subset, as a user would have one; features extracted afresh, so
the time is what advice costs on new data), and prints one markdown row
per size: the pick, its mean test accuracy over seeds, the best strategy's, the gap, and the advisor's time
against the summed training time of the comparison's runs at that size.

    python scripts/check_advice.py --runs fmnist.jsonl --task fashion_mnist --image_size 64
    python scripts/check_advice.py --runs mine.jsonl --train_dir photos/ --validation_dir val/ --model_name_or_path ./my-vit
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from compare_strategies import DATA_OPTIONS, TASKS  # noqa: E402

from hf_transfer.advice.advise import advise
from hf_transfer.engine.console import command_line_output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="compare_strategies.py's JSON lines")
    parser.add_argument(
        "--task",
        choices=sorted(TASKS),
        default=None,
        help="the bundled task the comparison ran (else give the data options)",
    )
    for option in DATA_OPTIONS:
        parser.add_argument(f"--{option}", default=None)
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--output_dir", default="outputs/advice_check")
    args = parser.parse_args()
    command_line_output()
    runs = [json.loads(line) for line in pathlib.Path(args.runs).read_text().splitlines() if line.strip()]
    data = {k: getattr(args, k) for k in DATA_OPTIONS if getattr(args, k)}
    if args.task:
        data = {**TASKS[args.task], **data}
    if args.image_size:
        data["image_size"] = args.image_size
    print(
        "| per class | advisor's pick | its test accuracy | best strategy | best test accuracy | gap (points) | advisor time | comparison train time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for per_class in sorted({r["per_class"] for r in runs}):
        at_size = [r for r in runs if r["per_class"] == per_class]
        means = {
            s: 100 * statistics.mean(r["test_accuracy"] for r in at_size if r["strategy"] == s)
            for s in {r["strategy"] for r in at_size}
        }
        best = max(means, key=means.get)
        seed = min(r["seed"] for r in at_size)
        outcome = advise(
            **data,
            max_train_samples_per_class=per_class,
            seed=seed,
            no_feature_cache=True,  # the cost of advice on new data
            output_dir=f"{args.output_dir}/{per_class}",
        )
        pick = outcome["advice"]["strategy"]
        spent = sum(m["seconds"] for m in outcome["ranking"])
        compared = sum(r["train_runtime"] for r in at_size)
        print(
            f"| {per_class} | {pick} | {means.get(pick, float('nan')):.2f} | {best} | {means[best]:.2f} | {means.get(pick, float('nan')) - means[best]:+.2f} | "
            f"{spent:.0f} s | {compared:.0f} s ({100 * spent / compared:.0f}%) |"
        )


if __name__ == "__main__":
    main()
