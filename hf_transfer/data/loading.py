"""Labelled data from files, folders, `save_to_disk` folders, the Hub or the bundled sets, as `datasets` objects.

Everything becomes one shape: a `LabelledData` with train / validation / test `datasets.Dataset`s holding
`text` (and `text_pair`) or `image`, and an integer `label`, plus the label names. Files are read by the
`datasets` csv / json / parquet builders into memory-mapped Arrow tables (cached, so a second run does not parse
them again), so a pool far larger than RAM costs little memory; few-shot subsets, validation splits and evaluation
caps are stratified, seeded selections of row indices, never copies of a split. Every check runs here, before a
recipe writes anything.
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
    dataset_revision: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Hub data set revision (branch, tag or commit); the token, if one is needed, "
            "comes from `hf auth login` or HF_TOKEN"
        },
    )
    train_split_name: str = dataclasses.field(default="train", metadata={"help": "the data set's training split"})
    validation_split_name: str = dataclasses.field(
        default="validation", metadata={"help": "its validation split (valid / val / dev / eval are found too)"}
    )
    test_split_name: str = dataclasses.field(default="test", metadata={"help": "its test split"})
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
    streaming: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "read the training split as a stream (a `datasets` IterableDataset from the Hub or --train_file): "
            "nothing is downloaded or converted first; needs --max_steps; validation / test splits are read whole"
        },
    )
    preprocessing_num_workers: int | None = dataclasses.field(
        default=None, metadata={"help": "processes that tokenise the texts (Dataset.map's num_proc)"}
    )
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
    splits: dict  # {split: datasets.Dataset with text (text_pair) or image, and an integer label}
    label_names: list[str]
    modality: str  # "text" or "image"
    description: str
    skipped_images: int = 0
    # How the validation split came about: "given", "held out of train", or why none is held out (few-shot)
    validation: str = "given"
    sources: dict[str, str] = dataclasses.field(default_factory=dict)  # {split: the file or data set it came from}
    streamed_examples: int | None = None  # examples in a streamed training split (counted when its labels were read)

    @property
    def has_pairs(self) -> bool:
        return "text_pair" in (self.splits["train"].column_names or [])

    @property
    def streamed(self) -> bool:
        return self.streamed_examples is not None

    def size(self, split: str) -> int:
        if split not in self.splits:
            return 0
        return self.streamed_examples if split == "train" and self.streamed else len(self.splits[split])


# ---------------------------------------------------------------- reading

BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def read_table(path_text: str, option: str):
    """A CSV / JSON / JSONL / Parquet file as a memory-mapped `datasets.Dataset` (the builders' Arrow cache)."""
    import datasets

    path = pathlib.Path(path_text)
    if not path.is_file():
        raise TransferError(f"--{option} '{path}' does not exist: check the path")
    suffix = path.suffix.lower()
    if suffix not in BUILDERS:
        raise TransferError(f"--{option} '{path}' has extension '{suffix}': use .csv, .json, .jsonl or .parquet")
    empty = TransferError(f"--{option} '{path}' has no rows: give it at least one labelled example per class")
    if path.stat().st_size == 0:
        raise empty
    try:
        with quiet_datasets():
            table = datasets.load_dataset(BUILDERS[suffix], data_files={"train": str(path)}, split="train")
    except ValueError as exc:
        if "corresponds to no data" in str(exc):
            raise empty from None
        raise TransferError(f"--{option} '{path}' could not be parsed as {suffix[1:]}: {exc}") from None
    except Exception as exc:  # the builders wrap parser errors of several kinds in DatasetGenerationError
        cause = exc.__cause__ or exc.__context__ or exc
        raise TransferError(
            f"--{option} '{path}' could not be parsed as {suffix[1:]}: {type(cause).__name__}: {str(cause)[:200]}"
        ) from None
    if len(table) == 0:
        raise empty
    return table


class quiet_datasets:
    """No progress bars from `datasets` while it builds or maps (the recipe prints its own lines), unless `show`."""

    def __init__(self, show: bool = False):
        self.show = show

    def __enter__(self):
        import datasets

        self.was_enabled = datasets.is_progress_bar_enabled()
        if not self.show:
            datasets.disable_progress_bars()

    def __exit__(self, *exc):
        import datasets

        if self.was_enabled:
            datasets.enable_progress_bars()


def read_image_folder(path_text: str, option: str):
    """A folder with one subfolder per class (searched recursively) as a Dataset of image paths and class names."""
    import datasets

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
    images, labels = zip(*rows)
    return datasets.Dataset.from_dict({"image": list(images), "label": list(labels)})


def from_frame(frame: pd.DataFrame):
    """A DataFrame (the bundled sets, extra rows read by hand) as a Dataset; arrays of pixels become fixed-shape
    Arrow arrays (read back as nested lists, which `open_image` takes)."""
    import datasets

    columns = {}
    features = {}
    for name in frame.columns:
        values = frame[name]
        if len(values) and isinstance(values.iloc[0], np.ndarray):
            stacked = np.stack(values.to_list())
            array_type = {2: datasets.Array2D, 3: datasets.Array3D}[stacked.ndim - 1]
            features[name] = array_type(shape=stacked.shape[1:], dtype=str(stacked.dtype))
            columns[name] = stacked
        else:
            columns[name] = values.to_list()
            features[name] = None
    inferred = datasets.Dataset.from_dict({k: v for k, v in columns.items() if features[k] is None})
    schema = datasets.Features(
        {k: features[k] or inferred.features[k] for k in frame.columns if k in columns},
    )
    return datasets.Dataset.from_dict(columns, features=schema)


def to_frame(split) -> pd.DataFrame:
    """A Dataset as a plain DataFrame, for the few consumers that hold extra rows as frames: pixel arrays become
    ndarrays (datasets' own pandas extension type for them cannot be sampled or indexed by pandas)."""
    frame = split.to_pandas()
    for name in frame.columns:
        if not isinstance(frame[name].dtype, np.dtype):
            frame[name] = pd.Series([np.asarray(v) for v in frame[name]], dtype=object)
    return frame


HUB_SPLIT_ALIASES = {"valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}


def _from_hf_dataset(dataset_dict, args: DataArguments) -> tuple[dict, list[str] | None]:
    """The splits of a DatasetDict under our names (--train_split_name etc., else the usual aliases); ClassLabel
    names kept; images left undecoded (bytes or paths, decoded one at a time when read)."""
    import datasets

    names = None
    wanted = {
        args.train_split_name: "train",
        args.validation_split_name: "validation",
        args.test_split_name: "test",
    }
    splits = {}
    for split, dataset in dataset_dict.items():
        ours = wanted.get(split) or HUB_SPLIT_ALIASES.get(split, split)
        if ours in splits:
            continue
        feature = dataset.features.get(args.label_column_name)
        if hasattr(feature, "names"):
            names = list(feature.names)
        image = dataset.features.get(args.image_column_name)
        if isinstance(image, datasets.Image) and image.decode:
            dataset = dataset.cast_column(args.image_column_name, datasets.Image(decode=False))
        splits[ours] = dataset
    for given, ours in wanted.items():
        if given not in dataset_dict and given != ours:
            raise TransferError(
                f"data set '{args.dataset_name}' has no split '{given}' (it has {', '.join(dataset_dict)}): "
                f"set --{ours}_split_name"
            )
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

    try:  # the token, if any, comes from `hf auth login` or HF_TOKEN: never an option, so never saved with the run
        loaded = datasets.load_dataset(name, args.dataset_config_name, revision=args.dataset_revision)
    except Exception as exc:  # network, missing repo, auth: all end the run the same way
        raise TransferError(
            f"could not load data set '{name}' from the Hub ({type(exc).__name__}): check the id and your network, "
            "or use " + ", ".join(assets.PREFIX + n for n in assets.BUNDLED_DATASETS)
        ) from None
    return _from_hf_dataset(loaded, args)


def _raw_splits(args: DataArguments, modality: str | None) -> tuple[dict, dict, list[str] | None, str, str]:
    """Read what the user named: ({split: Dataset}, {split: source}, label names or None, modality, description).

    Tables and data sets can hold text or image paths: the checkpoint's modality decides, else the columns.
    """
    if args.dataset_name and assets.is_bundled(args.dataset_name):
        frames, names, modality = assets.bundled_dataset(args.dataset_name)
        splits = {split: from_frame(frame) for split, frame in frames.items()}
        return splits, {s: f"{args.dataset_name}[{s}]" for s in splits}, names, modality, args.dataset_name
    if args.dataset_name:
        splits, names = _load_dataset_name(args)
        if "train" not in splits:
            raise TransferError(f"data set '{args.dataset_name}' has no 'train' split (it has {sorted(splits)})")
        modality = modality or ("image" if args.image_column_name in splits["train"].column_names else "text")
        return splits, {s: f"{args.dataset_name}[{s}]" for s in splits}, names, modality, args.dataset_name
    if args.train_dir:
        options = {"train": "train_dir", "validation": "validation_dir", "test": "test_dir"}
        named = {split: getattr(args, option) for split, option in options.items() if getattr(args, option)}
        splits = {split: read_image_folder(path, options[split]) for split, path in named.items()}
        return splits, named, None, "image", args.train_dir
    if args.train_file:
        options = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
        named = {split: getattr(args, option) for split, option in options.items() if getattr(args, option)}
        splits = {split: read_table(path, options[split]) for split, path in named.items()}
        modality = modality or ("image" if args.image_column_name in splits["train"].column_names else "text")
        if modality == "image" and args.image_column_name in splits["train"].column_names:
            for split, table in splits.items():
                if args.image_column_name in table.column_names:
                    splits[split] = paths_relative_to(table, args.image_column_name, named[split])
        return splits, named, None, modality, args.train_file
    raise TransferError(
        "no data given: pass --dataset_name (e.g. bundled:rotten_tomatoes), --train_file or --train_dir"
    )


def paths_relative_to(table, column: str, source: str):
    """A table's image paths made relative to the table's own folder (`relative_to_table`), by `Dataset.map`."""
    with quiet_datasets():
        return table.map(lambda batch: {column: relative_to_table(batch[column], source)}, batched=True)


def relative_to_table(paths, table: str) -> list:
    """Image paths in a table are relative to the table's own folder (absolute paths and non-path values kept)."""
    base = pathlib.Path(table).parent
    return [str(base / p) if isinstance(p, str) and not pathlib.Path(p).is_absolute() else p for p in paths]


def column(table, name: str):
    """One column of a Dataset as a pyarrow ChunkedArray, through its index mapping (no copy of the rest)."""
    return table.with_format("arrow")[name]


def normalise_columns(table, source: str, modality: str, args: DataArguments):
    """The split's input and label columns under our names (`text` / `text_pair` or `image`, and `label`), checked:
    a missing column, a list of labels or an empty label is one line naming the file, row and option."""
    import datasets
    import pyarrow.compute as pc

    columns = table.column_names
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
    for name in wanted:
        if name not in columns:
            raise TransferError(
                f"{source} has no column '{name}' (columns: {', '.join(map(str, columns))}): set --{option}"
            )
    label = args.label_column_name
    if label not in columns:
        raise TransferError(
            f"{source} has no label column '{label}' (columns: {', '.join(map(str, columns))}): set --label_column_name"
        )
    if isinstance(table.features[label], (datasets.Sequence, datasets.List, list)):
        raise TransferError(
            f"{source} row 0: '{label}' holds a list ({list(table[0][label])[:4]}): "
            "multi-label data is not supported; give one label per row"
        )
    out = table.select_columns(wanted + [label])
    if renames := {k: v for k, v in {**renames, label: "label"}.items() if k != v}:
        out = out.rename_columns(renames)
    labels = column(out, "label")
    missing = pc.is_null(labels)
    if isinstance(out.features["label"], datasets.ClassLabel):  # -1: no label
        missing = pc.or_(missing, pc.less(labels, 0))
    if pc.any(missing).as_py():
        row = int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0])
        raise TransferError(f"{source} row {row} has an empty '{label}': label every example or remove the row")
    if modality == "text":
        for name in [c for c in ("text", "text_pair") if c in out.column_names]:
            if out.features[name] not in (datasets.Value("string"), datasets.Value("large_string")):
                out = out.cast_column(name, datasets.Value("string"))
            if column(out, name).null_count:  # an empty cell: an empty text
                with quiet_datasets():
                    out = out.map(lambda batch, c=name: {c: [t or "" for t in batch[c]]}, batched=True)
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
        raw = read_table(file, f"{option}_file").to_pandas()  # unlabelled extra rows: a frame (docs/known_limits.md)
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
        frame, dropped = _drop_unreadable(frame, args.strict, frame.attrs.get("source", option))
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
#
# Each takes a split's labels (a pandas Series, or a Dataset / DataFrame with a `label` column) and returns the chosen
# rows' positions; `select` applies them to a Dataset as an index mapping (no copy) or to a DataFrame.


