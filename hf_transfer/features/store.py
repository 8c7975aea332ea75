"""Features on disk, one row per example, found by the example's key: any run extracts only what no run stored.

A model's rows live in a folder named by its key (`cache.model_key`); each extraction adds one shard, a safetensors
file of `keys` (16-byte example keys) and `features`, written whole under a temporary name and renamed into place,
so a reader sees a shard entire or not at all and two runs (or ranks) writing at once never touch the same file.
Reading a shard marks it used (its modification time); past the size limit the least recently used shards go first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
import uuid

import numpy as np
import torch

KEY_BYTES = 16
SHARD_SUFFIX = ".safetensors"


def default_root() -> pathlib.Path:
    root = (
        os.environ.get("HF_TRANSFER_CACHE")
        or pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "hf_transfer"
    )
    return pathlib.Path(root) / "features"


@dataclasses.dataclass
class Lookup:
    """What the store holds of a request: `found[i]` says whether row i was stored; `features` has those rows
    (zeros elsewhere), or is None when none was."""

    found: np.ndarray
    features: torch.Tensor | None


class FeatureStore:
    def __init__(self, root: pathlib.Path, model_key: str, description: dict | None = None):
        self.root = root
        self.folder = root / model_key[:32]
        self.description = description or {}

    def shards(self) -> list[pathlib.Path]:
        return sorted(self.folder.glob(f"*{SHARD_SUFFIX}")) if self.folder.is_dir() else []

    def read(self, keys: np.ndarray) -> Lookup:
        """The stored features of `keys` (n x 16 uint8), wherever they are stored; a shard removed meanwhile (another
        run evicting it) only means its rows are extracted again."""
        from safetensors import safe_open

        wanted: dict[bytes, list[int]] = {}
        for row, key in enumerate(keys):
            wanted.setdefault(key.tobytes(), []).append(row)
        found = np.zeros(len(keys), dtype=bool)
        features = None
        for shard in self.shards():
            if not wanted:
                break
            try:
                with safe_open(str(shard), framework="pt") as stored:
                    stored_keys = stored.get_tensor("keys").numpy()
                    pairs = [
                        (rows, index)
                        for index, key in enumerate(stored_keys)
                        for rows in [wanted.pop(key.tobytes(), None)]
                        if rows is not None
                    ]
                    if not pairs:
                        continue
                    rows_of_shard = stored.get_tensor("features")
            except (FileNotFoundError, OSError):
                continue
            if features is None:
                features = torch.zeros((len(keys), *rows_of_shard.shape[1:]), dtype=rows_of_shard.dtype)
            for rows, index in pairs:
                features[rows] = rows_of_shard[index]
                found[rows] = True
            _touch(shard)
        return Lookup(found, features)

    def write(self, keys: np.ndarray, features: torch.Tensor) -> pathlib.Path | None:
        """Add one shard of new rows (a key stored twice keeps its first row)."""
        from safetensors.torch import save_file

        if len(keys) == 0:
            return None
        _, first = np.unique(keys.view(f"V{KEY_BYTES}").ravel(), return_index=True)
        first.sort()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._describe()
        name = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}"
        partial = self.folder / f".{name}.partial"
        save_file(
            {
                "keys": torch.from_numpy(np.ascontiguousarray(keys[first])),
                "features": features[torch.from_numpy(first)].contiguous(),
            },
            str(partial),
        )
        os.replace(partial, self.folder / name)
        return self.folder / name

    def _describe(self) -> None:
        """model.json: what the folder's features are of, for `hf-transfer cache info`."""
        path = self.folder / "model.json"
        if self.description and not path.exists():
            partial = self.folder / f".model.json.{os.getpid()}.partial"
            partial.write_text(json.dumps(self.description, indent=1))
            os.replace(partial, path)


def _touch(path: pathlib.Path) -> None:
    try:
        os.utime(path)
    except OSError:  # evicted meanwhile, or a read-only cache: nothing to mark
        pass


def all_shards(root: pathlib.Path) -> list[tuple[pathlib.Path, os.stat_result]]:
    shards = []
    for path in root.glob(f"*/*{SHARD_SUFFIX}") if root.is_dir() else []:
        try:
            shards.append((path, path.stat()))
        except FileNotFoundError:
            continue
    return shards


def evict(root: pathlib.Path, max_bytes: int, keep: pathlib.Path | None = None) -> list[pathlib.Path]:
    """Remove the least recently used shards until the cache holds at most `max_bytes` (never `keep`, the shard a run
    just wrote, even when it alone is larger); returns what went."""
    shards = sorted(all_shards(root), key=lambda item: item[1].st_mtime_ns)
    total = sum(stat.st_size for _, stat in shards)
    removed = []
    for path, stat in shards:
        if total <= max_bytes:
            break
        if path == keep:
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another run evicted it first
            pass
        total -= stat.st_size
        removed.append(path)
    return removed


def info(root: pathlib.Path) -> list[dict]:
    """One entry per model folder: its description, shards, examples, bytes and when it was last used."""
    from safetensors import safe_open

    entries, every_shard = [], all_shards(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        shards = [(p, s) for p, s in every_shard if p.parent == folder]
        examples = 0
        for path, _ in shards:
            try:
                with safe_open(str(path), framework="pt") as stored:
                    examples += stored.get_slice("keys").get_shape()[0]
            except (FileNotFoundError, OSError):
                continue
        described = folder / "model.json"
        entries.append(
            {
                "folder": str(folder),
                "model": json.loads(described.read_text()) if described.exists() else {},
                "shards": len(shards),
                "examples": examples,
                "bytes": sum(s.st_size for _, s in shards),
                "last_used": max((s.st_mtime for _, s in shards), default=None),
            }
        )
    return entries


def clear(root: pathlib.Path) -> int:
    """Remove every stored feature (and files of earlier cache formats); returns the bytes freed. Only what the cache
    writes goes: model folders holding nothing but shards and model.json, and shard files; anything else in the
    folder (a mistyped --feature_cache_dir) is left alone."""
    if not root.is_dir():
        return 0

    def ours(path: pathlib.Path) -> bool:
        return path.is_file() and (
            path.name.endswith(SHARD_SUFFIX) or path.name.endswith(".partial") or path.name == "model.json"
        )

    freed = 0
    for path in root.iterdir():
        if path.is_dir() and all(ours(p) for p in path.iterdir()):
            for item in path.iterdir():
                freed += item.stat().st_size
                item.unlink(missing_ok=True)
            path.rmdir()
        elif ours(path):
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
    return freed
