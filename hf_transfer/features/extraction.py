"""What a model's new head sees: the features of the frozen layers below it, extracted once.

The head trained on them is the very module inside the full model, so saving the full model afterwards
saves the trained head with the untouched backbone. `TransferClassifier` says what its head sees
(`features()`); for any other classifier (a checkpoint's own class, timm's) the head's input is read by a
forward pre-hook, so the same extraction serves feature extraction and gradual unfreezing's head-only phase.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from ..errors import TransferError
from ..models.transfer_classifier import classification_output


def new_head(model: nn.Module) -> nn.Module:
    """The newly initialised classification head (the module whose input is the features)."""
    from ..adapters.targets import head_modules

    names = head_modules(model)
    if len(names) != 1:
        raise TransferError(
            f"a {type(model).__name__} has {len(names)} head modules ({', '.join(names)}): "
            "features are the input of a single head"
        )
    return model.get_submodule(names[0])


def says_its_features(model: nn.Module) -> bool:
    """A `features()` method (TransferClassifier's), not a submodule called `features` (torchvision's VGG, DenseNet)."""
    return callable(getattr(type(model), "features", None))


@contextlib.contextmanager
def capturing_inputs(head: nn.Module):
    """Within the block, every input `head` receives is appended to the yielded list (by a pre-hook, removed after)."""
    captured = []
    handle = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def head_inputs(model: nn.Module, batch: dict, head: nn.Module | None = None) -> torch.Tensor:
    """What the head receives for `batch`: `model.features()` where the model has it, else captured by a pre-hook."""
    if head is None and says_its_features(model):
        return model.features(**batch)
    with capturing_inputs(head or new_head(model)) as captured:
        model(**batch)
    return captured[0]


@dataclasses.dataclass(frozen=True)
class ExtractionSettings:
    """How the frozen layers are run over a data set. `of_run` takes the run's own settings, so extraction is fed and
    computed as its training steps are: on an accelerator, DataLoader workers (one process decoding images cannot
    keep a GPU's forward pass busy) and pinned memory, and the run's autocast precision."""

    batch_size: int = 64
    num_workers: int = 0
    pin_memory: bool = False
    autocast_dtype: torch.dtype | None = None  # None: the model's own dtype

    @classmethod
    def of_run(cls, training_args) -> ExtractionSettings:
        """--per_device_eval_batch_size, --dataloader_num_workers (chosen from the machine on an accelerator unless
        given: cli), --dataloader_pin_memory (on an accelerator) and --bf16 / --fp16."""
        from ..models.frozen_precision import autocast_dtype

        return cls(
            training_args.per_device_eval_batch_size,
            training_args.dataloader_num_workers,
            training_args.dataloader_pin_memory and training_args.device.type != "cpu",
            autocast_dtype(training_args),
        )


@torch.no_grad()
def extract_features(
    model, dataset, collator, settings: ExtractionSettings = ExtractionSettings(), device: torch.device | None = None
) -> torch.utils.data.TensorDataset:
    """The head's input features (float32) and labels for every example, in eval mode (no dropout, BN running stats)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    head = None if says_its_features(model) else new_head(model)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        collate_fn=collator,
        num_workers=settings.num_workers,
        pin_memory=settings.pin_memory,
    )
    features, labels = [], []
    from tqdm.auto import tqdm

    for batch in tqdm(loader, desc="extracting features", unit="batch", leave=False, dynamic_ncols=True):
        labels.append(batch.pop("labels"))
        batch = {k: v.to(device, non_blocking=settings.pin_memory) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=settings.autocast_dtype, enabled=settings.autocast_dtype is not None):
            # copied back without waiting (into pinned memory), so the host queues the next batch meanwhile
            features.append(head_inputs(model, batch, head).float().to("cpu", non_blocking=True))
    if device.type != "cpu":
        torch.accelerator.synchronize(device)  # every copy above has landed before the features are read
    model.train(was_training)
    return torch.utils.data.TensorDataset(torch.cat(features), torch.cat(labels))


def collate_features(batch) -> dict:
    features, labels = zip(*batch)
    return {"features": torch.stack(features), "labels": torch.stack(labels)}


class HeadOnly(nn.Module):
    """Trains a head on cached features with the same loss the full model uses."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features, labels=None):
        return classification_output(self.head(features), labels)
