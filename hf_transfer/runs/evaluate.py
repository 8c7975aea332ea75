"""Evaluate a saved run on a new labelled file or image folder.

    hf-transfer evaluate --model outputs/full_finetune --test_file test.csv
    hf-transfer evaluate --model outputs/lora_vit --test_dir photos_test/ --output_dir eval/

    from hf_transfer.runs.evaluate import evaluate; report = evaluate("outputs/full_finetune", test_file="test.csv")

Accuracy, macro-F1, a per-class report and the confusion matrix, written as `evaluation.json` next to
`confusion_matrix.png` (in `<model>/evaluation/` unless --output_dir says otherwise).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from ..data.loading import (
    DataArguments,
    label_key,
    normalise_columns,
    paths_relative_to,
    read_image_folder,
    read_table,
    values_of,
)
from ..errors import TransferError
from ..metrics import classification_report, confusion_matrix
from . import plots
from .inference import class_probabilities, load_run, read_images


def evaluate(
    model: str,
    *,
    test_file: str | None = None,
    test_dir: str | None = None,
    output_dir: str | None = None,
    text_column_name: str = "text",
    label_column_name: str = "label",
    image_column_name: str = "image",
    batch_size: int = 64,
) -> dict:
    """The report (also written to `output_dir`/evaluation.json with confusion_matrix.png)."""
    if bool(test_file) == bool(test_dir):
        raise TransferError(
            "give exactly one of --test_file (a labelled table) and --test_dir (a folder with one subfolder of images per class)"
        )
    run = load_run(model)
    if test_dir:
        table, source = read_image_folder(test_dir, "test_dir"), test_dir
        if run.modality != "image":
            raise TransferError(f"--test_dir '{test_dir}': this run classifies text; give --test_file")
    else:
        table, source = read_table(test_file, "test_file"), test_file
        if run.modality == "image" and image_column_name in table.column_names:
            table = paths_relative_to(table, image_column_name, test_file)
    columns = DataArguments(
        text_column_name=text_column_name, label_column_name=label_column_name, image_column_name=image_column_name
    )
    table = normalise_columns(table, source, run.modality, columns)
    label_ids = {label_key(name): i for i, name in enumerate(run.label_names)}
    given = values_of(table, "label")
    unknown = [v for v in dict.fromkeys(given) if label_key(v) not in label_ids]
    if unknown:
        raise TransferError(
            f"{source} has label '{unknown[0]}' that the model does not know "
            f"(it predicts {', '.join(run.label_names[:10])}): remove those rows or evaluate a model trained on them"
        )
    labels = np.array([label_ids[label_key(v)] for v in given])
    if run.modality == "image":
        inputs, pairs = read_images(values_of(table, "image")), None
    else:
        texts = values_of(table, "text")
        inputs, pairs = texts, values_of(table, "text_pair") if "text_pair" in table.column_names else None
    predictions = class_probabilities(run, inputs, text_pairs=pairs, batch_size=batch_size).argmax(axis=1)
    report = classification_report(labels, predictions, run.label_names)
    matrix = confusion_matrix(labels, predictions, len(run.label_names))
    report.update(
        confusion_matrix=matrix.tolist(),
        label_names=run.label_names,
        examples=int(len(labels)),
        model=str(model),
        test_data=str(test_file or test_dir),
    )
    out = pathlib.Path(output_dir) if output_dir else run.folder / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    if not plots.available():
        print(plots.INSTALL_HINT)
    plots.confusion_matrix(
        matrix, run.label_names, out / "confusion_matrix.png", title=f"{pathlib.Path(str(test_file or test_dir)).name}"
    )
    (out / "evaluation.json").write_text(json.dumps(report, indent=2))
    report["output_dir"] = str(out)
    return report
