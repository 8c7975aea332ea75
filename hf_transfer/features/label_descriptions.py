"""Zero-shot heads: the frozen encoder embeds a sentence describing each label, and an example goes to the label
whose description its features are most similar to (cosine similarity). The head is an ordinary linear layer
(rows: the unit-normalised description embeddings, times a scale), so a zero-shot run saves, loads and predicts
like any other run, and the same rows can start a head that fine-tuning trains."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import torch

from ..errors import TransferError
from .extraction import head_inputs
from .head_fitting import single_linear


@dataclasses.dataclass
class LabelDescriptionArguments:
    label_descriptions: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": 'a JSON object (or a .json file holding one) mapping each label to a sentence, e.g. {"spam": "an '
            'unsolicited advertisement"}; labels left out use --label_template'
        },
    )
    label_template: str = dataclasses.field(
        default="This example is {label}.",
        metadata={"help": "the sentence for a label without a description; {label} is replaced by the label's name"},
    )


def descriptions(options: LabelDescriptionArguments, label_names: list[str]) -> list[str]:
    """One sentence per label, in label order; unknown labels in --label_descriptions are one line."""
    given = {}
    if options.label_descriptions:
        text = options.label_descriptions
        source = "--label_descriptions"
        if text.strip().endswith(".json") or pathlib.Path(text).is_file():
            path = pathlib.Path(text)
            if not path.is_file():
                raise TransferError(f"--label_descriptions {text}: no such file (give a JSON file or a JSON object)")
            text, source = path.read_text(), str(path)
        try:
            given = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TransferError(
                f"{source} is not valid JSON ({exc.msg} at character {exc.pos}): give an object mapping each label to a sentence"
            ) from None
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise TransferError(f"{source} must be a JSON object mapping each label to a sentence")
        if unknown := sorted(set(map(str, given)) - set(label_names)):
            raise TransferError(
                f"{source} describes label '{unknown[0]}', which the data does not have (labels: {', '.join(label_names)})"
            )
    if "{label}" not in options.label_template and len(given) < len(label_names):
        raise TransferError(
            f"--label_template {options.label_template!r} has no {{label}}: every label would get the same sentence"
        )
    return [given.get(name, options.label_template.replace("{label}", name)) for name in label_names]


@torch.no_grad()
def description_embeddings(model, tokenizer, sentences: list[str], max_length: int) -> tuple[torch.Tensor, float]:
    """The head's input features of each sentence, unit-normalised (labels, features), and their mean length."""
    device = next(model.parameters()).device
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    was_training = model.training
    model.eval()
    features = head_inputs(model, {k: v.to(device) for k, v in batch.items()}).float()
    model.train(was_training)
    features = features.flatten(1)
    return torch.nn.functional.normalize(features, dim=-1), features.norm(dim=-1).mean().item()


def set_head_from_embeddings(
    head: torch.nn.Module, embeddings: torch.Tensor, feature_norm: float, temperature: float
) -> None:
    """Logits = <x, e_c> / (|x| typical * temperature): cosine similarities scaled as a softmax over labels expects.
    `feature_norm`: the typical length of the head's input features (dividing by it keeps argmax = nearest label)."""
    linear = single_linear(head)
    if linear is None:
        raise TransferError("a zero-shot head is one linear layer: use --head linear")
    if linear.weight.shape != embeddings.shape:
        raise TransferError(
            f"the head maps {linear.in_features} features to {linear.out_features} labels, the descriptions give {tuple(embeddings.shape)}"
        )
    with torch.no_grad():
        linear.weight.copy_((embeddings / (feature_norm * temperature)).to(linear.weight))
        linear.bias.zero_()


def zero_shot_accuracy(label_embeddings, x, y) -> float:
    """Accuracy of sending each example (features `x`) to the label whose description embedding is most similar."""
    x = torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32).flatten(1), dim=1)
    predicted = (x @ torch.as_tensor(label_embeddings, dtype=torch.float32).T).argmax(1)
    return float((predicted == torch.as_tensor(y)).float().mean())
