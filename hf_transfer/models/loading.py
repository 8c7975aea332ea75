"""Checkpoints in, classifiers out.

`resolve_checkpoint` turns what the user typed (bundled name, local folder, Hub id, timm name)
into a `Checkpoint`; `build_classifier` puts a new head for the data set's labels on it. Where
the checkpoint's own classification class fits (its native pooling, a linear head) we use it,
so the saved model reloads with plain `from_pretrained`. Otherwise (mean pooling, an MLP head)
we use `TransferClassifier` (`transfer_classifier.py`), registered with the Auto classes when
`hf_transfer` is imported and saved with its code for processes that do not import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
    TimmWrapperConfig,
)

from .. import assets
from ..errors import TransferError
from ..hub import hub_offline, unreachable_checkpoint
from .architectures import backbone_config, by_model_type, has_native_classifier, takes_images
from .transfer_classifier import TransferClassifier, TransferClassifierConfig

POOLINGS = ("auto", "cls", "mean", "pooler")
HEADS = ("linear", "mlp")


@dataclasses.dataclass
class ModelArguments:
    """Which checkpoint, and what goes on top of it."""

    model_name_or_path: str = dataclasses.field(
        default="bundled:minilm-l6",
        metadata={"help": "Hub id, local folder, timm name, or bundled:minilm-l6 / bundled:efficientnet-lite0"},
    )
    weights: str | None = dataclasses.field(
        default=None,
        metadata={"help": "local weights for a timm architecture (.safetensors or a state_dict .pth/.bin)"},
    )
    pooling: str = dataclasses.field(
        default="auto", metadata={"help": "auto (as the checkpoint was trained) | cls | mean | pooler"}
    )
    head: str = dataclasses.field(default="linear", metadata={"help": "linear | mlp"})
    head_hidden_size: int = 256
    head_dropout: float = 0.1
    cache_dir: str | None = None
    model_revision: str = "main"
    trust_remote_code: bool = dataclasses.field(
        default=False, metadata={"help": "run code from the checkpoint's repo (only if you trust it)"}
    )
    random_init: bool = dataclasses.field(
        default=False, metadata={"help": "the architecture with fresh random weights: a no-transfer baseline"}
    )


@dataclasses.dataclass
class Checkpoint:
    name: str  # what the user gave
    location: str | None  # local folder or Hub id for from_pretrained; None when weights come from a file
    config: PreTrainedConfig  # the backbone's config
    modality: str  # "text" or "image"
    trained_pooling: str | None = None  # "mean" for sentence-transformers checkpoints
    timm_weights: dict | None = None  # state dict for a timm model built from config
    load_kwargs: dict = dataclasses.field(default_factory=dict)
    from_run: bool = False  # a TransferClassifier saved by a recipe: its backbone is the starting point
    backbone_config: PreTrainedConfig | None = (
        None  # what AutoModel builds as the backbone, when it differs from `config`
    )

    @property
    def is_timm(self) -> bool:
        return self.config.model_type == "timm_wrapper"


# ---------------------------------------------------------------- resolving a name


def resolve_checkpoint(args: ModelArguments) -> Checkpoint:
    name = args.model_name_or_path
    load_kwargs = {
        "cache_dir": args.cache_dir,
        "revision": args.model_revision,
        "trust_remote_code": args.trust_remote_code,
        "local_files_only": hub_offline(),
    }
    if assets.is_bundled(name):
        if name == assets.PREFIX + "efficientnet-lite0":
            config = TimmWrapperConfig(architecture="tf_efficientnet_lite0")
            return Checkpoint(name, None, config, "image", timm_weights=assets.efficientnet_lite0_state_dict())
        location = str(assets.bundled_checkpoint_path(name))
        return _transformers_checkpoint(name, location, {**load_kwargs, "local_files_only": True})
    path = pathlib.Path(name)
    if path.exists():
        if (path / "base_model.json").is_file() and not (path / "config.json").is_file():
            raise TransferError(
                f"'{name}' is an adapter run (adapter and head only): fold it into its base with hf-transfer merge "
                "and pass the merged folder, or load it with hf_transfer.load_adapter"
            )
        if not path.is_dir() or not (path / "config.json").is_file():
            raise TransferError(
                f"local checkpoint '{name}' has no config.json: point --model_name_or_path at a folder written by save_pretrained"
            )
        return _transformers_checkpoint(name, str(path), {**load_kwargs, "local_files_only": True})
    if args.weights or _is_timm_architecture(name):
        return _timm_checkpoint(name, args, load_kwargs)
    if name.count("/") > 1 or name.startswith((".", "/")) or name.endswith("/"):
        raise TransferError(f"model '{name}' is neither an existing folder nor a Hub id: check the path")
    return _transformers_checkpoint(name, name, load_kwargs)


def _is_timm_architecture(name: str) -> bool:
    import timm

    return "/" not in name and bool(timm.list_models(name.split(".")[0]))


def _timm_checkpoint(name: str, args: ModelArguments, load_kwargs: dict) -> Checkpoint:
    import timm

    architecture = name.removeprefix("timm/").split(".")[0]
    if not timm.list_models(architecture):
        raise TransferError(
            f"'{architecture}' is not a timm architecture (see timm.list_models()): check --model_name_or_path"
        )
    if not args.weights and args.random_init:  # the architecture alone: nothing to download
        return Checkpoint(name, None, TimmWrapperConfig(architecture=architecture), "image", timm_weights={})
    if not args.weights:  # an architecture name: its default pretrained weights on the Hub
        hub_id = (
            timm.models.get_pretrained_cfg(architecture).hf_hub_id
            if timm.models.get_pretrained_cfg(architecture)
            else None
        )
        if not hub_id:
            raise TransferError(
                f"timm architecture '{architecture}' has no pretrained weights on the Hub: pass --weights FILE"
            )
        return _transformers_checkpoint(name, hub_id, load_kwargs)
    return Checkpoint(
        name, None, TimmWrapperConfig(architecture=architecture), "image", timm_weights=load_weights_file(args.weights)
    )


def load_weights_file(path_text: str) -> dict:
    """A state dict from safetensors, or a torch file loaded with weights_only=True (never arbitrary pickles)."""
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise TransferError(f"--weights '{path}' does not exist: check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TransferError(
            f"--weights '{path}' is not a safetensors file or a plain state_dict ({type(exc).__name__}): save it with safetensors"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TransferError(f"--weights '{path}' does not hold a state_dict of tensors")
    return state


def _transformers_checkpoint(name: str, location: str, load_kwargs: dict) -> Checkpoint:
    try:
        config = AutoConfig.from_pretrained(location, **load_kwargs)
    except OSError as exc:
        if pathlib.Path(location).exists():
            raise TransferError(
                f"local checkpoint '{location}' could not be read ({exc.__class__.__name__}): check its config.json"
            ) from None
        raise unreachable_checkpoint(name, exc) from None
    except ValueError as exc:
        raise TransferError(f"model '{name}': {str(exc).splitlines()[0]}") from None
    if isinstance(
        config, TransferClassifierConfig
    ):  # a run of ours: its fine-tuned backbone, pooled as it was trained, gets a new head
        backbone = config.backbone_config
        return Checkpoint(
            name,
            location,
            backbone,
            "image" if takes_images(backbone) else "text",
            trained_pooling=config.pooling,
            load_kwargs=load_kwargs,
            from_run=True,
        )
    modality = "image" if takes_images(config) else "text"
    checkpoint = Checkpoint(
        name,
        location,
        config,
        modality,
        trained_pooling=_sentence_transformers_pooling(location),
        load_kwargs=load_kwargs,
    )
    checkpoint.backbone_config = backbone_config(config)  # CLIP / SigLIP: the vision tower
    return checkpoint


def _sentence_transformers_pooling(location: str) -> str | None:
    """sentence-transformers checkpoints say how they pool in 1_Pooling/config.json."""
    pooling_file = pathlib.Path(location) / "1_Pooling" / "config.json"
    if not pooling_file.is_file():
        return None
    modes = json.loads(pooling_file.read_text())
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    return None


# ---------------------------------------------------------------- the classifier with a new head

AutoConfig.register(TransferClassifierConfig.model_type, TransferClassifierConfig)
AutoModelForSequenceClassification.register(TransferClassifierConfig, TransferClassifier)
AutoModelForImageClassification.register(TransferClassifierConfig, TransferClassifier)


# ---------------------------------------------------------------- building


def resolve_pooling(checkpoint: Checkpoint, pooling: str) -> str:
    """'auto' means: as the checkpoint was trained; else its classification class's own choice."""
    if pooling not in POOLINGS:
        raise TransferError(f"--pooling '{pooling}' is not one of {', '.join(POOLINGS)}")
    if pooling != "auto":
        return pooling
    if checkpoint.trained_pooling:
        return checkpoint.trained_pooling
    entry = by_model_type((checkpoint.backbone_config or checkpoint.config).model_type)
    if entry is not None and entry.pooling:
        return entry.pooling
    return "pooler" if checkpoint.modality == "image" else "cls"


