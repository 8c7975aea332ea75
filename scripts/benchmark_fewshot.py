"""Few-shot text classification against SetFit: the same checkpoint, the same few labelled examples, the same test set.

For every data set, examples-per-class size and seed, one training CSV of `k` examples per class is drawn from the
set's training pool and given, with nothing else, to each method, as a user with a small labelled CSV would run it:

- `setfit`: the real SetFit library (Tunstall et al. 2022) run as its authors intend (`SetFitModel.from_pretrained`,
  `Trainer` with its paper's 20 pair iterations per example, 1 epoch, batch 16, logistic-regression head). It is
  never a dependency of this toolkit: install it into a folder of its own and pass --setfit_path
  (`pip install --target /tmp/setfit_pkgs --no-deps setfit sentence-transformers scikit-learn scipy joblib
  threadpoolctl cloudpickle narwhals evaluate requests urllib3 certifi idna charset-normalizer`).
- our recipes with their defaults: `contrastive` (recipes/contrastive_finetune.py), `full_finetune`,
  `full_finetune_zero_shot_head` (`--head_phase label_descriptions`), `feature_extraction`, `gradual_unfreeze`,
  `lora`, `auto` (the advisor's pick) and `zero_shot` (label names in a template; no training examples).

Accuracy on the test set (or, with --evaluate_on validation, on the set's validation split: what defaults are chosen
on) and train time (from the first training step to a fitted classifier, a head fitted before training included,
and for `auto` the advisor's measuring of the checkpoint before it chose; SetFit's `trainer.train()`, its head's fit
included), as JSON lines
in --output (runs already there are skipped) and a Markdown table of mean ± standard deviation over seeds.

    python scripts/benchmark_fewshot.py --datasets bundled:rotten_tomatoes --per_class 8 16 32 64 --seeds 0 1 2 3 4 \
        --setfit_path /tmp/setfit_pkgs --output fewshot.jsonl
    python scripts/benchmark_fewshot.py --datasets check_sets/debates --methods setfit contrastive --output debates.jsonl
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from hf_transfer.assets import bundled_checkpoint_path, bundled_dataset, is_bundled
from hf_transfer.engine.console import command_line_output

METHODS = (
    "setfit",
    "zero_shot",
    "contrastive",
    "full_finetune",
    "full_finetune_zero_shot_head",
    "feature_extraction",
    "gradual_unfreeze",
    "lora",
    "auto",
)
DEFAULT_METHODS = ("setfit", "contrastive", "full_finetune", "feature_extraction")


def pools(dataset: str, evaluate_on: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training pool, evaluation set) with columns text, label (label names as text)."""
    if is_bundled(dataset):
        splits, names, modality = bundled_dataset(dataset)
        if modality != "text":
            raise SystemExit(f"{dataset} is not a text set")
        frames = {
            s: f.assign(label=f["label"].map(lambda v: names[v] if isinstance(v, (int, np.integer)) else v))
            for s, f in splits.items()
        }
    else:
        folder = pathlib.Path(dataset)
        frames = {
            s: pd.read_csv(folder / f"{s}.csv")
            for s in ("train", "validation", "test")
            if (folder / f"{s}.csv").is_file()
        }
    return frames["train"][["text", "label"]], frames[evaluate_on][["text", "label"]]


def draw(pool: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        rng.choice(np.flatnonzero(pool["label"] == label), per_class, replace=False)
        for label in sorted(pool["label"].unique())
    ]
    return pool.iloc[np.concatenate(rows)].sample(frac=1.0, random_state=seed).reset_index(drop=True)


def stratified_cap(frame: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    if not n or len(frame) <= n:
        return frame
    return frame.groupby("label").sample(frac=n / len(frame), random_state=seed).reset_index(drop=True)


def run_setfit(train: pd.DataFrame, test: pd.DataFrame, model_path: str, seed: int, out: str) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(model_path)
    args = TrainingArguments(
        output_dir=out, batch_size=16, num_epochs=1, num_iterations=20, seed=seed, report_to="none", save_strategy="no"
    )
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_pandas(train))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predicted = model.predict(test["text"].tolist(), as_numpy=True)
    return {"accuracy": float(np.mean(np.asarray(predicted) == test["label"].to_numpy())), "train_seconds": seconds}


