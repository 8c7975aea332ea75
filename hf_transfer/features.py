"""Feature extraction with a cached frozen backbone: run the backbone once, train the head for many epochs.

The head trained here is the very module inside the full model, so saving the full model afterwards
saves the trained head with the untouched backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from .transfer_classifier import classification_output


@torch.no_grad()
def extract_features(model, dataset, collator, batch_size: int = 64, device: torch.device | None = None) -> torch.utils.data.TensorDataset:
    """Pooled backbone features and labels for every example, in eval mode (no dropout, BN running stats)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    features, labels = [], []
    from tqdm.auto import tqdm

    for batch in tqdm(loader, desc="extracting features", unit="batch", leave=False, dynamic_ncols=True):
        labels.append(batch.pop("labels"))
        batch = {k: v.to(device) for k, v in batch.items()}
        features.append(model.features(**batch).float().cpu())
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