def columns_of(split) -> list[str]:
    return list(split.columns) if isinstance(split, pd.DataFrame) else split.column_names


def values_of(split, name: str, rows=None) -> list:
    """A column's values (of the given row positions) as a list, from a Dataset or a DataFrame."""
    if isinstance(split, pd.DataFrame):
        part = split[name] if rows is None else split[name].iloc[list(rows)]
        return part.tolist()
    part = split if rows is None else split.select(list(rows))
    return list(part[name])


def label_series(split) -> pd.Series:
    if isinstance(split, pd.Series):
        return split.reset_index(drop=True)
    if isinstance(split, pd.DataFrame):
        return split["label"].reset_index(drop=True)
    return column(split, "label").to_pandas()


def select(split, rows: np.ndarray):
    if isinstance(split, pd.DataFrame):
        return _keep_attrs(split.iloc[rows], split)
    return split.select(rows)


def _shuffled_with_rank(labels: pd.Series, seed: int) -> tuple[pd.Series, np.ndarray]:
    """Seeded shuffle (pandas' `sample(frac=1)`), and each row's position within its class in that order."""
    shuffled = labels.sample(frac=1.0, random_state=seed)
    return shuffled, shuffled.groupby(shuffled, sort=False).cumcount().to_numpy()


def _keep_attrs(result: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    result = result.reset_index(drop=True)
    result.attrs = dict(frame.attrs)
    return result


def per_class_rows(labels: pd.Series, n: int, seed: int) -> np.ndarray:
    """At most n examples of every class, seeded; order shuffled so batches mix classes."""
    shuffled, rank = _shuffled_with_rank(labels, seed)
    return shuffled.index.to_numpy()[rank < n]


def stratified_rows(labels: pd.Series, n: int, seed: int) -> np.ndarray:
    """n examples keeping class proportions (largest remainder), seeded."""
    if n >= len(labels):
        return np.arange(len(labels))
    counts = labels.value_counts()
    exact = counts / len(labels) * n
    quota = np.floor(exact).astype(int)
    quota[(exact - quota).sort_values(ascending=False).index[: n - quota.sum()]] += 1
    shuffled, rank = _shuffled_with_rank(labels, seed)
    return shuffled.index.to_numpy()[rank < shuffled.map(quota).to_numpy()]


def take_per_class(split, n: int, seed: int):
    return select(split, per_class_rows(label_series(split), n, seed))


def stratified_sample(split, n: int, seed: int):
    return split if n >= len(split) else select(split, stratified_rows(label_series(split), n, seed))


def held_out_per_class(labels: pd.Series, percentage: float) -> int:
    """How many examples of its smallest class split_validation would hold out."""
    counts = labels.value_counts()
    return int(min(min(c - 1, max(1, round(c * percentage / 100))) for c in counts)) if len(counts) else 0


def split_validation(split, percentage: float, seed: int, source: str = "train", names=None):
    """Hold out `percentage` of every class (at least one, never all of it): (train, validation)."""
    labels = label_series(split)
    counts = labels.value_counts()
    if (counts < 2).any():
        label = counts.index[counts < 2][0]
        shown = names[label] if names is not None else label
        raise TransferError(
            f"class '{shown}' has only {counts[label]} example in {source}: "
            "too few to hold out a validation set; add examples or pass a validation set"
        )
    held_per_class = counts.map(lambda c: min(c - 1, max(1, round(c * percentage / 100))))
    shuffled, rank = _shuffled_with_rank(labels, seed)
    held = rank < shuffled.map(held_per_class).to_numpy()
    rows = shuffled.index.to_numpy()
    return select(split, rows[~held]), select(split, rows[held])


# ---------------------------------------------------------------- images


def open_image(value, max_side: int | None = None):
    """PIL RGB image from a path, encoded bytes, a datasets image dict or an array. `max_side`: a JPEG larger than
    that may be decoded at 1/2, 1/4 or 1/8 scale, never below `max_side` on its longer side."""
    from PIL import Image

    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, list):  # pixels from a fixed-shape Arrow array
        value = np.asarray(value, dtype=np.uint8)
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


