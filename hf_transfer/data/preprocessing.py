"""Preprocessing as the checkpoint expects it: its tokenizer, its image size / mean / std / interpolation.

Never the data set's own statistics: the backbone was trained on the checkpoint's normalisation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
from torchvision import transforms as T

from ..errors import TransferError
from ..models.loading import Checkpoint
from .loading import LabelledData, column, from_frame, open_image, quiet_datasets

INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
    "lanczos": T.InterpolationMode.LANCZOS,
}
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
RESAMPLE_CODES = {name: code for code, name in PIL_RESAMPLE.items()}


@dataclasses.dataclass
class ImageConfig:
    """How images reach the model: resize (then centre-crop when crop_pct is set) to size x size, normalise."""

    size: int
    mean: tuple
    std: tuple
    interpolation: str = "bilinear"
    crop_pct: float | None = None  # None: resize straight to size x size (transformers' ViT processors)

    def processor(self, timm_architecture: str | None = None):
        """The same preprocessing as a transformers image processor: what evaluation uses and what the run saves,
        so `pipeline()` and the Auto classes see exactly the inputs the recipe evaluated on. A timm model's
        folder is read by TimmWrapperImageProcessor (from config.json), so timm models evaluate with that."""
        if timm_architecture:
            from transformers import TimmWrapperImageProcessor

            return TimmWrapperImageProcessor(pretrained_cfg=self.timm_pretrained_cfg(), architecture=timm_architecture)
        from transformers import CLIPImageProcessor

        common = {
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "resample": RESAMPLE_CODES[self.interpolation],
            "do_convert_rgb": True,
        }
        if self.crop_pct:
            return CLIPImageProcessor(
                size={"shortest_edge": int(self.size / self.crop_pct)},
                crop_size={"height": self.size, "width": self.size},
                do_center_crop=True,
                **common,
            )
        return CLIPImageProcessor(size={"height": self.size, "width": self.size}, do_center_crop=False, **common)

    def train_transform(self) -> T.Compose:
        return T.Compose(
            [
                T.RandomResizedCrop(self.size, interpolation=INTERPOLATIONS[self.interpolation]),
                T.RandomHorizontalFlip(),
                T.ColorJitter(0.2, 0.2, 0.2),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def strong_transform(self) -> T.Compose:
        """Augmentation that changes what a new domain changes: colour, contrast, polarity, sharpness and framing
        (no flips: they change what digits and text in images mean)."""
        return T.Compose(
            [
                T.RandomResizedCrop(
                    self.size, scale=(0.6, 1.0), ratio=(0.85, 1.15), interpolation=INTERPOLATIONS[self.interpolation]
                ),
                T.RandomInvert(0.3),
                T.ColorJitter(0.5, 0.5, 0.8, 0.5),
                T.RandomGrayscale(0.2),
                T.RandomApply([T.GaussianBlur(3, (0.1, 1.5))], p=0.3),
                T.ToTensor(),
                _RandomChannelGain(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def timm_pretrained_cfg(self) -> dict:
        """timm's own description of the same preprocessing (config.json's `pretrained_cfg` for timm models)."""
        return {
            "input_size": [3, self.size, self.size],
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct or 1.0,
            "crop_mode": "center",
        }


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
        raise TransferError(
            f"checkpoint '{checkpoint.name}' has no usable {kind} ({type(exc).__name__}): add its preprocessing files to the folder"
        ) from None


def image_config(checkpoint: Checkpoint, model: torch.nn.Module, processor, image_size: int | None) -> ImageConfig:
    """Size, crop, mean, std and interpolation from the checkpoint (timm data config or image processor).

    `image_size` rescales the final size and keeps the checkpoint's resize-to-crop ratio.
    """
    if checkpoint.is_timm:
        import timm.data

        timm_model = next(m for m in model.modules() if hasattr(m, "pretrained_cfg") and hasattr(m, "num_features"))
        cfg = timm.data.resolve_model_data_config(timm_model)
        config = ImageConfig(
            cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"], cfg["crop_pct"]
        )
    else:
        resample = getattr(processor, "resample", 2)
        name = (
            resample
            if isinstance(resample, str)
            else PIL_RESAMPLE.get(int(getattr(resample, "value", resample)), "bilinear")
        )
        size, crop_pct = _processor_geometry(processor, checkpoint.name)
        config = ImageConfig(size, tuple(processor.image_mean), tuple(processor.image_std), name, crop_pct)
    if image_size:
        _check_fixed_size(model, image_size)
        config.size = image_size
    return config


def _check_fixed_size(model: torch.nn.Module, image_size: int) -> None:
    """ViT-style models learn one position embedding per patch of their training size, and their forward (and so
    pipeline()) refuses other sizes (the registry says which); timm ViTs say so with `patch_embed.strict_img_size`."""
    from ..models.architectures import lookup

    inner = getattr(model, "backbone", model)
    config = getattr(inner, "config", None)
    entry = lookup(inner)
    if entry is not None and entry.fixed_image_size:
        trained = getattr(getattr(config, "vision_config", config), "image_size", None)
        if isinstance(trained, int) and trained != image_size:
            raise TransferError(
                f"--image_size {image_size}: {config.model_type} checkpoints take {trained} px images "
                f"(one position embedding per patch): leave --image_size unset or pass {trained}"
            )
    patch_embed = getattr(getattr(inner, "timm_model", None), "patch_embed", None)
    if (
        patch_embed is not None
        and getattr(patch_embed, "strict_img_size", False)
        and tuple(patch_embed.img_size) != (image_size, image_size)
    ):
        raise TransferError(
            f"--image_size {image_size}: timm '{inner.config.architecture}' takes {patch_embed.img_size[0]} px images "
            f"(one position embedding per patch): leave --image_size unset or pass {patch_embed.img_size[0]}"
        )


def _side(size, key: str):
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _processor_geometry(processor, name: str) -> tuple[int, float | None]:
    """(final side, crop_pct) of the three shapes transformers processors take:
    height/width (ViT: squash to a square), shortest_edge + crop_size (DINOv2, CLIP, DeiT: resize, crop),
    shortest_edge + crop_pct (ConvNeXt: below 384 px, resize to shortest_edge / crop_pct and crop shortest_edge)."""
    size = processor.size
    if isinstance(size, int):
        size = {"height": size, "width": size}
    crop = getattr(processor, "crop_size", None)
    resize_to = _side(size, "shortest_edge") or _side(size, "height")
    if resize_to is None:
        raise TransferError(
            f"checkpoint '{name}': cannot read the image size from its processor ({size}): pass --image_size"
        )
    if getattr(processor, "do_center_crop", False) and crop is not None and _side(crop, "height"):
        final = _side(crop, "height")
        return final, (final / resize_to if final < resize_to else None)
    crop_pct = getattr(processor, "crop_pct", None)
    if _side(size, "shortest_edge") and crop_pct and resize_to < 384:
        return resize_to, float(crop_pct)
    return resize_to, None


def timm_architecture(model: torch.nn.Module) -> str | None:
    """The architecture of a transformers-wrapped timm classifier (whose folder keeps preprocessing in config.json)."""
    from transformers import TimmWrapperForImageClassification

    return model.config.architecture if isinstance(model, TimmWrapperForImageClassification) else None


def save_image_processor(config: ImageConfig, model: torch.nn.Module, output_dir: str) -> None:
    """Write the preprocessing actually used, so the saved model reloads with the right inputs: as
    `pretrained_cfg` in a timm model's config.json (where timm and transformers look; call before saving the
    model), else as preprocessor_config.json."""
    if timm_architecture(model):
        model.config.pretrained_cfg = config.timm_pretrained_cfg()
    else:
        config.processor().save_pretrained(output_dir)


# ---------------------------------------------------------------- torch data sets for Trainer


LARGE_SPLIT = 100_000  # examples from which tokenising shows its progress bar


def as_dataset(split):
    """A split as a `datasets.Dataset`: extra rows read into a DataFrame (unlabelled inputs) are converted."""
    return from_frame(split) if isinstance(split, pd.DataFrame) else split


class TokenizedDataset(torch.utils.data.Dataset):
    """Texts tokenised by `Dataset.map` (batched, in `num_proc` processes; for data read from files the ids are
    cached on disk beside the Arrow table, so the next run reads them instead of tokenising again); items are read
    from the Arrow table one at a time, so memory does not grow with the number of examples."""

    def __init__(self, split, tokenizer, max_length: int, num_proc: int | None = None):
        table = as_dataset(split)
        pairs = "text_pair" in table.column_names

        def tokenize(batch):
            return tokenizer(
                batch["text"], batch["text_pair"] if pairs else None, truncation=True, max_length=max_length
            )

        with quiet_datasets(show=len(table) >= LARGE_SPLIT):
            self.table = table.map(
                tokenize,
                batched=True,
                num_proc=num_proc if num_proc and len(table) >= 2 * num_proc else None,
                remove_columns=[c for c in table.column_names if c != "label"],
                desc="tokenising",
            )
        self.labels = column(self.table, "label").to_numpy()

    @property
    def encodings(self) -> dict:
        """{name: column} of the tokeniser's outputs (input_ids, attention_mask, ...)."""
        return {name: self.table[name] for name in self.table.column_names if name != "label"}

    def __len__(self):
        return len(self.table)

    def __getitem__(self, index):
        item = self.table[int(index)]
        item["labels"] = item.pop("label")
        return item


