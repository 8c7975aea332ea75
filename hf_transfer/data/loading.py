"""Labelled data from files, folders, `save_to_disk` folders, the Hub or the bundled sets.

Everything becomes one shape: a `LabelledData` with train / validation / test DataFrames holding
`text` (and `text_pair`) or `image`, and an integer `label`, plus the label names. Few-shot
subsets, validation splits and evaluation caps are stratified and seeded.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib

import numpy as np
import pandas as pd

from .. import assets, defaults
from ..errors import TransferError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclasses.dataclass
class DataArguments:
    """Where the labelled examples come from and how many to use (names as in HF's example scripts)."""

    dataset_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "bundled:rotten_tomatoes | bundled:fashion_mnist | bundled:mnist, a save_to_disk folder, or a Hub data set id"
        },
    )
    dataset_config_name: str | None = dataclasses.field(default=None, metadata={"help": "Hub data set configuration"})
    train_file: str | None = dataclasses.field(
        default=None, metadata={"help": "CSV / JSON / JSONL / Parquet (text, or image paths)"}
    )
    validation_file: str | None = None
    test_file: str | None = None
    train_dir: str | None = dataclasses.field(default=None, metadata={"help": "image folder, one subfolder per class"})
    validation_dir: str | None = None
    test_dir: str | None = None
    text_column_name: str = dataclasses.field(
        default="text", metadata={"help": "text column; 'a,b' for sentence pairs"}
    )
    label_column_name: str = "label"
    image_column_name: str = dataclasses.field(
        default="image", metadata={"help": "image column (paths in a CSV, or images in a data set)"}
    )
    validation_split_percentage: float = dataclasses.field(
        default=10.0, metadata={"help": "held out of train when no validation set is given"}
    )
    min_validation_per_class: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "with no validation set given, hold one out of train only if it gets at least this many examples of "
            f"every class, else every example trains (default {defaults.MIN_VALIDATION_PER_CLASS}: docs/data.md); 1 always holds one out"
        },
    )
    max_train_samples_per_class: int | None = dataclasses.field(
        default=None, metadata={"help": "few-shot: this many training examples per class"}
    )
    max_train_samples: int | None = dataclasses.field(
        default=None,
        metadata={
            "help": "at most this many training examples in all, drawn stratified by label (applied after "
            "--max_train_samples_per_class when both are given)"
        },
    )
    max_eval_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "at most this many validation examples, stratified"}
    )
    max_test_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "at most this many test examples, stratified"}
    )
    max_predict_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "Hugging Face examples' name for --max_test_samples"}
    )
    text_column_names: str | None = dataclasses.field(
        default=None,
        metadata={"help": "Hugging Face examples' name for --text_column_name ('a,b' for sentence pairs)"},
    )
    max_seq_length: int = 128
    image_size: int | None = dataclasses.field(default=None, metadata={"help": "override the checkpoint's input size"})
    augment: bool = dataclasses.field(
        default=False, metadata={"help": "random resized crop, flip and colour jitter on training images"}
    )
    cache_images: bool = dataclasses.field(
        default=True,
        metadata={
            "help": "keep preprocessed images in memory after their first epoch "
            "(splits that are not augmented, when they fit)"
        },
    )
    strict: bool = dataclasses.field(
        default=False, metadata={"help": "an unreadable image is an error instead of being skipped"}
    )


@dataclasses.dataclass
class LabelledData:
    splits: dict[str, pd.DataFrame]
    label_names: list[str]
    modality: str  # "text" or "image"
    description: str
    skipped_images: int = 0
    # How the validation split came about: "given", "held out of train", or why none is held out (few-shot)
    validation: str = "given"

    @property
    def has_pairs(self) -> bool:
        return "text_pair" in self.splits["train"].columns


# ---------------------------------------------------------------- reading


