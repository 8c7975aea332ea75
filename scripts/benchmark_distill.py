"""Distillation against its hard-label twin, on the bundled real data, over several seeds.

Per seed: a teacher is fine-tuned (recipes/full_finetune.py) on a few labelled examples per class; then the
same student is trained three ways with the same epochs: distilled with extra unlabelled examples of the
same data set (inputs the teacher labels softly), distilled on the labelled examples alone, and on hard
labels alone (--alpha 0). All are scored on the same test split; the speed-up of the student over the
teacher is measured in each run (forward passes, same examples, same device).

    python scripts/benchmark_distill.py --task text  --seeds 42 43 44      # MiniLM-L6 -> 3 of its blocks, Rotten Tomatoes
    python scripts/benchmark_distill.py --task image --seeds 42            # EfficientNet-Lite0 -> MobileNetV3-small-0.5 (random init), Fashion-MNIST, 32 px
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import statistics
import tempfile

import numpy as np
import pandas as pd

from hf_transfer.assets import bundled_dataset
from hf_transfer.data.loading import DataArguments, load_labelled_data
from recipes import distill, full_finetune

TASKS = {
    "text": {
        "data": {
            "dataset_name": "bundled:rotten_tomatoes",
            "max_train_samples_per_class": 100,
            "max_eval_samples": 500,
            "max_test_samples": 2000,
            "max_seq_length": 64,
        },
        "teacher": {"model_name_or_path": "bundled:minilm-l6"},
        "student": {"student_num_layers": 3},
    },
    "image": {
        "data": {
            "dataset_name": "bundled:fashion_mnist",
            "max_train_samples_per_class": 100,
            "max_eval_samples": 500,
            "max_test_samples": 2000,
            "image_size": 32,
        },
        "teacher": {"model_name_or_path": "bundled:efficientnet-lite0"},
        "student": {"model_name_or_path": "mobilenetv3_small_050", "random_init": True, "num_train_epochs": 20},
    },
}


def _identity(value) -> str:
    return value if isinstance(value, str) else hashlib.sha1(np.asarray(value).tobytes()).hexdigest()


def write_unlabeled(task: str, data: dict, seed: int, count: int, folder: pathlib.Path) -> str:
    """`count` examples of the data set's own training split that the labelled subset and validation set do not use,
    without their labels: a CSV of texts, or a folder of PNGs."""
    used = load_labelled_data(
        DataArguments(**{k: v for k, v in data.items() if k not in ("max_seq_length", "image_size")}), seed=seed
    )
    column = "text" if task == "text" else "image"
    taken = {_identity(v) for split in ("train", "validation") for v in used.splits[split][column]}
    pool = bundled_dataset(data["dataset_name"])[0]["train"]
    rest = pool[[_identity(v) not in taken for v in pool[column]]].sample(n=count, random_state=seed)
    if task == "text":
        path = folder / "unlabeled.csv"
        rest[["text"]].to_csv(path, index=False)
        return str(path)
    from PIL import Image

    images = folder / "unlabeled"
    images.mkdir()
    for i, pixels in enumerate(rest["image"]):
        Image.fromarray(np.asarray(pixels)).save(images / f"{i}.png")
    return str(images)


def one_seed(task: str, seed: int, unlabeled: int, root: pathlib.Path) -> list[dict]:
    spec = TASKS[task]
    folder = root / f"seed{seed}"
    folder.mkdir()
    common = {**spec["data"], "seed": seed, "disable_tqdm": True}
    teacher = full_finetune.run(**common, **spec["teacher"], output_dir=str(folder / "teacher"))
    extra = write_unlabeled(task, spec["data"], seed, unlabeled, folder)
    student = {**common, **spec["student"], "teacher": str(folder / "teacher")}
    runs = {
        "distilled + unlabelled": distill.run(
            **student,
            **{f"unlabeled_{'file' if task == 'text' else 'dir'}": extra},
            output_dir=str(folder / "kd_unlabeled"),
        ),
        "distilled": distill.run(**student, output_dir=str(folder / "kd")),
        "hard labels (alpha 0)": distill.run(**student, alpha=0.0, output_dir=str(folder / "hard")),
    }
    rows = [
        {
            "seed": seed,
            "model": "teacher",
            "test_accuracy": teacher["test_accuracy"],
            "eval_accuracy": teacher["eval_accuracy"],
            "params": teacher["total_params"],
            "speedup": 1.0,
        }
    ]
    for name, result in runs.items():
        rows.append(
            {
                "seed": seed,
                "model": f"student, {name}",
                "test_accuracy": result["test_accuracy"],
                "eval_accuracy": result["eval_accuracy"],
                "params": result["student_params"],
                "speedup": result["inference_speedup"],
                "unlabeled": result["unlabeled_samples"],
                "teacher_test_accuracy": result["teacher_test_accuracy"],
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | test accuracy (mean ± sd) | per seed | params | inference speed-up |", "|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        chosen = [r for r in rows if r["model"] == model]
        accuracies = [100 * r["test_accuracy"] for r in chosen]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        lines.append(
            f"| {model} | {statistics.mean(accuracies):.2f} ± {spread:.2f} | {', '.join(f'{a:.1f}' for a in accuracies)} | "
            f"{chosen[0]['params'] / 1e6:.2f}M | x{statistics.mean(r['speedup'] for r in chosen):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="text")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument(
        "--unlabeled",
        type=int,
        default=1000,
        help="unlabelled examples of the same data set given to the distilled student",
    )
    parser.add_argument("--output", default=None, help="JSON lines file for the rows (default: print only)")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for seed in options.seeds:
            rows += one_seed(options.task, seed, options.unlabeled, pathlib.Path(root))
            print(table(rows), flush=True)
    if options.output:
        pathlib.Path(options.output).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"\n{options.task}: {TASKS[options.task]}\n{pd.DataFrame(rows).to_string(index=False)}")


if __name__ == "__main__":
    main()