def unreadable_reasons(values, source: str) -> list[str | None]:
    """For each image: None when it decodes, else where it came from and why not. Every byte is decoded, a large JPEG
    at 1/8 scale (as fast as a small one; truncation is still found)."""
    reasons = []
    for value in values:
        if isinstance(value, (np.ndarray, list)):  # pixels
            reasons.append(None)
            continue
        try:
            open_image(value, max_side=1).load()
            reasons.append(None)
        except Exception as exc:  # PIL raises many types for broken files
            where = value if isinstance(value, str) else (value or {}).get("path") or f"an image in {source}"
            reasons.append(f"{where} ({type(exc).__name__})")
    return reasons


def _drop_unreadable(split, strict: bool, source: str, num_proc: int | None = None):
    """The readable rows (of a Dataset or a DataFrame), and where the unreadable ones came from; a Dataset is
    scanned in `num_proc` processes (--preprocessing_num_workers)."""
    if isinstance(split, pd.DataFrame) or not num_proc or num_proc < 2 or len(split) < 2 * num_proc:
        reasons = unreadable_reasons(split["image"], source)
    else:
        scanned = split.select_columns(["image"]).map(
            lambda batch: {"unreadable": unreadable_reasons(batch["image"], source)},
            batched=True,
            num_proc=num_proc,
            remove_columns=["image"],
        )
        reasons = list(scanned["unreadable"])
    dropped = [reason for reason in reasons if reason is not None]
    if dropped and strict:
        raise TransferError(f"unreadable image {dropped[0]}: fix or remove it, or drop --strict to skip such images")
    keep = np.flatnonzero([reason is None for reason in reasons])
    return (select(split, keep) if dropped else split), [reason.rsplit(" (", 1)[0] for reason in dropped]