def tokenized_stream(stream, tokenizer, max_length: int):
    """A streamed split tokenised as training reads it: still a `datasets` IterableDataset, which Trainer and
    accelerate shard across ranks by its files."""

    def tokenize(batch):
        encoded = tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)
        return {**encoded, "labels": batch["label"]}

    return stream.map(tokenize, batched=True, remove_columns=["text", "text_pair", "label"])


class ImageDataset(torch.utils.data.Dataset):
    """Images decoded and transformed lazily, one per item; with `cache_side`, each image is kept (in shared memory,
    so DataLoader workers fill it too) after its first pass, and later epochs skip decoding and resizing. `compact`
    keeps the processor's resized uint8 pixels (1 byte a value, not 4) and normalises them on each read, which gives
    the processor's own output bit for bit (`_ProcessorTransform.split_is_exact`)."""

    def __init__(self, split, transform, cache_side: int | None = None, compact: bool = False):
        split = as_dataset(split)
        self.images = split["image"]  # read one at a time from the Arrow table
        self.labels = column(split, "label").to_numpy()  # 8 bytes an example; a column read per item costs ~40 µs
        self.transform = transform
        self.compact = compact and bool(cache_side)
        self.cache = self.filled = None
        if cache_side:
            dtype = torch.uint8 if compact else torch.float32
            self.cache = torch.empty((len(self.labels), 3, cache_side, cache_side), dtype=dtype).share_memory_()
            self.filled = torch.zeros(len(self.labels), dtype=torch.bool).share_memory_()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        if self.filled is not None and self.filled[index]:
            kept = self.cache[index] if self.compact else self.cache[index].clone()  # finish() makes a new tensor
        else:
            image = open_image(self.images[int(index)])
            kept = self.transform.resized(image) if self.compact else self.transform(image)
            if self.cache is not None and kept.shape == self.cache.shape[1:] and kept.dtype == self.cache.dtype:
                self.cache[index] = kept
                self.filled[index] = True
        return {
            "pixel_values": self.transform.finish(kept) if self.compact else kept,
            "labels": self.labels[int(index)],
        }


