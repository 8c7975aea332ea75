"""Pictures a run leaves beside its numbers: training curves and a confusion matrix (PNG, for the model card).

matplotlib is an optional extra (`pip install "hf-transfer-learning[plots]"`): without it no picture is drawn, one line
says so, and everything else of the run is written as usual.
"""

from __future__ import annotations

import pathlib

import numpy as np

INSTALL_HINT = "figures skipped: matplotlib is not installed (pip install 'hf-transfer-learning[plots]')"


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def training_curves(log_history: list[dict], path: pathlib.Path) -> pathlib.Path | None:
    """Loss (train and validation) and validation accuracy per epoch; None when nothing was logged per epoch."""
    train = [(e["epoch"], e["loss"]) for e in log_history if "loss" in e and "epoch" in e]
    evals = [
        (e["epoch"], e["eval_loss"], e.get("eval_accuracy")) for e in log_history if "eval_loss" in e and "epoch" in e
    ]
    if not train and not evals:
        return None
    if not available():
        return None
    plt = _pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    if train:
        loss_axis.plot(*zip(*train), marker="o", label="train")
    if evals:
        loss_axis.plot([e[0] for e in evals], [e[1] for e in evals], marker="o", label="validation")
        accuracy = [(e[0], e[2]) for e in evals if e[2] is not None]
        if accuracy:
            accuracy_axis.plot(*zip(*accuracy), marker="o", color="tab:green")
    loss_axis.set(title="loss", xlabel="epoch")
    loss_axis.legend()
    accuracy_axis.set(title="validation accuracy", xlabel="epoch", ylim=(0, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def confusion_matrix(
    matrix: np.ndarray, label_names: list[str], path: pathlib.Path, title: str = "confusion matrix"
) -> pathlib.Path:
    """Rows: true class, columns: predicted class, counts in the cells."""
    if not available():
        return None
    plt = _pyplot()
    n = len(label_names)
    side = min(2 + 0.5 * n, 12)
    figure, axis = plt.subplots(figsize=(side + 1, side))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    names = [name[:14] for name in label_names]
    axis.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=names,
        yticklabels=names,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    plt.setp(axis.get_xticklabels(), rotation=45, ha="right")
    if n <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                axis.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] > threshold else "black",
                )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
