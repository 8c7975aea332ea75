"""The per-example feature cache in the runs a user repeats: another seed, then the same CSV with new rows.

A training CSV without a validation file (so each seed holds out another validation split) is given to
`recipes/feature_extraction.py`, each run a fresh process as a user would start it, against an empty cache:

1. seed 1: every example is extracted;
2. seed 2: another validation split, the same examples: nothing should be extracted;
3. the CSV plus `--new_fraction` new rows, seed 1: only the new rows should be extracted.

Printed: each run's wall time (process start to exit), its feature time (`feature_seconds`), the ratio to the first
run, the examples the cache held before and after (what was extracted), and whether the features the second run
read equal, bit for bit, what the first run extracted, and how far they are from a fresh extraction of the same split
in another batch order. Default data: the bundled Rotten Tomatoes training pool (8,530 snippets), bundled MiniLM.

    python scripts/benchmark_feature_cache.py
    python scripts/benchmark_feature_cache.py --train_file my.csv --new_file more.csv --output cache.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parent.parent


def bundled_pool() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Rotten Tomatoes train, its test split: where new rows come from) with label names."""
    from hf_transfer.assets import bundled_dataset

    splits, names, _ = bundled_dataset("bundled:rotten_tomatoes")
    named = {
        s: f.assign(label=f["label"].map(lambda v: names[v] if not isinstance(v, str) else v))
        for s, f in splits.items()
    }
    return named["train"][["text", "label"]], named["test"][["text", "label"]]


def recipe_run(train_csv: pathlib.Path, seed: int, out: pathlib.Path, cache: pathlib.Path, model: str) -> dict:
    command = [
        sys.executable,
        str(ROOT / "recipes" / "feature_extraction.py"),
        "--model_name_or_path",
        model,
        "--train_file",
        str(train_csv),
        "--seed",
        str(seed),
        "--output_dir",
        str(out),
        "--feature_cache_dir",
        str(cache),
        "--disable_tqdm",
        "true",
    ]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(command)}):\n{finished.stderr[-3000:]}")
    results = json.loads((out / "all_results.json").read_text())
    details = json.loads((out / "run_details.json").read_text())
    return {
        "seconds": round(seconds, 2),
        "feature_seconds": details.get("feature_seconds", results.get("feature_seconds")),
        "status": details["feature_cache"],
        "eval_accuracy": results.get("eval_accuracy"),
        "cached_examples": stored_examples(cache),
    }


def stored_examples(cache: pathlib.Path) -> int:
    from hf_transfer.features.store import info

    return sum(entry["examples"] for entry in info(cache))


def features_check(train_csv: pathlib.Path, seed: int, cache: pathlib.Path, model: str, out: pathlib.Path) -> dict:
    """The features a cached run reads for its splits against (a) the stored rows and (b) a fresh extraction."""
    import recipes.feature_extraction as feature_extraction
    from hf_transfer.features import cache as feature_cache
    from hf_transfer.features.extraction import ExtractionSettings, extract_features
    from hf_transfer.pipeline import training
    from hf_transfer.pipeline.arguments import parse_recipe_args

    args = parse_recipe_args(
        feature_extraction.DEFAULTS,
        [],
        {"model_name_or_path": model, "train_file": str(train_csv), "seed": seed, "output_dir": str(out)},
        extra_dataclasses=(feature_cache.FeatureCacheArguments,),
    )
    job = training.prepare(args, native=False)
    settings = ExtractionSettings.of_run(args.training)
    read, status = feature_cache.cached_features(job.model, job.datasets, job.collator, settings, cache_dir=cache)
    store = feature_cache.FeatureStore(cache, feature_cache.model_key(job.model, settings))
    same_as_stored, largest_difference = True, 0.0
    for split, dataset in job.datasets.items():
        stored = store.read(feature_cache.example_keys(dataset))
        same_as_stored &= bool(stored.found.all()) and bool((stored.features == read[split].tensors[0]).all())
        fresh = extract_features(job.model, dataset, job.collator, settings).tensors[0]
        largest_difference = max(largest_difference, float((fresh - read[split].tensors[0]).abs().max()))
    return {
        "status": status,
        "bit_for_bit_as_stored": same_as_stored,
        "max_abs_difference_to_a_fresh_extraction": largest_difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_file", help="a CSV with text and label (default: the bundled Rotten Tomatoes pool)")
    parser.add_argument("--new_file", help="rows to add in run 3 (default: the bundled test split)")
    parser.add_argument("--new_fraction", type=float, default=0.1, help="new rows added in run 3, of the CSV's size")
    parser.add_argument("--model_name_or_path", default="bundled:minilm-l6")
    parser.add_argument("--output", help="write the figures as JSON here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    if args.train_file:
        pool, extra = pd.read_csv(args.train_file), pd.read_csv(args.new_file) if args.new_file else None
    else:
        pool, extra = bundled_pool()
    if extra is None:
        raise SystemExit("--new_file is needed with --train_file: the rows run 3 adds")
    work = pathlib.Path(tempfile.mkdtemp(prefix="feature-cache-bench-"))
    cache = work / "cache"
    base = work / "train.csv"
    pool.to_csv(base, index=False)
    grown = work / "train_plus_new.csv"
    new_rows = extra.sample(n=min(len(extra), round(args.new_fraction * len(pool))), random_state=0)
    pd.concat([pool, new_rows]).sample(frac=1.0, random_state=1).to_csv(grown, index=False)

    runs = {
        "1: seed 1, empty cache": recipe_run(base, 1, work / "r1", cache, args.model_name_or_path),
        "2: seed 2": recipe_run(base, 2, work / "r2", cache, args.model_name_or_path),
        f"3: plus {len(new_rows):,} new rows": recipe_run(grown, 1, work / "r3", cache, args.model_name_or_path),
    }
    check = features_check(base, 2, cache, args.model_name_or_path, work / "check")
    first = next(iter(runs.values()))
    print(f"\n{len(pool):,} training rows (no validation file), {args.model_name_or_path}, cache in {cache}\n")
    print("| run | wall s | feature s | × run 1 (wall) | cache before → after | status |")
    print("|---|---|---|---|---|---|")
    before = 0
    for name, result in runs.items():
        print(
            f"| {name} | {result['seconds']:.1f} | {result['feature_seconds']:.1f} | "
            f"{result['seconds'] / first['seconds']:.2f} | {before:,} → {result['cached_examples']:,} | "
            f"{', '.join(f'{s} {v}' for s, v in result['status'].items())} |"
        )
        before = result["cached_examples"]
    print(
        f"\nseed 2's features read from the cache equal the stored rows bit for bit: {check['bit_for_bit_as_stored']}; "
        f"largest |difference| to a fresh extraction in another batch order: "
        f"{check['max_abs_difference_to_a_fresh_extraction']:.2e}"
    )
    if args.output:
        pathlib.Path(args.output).write_text(
            json.dumps({"rows": len(pool), "new_rows": len(new_rows), "runs": runs, "check": check}, indent=1)
        )


if __name__ == "__main__":
    main()