def decode(image, max_side: int):
    """An RGB PIL image, shrunk (aspect kept) so that its longer side is at most `max_side`; a large JPEG is decoded
    at a reduced scale to begin with (PIL's `draft`), the costliest part of reading a photo."""
    image = open_image(image, max_side=max_side)
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample=3
        )  # bicubic
    return image


class AugmentedImageDataset(torch.utils.data.Dataset):
    """A training split under --augment, decoded and augmented per item. With `keep_decoded` each decoded image is
    kept after its first pass (uint8, in shared memory, so DataLoader workers fill it too; shrunk so its longer
    side is at most twice the training size, as FFCV stores images for random-resized-crop training), and later
    epochs only augment; images within that size give the same pixels either way. Augmentation stays on PIL
    images: on the CPU its crops and colour jitter are faster than torchvision's tensor versions."""

    def __init__(self, split, transform, size: int, keep_decoded: bool = False):
        split = as_dataset(split)
        self.images = split["image"]
        self.labels = column(split, "label").to_numpy()
        self.transform = transform
        self.max_side = 2 * size
        self.decoded = self.shapes = None
        if keep_decoded:
            self.decoded = torch.zeros(
                (len(self.labels), self.max_side, self.max_side, 3), dtype=torch.uint8
            ).share_memory_()
            self.shapes = torch.zeros(
                (len(self.labels), 2), dtype=torch.int32
            ).share_memory_()  # (0, 0): not decoded yet

    def __len__(self):
        return len(self.labels)

    def image(self, index: int):
        from PIL import Image

        index = int(index)
        if self.shapes is None:
            return open_image(self.images[index])
        if self.shapes[index, 0] > 0:
            height, width = self.shapes[index].tolist()
            return Image.fromarray(self.decoded[index, :height, :width].numpy().copy())
        image = decode(self.images[index], self.max_side)
        self.decoded[index, : image.height, : image.width] = torch.from_numpy(np.array(image))
        self.shapes[index] = torch.tensor([image.height, image.width], dtype=torch.int32)
        return image

    def __getitem__(self, index):
        return {"pixel_values": self.transform(self.image(index)), "labels": self.labels[index]}