# ---------------------------------------------------------------- the whole pipeline


def load_labelled_data(args: DataArguments, seed: int = 42, modality: str | None = None) -> LabelledData:
    """Read, check, split and subset. `seed` drives every sample (TrainingArguments' data_seed or seed);
    `modality` ("text" / "image", from the checkpoint) says what a table's columns must hold."""
    with quiet_datasets():
        if args.streaming:
            from .streaming import load_streamed_data

            return load_streamed_data(args, seed, modality)
        return _load_labelled_data(args, seed, modality)


def _load_labelled_data(args: DataArguments, seed: int, modality: str | None) -> LabelledData:
    raw, sources, names, modality, description = _raw_splits(args, modality)
    label = args.label_column_name
    if "test" in raw and label in raw["test"].column_names and _unlabelled(raw["test"], label):
        print(
            f"{sources['test']} has no labels (a benchmark's hidden test set): evaluating on the validation split only"
        )
        del raw["test"]
    splits = {
        s: normalise_columns(t, sources[s], modality, args)
        for s, t in raw.items()
        if s in ("train", "validation", "test")
    }
    if len(splits["train"]) == 0:
        raise TransferError(f"{sources['train']} is empty: give at least one labelled example per class")

    label_names, splits = _labels_to_ids(splits, sources, names)
    validation = "given"
    if "validation" not in splits:
        held = held_out_per_class(label_series(splits["train"]), args.validation_split_percentage)
        minimum = (
            defaults.MIN_VALIDATION_PER_CLASS
            if args.min_validation_per_class is None
            else args.min_validation_per_class
        )
        if held >= minimum:
            splits["train"], splits["validation"] = split_validation(
                splits["train"], args.validation_split_percentage, seed, sources["train"], label_names
            )
            sources["validation"] = f"{sources['train']} (held out)"
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
            splits[split], dropped = _drop_unreadable(
                splits[split], args.strict, sources[split], args.preprocessing_num_workers
            )
            skipped += dropped
    if skipped:
        print(
            f"skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''} (e.g. {', '.join(skipped[:3])}): "
            "fix or remove them, or pass --strict to stop on the first one"
        )

    train_labels = set(label_series(splits["train"]).unique())
    for split, table in splits.items():
        if len(table) == 0:
            raise TransferError(f"{sources[split]} has no usable examples left: check the file and the sample caps")
        if split != "train" and (unknown := set(label_series(table).unique()) - train_labels):
            raise TransferError(
                f"{sources[split]} has label '{label_names[min(unknown)]}' that never occurs in the training data: "
                "add training examples of it or remove those rows"
            )
    return LabelledData(
        splits, [str(n) for n in label_names], modality, description, len(skipped), validation, sources
    )


