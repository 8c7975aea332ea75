"""`--streaming`: the training split read as a `datasets` IterableDataset, for a pool too large to download or convert.

Nothing of the training split is stored: its examples are read, shuffled in a buffer, labelled and tokenised as
training consumes them. Its labels are read once before training (the label column alone), to find the classes and
any empty label before anything is written. The validation and test splits are read whole, as without streaming.
A stream has no length, so the run needs `--max_steps`, and what needs the whole split — a held-out validation split,
per-class subsets, the features of every training example — is refused in one line. Under `accelerate launch` each
rank reads its own shard (`TrainingArguments.accelerator_config.dispatch_batches = False`: accelerate shards a
`datasets` IterableDataset by its files, as `datasets.distributed.split_dataset_by_node` does).
"""

from __future__ import annotations

import pathlib

from .. import assets
from ..errors import TransferError
from .loading import (
    BUILDERS,
    DataArguments,
    LabelledData,
    _label_index,
    _label_names,
    _labels_to_ids,
    label_key,
    normalise_columns,
    read_table,
    stratified_sample,
)

SHUFFLE_BUFFER = 10_000  # examples in a streamed split's shuffle buffer (as in the `datasets` streaming guide)


def load_streamed_data(args: DataArguments, seed: int, modality: str | None) -> LabelledData:
    _check_streamable(args, modality)
    stream, evaluation, sources, description = _open(args)
    first = next(iter(stream.take(1)), None)
    if first is None:
        raise TransferError(f"{sources['train']} has no rows: give it at least one labelled example per class")
    columns = stream.column_names or list(first)
    wanted = [c.strip() for c in args.text_column_name.split(",") if c.strip()]
    if not 1 <= len(wanted) <= 2:
        raise TransferError(
            f"--text_column_name '{args.text_column_name}' must name one column or two ('a,b') for pairs"
        )
    for name in [*wanted, args.label_column_name]:
        if name not in columns:
            option = "label_column_name" if name == args.label_column_name else "text_column_name"
            raise TransferError(
                f"{sources['train']} has no column '{name}' (columns: {', '.join(map(str, columns))}): set --{option}"
            )
    stream = stream.select_columns([*wanted, args.label_column_name])
    ours = ["text", "text_pair"][: len(wanted)] + ["label"]
    if renames := {k: v for k, v in zip([*wanted, args.label_column_name], ours) if k != v}:
        stream = stream.rename_columns(renames)
    names, examples, class_label = _label_names_of(stream, sources["train"])
    ids = None if class_label else _label_index(names)  # a ClassLabel's values are ids already
    stream = stream.map(lambda batch: _as_ids(batch, ids), batched=True)
    stream = stream.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
    if args.max_train_samples:
        stream, examples = stream.take(args.max_train_samples), min(examples, args.max_train_samples)

    splits = {s: normalise_columns(t, sources[s], "text", args) for s, t in evaluation.items()}
    names, splits = _labels_to_ids(splits, sources, names) if splits else (names, splits)
    if args.max_eval_samples and "validation" in splits:
        splits["validation"] = stratified_sample(splits["validation"], args.max_eval_samples, seed)
    if args.max_test_samples and "test" in splits:
        splits["test"] = stratified_sample(splits["test"], args.max_test_samples, seed)
    validation = (
        "given"
        if "validation" in splits
        else "none: the training split is streamed, so none can be held out of it; give --validation_file or a "
        "data set with a validation split to evaluate each epoch"
    )
    return LabelledData(
        {"train": stream, **splits},
        [str(n) for n in names],
        "text",
        description,
        validation=validation,
        sources=sources,
        streamed_examples=examples,
    )


def _check_streamable(args: DataArguments, modality: str | None) -> None:
    if args.train_dir or (
        args.dataset_name and (assets.is_bundled(args.dataset_name) or _is_local(args.dataset_name))
    ):
        raise TransferError(
            "--streaming reads a Hub data set or a --train_file; bundled sets, image folders and save_to_disk folders "
            "are memory-mapped already (no copy in RAM): leave --streaming out"
        )
    if modality == "image":
        raise TransferError("--streaming reads text only for now: leave it out for images (they are memory-mapped)")
    if given := [f"--{o}" for o in ("max_train_samples_per_class",) if getattr(args, o)]:
        raise TransferError(
            f"{', '.join(given)}: per-class subsets need the whole training split, which a stream does not hold: "
            "leave --streaming out"
        )


