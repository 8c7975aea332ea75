"""Accuracy, macro-F1 and a per-class report, computed locally.

The `evaluate` library fetches its metric scripts from the Hub and fails offline; these need nothing.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> np.ndarray:
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)), 1)
    return matrix


def classification_report(labels, predictions, label_names: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support."""
    matrix = confusion_matrix(labels, predictions, len(label_names))
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(true_positive), where=(precision + recall) > 0
    )
    present = support > 0  # macro-F1 over the classes that occur in these labels
    return {
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
    }


def make_compute_metrics(label_names: list[str]):
    """A `compute_metrics` for Trainer: accuracy and macro-F1 (scalars only, so they log)."""

    def compute_metrics(eval_prediction) -> dict:
        logits = (
            eval_prediction.predictions[0]
            if isinstance(eval_prediction.predictions, tuple)
            else eval_prediction.predictions
        )
        report = classification_report(eval_prediction.label_ids, np.argmax(logits, axis=-1), label_names)
        return {"accuracy": report["accuracy"], "f1_macro": report["f1_macro"]}

    return compute_metrics