def uses_native_class(checkpoint: Checkpoint, args: ModelArguments) -> bool:
    return (
        args.head == "linear"
        and args.pooling == "auto"
        and checkpoint.trained_pooling is None
        and has_native_classifier(checkpoint.config)
    )


def build_classifier(
    checkpoint: Checkpoint, label_names: list[str], args: ModelArguments, native: bool | None = None
) -> PreTrainedModel:
    """The checkpoint with a new, randomly initialised head for `label_names`.

    native=None picks the checkpoint's own classification class when it fits; False forces
    `TransferClassifier` (whose `features()` feature extraction relies on). `args.random_init` re-draws every
    weight: the same architecture without transfer, the baseline that shows whether transfer helps.
    """
    model = _with_new_head(checkpoint, label_names, args, native)
    if args.random_init:
        from .freezing import is_batchnorm
        from .layer_groups import LayerGroup
        from .partial_transfer import reinitialize_groups

        changed = reinitialize_groups(model, [LayerGroup("all", dict(model.named_parameters()))])
        for module in model.modules():
            if is_batchnorm(module):  # no pretrained estimate to keep: average every training batch from the start
                module.reset_running_stats()
                module.momentum = None
        print(
            f"random initialisation: {changed:,} of {sum(p.numel() for p in model.parameters()):,} parameters re-drawn "
            "(the architecture without its pretrained weights)"
        )
    return model


