"""Domain adaptation with `Trainer`: labelled source batches paired with unlabelled target batches, and a model
whose forward adds the alignment losses (`domain_alignment`) to the source cross-entropy.

The model being trained wraps the classifier (and DANN's domain classifier) so that every loss is computed in one
forward call: under DDP the gradients of all of them are then synchronised. Only the classifier is saved.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import TransferError
from ..models.transfer_classifier import feature_size
from .alignment import DomainClassifier, coral_loss, dann_loss, dann_weight, mmd_loss

METHODS = ("pseudo_label", "dann", "coral", "mmd", "augment")
ALIGNMENT = ("dann", "coral", "mmd")
TARGET_PREFIX = "target_"


@dataclasses.dataclass
class DomainAdaptationArguments:
    """The target domain and how to adapt to it."""

    method: str = dataclasses.field(
        default="pseudo_label",
        metadata={
            "help": "pseudo_label | dann | coral | mmd | augment, or several joined by commas (e.g. dann,pseudo_label)"
        },
    )
    target_file: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "unlabelled target inputs (text column, or image paths); "
            "a label column is used only to report target accuracy"
        },
    )
    target_dir: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "a folder of target images (class subfolders, if any, are used only to report target accuracy)"
        },
    )
    target_dataset_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "the target as a data set (e.g. bundled:mnist_m): "
            "its train split unlabelled, its test split the target test set"
        },
    )
    target_test_file: str | None = dataclasses.field(
        default=None, metadata={"help": "labelled target test set (default: the target set's own labels)"}
    )
    target_test_dir: str | None = None
    max_target_samples: int | None = None
    alignment_weight: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "weight of the dann / coral / mmd loss (default: dann 0.1, chosen on MNIST-M's validation split; coral and mmd 1.0)"
        },
    )
    pseudo_label_threshold: float = dataclasses.field(
        default=0.9, metadata={"help": "keep target predictions at least this confident"}
    )
    pseudo_label_rounds: int = dataclasses.field(
        default=2, metadata={"help": "rounds of self-training after the first training"}
    )
    class_balance: bool = dataclasses.field(
        default=True, metadata={"help": "no class gets more than twice the pseudo-labels of the rarest"}
    )


def parse_methods(text: str, modality: str) -> list[str]:
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise TransferError(
            f"--method '{unknown[0] if unknown else text}' is not one of {', '.join(METHODS)} (combine with commas)"
        )
    if "augment" in methods and modality != "image":
        raise TransferError("--method augment transforms images: for text use pseudo_label, dann, coral or mmd")
    return list(dict.fromkeys(methods))


def check_options(options: DomainAdaptationArguments) -> None:
    if not 0.0 < options.pseudo_label_threshold <= 1.0:
        raise TransferError(
            f"--pseudo_label_threshold {options.pseudo_label_threshold:g} must be in (0, 1] (e.g. 0.9)"
        )
    if options.pseudo_label_rounds < 1:
        raise TransferError(f"--pseudo_label_rounds {options.pseudo_label_rounds} must be at least 1")
    if options.alignment_weight is not None and not options.alignment_weight > 0:
        raise TransferError(f"--alignment_weight {options.alignment_weight:g} must be positive (e.g. 1.0)")


DEFAULT_ALIGNMENT_WEIGHTS = {"dann": 0.1, "coral": 1.0, "mmd": 1.0}


def alignment_weights(methods: list[str], weight: float | None) -> dict[str, float]:
    """The weight of each alignment loss: --alignment_weight for all of them when given, else each method's default."""
    return {m: DEFAULT_ALIGNMENT_WEIGHTS[m] if weight is None else weight for m in methods if m in ALIGNMENT}


# ---------------------------------------------------------------- source and target batches side by side


class PairedDataset(torch.utils.data.Dataset):
    """Item i: source item i and target item i (each wrapping around), so an epoch covers both domains."""

    def __init__(self, source, target):
        self.source, self.target = source, target

    def __len__(self):
        return max(len(self.source), len(self.target))

    def __getitem__(self, index):
        target = {
            TARGET_PREFIX + k: v for k, v in self.target[index % len(self.target)].items()
        }  # labels: -100, dropped when collated
        return {**self.source[index % len(self.source)], **target}