def run_recipe(
    method: str, train_csv: str, test_csv: str, model: str, seed: int, out: str, options: dict | None = None
) -> dict:
    import importlib

    module, extra = {
        "contrastive": ("recipes.contrastive_finetune", {}),
        "full_finetune": ("recipes.full_finetune", {}),
        "full_finetune_zero_shot_head": ("recipes.full_finetune", {"head_phase": "label_descriptions"}),
        "feature_extraction": ("recipes.feature_extraction", {"no_feature_cache": True}),
        "gradual_unfreeze": ("recipes.gradual_unfreeze", {}),
        "lora": ("recipes.peft_finetune", {"peft_method": "lora"}),
        "auto": ("recipes.auto", {}),
        "zero_shot": ("recipes.zero_shot", {}),
    }[method]
    run = importlib.import_module(module).run
    results = run(
        model_name_or_path=model,
        train_file=train_csv,
        test_file=test_csv,
        seed=seed,
        output_dir=out,
        overwrite_output_dir=True,
        disable_tqdm=True,
        **{**extra, **(options or {})},
    )
    seconds = results.get("train_runtime", 0.0)
    if "feature_seconds" in results:  # extraction covers every split: count the training examples' share of it
        extracted = results["train_samples"] + results["eval_samples"] + results["test_samples"]
        seconds += results["feature_seconds"] * results["train_samples"] / extracted
    start = results.get("head_phase_fit") or {}  # where the head started, and the check that chose it
    seconds += start.get("fit_seconds", 0.0) + start.get("feature_seconds", 0.0)  # a head fitted before training
    seconds += results.get("advice_seconds", 0.0)  # auto: measuring the checkpoint before choosing
    return {
        "accuracy": results["test_accuracy"],
        "train_seconds": seconds,
        "strategy": results.get("recipe"),
        **{
            k: start[k]
            for k in ("head_start", "zero_shot_train_accuracy", "majority_share", "head_l2", "prior_scale")
            if k in start
        },
    }


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.1f} ± {scale * spread:.1f}"


def table(rows: list[dict], methods: list[str]) -> str:
    lines = ["| data set | per class | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for k in sorted({r["per_class"] for r in rows if r["dataset"] == dataset}):
            cells = []
            for method in methods:
                chosen = [r for r in rows if r["dataset"] == dataset and r["per_class"] == k and r["method"] == method]
                cells.append(
                    f"{_mean_std([r['accuracy'] for r in chosen])} ({statistics.mean(r['train_seconds'] for r in chosen):.0f} s, n={len(chosen)})"
                    if chosen
                    else "–"
                )
            lines.append(f"| {pathlib.Path(dataset).name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["bundled:rotten_tomatoes"],
        help="bundled:<name> or a folder with train.csv / validation.csv / test.csv",
    )
    parser.add_argument("--model_name_or_path", default="bundled:minilm-l6")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--per_class", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--evaluate_on", choices=("test", "validation"), default="test")
    parser.add_argument("--max_eval_samples", type=int, default=1000, help="stratified cap on the evaluation set")
    parser.add_argument("--setfit_path", help="folder SetFit was installed into (--target), put first on sys.path")
    parser.add_argument(
        "--recipe_options",
        default="{}",
        help="JSON options for our recipes (not SetFit), e.g. '{\"contrastive_min_steps\": 40}'; runs are labelled with them",
    )
    parser.add_argument("--output", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    options = json.loads(args.recipe_options)
    suffix = json.dumps(options, separators=(",", ":"), sort_keys=True) if options else ""
    labels = [m if m == "setfit" else m + suffix for m in args.methods]
    if args.setfit_path:
        sys.path.insert(0, args.setfit_path)
    model_path = (
        str(bundled_checkpoint_path(args.model_name_or_path))
        if is_bundled(args.model_name_or_path)
        else args.model_name_or_path
    )
    rows = [json.loads(line) for line in args.output.read_text().splitlines()] if args.output.is_file() else []
    done = {(r["dataset"], r["per_class"], r["seed"], r["method"], r["evaluate_on"]) for r in rows}
    command_line_output()
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in args.datasets:
            pool, evaluation = pools(dataset, args.evaluate_on)
            evaluation = stratified_cap(evaluation, args.max_eval_samples)
            test_csv = f"{scratch}/eval.csv"
            evaluation.to_csv(test_csv, index=False)
            for k in args.per_class:
                for seed in args.seeds:
                    train = draw(pool, k, seed)
                    train_csv = f"{scratch}/train.csv"
                    train.to_csv(train_csv, index=False)
                    for method, label in zip(args.methods, labels):
                        if (dataset, k, seed, label, args.evaluate_on) in done:
                            continue
                        if method == "setfit":
                            result = run_setfit(train, evaluation, model_path, seed, f"{scratch}/setfit")
                        else:
                            result = run_recipe(
                                method, train_csv, test_csv, args.model_name_or_path, seed, f"{scratch}/run", options
                            )
                        row = {
                            "dataset": dataset,
                            "per_class": k,
                            "seed": seed,
                            "method": label,
                            "evaluate_on": args.evaluate_on,
                            **result,
                        }
                        print(json.dumps(row), flush=True)
                        with args.output.open("a") as handle:
                            handle.write(json.dumps(row) + "\n")
                        rows.append(row)
    print(table([r for r in rows if r["evaluate_on"] == args.evaluate_on], labels))


if __name__ == "__main__":
    main()
