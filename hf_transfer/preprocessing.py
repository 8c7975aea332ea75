"""Preprocessing as the checkpoint expects it: its tokenizer, its image size / mean / std / interpolation.

Never the data set's own statistics: the backbone was trained on the checkpoint's normalisation.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch
from torchvision import transforms as T

from .data import LabelledData, open_image
from .errors import TransferError
from .modeling import Checkpoint

INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST, "lanczos": T.InterpolationMode.LANCZOS}
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


@dataclasses.dataclass
class ImageConfig:
    size: int
    mean: tuple
    std: tuple
    interpolation: str = "bilinear"
    crop_pct: float | None = None  # None: resize straight to size x size (transformers' ViT processors)

    def eval_transform(self) -> T.Compose:
        mode = INTERPOLATIONS[self.interpolation]
        if self.crop_pct:
            resize = [T.Resize(int(round(self.size / self.crop_pct)), interpolation=mode), T.CenterCrop(self.size)]
        else:
            resize = [T.Resize((self.size, self.size), interpolation=mode)]
        return T.Compose([*resize, T.ToTensor(), T.Normalize(self.mean, self.std)])

    def train_transform(self) -> T.Compose:
        return T.Compose([T.RandomResizedCrop(self.size, interpolation=INTERPOLATIONS[self.interpolation]), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(), T.Normalize(self.mean, self.std)])


def load_processor(checkpoint: Checkpoint):
    """The checkpoint's own tokenizer or image processor (None for a timm model built from a weights file)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    if checkpoint.location is None:
        return None
    loader = AutoTokenizer if checkpoint.modality == "text" else AutoImageProcessor
    try:
        return loader.from_pretrained(checkpoint.location, **checkpoint.load_kwargs)
    except (OSError, ValueError) as exc:
        kind = "tokenizer" if checkpoint.modality == "text" else "image processor"
        raise TransferError(f"checkpoint '{checkpoint.name}' has no usable {kind} ({type(exc).__name__}): add its preprocessing files to the folder") from None


def image_config(checkpoint: Checkpoint, model: torch.nn.Module, processor, image_size: int | None) -> ImageConfig:
    """Size, mean, std and interpolation from the checkpoint (timm data config or image processor)."""
    if checkpoint.is_timm:
        import timm.data

        timm_model = next(m for m in model.modules() if hasattr(m, "pretrained_cfg") and hasattr(m, "num_features"))
        cfg = timm.data.resolve_model_data_config(timm_model)
        config = ImageConfig(cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"], cfg["crop_pct"])
    else:
        size = processor.size  # a dict, or transformers 5's SizeDict
        side = size if isinstance(size, int) else (getattr(size, "height", None) or getattr(size, "shortest_edge", None)
                                                   if not isinstance(size, dict) else size.get("height") or size.get("shortest_edge"))
        resample = getattr(processor, "resample", 2)
        name = resample if isinstance(resample, str) else PIL_RESAMPLE.get(int(getattr(resample, "value", resample)), "bilinear")
        config = ImageConfig(int(side), tuple(processor.image_mean), tuple(processor.image_std), name, None)
    if image_size:
        config.size = image_size
    return config


def save_image_processor(config: ImageConfig, checkpoint: Checkpoint, processor, output_dir: str) -> None:
    """Write the preprocessing actually used, so the saved model reloads with the right inputs."""
    if checkpoint.is_timm:
        from transformers import TimmWrapperImageProcessor

        pretrained_cfg = {"input_size": [3, config.size, config.size], "mean": list(config.mean), "std": list(config.std),
                          "interpolation": config.interpolation, "crop_pct": config.crop_pct or 1.0, "crop_mode": "center"}
        TimmWrapperImageProcessor(pretrained_cfg=pretrained_cfg, architecture=checkpoint.config.architecture).save_pretrained(output_dir)
    else:
        processor.size = {"height": config.size, "width": config.size}
        processor.save_pretrained(output_dir)


# ---------------------------------------------------------------- torch data sets for Trainer


class TokenizedDataset(torch.utils.data.Dataset):
    """Tokenised once up front: short texts, few examples, many epochs."""

    def __init__(self, frame: pd.DataFrame, tokenizer, max_length: int):
        pairs = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
        self.encodings = tokenizer(frame["text"].tolist(), pairs, truncation=True, max_length=max_length)
        self.labels = frame["label"].tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.labels[index]
        return item


class ImageDataset(torch.utils.data.Dataset):
    """Images decoded and transformed lazily, one per item."""

    def __init__(self, frame: pd.DataFrame, transform):
        self.images = frame["image"].tolist()
        self.labels = frame["label"].tolist()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.transform(open_image(self.images[index])), "labels": self.labels[index]}


def collate_images(batch: list[dict]) -> dict:
    return {"pixel_values": torch.stack([b["pixel_values"] for b in batch]), "labels": torch.tensor([b["labels"] for b in batch])}


def build_datasets(data: LabelledData, processor, image_cfg: ImageConfig | None, max_seq_length: int, augment: bool):
    """{split: torch Dataset} and the collator that batches it."""
    if data.modality == "text":
        from transformers import DataCollatorWithPadding

        datasets = {split: TokenizedDataset(frame, processor, max_seq_length) for split, frame in data.splits.items()}
        return datasets, DataCollatorWithPadding(processor)
    datasets = {split: ImageDataset(frame, image_cfg.train_transform() if (augment and split == "train") else image_cfg.eval_transform())
                for split, frame in data.splits.items()}
    return datasets, collate_images
