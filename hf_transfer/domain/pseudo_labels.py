"""Self-training on an unlabelled target domain: the model's confident predictions become labels for the next round
(Lee 2013, "Pseudo-Label"; class-balanced selection as in Zou et al. 2018, "Unsupervised Domain Adaptation for
Semantic Segmentation via Class-Balanced Self-Training").

Only predictions at or above the confidence threshold are kept; with class balancing no class contributes more
than `balance_factor` times the rarest kept class, so an early bias toward one class is not amplified round after
round.
"""

from __future__ import annotations

import numpy as np


def select(
    probabilities: np.ndarray, threshold: float, balance: bool = True, balance_factor: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, pseudo-labels) of the kept predictions, most confident first within each class."""
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    eligible = np.flatnonzero(confidence >= threshold)
    if not balance or len(eligible) == 0:
        return eligible, predicted[eligible]
    per_class = {c: eligible[predicted[eligible] == c] for c in np.unique(predicted[eligible])}
    cap = max(1, int(balance_factor * min(len(rows) for rows in per_class.values())))
    kept = [rows[np.argsort(-confidence[rows], kind="stable")][:cap] for rows in per_class.values()]
    rows = np.sort(np.concatenate(kept))
    return rows, predicted[rows]


def round_report(
    round_number: int,
    rows: np.ndarray,
    labels: np.ndarray,
    total: int,
    num_labels: int,
    true_labels: np.ndarray | None,
) -> dict:
    """What a round kept: how many, per class, and (when the target's labels are known) how many were right."""
    report = {
        "round": round_number,
        "kept": len(rows),
        "of": int(total),
        "per_class": np.bincount(labels, minlength=num_labels).tolist(),
    }
    if true_labels is not None and len(rows):
        report["pseudo_label_accuracy"] = float((true_labels[rows] == labels).mean())
    return report
