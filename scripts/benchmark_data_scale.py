"""Memory and time to the first training step as the labelled pool grows: a 1M-row CSV against the same 10k rows.

Each run is a fresh process running `recipes/full_finetune.py` (`--head_phase none`: the LP-FT head fit would extract
features of every training example, which measures the backbone, not the data layer) until its first optimizer step
has run; it then reports the seconds since the process started and its peak resident memory (ru_maxrss) and exits.
Every size runs twice: with an empty `datasets` cache (the CSV parsed into Arrow, the texts tokenised) and again
(both read back from the cache). The CSV rows are Rotten Tomatoes snippets (bundled), each with its row number
appended so no two are alike. `--image_set` adds the same measurement on a Hub-format image set (a `save_to_disk`
folder of PNG-encoded Fashion-MNIST images, the `datasets` Image feature) at 5k and 50k images.

    python scripts/benchmark_data_scale.py                       # 10k and 1M rows
    python scripts/benchmark_data_scale.py --rows 10000 100000 --image_set --output scale.json
    python scripts/benchmark_data_scale.py --code_dir /tmp/old   # the same runs on another checkout of the toolkit
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def child(code_dir: str, argv: list[str]) -> None:
    """Run the recipe in this process until its first training step, then print the figures and exit."""
    started = time.perf_counter()
    sys.path.insert(0, code_dir)
    import resource

    import hf_transfer.engine.trainer as engine_trainer
    import recipes.full_finetune as full_finetune

    original = engine_trainer.TransferTrainer.training_step

    def first_step(self, *args, **kwargs):
        original(self, *args, **kwargs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"first_step_seconds": time.perf_counter() - started, "peak_rss_bytes": peak}), flush=True)
        os._exit(0)

    engine_trainer.TransferTrainer.training_step = first_step
    full_finetune.run(argv)
    raise SystemExit("the run ended without a training step")


def measure(code_dir: str, argv: list[str], datasets_cache: pathlib.Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(datasets_cache), "TOKENIZERS_PARALLELISM": "false"}
    finished = subprocess.run(
        [sys.executable, __file__, "--child", "--code_dir", code_dir, "--", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=code_dir,
    )
    figures = [line for line in finished.stdout.splitlines() if line.startswith('{"first_step_seconds"')]
    if not figures:
        raise SystemExit(f"run failed ({' '.join(argv)}):\n{finished.stderr[-3000:]}")
    return json.loads(figures[-1])


def text_table(rows: int, folder: pathlib.Path) -> pathlib.Path:
    import numpy as np
    import pandas as pd

    from hf_transfer.assets import bundled_dataset

    splits, names, _ = bundled_dataset("bundled:rotten_tomatoes")
    pool = pd.concat(splits.values(), ignore_index=True)
    picks = np.random.default_rng(0).integers(len(pool), size=rows)
    path = folder / f"pool_{rows}.csv"
    pd.DataFrame(
        {
            "text": [f"{pool['text'].iat[i]} ({n})" for n, i in enumerate(picks)],
            "label": pool["label"].to_numpy()[picks],
        }
    ).to_csv(path, index=False)
    return path


def image_set(images: int, folder: pathlib.Path) -> pathlib.Path:
    """A save_to_disk folder with PNG bytes in an Image feature, as a Hub image set is stored."""
    import io

    import datasets
    from PIL import Image

    from hf_transfer.assets import bundled_dataset

    splits, names, _ = bundled_dataset("bundled:fashion_mnist")
    train = splits["train"].iloc[:images]

    def png(pixels) -> dict:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    table = datasets.Dataset.from_dict(
        {"image": [png(p) for p in train["image"]], "label": [names.index(v) for v in train["label"]]},
        features=features,
    )
    path = folder / f"images_{images}"
    datasets.DatasetDict({"train": table}).save_to_disk(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--image_set", action="store_true", help="also a Hub-format image set, 5k and 50k images")
    parser.add_argument("--code_dir", default=str(ROOT), help="the checkout of the toolkit to run")
    parser.add_argument("--preprocessing_num_workers", type=int, default=None)
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.code_dir, args.rest)
        return

    work = pathlib.Path(tempfile.mkdtemp(prefix="data-scale-"))
    common = ["--head_phase", "none", "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no"]
    common += ["--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--report_to", "none"]
    if args.preprocessing_num_workers:
        common += ["--preprocessing_num_workers", str(args.preprocessing_num_workers)]
    cases = [(f"{rows:,}-row CSV", ["--train_file", str(text_table(rows, work))]) for rows in args.rows]
    if args.image_set:
        image_common = ["--model_name_or_path", "bundled:efficientnet-lite0", "--image_size", "64"]
        cases += [
            (f"{n:,} images (save_to_disk, Image feature)", ["--dataset_name", str(image_set(n, work)), *image_common])
            for n in (5_000, 50_000)
        ]
    results = []
    for name, data in cases:
        cache = work / f"datasets-cache-{len(results)}"
        for attempt in ("first run (empty datasets cache)", "second run"):
            out = work / f"run-{len(results)}"
            figures = measure(args.code_dir, [*data, *common, "--output_dir", str(out)], cache)
            results.append({"data": name, "run": attempt, **figures})
            print(
                f"{name:<44} {attempt:<34} first step after {figures['first_step_seconds']:7.1f} s, "
                f"peak RSS {figures['peak_rss_bytes'] / 2**20:8.0f} MiB",
                flush=True,
            )
    print("\n| data | run | seconds to the first step | peak RSS (MiB) |\n|---|---|---|---|")
    for row in results:
        print(
            f"| {row['data']} | {row['run']} | {row['first_step_seconds']:.1f} | {row['peak_rss_bytes'] / 2**20:,.0f} |"
        )
    text = [r for r in results if "CSV" in r["data"] and r["run"] == "second run"]
    if len(text) >= 2:
        small, large = text[0], text[-1]
        print(
            f"\npeak RSS, {large['data']} / {small['data']} (second runs): "
            f"{large['peak_rss_bytes'] / small['peak_rss_bytes']:.2f}x"
        )
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
