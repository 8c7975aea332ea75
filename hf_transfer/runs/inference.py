"""A saved run, loaded back for prediction: full models through the Auto classes, adapter runs through
`load_adapter`, local folders or Hub repos; an NLI or image-text checkpoint's zero-shot run scores one hypothesis
per label; batched class probabilities on the GPU when there is one."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import torch

from ..errors import TransferError
from .saving import ZERO_SHOT_FILE, read_results


@dataclasses.dataclass
class LoadedRun:
    model: torch.nn.Module
    processor: object  # tokenizer or image processor
    label_names: list[str]
    modality: str  # "text" or "image"
    folder: pathlib.Path
    max_length: int = 512
    zero_shot: str | None = None  # "nli" or "image_text": a zero-shot run scoring `hypotheses`, one per label
    hypotheses: list[str] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_run(model: str, *, device: str | None = None) -> LoadedRun:
    """A run folder (or Hub repo) written by a recipe, or any sequence / image classification checkpoint."""
    from ..models.architectures import takes_images
    from . import adapter_files

    folder = adapter_files.local_folder(model)
    if not folder.is_dir() or not any((folder / f).is_file() for f in ("config.json", adapter_files.BASE_MODEL_FILE)):
        raise TransferError(
            f"--model '{model}' is not a saved run (no config.json or {adapter_files.BASE_MODEL_FILE}): "
            "point it at the --output_dir of a recipe"
        )
    results = read_results(folder)
    max_length = results.get("training_config", {}).get("max_seq_length") or 512
    zero_shot = _read_json(folder / ZERO_SHOT_FILE)
    if (folder / adapter_files.BASE_MODEL_FILE).is_file():
        network, processor = adapter_files.load_adapter(str(folder))
        info = _read_json(folder / adapter_files.BASE_MODEL_FILE)
        label_names, modality = list(info["label_names"]), info["modality"]
    elif zero_shot.get("method") == "image_text":  # CLIP / SigLIP as they were: both towers and their processor
        from transformers import AutoModel, AutoProcessor

        network, processor = AutoModel.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
        label_names, modality = list(zero_shot["label_names"]), "image"
    else:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForImageClassification,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        config = AutoConfig.from_pretrained(folder)
        inner = getattr(config, "backbone_config", None) or config
        modality = "image" if takes_images(inner) else "text"
        auto, loader = (
            (AutoModelForImageClassification, AutoImageProcessor)
            if modality == "image"
            else (AutoModelForSequenceClassification, AutoTokenizer)
        )
        try:
            network = auto.from_pretrained(folder)
            processor = loader.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise TransferError(
                f"--model '{model}' could not be loaded as a {modality} classifier ({str(exc).splitlines()[0][:160]})"
            ) from None
        label_names = [str(config.id2label[i]) for i in range(config.num_labels)]
        if zero_shot:  # an NLI checkpoint: its own labels are entailment / neutral / contradiction
            label_names = list(zero_shot["label_names"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return LoadedRun(
        network.to(device).eval(),
        processor,
        label_names,
        modality,
        folder,
        int(max_length),
        zero_shot.get("method"),
        zero_shot.get("hypotheses"),
    )


def _read_json(path: pathlib.Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def encoded_batches(run: LoadedRun, inputs: list, *, text_pairs: list | None = None, batch_size: int = 64):
    """The model's inputs, batch by batch, preprocessed by the run's own tokenizer or image processor.
    `inputs` are texts, or images (PIL, paths or anything `data.open_image` reads)."""
    from ..data.loading import open_image

    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        if run.modality == "text":
            pairs = text_pairs[start : start + batch_size] if text_pairs is not None else None
            encoded = run.processor(
                batch, pairs, truncation=True, max_length=run.max_length, padding=True, return_tensors="pt"
            )
        else:
            encoded = run.processor([open_image(image) for image in batch], return_tensors="pt")
        yield {k: v.to(run.device) for k, v in encoded.items()}


@torch.inference_mode()
def class_logits(
    run: LoadedRun, inputs: list, *, text_pairs: list | None = None, batch_size: int = 64
) -> torch.Tensor:
    """(n, num_labels) float32 logits on the CPU."""
    if run.zero_shot is not None:
        return _zero_shot_logits(run, inputs, text_pairs=text_pairs, batch_size=batch_size)
    chunks = [
        run.model(**encoded).logits.float().cpu()
        for encoded in encoded_batches(run, inputs, text_pairs=text_pairs, batch_size=batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros((0, len(run.label_names)))


def _zero_shot_logits(run: LoadedRun, inputs: list, *, text_pairs: list | None, batch_size: int) -> torch.Tensor:
    from ..models.zero_shot import entailment_id, entailment_logits, image_text_logits

    if run.zero_shot == "image_text":
        from ..data.loading import open_image

        chunks = [
            image_text_logits(
                run.model, run.processor, [open_image(x) for x in inputs[i : i + batch_size]], run.hypotheses
            )
            for i in range(0, len(inputs), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros((0, len(run.label_names)))
    if text_pairs is not None:
        raise TransferError(f"{run.folder} is an NLI zero-shot run: it classifies single texts, not sentence pairs")
    return entailment_logits(
        run.model,
        run.processor,
        list(inputs),
        run.hypotheses,
        entailment=entailment_id(run.model.config),
        max_length=run.max_length,
        batch_size=batch_size,
    )


def class_probabilities(
    run: LoadedRun, inputs: list, *, text_pairs: list | None = None, batch_size: int = 64
) -> np.ndarray:
    """(n, num_labels) softmax probabilities; `inputs` are texts or PIL images."""
    return torch.softmax(class_logits(run, inputs, text_pairs=text_pairs, batch_size=batch_size), dim=-1).numpy()


def read_images(paths: list[str]) -> list:
    """PIL images, or one line naming the first file that cannot be read."""
    from ..data.loading import open_image

    images = []
    for path in paths:
        try:
            image = open_image(path)
            image.load()
        except Exception as exc:  # PIL raises many types for broken files
            raise TransferError(f"unreadable image {path} ({type(exc).__name__}): fix or remove it") from None
        images.append(image)
    return images
