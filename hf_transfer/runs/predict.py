"""Predict with a saved run on new, unlabelled inputs.

    hf-transfer predict --model outputs/full_finetune --input_file new.csv --output_file predictions.csv
    hf-transfer predict --model outputs/lora_vit --input_dir photos/ --all_scores

    from hf_transfer.runs.predict import predict; frame = predict("outputs/full_finetune", input_file="new.csv")

One row per input: the input (text or image path), the predicted label and its probability; with
`--all_scores`, the probability of every class. Works for full models and adapter runs, text and images.
"""

from __future__ import annotations

import pathlib

import pandas as pd

from ..data.loading import IMAGE_EXTENSIONS, read_table, relative_to_table
from ..errors import TransferError
from .inference import class_probabilities, load_run, read_images


def predict(
    model: str,
    *,
    input_file: str | None = None,
    input_dir: str | None = None,
    output_file: str | None = None,
    all_scores: bool = False,
    text_column_name: str = "text",
    image_column_name: str = "image",
    batch_size: int = 64,
) -> pd.DataFrame:
    """Predictions as a DataFrame (also written to `output_file` as CSV when given)."""
    if bool(input_file) == bool(input_dir):
        raise TransferError(
            "give exactly one of --input_file (a table of texts or image paths) and --input_dir (a folder of images)"
        )
    run = load_run(model)
    inputs, pairs, shown = read_inputs(run.modality, input_file, input_dir, text_column_name, image_column_name)
    probabilities = class_probabilities(
        run, read_images(inputs) if run.modality == "image" else inputs, text_pairs=pairs, batch_size=batch_size
    )
    best = probabilities.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "input": shown,
            "predicted_label": [run.label_names[i] for i in best],
            "probability": probabilities.max(axis=1).round(6) if len(best) else [],
        }
    )
    if all_scores:
        for index, name in enumerate(run.label_names):
            frame[f"probability_{name}"] = probabilities[:, index].round(6)
    if output_file:
        _write_csv(frame, pathlib.Path(output_file))
    return frame


def read_inputs(modality: str, input_file, input_dir, text_column_name: str, image_column_name: str):
    """(model inputs, text pairs or None, what the output's `input` column shows)."""
    if input_dir:
        root = pathlib.Path(input_dir)
        if not root.is_dir():
            raise TransferError(f"--input_dir '{root}' is not a folder")
        if modality != "image":
            raise TransferError(
                f"--input_dir '{root}': this run classifies text; give --input_file with a '{text_column_name}' column"
            )
        paths = [str(p) for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not paths:
            raise TransferError(f"--input_dir '{root}' holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return paths, None, paths
    table = read_table(input_file, "input_file")
    if modality == "image":
        if image_column_name not in table.column_names:
            raise TransferError(
                f"--input_file '{input_file}' has no column '{image_column_name}' (columns: {', '.join(map(str, table.column_names))}): set --image_column_name"
            )
        paths = relative_to_table(table[image_column_name], input_file)
        return paths, None, paths
    columns = [c.strip() for c in text_column_name.split(",") if c.strip()]
    missing = [c for c in columns if c not in table.column_names]
    if missing or not 1 <= len(columns) <= 2:
        raise TransferError(
            f"--input_file '{input_file}' has no column '{(missing or columns)[0]}' (columns: {', '.join(map(str, table.column_names))}): set --text_column_name"
        )
    texts = ["" if t is None else str(t) for t in table[columns[0]]]
    pairs = ["" if t is None else str(t) for t in table[columns[1]]] if len(columns) == 2 else None
    return texts, pairs, texts


def _write_csv(frame: pd.DataFrame, path: pathlib.Path) -> None:
    """Written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    frame.to_csv(partial, index=False)
    partial.replace(path)