def _with_new_head(
    checkpoint: Checkpoint, label_names: list[str], args: ModelArguments, native: bool | None
) -> PreTrainedModel:
    if args.head not in HEADS:
        raise TransferError(f"--head '{args.head}' is not one of {', '.join(HEADS)}")
    labels = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {n: i for i, n in enumerate(label_names)},
    }
    native = uses_native_class(checkpoint, args) if native is None else native and uses_native_class(checkpoint, args)
    if checkpoint.timm_weights is not None:
        if native:
            from transformers import TimmWrapperForImageClassification

            model = TimmWrapperForImageClassification(
                TimmWrapperConfig(architecture=checkpoint.config.architecture, **labels)
            )
        else:
            model = _transfer_classifier(checkpoint, args, labels, backbone=None)
        if checkpoint.timm_weights:
            _load_timm_backbone(model.timm_model if native else model.backbone.timm_model, checkpoint)
        return model
    if native:
        auto = (
            AutoModelForImageClassification if checkpoint.modality == "image" else AutoModelForSequenceClassification
        )
        try:
            with _new_head_expected():
                return auto.from_pretrained(
                    checkpoint.location, ignore_mismatched_sizes=True, **labels, **checkpoint.load_kwargs
                )
        except OSError as exc:
            raise unreachable_checkpoint(checkpoint.name, exc) from None
    if checkpoint.from_run:
        backbone = TransferClassifier.from_pretrained(checkpoint.location, **checkpoint.load_kwargs).backbone
    elif checkpoint.backbone_config is not None and checkpoint.backbone_config is not checkpoint.config:
        backbone = AutoModel.from_pretrained(
            checkpoint.location, config=checkpoint.backbone_config, **checkpoint.load_kwargs
        )
    else:
        backbone = AutoModel.from_pretrained(checkpoint.location, **checkpoint.load_kwargs)
    return _transfer_classifier(checkpoint, args, labels, backbone)


@contextlib.contextmanager
def _new_head_expected():
    """transformers reports the new classification head as missing weights (a warning-level load report) every time
    a checkpoint gets a head for the user's labels. The head is new on purpose, so the report is held back for this
    one call, unless --log_level info / debug asked for everything."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    if level < transformers_logging.WARNING:
        yield
        return
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def _transfer_classifier(checkpoint: Checkpoint, args: ModelArguments, labels: dict, backbone) -> TransferClassifier:
    config = TransferClassifierConfig(
        backbone_config=(checkpoint.backbone_config or checkpoint.config).to_dict(),
        pooling=resolve_pooling(checkpoint, args.pooling),
        head=args.head,
        head_hidden_size=args.head_hidden_size,
        head_dropout=args.head_dropout,
        **labels,
    )
    try:
        model = TransferClassifier(config)
    except ValueError as exc:
        raise TransferError(str(exc)) from None
    if backbone is not None:
        model.backbone.load_state_dict(backbone.state_dict())
    return model


def _load_timm_backbone(timm_model: nn.Module, checkpoint: Checkpoint) -> None:
    """Strict except for the pretrained classifier, which the new head replaces."""
    classifier = timm_model.pretrained_cfg.get("classifier", "classifier")
    weights = {k: v for k, v in checkpoint.timm_weights.items() if not k.startswith(classifier + ".")}
    head_keys = {k for k in timm_model.state_dict() if k.startswith(classifier + ".")}
    mismatch = "check --weights matches the architecture"
    try:
        result = timm_model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shapes differ
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), "size mismatch")
        raise TransferError(
            f"weights for '{checkpoint.name}' do not fit timm '{checkpoint.config.architecture}' ({detail[:160]}): {mismatch}"
        ) from None
    missing = [k for k in result.missing_keys if k not in head_keys]
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise TransferError(
            f"weights for '{checkpoint.name}' do not fit timm '{checkpoint.config.architecture}' "
            f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected, e.g. '{first}'): {mismatch}"
        )