def kept_bytes(images: int, size: int, augmented: bool, compact: bool = False) -> int:
    """Memory to keep a split: decoded uint8 at up to twice the training size when augmented, else the preprocessed
    image at the training size, uint8 when `compact` (see ImageDataset), else float32."""
    if augmented:
        return images * 3 * (2 * size) ** 2
    return images * 3 * size**2 * (1 if compact else 4)


def image_cache_budget() -> int:
    """Bytes of decoded images to keep: a quarter of the machine's memory and half of free shared memory, at most 8 GiB."""
    import os

    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        stat = os.statvfs("/dev/shm")
        shared = stat.f_bavail * stat.f_frsize
    except OSError:
        shared = 0
    return int(min(8 * 2**30, memory / 4, shared / 2))


class ImageMemoryBudget:
    """The bytes of images one run may still keep in memory. A run holds one, so every split it keeps (and any
    extra set built later, e.g. a target domain or a differently augmented copy of the training split) draws on it."""

    def __init__(self, total: int | None = None):
        self.total = image_cache_budget() if total is None else total
        self.left = self.total

    def take(self, needed: int) -> bool:
        """Reserve `needed` bytes if they fit in what is left."""
        if needed > self.left:
            return False
        self.left -= needed
        return True

    def __str__(self) -> str:
        return f"{self.total / 2**30:.1f} GiB"


class _RandomChannelGain:
    """Scales each colour channel by its own random factor: grey images become coloured (ColorJitter's hue cannot)."""

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        gains = torch.empty(pixels.shape[0], 1, 1).uniform_(0.4, 1.0)
        return pixels * gains