class PairedCollator:
    """Collates the source half and the target half separately with the recipe's collator (a class: workers pickle it)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, items: list[dict]) -> dict:
        source = self.collator([{k: v for k, v in item.items() if not k.startswith(TARGET_PREFIX)} for item in items])
        if not any(k.startswith(TARGET_PREFIX) for k in items[0]):
            return source
        target = self.collator(
            [{k[len(TARGET_PREFIX) :]: v for k, v in item.items() if k.startswith(TARGET_PREFIX)} for item in items]
        )
        return {**source, **{TARGET_PREFIX + k: v for k, v in target.items() if k != "labels"}}


# ---------------------------------------------------------------- the model being trained


class AdaptationModel(nn.Module):
    """A TransferClassifier plus the alignment losses on its pooled features."""

    def __init__(self, classifier: nn.Module, methods: list[str], weights: dict[str, float]):
        super().__init__()
        self.classifier = classifier
        self.methods = [m for m in methods if m in ALIGNMENT]
        self.weights = weights
        width = feature_size(classifier.config.backbone_config, classifier.backbone)
        self.domain_classifier = DomainClassifier(width) if "dann" in methods else None
        self.main_input_name = classifier.main_input_name
        self.progress = 0.0  # fraction of training done; DANN's reversal weight follows it
        self.config = classifier.config  # what Trainer and its callbacks read

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        pixel_values=None,
        labels=None,
        target_input_ids=None,
        target_attention_mask=None,
        target_token_type_ids=None,
        target_pixel_values=None,
    ):
        features = self.classifier.features(input_ids, attention_mask, token_type_ids, pixel_values)
        logits = self.classifier.head(features)
        loss = nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        has_target = target_input_ids is not None or target_pixel_values is not None
        if self.training and has_target and self.methods and loss is not None:
            target = self.classifier.features(
                target_input_ids, target_attention_mask, target_token_type_ids, target_pixel_values
            )
            ramp = dann_weight(
                self.progress
            )  # every alignment loss ramps in, so the features first learn the source task
            for method in self.methods:
                if method == "dann":
                    loss = loss + self.weights["dann"] * dann_loss(self.domain_classifier, features, target, ramp)
                elif method == "coral":
                    loss = loss + self.weights["coral"] * ramp * coral_loss(features, target)
                else:
                    loss = loss + self.weights["mmd"] * ramp * mmd_loss(features, target)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class TrainingProgress(TrainerCallback):
    """Tells the model how far training has come (DANN's schedule)."""

    def __init__(self, model: AdaptationModel):
        self.model = model

    def on_step_begin(self, args, state, control, **kwargs):
        self.model.progress = state.global_step / max(state.max_steps, 1)


def target_label_ids(frame, label_names: list[str], source: str) -> np.ndarray | None:
    """The target rows' labels as the source's indices (None when the target has no labels); a label the source
    never saw is an error, since no source-trained classifier can predict it."""
    from ..data.loading import label_key

    column = "known_label" if "known_label" in frame.columns else "label"
    if column not in frame.columns or (column == "label" and (frame["label"] == -100).all()):
        return None
    index = {label_key(name): i for i, name in enumerate(label_names)}
    unknown = sorted({label_key(v) for v in frame[column]} - set(index))
    if unknown:
        raise TransferError(
            f"{source} has label '{unknown[0]}' that the source data never has (source labels: {', '.join(label_names)}): "
            "remove those rows, or relabel them"
        )
    return np.array([index[label_key(v)] for v in frame[column]], dtype=int)


@torch.no_grad()
def class_probabilities(classifier: nn.Module, dataset, collator, settings, device) -> np.ndarray:
    """Softmax outputs of the classifier over a dataset (labels, if any, are not used), in eval mode.
    `settings`: features.ExtractionSettings (the run's batch size, workers and precision). Under DDP each rank
    runs the backbone on its share of the rows and every rank gets them all."""
    from ..engine.sharding import rows_across_ranks
    from ..features.extraction import extract_features

    def features_of(rows):
        return (
            extract_features(classifier, torch.utils.data.Subset(dataset, rows), collator, settings, device).tensors[
                0
            ],
        )

    (features,) = rows_across_ranks(features_of, len(dataset))
    features = features.to(device)
    was_training = classifier.training
    classifier.eval()
    try:
        return torch.softmax(classifier.head(features).float(), dim=-1).cpu().numpy()
    finally:
        classifier.train(was_training)


def with_prefix(groups, prefix: str, extra: nn.Module | None = None, extra_name: str = ""):
    """Layer groups of the classifier renamed as parameters of the wrapping model; `extra`'s parameters join the head."""
    from ..models.layer_groups import LayerGroup

    renamed = [LayerGroup(g.name, {prefix + n: p for n, p in g.parameters.items()}) for g in groups]
    if extra is not None:
        renamed[-1].parameters.update({f"{extra_name}.{n}": p for n, p in extra.named_parameters()})
    return renamed
