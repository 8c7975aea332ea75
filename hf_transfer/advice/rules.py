"""Which transfer strategy to run, from measurements of the data and the frozen checkpoint.

The rows start from the usual decision table of transfer learning (data set size × similarity to the pretraining
domain: little data and a close domain → frozen features; more data → fine-tune; far domain and much data →
fine-tune everything, statistics included) and are calibrated against `scripts/compare_strategies.py` on the
bundled data sets (docs/results/advisor.md). The first rule that matches decides.
"""

from __future__ import annotations

import dataclasses

from ..defaults import (
    ADAPTER_LEARNING_RATES,
    BODY_LEARNING_RATES,
    CEILING,
    CLOSE_DOMAIN,
    FAR_DOMAIN,
    FEW_SHOT,
    FINETUNE_EPOCHS,
    HEAD_LEARNING_RATES,
    LARGE_DATA,
    LARGE_MODEL,
)

# What each strategy runs with: the recipes' own defaults, from the same module.
RECIPES = {
    "feature_extraction": {
        "recipe": "recipes/feature_extraction.py",
        "head_solver": "lbfgs",
    },  # no epochs or LR: fitted to convergence
    "full_finetune": {
        "recipe": "recipes/full_finetune.py",
        "epochs": FINETUNE_EPOCHS,
        "learning_rate": BODY_LEARNING_RATES,
    },
    "lora": {
        "recipe": "recipes/peft_finetune.py",
        "epochs": FINETUNE_EPOCHS,
        "learning_rate": dict.fromkeys(("text", "image"), ADAPTER_LEARNING_RATES["lora"]),
    },
}


@dataclasses.dataclass
class Measurements:
    """What the advisor measured for one checkpoint on the user's train and validation splits."""

    checkpoint: str
    modality: str
    train_examples: int
    classes: int
    smallest_class: int
    validation_examples: int
    parameters: int
    feature_size: int
    linear_probe: float
    knn: float
    logme: float
    majority_share: float  # validation accuracy of always answering the most frequent class
    batchnorm_shift: float | None
    seconds: float
    zero_shot: float | None = None  # accuracy of the zero-shot classifier (label names in a template), text only
    labels_to_beat_zero_shot: int | None = None  # fewest examples per class at which a linear probe beats it


@dataclasses.dataclass
class Advice:
    strategy: str
    recipe: str
    options: dict  # recipe keyword arguments, also the command-line flags
    reasons: list[str]


def closeness(m: Measurements) -> str:
    """The domain in plain words, from the BatchNorm shift when the model has one, else from the probe."""
    if m.batchnorm_shift is not None:
        if m.batchnorm_shift >= FAR_DOMAIN:
            return f"far from the pretraining domain at this input size (BatchNorm shift {m.batchnorm_shift:.2f})"
        return f"{'close to' if m.batchnorm_shift < CLOSE_DOMAIN else 'some way from'} the pretraining domain (BatchNorm shift {m.batchnorm_shift:.2f})"
    lift = m.linear_probe - m.majority_share
    return f"frozen features {'separate the classes well' if lift >= 0.3 else 'separate the classes partly'} (no BatchNorm statistics to compare)"


def recommend(m: Measurements) -> Advice:
    probe = f"linear probe {100 * m.linear_probe:.1f}% (k-NN {100 * m.knn:.1f}%, majority class {100 * m.majority_share:.1f}%), LogME {m.logme:.2f}"
    facts = f"{m.train_examples:,} training examples over {m.classes} classes (smallest class {m.smallest_class}); {probe}; {closeness(m)}"
    if m.smallest_class < FEW_SHOT:
        return _advice(
            "feature_extraction",
            m,
            [
                facts,
                f"fewer than {FEW_SHOT} examples in a class are too few to move the backbone's weights "
                "without overfitting: train a head on frozen features",
            ],
        )
    if m.linear_probe >= CEILING:
        return _advice(
            "feature_extraction",
            m,
            [
                facts,
                f"frozen features already reach {100 * m.linear_probe:.1f}% on validation: at most "
                f"{100 * (1 - m.linear_probe):.1f} points are left, and a head on cached features costs seconds",
            ],
        )
    if m.parameters > LARGE_MODEL:
        return _advice(
            "lora",
            m,
            [
                facts,
                f"{m.parameters / 1e6:.0f}M parameters: full fine-tuning would keep optimizer state for all of them; "
                "LoRA trains well under 1% and came within 1.1-3.1 points of full fine-tuning "
                "at 100 examples per class on the bundled data",
            ],
        )
    if m.batchnorm_shift is not None and m.batchnorm_shift >= FAR_DOMAIN and m.smallest_class >= LARGE_DATA:
        return _advice(
            "full_finetune",
            m,
            [
                facts,
                "far domain and enough data to re-estimate BatchNorm statistics: fine-tune everything, "
                "statistics included",
            ],
            update_bn_statistics=True,
        )
    return _advice(
        "full_finetune",
        m,
        [
            facts,
            "enough examples to adapt the backbone: full fine-tuning from a head fitted on frozen features "
            "(LP-FT) was the best strategy, or within 0.5 points of it, in every bundled comparison "
            "from 5 examples per class up",
        ],
    )


def _advice(strategy: str, m: Measurements, reasons: list[str], **flags) -> Advice:
    table = RECIPES[strategy]
    if strategy == "feature_extraction":
        return Advice(strategy, table["recipe"], {"head_solver": table["head_solver"], **flags}, reasons)
    options = {
        "num_train_epochs": table["epochs"],
        "learning_rate": table["learning_rate"][m.modality],
        "head_learning_rate": HEAD_LEARNING_RATES[m.modality],
    }
    if strategy == "lora":
        options["peft_method"] = "lora"
    return Advice(strategy, table["recipe"], {**options, **flags}, reasons)
