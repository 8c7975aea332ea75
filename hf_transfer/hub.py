"""Talking to the Hugging Face Hub: whether we may, and one clear error when we cannot."""

from __future__ import annotations

import os

from . import assets
from .errors import TransferError


def hub_offline() -> bool:
    """True when the user said not to touch the network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def unreachable_checkpoint(name: str, exc: BaseException | None = None) -> TransferError:
    alternatives = assets.bundled_checkpoint_names()
    if hub_offline():
        return TransferError(f"model '{name}' is not a local folder and not in the Hugging Face cache, and the Hub is offline (HF_HUB_OFFLINE=1): "
                             f"download it while online, pass a local folder, or use {alternatives}")
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return TransferError(f"model '{name}' could not be loaded from the Hub{reason}: check the id and your network, pass a local folder, or use {alternatives}")
