"""Frozen-backbone features on disk, reused across runs, seeds and recipes, and never stale.

A split's features (what the new head sees) are stored under a fingerprint of everything they depend on:
the weights below the head (its tensors, hashed), the pooling, the autocast precision, the model inputs after preprocessing (token ids, or image files with
size and modification time plus the processor's settings) and the labels. Change any of them and the key
changes, so the features are extracted again. Under `accelerate launch` every rank extracts its own shard
and all ranks then read the whole split. `--no_feature_cache` turns it off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import numpy as np
import torch

from .extraction import ExtractionSettings, extract_features

VERSION = "1"  # bump when the stored format or the pooling code changes


@dataclasses.dataclass
class FeatureCacheArguments:
    no_feature_cache: bool = dataclasses.field(
        default=False, metadata={"help": "do not read or write features on disk (extract them again)"}
    )
    feature_cache_dir: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "where features are kept (default ~/.cache/hf_transfer/features, or $HF_TRANSFER_CACHE/features)"
        },
    )


def cache_options(options: FeatureCacheArguments) -> dict:
    """cached_features() keywords from parsed FeatureCacheArguments."""
    return {
        "cache_dir": pathlib.Path(options.feature_cache_dir) if options.feature_cache_dir else None,
        "enabled": not options.no_feature_cache,
    }


def default_cache_dir() -> pathlib.Path:
    root = (
        os.environ.get("HF_TRANSFER_CACHE")
        or pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "hf_transfer"
    )
    return pathlib.Path(root) / "features"


def model_fingerprint(model: torch.nn.Module) -> str:
    """Every weight and buffer below the new head, hashed, with the pooling: what the head's input depends on.

    TransferClassifier: its backbone and pooling. Any other classifier: all its tensors but the head's, and its class.
    """
    from .extraction import new_head, says_its_features

    digest = hashlib.sha256(VERSION.encode())
    if says_its_features(model):
        state = model.backbone.state_dict()
        digest.update(str(getattr(model.config, "pooling", "")).encode())
    else:
        head = {id(t) for t in new_head(model).state_dict(keep_vars=True).values()}
        state = {k: v for k, v in model.state_dict(keep_vars=True).items() if id(v) not in head}
        digest.update(type(model).__name__.encode())
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(dataset) -> str:
    """The model inputs of one split after preprocessing, and its labels."""
    digest = hashlib.sha256()
    if hasattr(dataset, "encodings"):  # tokenised text: the ids are what the backbone sees
        for key in sorted(dataset.encodings.keys()):
            digest.update(key.encode())
            digest.update(json.dumps(dataset.encodings[key]).encode())
    else:  # images: the files (or in-memory images) and the processor's settings
        transform = getattr(dataset.transform, "processor", dataset.transform)
        digest.update(
            json.dumps(
                transform.to_dict() if hasattr(transform, "to_dict") else repr(transform), sort_keys=True, default=str
            ).encode()
        )
        for image in dataset.images:
            digest.update(_image_identity(image))
    digest.update(np.asarray(dataset.labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _image_identity(image) -> bytes:
    if isinstance(image, str):
        stat = pathlib.Path(image).stat()
        return f"{image}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    if isinstance(image, dict):
        return image.get("bytes") or str(image.get("path")).encode()
    if isinstance(image, np.ndarray):
        return image.tobytes()
    return repr(image).encode()


def cached_features(
    model,
    datasets: dict,
    collator,
    settings: ExtractionSettings,
    *,
    cache_dir: pathlib.Path | None = None,
    enabled: bool = True,
) -> tuple[dict, dict[str, str]]:
    """({split: TensorDataset(features, labels)}, {split: "hit" | "extracted" | "off"})."""
    from safetensors.torch import load_file, save_file

    folder = cache_dir or default_cache_dir()
    model_key = model_fingerprint(model) if enabled else None
    if (
        settings.autocast_dtype is not None and enabled
    ):  # features computed in bf16 / fp16 are not the float32 ones (keys of float32 unchanged)
        model_key += str(settings.autocast_dtype)
    features, status, missing = {}, {}, {}
    for split, dataset in datasets.items():
        path = (
            folder / f"{hashlib.sha256((model_key + data_fingerprint(dataset)).encode()).hexdigest()[:32]}.safetensors"
            if enabled
            else None
        )
        if path is not None and path.is_file():
            stored = load_file(str(path))
            features[split], status[split] = (
                torch.utils.data.TensorDataset(stored["features"], stored["labels"]),
                "hit",
            )
        else:
            missing[split] = (dataset, path)
    if not missing:
        return features, status
    # the splits not stored yet in one pass: DataLoader workers start once and stay busy from split to split
    together = _extract_sharded(
        model, torch.utils.data.ConcatDataset([dataset for dataset, _ in missing.values()]), collator, settings
    )
    start = 0
    for split, (dataset, path) in missing.items():
        extracted = torch.utils.data.TensorDataset(
            *(t[start : start + len(dataset)].clone() for t in together.tensors)
        )
        start += len(dataset)
        if path is not None and _is_main_process():
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # written whole or not at all
            save_file({"features": extracted.tensors[0], "labels": extracted.tensors[1]}, str(partial))
            partial.replace(path)
        features[split], status[split] = extracted, "extracted" if enabled else "off"
    return {split: features[split] for split in datasets}, {split: status[split] for split in datasets}


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _extract_sharded(model, dataset, collator, settings: ExtractionSettings) -> torch.utils.data.TensorDataset:
    """Under DDP each rank extracts every world_size-th example; the shards are gathered back into order."""
    from ..engine.sharding import rows_across_ranks

    def extract(rows):
        return extract_features(model, torch.utils.data.Subset(dataset, rows), collator, settings).tensors

    return torch.utils.data.TensorDataset(*rows_across_ranks(extract, len(dataset)))