def read_table(path_text: str, option: str) -> pd.DataFrame:
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise TransferError(f"--{option} '{path}' does not exist: check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix == ".jsonl":
            frame = pd.read_json(path, lines=True)
        elif suffix == ".json":
            try:
                frame = pd.read_json(path)
            except ValueError:
                frame = pd.read_json(path, lines=True)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise TransferError(f"--{option} '{path}' has extension '{suffix}': use .csv, .json, .jsonl or .parquet")
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransferError(f"--{option} '{path}' could not be parsed as {suffix[1:]}: {exc}") from None
    if len(frame) == 0:
        raise TransferError(f"--{option} '{path}' has no rows: give it at least one labelled example per class")
    frame.attrs["source"] = str(path)
    return frame


def read_image_folder(path_text: str, option: str) -> pd.DataFrame:
    root = pathlib.Path(path_text)
    if not root.is_dir():
        raise TransferError(
            f"--{option} '{root}' is not a folder: give a folder with one subfolder of images per class"
        )
    rows = [
        (str(p), d.name)
        for d in sorted(root.iterdir())
        if d.is_dir()
        for p in sorted(d.rglob("*"))
        if p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not rows:
        raise TransferError(
            f"--{option} '{root}' holds no images in class subfolders (expected {root}/<class>/<image>.png)"
        )
    frame = pd.DataFrame(rows, columns=["image", "label"])
    frame.attrs["source"] = str(root)
    return frame


def _from_hf_dataset(dataset_dict, args: DataArguments) -> tuple[dict[str, pd.DataFrame], list[str] | None]:
    """Turn a DatasetDict into DataFrames; keep ClassLabel names when the label column has them."""
    names = None
    splits = {}
    aliases = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}
    for split, dataset in dataset_dict.items():
        feature = dataset.features.get(args.label_column_name)
        frame = dataset.to_pandas()
        if hasattr(feature, "names"):  # ClassLabel ids -> names (-1, "no label", becomes empty)
            names = list(feature.names)
            frame[args.label_column_name] = frame[args.label_column_name].map(lambda i: names[i] if i >= 0 else None)
        frame.attrs["source"] = f"{args.dataset_name}[{split}]"
        splits[aliases.get(split, split)] = frame
    return splits, names


def _load_dataset_name(args: DataArguments):
    name = args.dataset_name
    if pathlib.Path(name).exists():
        import datasets

        try:
            loaded = datasets.load_from_disk(name)
        except FileNotFoundError:
            raise TransferError(
                f"--dataset_name '{name}' is a folder but not one written by save_to_disk: use --train_file / --train_dir for raw files"
            ) from None
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        return _from_hf_dataset(loaded, args)
    from ..hub import hub_offline

    if hub_offline():
        raise TransferError(
            f"data set '{name}' is not a local folder and the Hub is offline (HF_HUB_OFFLINE=1): use one of "
            + ", ".join(assets.PREFIX + n for n in assets.BUNDLED_DATASETS)
            + " or local files"
        )
    import datasets

    try:
        loaded = datasets.load_dataset(name, args.dataset_config_name)
    except Exception as exc:  # network, missing repo, auth: all end the run the same way
        raise TransferError(
            f"could not load data set '{name}' from the Hub ({type(exc).__name__}): check the id and your network, "
            "or use " + ", ".join(assets.PREFIX + n for n in assets.BUNDLED_DATASETS)
        ) from None
    return _from_hf_dataset(loaded, args)


def _raw_splits(
    args: DataArguments, modality: str | None
) -> tuple[dict[str, pd.DataFrame], list[str] | None, str, str]:
    """Read what the user named: ({split: frame}, label names or None, modality, description).

    Tables and data sets can hold text or image paths: the checkpoint's modality decides, else the columns.
    """
    if args.dataset_name and assets.is_bundled(args.dataset_name):
        splits, names, modality = assets.bundled_dataset(args.dataset_name)
        for split, frame in splits.items():
            frame.attrs["source"] = f"{args.dataset_name}[{split}]"
        return splits, names, modality, args.dataset_name
    if args.dataset_name:
        splits, names = _load_dataset_name(args)
        if "train" not in splits:
            raise TransferError(f"data set '{args.dataset_name}' has no 'train' split (it has {sorted(splits)})")
        modality = modality or ("image" if args.image_column_name in splits["train"].columns else "text")
        return splits, names, modality, args.dataset_name
    if args.train_dir:
        splits = {"train": read_image_folder(args.train_dir, "train_dir")}
        for split, option in (("validation", "validation_dir"), ("test", "test_dir")):
            if getattr(args, option):
                splits[split] = read_image_folder(getattr(args, option), option)
        return splits, None, "image", args.train_dir
    if args.train_file:
        splits = {"train": read_table(args.train_file, "train_file")}
        for split, option in (("validation", "validation_file"), ("test", "test_file")):
            if getattr(args, option):
                splits[split] = read_table(getattr(args, option), option)
        modality = modality or ("image" if args.image_column_name in splits["train"].columns else "text")
        if modality == "image" and args.image_column_name in splits["train"].columns:
            for frame in splits.values():
                frame[args.image_column_name] = relative_to_table(frame[args.image_column_name], frame.attrs["source"])
        return splits, None, modality, args.train_file
    raise TransferError(
        "no data given: pass --dataset_name (e.g. bundled:rotten_tomatoes), --train_file or --train_dir"
    )


def relative_to_table(paths, table: str) -> list:
    """Image paths in a table are relative to the table's own folder (absolute paths and non-path values kept)."""
    base = pathlib.Path(table).parent
    return [str(base / p) if isinstance(p, str) and not pathlib.Path(p).is_absolute() else p for p in paths]


def normalise_columns(frame: pd.DataFrame, modality: str, args: DataArguments) -> pd.DataFrame:
    source = frame.attrs.get("source", "data")
    if modality == "text":
        wanted = [c.strip() for c in args.text_column_name.split(",") if c.strip()]
        if not 1 <= len(wanted) <= 2:
            raise TransferError(
                f"--text_column_name '{args.text_column_name}' must name one column or two ('a,b') for pairs"
            )
        renames = dict(zip(wanted, ["text", "text_pair"]))
        option = "text_column_name"
    else:
        wanted = [args.image_column_name]
        renames = {args.image_column_name: "image"}
        option = "image_column_name"
    for column in wanted:
        if column not in frame.columns:
            raise TransferError(
                f"{source} has no column '{column}' (columns: {', '.join(map(str, frame.columns))}): set --{option}"
            )
    if args.label_column_name not in frame.columns:
        raise TransferError(
            f"{source} has no label column '{args.label_column_name}' (columns: {', '.join(map(str, frame.columns))}): set --label_column_name"
        )
    out = frame[wanted + [args.label_column_name]].rename(columns={**renames, args.label_column_name: "label"})
    listed = out["label"].map(lambda v: isinstance(v, (list, tuple, np.ndarray)))
    if listed.any():
        row = int(np.flatnonzero(listed.to_numpy())[0])
        raise TransferError(
            f"{source} row {row}: '{args.label_column_name}' holds a list ({list(out['label'].iloc[row])[:4]}): "
            "multi-label data is not supported; give one label per row"
        )
    if out["label"].isna().any():
        row = int(np.flatnonzero(out["label"].isna().to_numpy())[0])
        raise TransferError(
            f"{source} row {row} has an empty '{args.label_column_name}': label every example or remove the row"
        )
    if modality == "text":
        for column in [c for c in ("text", "text_pair") if c in out.columns]:
            out[column] = out[column].fillna("").astype(str)
    out.attrs["source"] = source
    return out


UNLABELED = -100  # the label of an example without one: cross-entropy ignores it


def read_unlabeled(
    args: DataArguments,
    *,
    file: str | None,
    folder: str | None,
    modality: str,
    option: str,
    max_samples: int | None = None,
    seed: int = 42,
) -> pd.DataFrame | None:
    """Extra inputs without labels (a table of texts or image paths, or a folder of images, searched recursively):
    a frame with `text` / `image` and `label` = -100. A label column, if present, is kept as `known_label` for
    reporting only. None when neither is given."""
    if file and folder:
        raise TransferError(f"--{option}_file and --{option}_dir both name {option} data: give only one")
    if folder:
        root = pathlib.Path(folder)
        if not root.is_dir():
            raise TransferError(f"--{option}_dir '{root}' is not a folder of images")
        if modality != "image":
            raise TransferError(
                f"--{option}_dir '{root}' holds images but the model takes text: give --{option}_file with a text column"
            )
        paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise TransferError(f"--{option}_dir '{root}' holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        frame = pd.DataFrame({"image": paths})
        parents = {pathlib.Path(p).parent for p in paths}
        if all(parent.parent == root for parent in parents):  # class subfolders: labels for reporting only
            frame["known_label"] = [pathlib.Path(p).parent.name for p in paths]
        frame.attrs["source"] = str(root)
    elif file:
        raw = read_table(file, f"{option}_file")
        column = args.text_column_name.split(",")[0].strip() if modality == "text" else args.image_column_name
        if column not in raw.columns:
            raise TransferError(
                f"--{option}_file '{file}' has no column '{column}' (columns: {', '.join(map(str, raw.columns))}): "
                f"set --{'text' if modality == 'text' else 'image'}_column_name"
            )
        key = "text" if modality == "text" else "image"
        frame = pd.DataFrame({key: raw[column].fillna("").astype(str) if modality == "text" else raw[column]})
        if modality == "text" and "," in args.text_column_name:
            second = args.text_column_name.split(",")[1].strip()
            if second not in raw.columns:
                raise TransferError(
                    f"--{option}_file '{file}' has no column '{second}' for the second text of each pair"
                )
            frame["text_pair"] = raw[second].fillna("").astype(str)
        if modality == "image":
            frame["image"] = relative_to_table(frame["image"], file)
        if args.label_column_name in raw.columns and raw[args.label_column_name].notna().all():
            frame["known_label"] = raw[args.label_column_name].to_numpy()
        frame.attrs["source"] = str(file)
    else:
        return None
    if max_samples and len(frame) > max_samples:
        frame = _keep_attrs(frame.sample(n=max_samples, random_state=seed), frame)
    if modality == "image":
        frame, dropped = _drop_unreadable(frame, args.strict)
        if dropped:
            print(
                f"skipped {len(dropped)} unreadable {option} image{'s' if len(dropped) > 1 else ''} (e.g. {', '.join(dropped[:3])})"
            )
    if len(frame) == 0:
        raise TransferError(f"{frame.attrs['source']} ({option} data) is empty: give at least one example")
    frame["label"] = UNLABELED
    frame.attrs["source"] = frame.attrs.get("source", option)
    return frame


# ---------------------------------------------------------------- stratified sampling


def _shuffled_with_rank(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Seeded shuffle, and each row's position within its class in that order."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled, shuffled.groupby("label", sort=False).cumcount().to_numpy()


def _keep_attrs(result: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    result = result.reset_index(drop=True)
    result.attrs = dict(frame.attrs)
    return result


def take_per_class(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n examples of every class, seeded; order shuffled so batches mix classes."""
    shuffled, rank = _shuffled_with_rank(frame, seed)
    return _keep_attrs(shuffled[rank < n], frame)


def stratified_sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """n examples keeping class proportions (largest remainder), seeded."""
    if n >= len(frame):
        return frame
    counts = frame["label"].value_counts()
    exact = counts / len(frame) * n
    quota = np.floor(exact).astype(int)
    quota[(exact - quota).sort_values(ascending=False).index[: n - quota.sum()]] += 1
    shuffled, rank = _shuffled_with_rank(frame, seed)
    return _keep_attrs(shuffled[rank < shuffled["label"].map(quota).to_numpy()], frame)


def held_out_per_class(frame: pd.DataFrame, percentage: float) -> int:
    """How many examples of its smallest class split_validation would hold out."""
    counts = frame["label"].value_counts()
    return int(min(min(c - 1, max(1, round(c * percentage / 100))) for c in counts)) if len(counts) else 0


def split_validation(frame: pd.DataFrame, percentage: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out `percentage` of every class (at least one, never all of it)."""
    counts = frame["label"].value_counts()
    if (counts < 2).any():
        label = counts.index[counts < 2][0]
        raise TransferError(
            f"class '{label}' has only {counts[label]} example in {frame.attrs.get('source', 'train')}: "
            "too few to hold out a validation set; add examples or pass a validation set"
        )
    held_per_class = counts.map(lambda c: min(c - 1, max(1, round(c * percentage / 100))))
    shuffled, rank = _shuffled_with_rank(frame, seed)
    held = rank < shuffled["label"].map(held_per_class).to_numpy()
    return _keep_attrs(shuffled[~held], frame), _keep_attrs(shuffled[held], frame)


# ---------------------------------------------------------------- images


def open_image(value, max_side: int | None = None):
    """PIL RGB image from a path, encoded bytes, a datasets image dict or an array. `max_side`: a JPEG larger than
    that may be decoded at 1/2, 1/4 or 1/8 scale, never below `max_side` on its longer side."""
    from PIL import Image

    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, str):
        image = Image.open(value)
    elif isinstance(value, np.ndarray):
        image = Image.fromarray(value)
    else:
        image = value
    if max_side and getattr(image, "format", None) == "JPEG" and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return image.convert("RGB")


def _drop_unreadable(frame: pd.DataFrame, strict: bool) -> tuple[pd.DataFrame, list[str]]:
    """The readable rows, and where the unreadable ones came from."""
    keep, dropped = [], []
    for value in frame["image"]:
        if isinstance(value, np.ndarray):
            keep.append(True)
            continue
        try:  # every byte decoded, a large JPEG at 1/8 scale (as fast as a small one; truncation still found)
            open_image(value, max_side=1).load()
            keep.append(True)
        except Exception as exc:  # PIL raises many types for broken files
            if strict:
                where = value if isinstance(value, str) else frame.attrs.get("source", "data")
                raise TransferError(
                    f"unreadable image {where} ({type(exc).__name__}): fix or remove it, or drop --strict to skip such images"
                ) from None
            keep.append(False)
            dropped.append(value if isinstance(value, str) else f"an image in {frame.attrs.get('source', 'data')}")
    return _keep_attrs(frame[np.array(keep, dtype=bool)], frame), dropped


# ---------------------------------------------------------------- the whole pipeline


def load_labelled_data(args: DataArguments, seed: int = 42, modality: str | None = None) -> LabelledData:
    """Read, check, split and subset. `seed` drives every sample (TrainingArguments' data_seed or seed);
    `modality` ("text" / "image", from the checkpoint) says what a table's columns must hold."""
    raw, names, modality, description = _raw_splits(args, modality)
    if (
        "test" in raw
        and args.label_column_name in raw["test"].columns
        and raw["test"][args.label_column_name].isna().all()
    ):
        print(
            f"{raw['test'].attrs.get('source', 'the test split')} has no labels (a benchmark's hidden test set): "
            "evaluating on the validation split only"
        )
        del raw["test"]
    splits = {s: normalise_columns(f, modality, args) for s, f in raw.items() if s in ("train", "validation", "test")}
    if len(splits["train"]) == 0:
        raise TransferError(
            f"{splits['train'].attrs.get('source', 'train')} is empty: give at least one labelled example per class"
        )

    validation = "given"
    if "validation" not in splits:
        held = held_out_per_class(splits["train"], args.validation_split_percentage)
        minimum = (
            defaults.MIN_VALIDATION_PER_CLASS
            if args.min_validation_per_class is None
            else args.min_validation_per_class
        )
        if held >= minimum:
            splits["train"], splits["validation"] = split_validation(
                splits["train"], args.validation_split_percentage, seed
            )
            validation = f"{args.validation_split_percentage:g}% of train held out"
        else:
            validation = (
                f"none held out: {args.validation_split_percentage:g}% of train would hold {held} example"
                f"{'s' if held != 1 else ''} of some class (fewer than --min_validation_per_class {minimum}), too few to "
                "choose anything on, so every example trains; what validation would choose is fixed by measurement or "
                "cross-validated on the training examples"
            )
    if args.max_train_samples_per_class:
        splits["train"] = take_per_class(splits["train"], args.max_train_samples_per_class, seed)
    if args.max_train_samples:
        splits["train"] = stratified_sample(splits["train"], args.max_train_samples, seed)
    if args.max_eval_samples and "validation" in splits:
        splits["validation"] = stratified_sample(splits["validation"], args.max_eval_samples, seed)
    if args.max_test_samples and "test" in splits:
        splits["test"] = stratified_sample(splits["test"], args.max_test_samples, seed)

    skipped: list[str] = []
    if modality == "image":
        for split in list(splits):
            splits[split], dropped = _drop_unreadable(splits[split], args.strict)
            skipped += dropped
    if skipped:
        print(
            f"skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''} (e.g. {', '.join(skipped[:3])}): "
            "fix or remove them, or pass --strict to stop on the first one"
        )

    label_names = names or _label_names(splits["train"]["label"])
    label_ids = _label_index(label_names)
    train_labels = set(splits["train"]["label"].map(label_key))
    for split, frame in splits.items():
        source = frame.attrs.get("source", split)
        unknown = [
            v
            for v in frame["label"].unique()
            if label_key(v) not in label_ids or (split != "train" and label_key(v) not in train_labels)
        ]
        if unknown:
            raise TransferError(
                f"{source} has label '{unknown[0]}' that never occurs in the training data: add training examples of it or remove those rows"
            )
        frame["label"] = frame["label"].map(lambda v: label_ids[label_key(v)]).astype(int)
        if len(frame) == 0:
            raise TransferError(f"{source} has no usable examples left: check the file and the sample caps")
    return LabelledData(splits, [str(n) for n in label_names], modality, description, len(skipped), validation)


def label_key(value) -> str:
    """Labels compare as text, so 1, 1.0 and '1' from different files agree."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value)


def _label_names(labels: pd.Series) -> list[str]:
    keys = {label_key(v) for v in labels}
    numeric = all(k.lstrip("-").isdigit() for k in keys)
    return sorted(keys, key=int) if numeric else sorted(keys)


def _label_index(names) -> dict[str, int]:
    return {label_key(n): i for i, n in enumerate(names)}