def _unlabelled(table, label: str) -> bool:
    """Every label empty (or ClassLabel's -1): a benchmark's hidden test set."""
    import datasets
    import pyarrow.compute as pc

    values = column(table, label)
    if isinstance(table.features[label], datasets.ClassLabel):
        return bool(pc.all(pc.or_(pc.is_null(values), pc.less(values, 0))).as_py())
    return values.null_count == len(values)


def _labels_to_ids(splits: dict, sources: dict, names: list[str] | None) -> tuple[list, dict]:
    """Every split's labels as integer ids into the label names (ClassLabel names, else the training labels sorted,
    numerically when all are integers); a label that the names do not hold is one line naming the file."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if names is None:
        names = _label_names(pc.unique(column(splits["train"], "label")).to_pylist())
    ids = _label_index(names)
    out = {}
    for split, table in splits.items():
        if isinstance(table.features["label"], datasets.ClassLabel):
            values = np.asarray(column(table, "label").to_numpy(), dtype=np.int64)
        else:
            labels = column(table, "label")
            uniques = pc.unique(labels)
            keys = [label_key(v) for v in uniques.to_pylist()]
            if unknown := [v for v, k in zip(uniques.to_pylist(), keys) if k not in ids]:
                raise TransferError(
                    f"{sources[split]} has label '{unknown[0]}' that never occurs in the training data: add training "
                    "examples of it or remove those rows"
                )
            position = pc.index_in(labels, value_set=uniques).to_numpy(zero_copy_only=False)
            values = np.array([ids[k] for k in keys], dtype=np.int64)[position]
        out[split] = (
            table.remove_columns("label")
            .add_column("label", pa.array(values))
            .cast_column("label", datasets.ClassLabel(names=[str(n) for n in names]))
        )
    return list(names), out


def label_key(value) -> str:
    """Labels compare as text, so 1, 1.0 and '1' from different files agree."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value)


def _label_names(labels) -> list[str]:
    keys = {label_key(v) for v in labels}
    numeric = all(k.lstrip("-").isdigit() for k in keys)
    return sorted(keys, key=int) if numeric else sorted(keys)


def _label_index(names) -> dict[str, int]:
    return {label_key(n): i for i, n in enumerate(names)}
