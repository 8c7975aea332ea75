"""Each domain-adaptation method against the source-only model, on a real shift, over several seeds.

Default shift: MNIST-5k digits (labelled source) -> MNIST-M (the same kind of digits blended over patches of colour
photographs, unlabelled target; its test split scores), with the bundled pretrained EfficientNet-Lite0. Every run
of recipes/domain_adapt.py also trains the source-only model with the same seed and epochs, so each row compares
like with like.

    python scripts/benchmark_domain_adapt.py --seeds 42 43 --methods dann coral mmd augment pseudo_label dann,pseudo_label
    python scripts/benchmark_domain_adapt.py -- --model_name_or_path bundled:minilm-l6 --dataset_name ... --target_file ...
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile

from recipes import domain_adapt

MNIST_TO_MNIST_M = [
    "--model_name_or_path",
    "bundled:efficientnet-lite0",
    "--dataset_name",
    "bundled:mnist",
    "--max_train_samples_per_class",
    "100",
    "--max_eval_samples",
    "500",
    "--target_dataset_name",
    "bundled:mnist_m",
    "--max_target_samples",
    "1000",
    "--max_test_samples",
    "1000",
    "--image_size",
    "32",
    "--num_train_epochs",
    "3",
    "--disable_tqdm",
    "true",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--methods", nargs="+", default=["dann", "coral", "mmd", "augment", "pseudo_label"])
    parser.add_argument("--output", default=None, help="JSON lines file for the rows")
    parser.add_argument(
        "recipe_args", nargs="*", help="recipe arguments after --, replacing the MNIST -> MNIST-M set-up"
    )
    options = parser.parse_args()
    recipe_args = options.recipe_args or MNIST_TO_MNIST_M
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for seed in options.seeds:
            for method in options.methods:
                out = pathlib.Path(root) / f"{method}-{seed}"
                result = domain_adapt.run(
                    recipe_args + ["--method", method, "--seed", str(seed), "--output_dir", str(out)]
                )
                rows.append(
                    {
                        "seed": seed,
                        "method": method,
                        **{
                            k: result.get(k)
                            for k in (
                                "target_test_accuracy",
                                "source_only_target_test_accuracy",
                                "test_accuracy",
                                "source_only_test_accuracy",
                                "pseudo_label_rounds",
                            )
                        },
                    }
                )
                print(table(rows), flush=True)
    if options.output:
        pathlib.Path(options.output).write_text("".join(json.dumps(r) + "\n" for r in rows))


def table(rows: list[dict]) -> str:
    def mean(values):
        values = [100 * v for v in values if v is not None]
        return (
            f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")
            if values
            else "n/a"
        )

    lines = [
        "| method | target test: source only | target test: adapted | source test: source only | source test: adapted | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        chosen = [r for r in rows if r["method"] == method]
        lines.append(
            f"| {method} | {mean(r['source_only_target_test_accuracy'] for r in chosen)} | {mean(r['target_test_accuracy'] for r in chosen)} | "
            f"{mean(r['source_only_test_accuracy'] for r in chosen)} | {mean(r['test_accuracy'] for r in chosen)} | {len(chosen)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
