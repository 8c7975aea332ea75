"""Frozen-backbone features kept on disk per example, reused by any later run, seed, subset, split or recipe.

An example's features are stored under two keys: the model's (every weight below the head, hashed, its pooling and
the autocast precision) and the example's own (its token ids, or its image's file identity or bytes together with
the processor's settings). A run with another seed, a few-shot subset, another validation split or a superset of
the data finds every example some run already extracted with that model and extracts only the others; change the
weights, the pooling, the precision or the preprocessing and the keys change. Labels are not part of the key: they
come from the run's own data. Under `accelerate launch` the main process looks up, every rank extracts its share of
what is missing, and the main process stores it. `--no_feature_cache` turns it off; `hf-transfer cache info|clear`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

import numpy as np
import torch

from .. import defaults
from .extraction import ExtractionSettings, extract_features
from .store import KEY_BYTES, FeatureStore, default_root, evict

VERSION = "2"  # bump when the stored format or the pooling code changes


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
    feature_cache_max_gb: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "the least recently used features are removed past this size "
            f"(default {defaults.FEATURE_CACHE_MAX_GB:g} GB)"
        },
    )


def cache_options(options: FeatureCacheArguments) -> dict:
    """cached_features() keywords from parsed FeatureCacheArguments."""
    limit = defaults.FEATURE_CACHE_MAX_GB if options.feature_cache_max_gb is None else options.feature_cache_max_gb
    return {
        "cache_dir": pathlib.Path(options.feature_cache_dir) if options.feature_cache_dir else None,
        "enabled": not options.no_feature_cache,
        "max_bytes": int(limit * 1e9),
    }


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


def model_key(model: torch.nn.Module, settings: ExtractionSettings) -> str:
    """The model's part of every key: its weights below the head and pooling, and the precision features are
    computed in (bf16 / fp16 features are not the float32 ones)."""
    key = model_fingerprint(model)
    if settings.autocast_dtype is not None:
        key = hashlib.sha256((key + str(settings.autocast_dtype)).encode()).hexdigest()
    return key


def example_keys(dataset) -> np.ndarray:
    """One 16-byte key per example (n x 16 uint8) from what the backbone sees of it: token ids, or the image (file
    path, size and modification time; bytes; pixels) with the processor's settings."""
    keys = np.empty((len(dataset), KEY_BYTES), dtype=np.uint8)
    if hasattr(dataset, "encodings"):  # tokenised text
        encodings = dataset.encodings
        names = sorted(encodings.keys())
        for row, values in enumerate(zip(*(encodings[name] for name in names))):
            digest = hashlib.blake2b(digest_size=KEY_BYTES)
            for name, ids in zip(names, values):
                digest.update(name.encode())
                digest.update(np.asarray(ids, dtype=np.int64).tobytes())
            keys[row] = np.frombuffer(digest.digest(), dtype=np.uint8)
        return keys
    transform = getattr(dataset.transform, "processor", dataset.transform)
    settings = json.dumps(
        transform.to_dict() if hasattr(transform, "to_dict") else repr(transform), sort_keys=True, default=str
    ).encode()
    for row, image in enumerate(dataset.images):
        digest = hashlib.blake2b(settings, digest_size=KEY_BYTES)
        digest.update(_image_identity(image))
        keys[row] = np.frombuffer(digest.digest(), dtype=np.uint8)
    return keys


def _image_identity(image) -> bytes:
    if isinstance(image, str):
        stat = pathlib.Path(image).resolve().stat()
        return f"{pathlib.Path(image).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    if isinstance(image, dict):  # a datasets Image: its bytes, else the file it names
        return image.get("bytes") or _image_identity(str(image.get("path")))
    if isinstance(image, (np.ndarray, list)):  # pixels
        image = np.asarray(image, dtype=np.uint8)
        return str(image.shape).encode() + image.tobytes()
    return repr(image).encode()


def _description(model: torch.nn.Module, settings: ExtractionSettings) -> dict:
    config = getattr(model, "config", None)
    return {
        "model": getattr(config, "_name_or_path", None) or type(model).__name__,
        "class": type(model).__name__,
        "pooling": getattr(config, "pooling", None),
        "precision": str(settings.autocast_dtype or "float32"),
    }


def cached_features(
    model,
    datasets: dict,
    collator,
    settings: ExtractionSettings,
    *,
    cache_dir: pathlib.Path | None = None,
    enabled: bool = True,
    max_bytes: int | None = None,
) -> tuple[dict, dict[str, str]]:
    """({split: TensorDataset(features, labels)}, {split: "hit" | "extracted" | "partial" | "off"}): "partial" when
    some of the split's examples were stored and the others were extracted now."""
    splits = list(datasets)
    sizes = [len(datasets[split]) for split in splits]
    whole = torch.utils.data.ConcatDataset([datasets[split] for split in splits])
    labels = torch.cat([torch.as_tensor(np.array(datasets[split].labels), dtype=torch.long) for split in splits])
    if enabled:
        store = FeatureStore(cache_dir or default_root(), model_key(model, settings), _description(model, settings))
        keys = np.concatenate([example_keys(datasets[split]) for split in splits])
        lookup = _looked_up_by_the_main_process(lambda: store.read(keys))
        found, features = lookup.found, lookup.features
    else:
        found, features = np.zeros(len(whole), dtype=bool), None
    missing = np.flatnonzero(~found)
    if len(missing):
        extracted = _extract_sharded(model, torch.utils.data.Subset(whole, missing.tolist()), collator, settings)
        if features is None:
            features = torch.empty((len(whole), *extracted.shape[1:]), dtype=extracted.dtype)
        features[torch.from_numpy(missing)] = extracted
        if enabled and _is_main_process():
            written = store.write(keys[missing], extracted)
            evict(store.root, defaults.FEATURE_CACHE_MAX_GB * 10**9 if max_bytes is None else max_bytes, keep=written)
    if features is None:  # no examples at all
        features = torch.empty((0, 0))
    result, status, start = {}, {}, 0
    for split, size in zip(splits, sizes):
        rows = slice(start, start + size)
        result[split] = torch.utils.data.TensorDataset(features[rows].clone(), labels[rows])
        stored = int(found[rows].sum())
        status[split] = (
            "off" if not enabled else "hit" if stored == size else "extracted" if stored == 0 else "partial"
        )
        start += size
    if enabled and 0 < found.sum() < len(found):
        print(f"features: {int(found.sum()):,} examples from the cache, {len(missing):,} extracted now")
    return result, status


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _looked_up_by_the_main_process(read):
    """The main process's lookup, shared with every rank: all ranks then extract the same missing rows, even when
    another run stores features meanwhile."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return read()
    shared = [read() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def _extract_sharded(model, dataset, collator, settings: ExtractionSettings) -> torch.Tensor:
    """Under DDP each rank extracts every world_size-th example; the shards are gathered back into order."""
    from ..engine.sharding import rows_across_ranks

    def extract(rows):
        return extract_features(model, torch.utils.data.Subset(dataset, rows), collator, settings).tensors[:1]

    return rows_across_ranks(extract, len(dataset))[0]
