"""Adapter runs on disk: `save` writes only the adapter and head plus `base_model.json` (how to rebuild the
base and its preprocessing); `load_adapter` rebuilds base + adapter and checks every saved tensor arrived;
`merge` folds a peft adapter into the base weights: a standalone model for serving and `pipeline()`.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile

import torch
from torch import nn

from ..adapters import bottleneck
from ..adapters.attach import method, return_what_the_base_returns, undistributed
from ..data.preprocessing import ImageConfig, save_image_processor
from ..errors import TransferError
from ..models.freezing import count_parameters
from .card import HUB_IDS
from .saving import read_results, save_model, write_results

BASE_MODEL_FILE = "base_model.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def save(model: nn.Module, folder: pathlib.Path, base: dict, state_dict: dict | None = None) -> pathlib.Path:
    """Adapter + head weights (safetensors) and `base_model.json`; returns the weights file.
    `state_dict`: the gathered weights of a sharded model (saving.full_state_dict)."""
    kind = method(model)
    inner = undistributed(model)
    if kind == "peft":
        # Where the base comes from, for peft / transformers' own loaders: a Hub id where one exists. Our
        # TransferClassifier is not what AutoModel would build from that id, so it gets none: loading it
        # without hf_transfer then fails loudly instead of silently pairing the adapter with the wrong model.
        native = base.get("model_class") != "TransferClassifier"
        for config in inner.peft_config.values():
            config.base_model_name_or_path = (
                HUB_IDS.get(base["model_name_or_path"], base["model_name_or_path"]) if native else None
            )
        # adapter_config.json + adapter_model.safetensors (head included); adapters only go on Linear / Conv2d
        # layers, so embeddings never need saving (and peft would otherwise fetch the base's config to check)
        inner.save_pretrained(str(folder), save_embedding_layers=False, state_dict=state_dict)
        weights = folder / PEFT_WEIGHTS
    elif kind == "bottleneck":
        bottleneck.save_bottleneck(inner, folder, inner._hf_transfer_bottleneck)
        weights = folder / bottleneck.WEIGHTS_NAME
    else:
        raise TransferError(f"{type(inner).__name__} carries no adapter to save")
    (folder / BASE_MODEL_FILE).write_text(json.dumps({**base, "adapter": kind}, indent=2))
    return weights


def local_folder(path_or_repo: str, revision: str | None = None) -> pathlib.Path:
    """A local folder as is; a Hub repo id downloaded (or taken from the cache when offline)."""
    path = pathlib.Path(path_or_repo)
    if path.exists():
        return path
    from huggingface_hub import snapshot_download

    from ..hub import hub_error, hub_offline

    try:
        return pathlib.Path(snapshot_download(path_or_repo, revision=revision, local_files_only=hub_offline()))
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line naming the repo
        if hub_offline():
            raise TransferError(
                f"'{path_or_repo}' is not a local folder and not in the Hugging Face cache (HF_HUB_OFFLINE=1)"
            ) from None
        raise hub_error(exc, path_or_repo) from None


def load_adapter(path_or_repo: str, *, model_name_or_path: str | None = None, revision: str | None = None):
    """(model in eval mode, processor): the base rebuilt as it was trained, the adapter and head loaded and checked.

    `model_name_or_path` points at the base checkpoint when it lives elsewhere than at training time.
    """
    from ..models.loading import ModelArguments, build_classifier, resolve_checkpoint

    folder = local_folder(path_or_repo, revision)
    info_path = folder / BASE_MODEL_FILE
    if not info_path.is_file():
        raise TransferError(
            f"'{folder}' has no {BASE_MODEL_FILE}: it was not written by hf_transfer; load it with peft's PeftModel.from_pretrained(base, folder)"
        )
    info = json.loads(info_path.read_text())
    model_args = ModelArguments(
        **{**info["model_args"], **({"model_name_or_path": model_name_or_path} if model_name_or_path else {})}
    )
    native = False if info.get("model_class") == "TransferClassifier" else None  # the class the adapter was trained on
    base = build_classifier(resolve_checkpoint(model_args), info["label_names"], model_args, native=native)
    if info["adapter"] == "peft":
        model = _load_peft(base, folder)
    else:
        base._hf_transfer_bottleneck = bottleneck.load_bottleneck(base, folder)
        model = base
    return model.eval(), _load_processor(folder, info)


def _load_peft(base: nn.Module, folder: pathlib.Path) -> nn.Module:
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    model = PeftModel.from_pretrained(base, str(folder))
    return_what_the_base_returns(model)
    saved = load_file(str(folder / PEFT_WEIGHTS))
    loaded = get_peft_model_state_dict(model)
    wrong = [k for k, v in saved.items() if k not in loaded or not torch.equal(loaded[k].cpu(), v)]
    if wrong:
        raise TransferError(
            f"'{folder / PEFT_WEIGHTS}' did not load into the rebuilt model ({len(wrong)} tensors, e.g. '{wrong[0]}'): "
            "was it saved from a different base model?"
        )
    return model


def _load_processor(folder: pathlib.Path, info: dict):
    """The preprocessing the run evaluated with: the tokenizer, or the image processor rebuilt from base_model.json."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from ..data.preprocessing import ImageConfig

    if info.get("image_config"):
        return ImageConfig(**info["image_config"]).processor(info.get("timm_architecture"))
    loader = AutoTokenizer if info["modality"] == "text" else AutoImageProcessor
    try:
        return loader.from_pretrained(str(folder))
    except (OSError, ValueError):
        return None


def merge(path_or_repo: str, out_dir: str, *, model_name_or_path: str | None = None) -> pathlib.Path:
    """A standalone model (adapter folded into the base weights) with the same predictions, for serving."""
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise TransferError(f"'{out}' is not empty: choose a new folder for the merged model")
    folder = local_folder(path_or_repo)
    model, processor = load_adapter(str(folder), model_name_or_path=model_name_or_path)
    if method(model) != "peft":
        raise TransferError(
            "bottleneck adapters add non-linear layers that cannot be folded into the base weights: "
            "serve them with hf_transfer.load_adapter, or train a LoRA adapter to merge"
        )
    merged = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))  # nothing half-written at `out`
    try:
        info = json.loads((folder / BASE_MODEL_FILE).read_text())
        if info.get("image_config"):
            save_image_processor(
                ImageConfig(**info["image_config"]), merged, str(staging)
            )  # before the model (timm: config.json)
        elif processor is not None:
            processor.save_pretrained(str(staging))
        save_model(merged, staging)
        recorded = read_results(folder)
        if recorded:
            from .card import model_card

            results = {k: v for k, v in recorded.items() if k not in ("adapter", "saved_weights_bytes")}
            results.update(count_parameters(merged), merged_from=str(path_or_repo), model_class=type(merged).__name__)
            write_results(staging, results)
            (staging / "README.md").write_text(
                model_card(results, recipe=results.get("recipe", "merged"), model_class=type(merged).__name__)
            )
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