def _is_local(name: str) -> bool:
    return pathlib.Path(name).exists()


def _open(args: DataArguments):
    """(training stream, {split: Dataset} to evaluate on, {split: source}, description)."""
    import datasets

    if args.train_file:
        path = pathlib.Path(args.train_file)
        if not path.is_file():
            raise TransferError(f"--train_file '{path}' does not exist: check the path")
        if path.suffix.lower() not in BUILDERS:
            raise TransferError(
                f"--train_file '{path}' has extension '{path.suffix}': use .csv, .json, .jsonl or .parquet"
            )
        if path.stat().st_size == 0:
            raise TransferError(f"--train_file '{path}' has no rows: give it at least one labelled example per class")
        stream = datasets.load_dataset(
            BUILDERS[path.suffix.lower()], data_files={"train": str(path)}, split="train", streaming=True
        )
        options = {"validation": "validation_file", "test": "test_file"}
        named = {s: getattr(args, o) for s, o in options.items() if getattr(args, o)}
        evaluation = {s: read_table(p, options[s]) for s, p in named.items()}
        return stream, evaluation, {"train": str(path), **named}, args.train_file
    if not args.dataset_name:
        raise TransferError("--streaming needs --dataset_name (a Hub data set) or --train_file")
    from ..hub import hub_offline

    name = args.dataset_name
    if hub_offline():
        raise TransferError(f"--streaming '{name}': the Hub is offline (HF_HUB_OFFLINE=1): stream a --train_file")
    common = {"path": name, "name": args.dataset_config_name, "revision": args.dataset_revision}
    try:  # the token, if any, comes from `hf auth login` or HF_TOKEN
        available = datasets.get_dataset_split_names(name, args.dataset_config_name, revision=args.dataset_revision)
        stream = datasets.load_dataset(**common, split=args.train_split_name, streaming=True)
        evaluation = {}
        for split, given in (("validation", args.validation_split_name), ("test", args.test_split_name)):
            found = given if given in available else next((a for a in available if _alias(a) == split), None)
            if found:
                evaluation[split] = datasets.load_dataset(**common, split=found)
    except Exception as exc:  # network, missing repo or split, auth: all end the run the same way
        raise TransferError(
            f"could not stream data set '{name}' from the Hub ({type(exc).__name__}: {str(exc)[:160]}): check the id, "
            "--train_split_name and your network"
        ) from None
    return stream, evaluation, {s: f"{name}[{s}]" for s in ("train", *evaluation)}, name


def _alias(split: str) -> str:
    from .loading import HUB_SPLIT_ALIASES

    return HUB_SPLIT_ALIASES.get(split, split)


def _label_names_of(stream, source: str) -> tuple[list, int, bool]:
    """The class names (a ClassLabel's, else the labels read once from the stream), the number of examples, and
    whether the labels are a ClassLabel's ids."""
    import datasets

    feature = (stream.features or {}).get("label")
    labels = stream.select_columns(["label"])
    keys, examples = set(), 0
    for batch in labels.iter(batch_size=10_000):
        for offset, value in enumerate(batch["label"]):
            if value is None or (isinstance(feature, datasets.ClassLabel) and value < 0):
                raise TransferError(
                    f"{source} row {examples + offset} has an empty label: label every example or remove the row"
                )
        keys.update(label_key(v) for v in batch["label"])
        examples += len(batch["label"])
    if examples == 0:
        raise TransferError(f"{source} has no rows: give it at least one labelled example per class")
    class_label = isinstance(feature, datasets.ClassLabel)
    names = list(feature.names) if class_label else _label_names(keys)
    print(
        f"streaming {source}: read its {examples:,} labels once ({len(names)} classes); the examples stream as "
        "training reads them"
    )
    return names, examples, class_label


def _as_ids(batch: dict, ids: dict[str, int] | None) -> dict:
    labelled = {"label": batch["label"] if ids is None else [ids[label_key(v)] for v in batch["label"]]}
    for column in ("text", "text_pair"):
        if column in batch:
            labelled[column] = ["" if t is None else str(t) for t in batch[column]]
    return labelled