class _ProcessorTransform:
    """An image processor as a per-image transform (a class, not a lambda, so DataLoader workers can pickle it).

    `resized` and `finish` split it where its image is still uint8 (after resizing and cropping, before rescaling and
    normalising), so a kept image takes a quarter of the memory; both halves run the processor's own code.
    """

    def __init__(self, processor):
        self.processor = processor
        steps = getattr(
            getattr(processor, "val_transforms", None), "transforms", None
        )  # timm's processor: a torchvision Compose
        to_tensor = next(
            (i for i, step in enumerate(steps or []) if type(step).__name__ in ("ToTensor", "MaybeToTensor")), None
        )
        self.timm_steps = (steps[:to_tensor], steps[to_tensor:]) if to_tensor is not None else None

    def __call__(self, image) -> torch.Tensor:
        return self.processor(image, return_tensors="pt")["pixel_values"][0]

    def resized(self, image) -> torch.Tensor:
        """The image after the processor's resize and crop: (3, H, W), uint8 for the processors runs build."""
        if self.timm_steps:
            for step in self.timm_steps[0]:
                image = step(image)
            return torch.from_numpy(np.array(image)).permute(2, 0, 1)
        return self.processor(image, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"][0]

    def finish(self, pixels: torch.Tensor) -> torch.Tensor:
        """The processor's rescale and normalisation of `resized`'s output."""
        if self.timm_steps:
            from PIL import Image

            image = Image.fromarray(pixels.permute(1, 2, 0).numpy())
            for step in self.timm_steps[1]:
                image = step(image)
            return image
        p = self.processor
        return p.rescale_and_normalize(
            pixels[None], p.do_rescale, p.rescale_factor, p.do_normalize, p.image_mean, p.image_std
        )[0]

    def split_is_exact(self, image) -> bool:
        """Whether `finish(resized(image))` is uint8 in the middle and equals the processor's output bit for bit."""
        if not self.timm_steps and not hasattr(self.processor, "rescale_and_normalize"):
            return False
        pixels = self.resized(image)
        return pixels.dtype == torch.uint8 and torch.equal(self.finish(pixels), self(image))


def collate_images(batch: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
        "labels": torch.tensor([b["labels"] for b in batch]),
    }


def build_datasets(
    data: LabelledData,
    processor,
    image_cfg: ImageConfig | None,
    max_seq_length: int,
    augment: bool,
    cache_images: bool = True,
    budget: ImageMemoryBudget | None = None,
    num_proc: int | None = None,
):
    """{split: torch Dataset} and the collator that batches it (`num_proc`: processes tokenising). `processor`: the
    tokenizer, or for images the processor the run evaluates with and saves. Images are kept after their first pass, split by split (train, then
    validation, then the rest) while they fit the run's memory `budget` (said in one line when one does not):
    resized by the processor for splits that are not augmented (uint8 when that reproduces the processor exactly,
    else float32), decoded (uint8) for an augmented training split."""
    if data.modality == "text":
        from transformers import DataCollatorWithPadding

        datasets = {
            split: tokenized_stream(table, processor, max_seq_length)
            if split == "train" and data.streamed
            else TokenizedDataset(table, processor, max_seq_length, num_proc)
            for split, table in data.splits.items()
        }
        return datasets, DataCollatorWithPadding(processor)
    evaluate = _ProcessorTransform(processor)
    augmented = {"train"} & set(data.splits) if augment else set()
    budget = budget or ImageMemoryBudget()
    sample = next(iter(data.splits.values()))["image"][0]
    compact = cache_images and evaluate.split_is_exact(open_image(sample))
    kept = set()
    for split in sorted(
        data.splits, key=lambda name: (name != "train", name != "validation")
    ):  # read most often first
        if cache_images and budget.take(
            kept_bytes(len(data.splits[split]), image_cfg.size, split in augmented, compact)
        ):
            kept.add(split)
    if cache_images and kept != set(data.splits):
        print(
            f"images of {', '.join(sorted(set(data.splits) - kept))} are not kept in memory (over the budget of "
            f"{budget}): every epoch decodes them again"
        )
    datasets = {
        split: AugmentedImageDataset(frame, image_cfg.train_transform(), image_cfg.size, keep_decoded=split in kept)
        if split in augmented
        else ImageDataset(frame, evaluate, image_cfg.size if split in kept else None, compact)
        for split, frame in data.splits.items()
    }
    return datasets, collate_images


def augmented_training_set(
    frame: pd.DataFrame, transform, size: int, cache_images: bool = True, budget: ImageMemoryBudget | None = None
) -> AugmentedImageDataset:
    """A training split under another augmentation (domain adaptation's strong one), its decoded images kept after
    the first pass when they fit what is left of the run's memory `budget`, as for --augment."""
    budget = budget or ImageMemoryBudget()
    keep = cache_images and budget.take(kept_bytes(len(frame), size, augmented=True))
    if cache_images and not keep:
        print(
            f"the augmented training images are not kept in memory (over the budget of {budget}): every epoch decodes them again"
        )
    return AugmentedImageDataset(frame, transform, size, keep_decoded=keep)
