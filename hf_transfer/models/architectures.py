"""What the toolkit knows about architectures, in one place.

The model is asked first (timm's `group_matcher` / `no_weight_decay` / `pretrained_cfg["classifier"]`,
transformers' `base_model` and `config.model_type`); this registry holds only what models do not say:
which module lists are the blocks (input to output), which shared modules belong with the input side,
where adapters go, and which checkpoints take images. Layer groups, adapter targets, head detection,
weight decay and modality all read it. Adding a family is one entry.
"""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from .wrappers import unwrap


@dataclasses.dataclass(frozen=True)
class Targets:
    """Adapter placement by module-name suffix (peft's matching)."""

    low_rank: tuple[str, ...]  # LoRA / DoRA / LoHa / LoKr: attention query and value (plus MLP for timm ViTs)
    ia3: tuple[str, ...]  # IA3: keys, values and the feed-forward output
    feedforward: tuple[str, ...]  # IA3 scales these layers' inputs instead of their outputs
    bottleneck: tuple[str, ...]  # the attention output and feed-forward output projections


BERT_TARGETS = Targets(
    ("query", "value"), ("key", "value", "output.dense"), ("output.dense",), ("attention.output.dense", "output.dense")
)
Q_PROJ_TARGETS = Targets(("q_proj", "v_proj"), ("k_proj", "v_proj", "fc2"), ("fc2",), ("o_proj", "fc2"))
CLIP_TARGETS = Targets(("q_proj", "v_proj"), ("k_proj", "v_proj", "fc2"), ("fc2",), ("out_proj", "fc2"))
DISTILBERT_TARGETS = Targets(("q_lin", "v_lin"), ("k_lin", "v_lin", "lin2"), ("lin2",), ("out_lin", "lin2"))
TIMM_VIT_TARGETS = Targets(
    ("qkv", "fc1", "fc2"), ("qkv", "fc2"), ("fc2",), ("attn.proj", "fc2")
)  # timm ViTs, found by their `qkv` layers


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...] = ()  # transformers config.model_type values
    classes: tuple[str, ...] = ()  # torchvision class names (models without a config)
    blocks: tuple[
        str, ...
    ] = ()  # module lists inside the base model, zipped: group i holds element i of each ("a|b": a, else b)
    input_side: tuple[
        str, ...
    ] = ()  # modules every block uses (relative position tables): grouped with the embeddings
    stem: tuple[str, ...] = ()  # torchvision: modules before the blocks
    neck: tuple[str, ...] = ()  # torchvision: modules after the blocks
    base: str | None = None  # the backbone's attribute when the class's own base_model is the whole model
    targets: Targets | None = None  # None: every Linear and ungrouped Conv2d of the body (CNNs)
    modality: str | None = None  # "image" where transformers' auto mappings do not say so
    vision_tower: bool = False  # a text-image dual encoder: its vision_config is the backbone
    shared_blocks: str | None = None  # what layer-wise techniques do where blocks share weights
    pooling: str | None = None  # how TransferClassifier pools it by default (else: images "pooler", text "cls")
    fixed_image_size: bool = False  # one learned position embedding per patch, and a forward that refuses other sizes


REGISTRY = (
    Architecture(
        "BERT-style",
        ("bert", "roberta", "xlm-roberta", "electra", "camembert", "ernie", "data2vec-text"),
        blocks=("encoder.layer",),
        targets=BERT_TARGETS,
    ),
    Architecture(
        "DeBERTa",
        ("deberta", "deberta-v2"),
        blocks=("encoder.layer",),
        input_side=("encoder.rel_embeddings", "encoder.LayerNorm"),
        targets=Targets(
            ("query_proj", "value_proj"),
            ("key_proj", "value_proj", "output.dense"),
            ("output.dense",),
            ("attention.output.dense", "output.dense"),
        ),
    ),
    Architecture(
        "MPNet",
        ("mpnet",),
        blocks=("encoder.layer",),
        input_side=("encoder.relative_attention_bias",),
        targets=Targets(("q", "v"), ("k", "v", "output.dense"), ("output.dense",), ("attn.o", "output.dense")),
    ),
    Architecture("DistilBERT", ("distilbert",), blocks=("transformer.layer",), targets=DISTILBERT_TARGETS),
    Architecture(
        "ALBERT",
        ("albert",),
        blocks=("encoder.albert_layer_groups",),
        targets=Targets(
            ("query", "value"), ("key", "value", "ffn_output"), ("ffn_output",), ("attention.dense", "ffn_output")
        ),
        shared_blocks="ALBERT shares one set of layer weights across all its blocks: layer-wise learning rates and unfreezing "
        "treat the shared layer as one group",
    ),
    Architecture(
        "ModernBERT",
        ("modernbert",),
        blocks=("layers",),
        targets=Targets(("Wqkv",), ("Wqkv", "mlp.Wo"), ("mlp.Wo",), ("attn.Wo", "mlp.Wo")),
    ),
    Architecture(
        "ViT-style",
        ("vit", "deit", "beit", "data2vec-vision", "vit_msn", "vit_mae"),
        blocks=("layers|encoder.layer",),
        input_side=("encoder.relative_position_bias",),  # BEiT's shared table
        targets=Q_PROJ_TARGETS,
        pooling="cls",
        fixed_image_size=True,
    ),
    Architecture(
        "DINOv2",
        ("dinov2", "dinov2_with_registers"),
        blocks=("layers|encoder.layer",),
        targets=Q_PROJ_TARGETS,
        pooling="cls",
    ),
    Architecture(
        "CLIP / SigLIP vision",
        ("clip_vision_model", "siglip_vision_model"),
        blocks=("encoder.layers",),
        targets=CLIP_TARGETS,
        modality="image",
        fixed_image_size=True,
    ),
    Architecture(
        "CLIP / SigLIP",
        ("clip", "siglip"),
        blocks=("encoder.layers",),
        base="vision_model",
        targets=CLIP_TARGETS,
        modality="image",
        vision_tower=True,
        fixed_image_size=True,
    ),
    Architecture("Swin", ("swin", "swinv2"), blocks=("encoder.layers",), targets=Q_PROJ_TARGETS),
    Architecture(
        "PVT",
        ("pvt",),
        blocks=("encoder.patch_embeddings", "encoder.block"),
        targets=Targets(
            ("query", "value"), ("key", "value", "dense2"), ("dense2",), ("attention.output.dense", "dense2")
        ),
        pooling="mean",
    ),
    Architecture("MobileViT", ("mobilevit",), blocks=("encoder.layer",), targets=BERT_TARGETS),
    Architecture("ConvNeXt", ("convnext", "convnextv2"), blocks=("encoder.stages",)),
    Architecture("ResNet", ("resnet", "regnet"), blocks=("encoder.stages",)),
    Architecture("EfficientNet", ("efficientnet",), blocks=("encoder.blocks",)),
    Architecture(
        "torchvision ResNet",
        classes=("ResNet",),
        stem=("conv1", "bn1"),
        blocks=("layer1", "layer2", "layer3", "layer4"),
    ),
    Architecture(
        "torchvision ViT",
        classes=("VisionTransformer",),
        stem=("class_token", "conv_proj", "encoder.pos_embedding"),
        blocks=("encoder.layers",),
        neck=("encoder.ln",),
        targets=Targets(
            ("self_attention.out_proj", "mlp.0", "mlp.3"),
            ("mlp.0", "mlp.3"),
            ("mlp.3",),
            ("self_attention.out_proj", "mlp.3"),
        ),
    ),
    Architecture("torchvision RegNet", classes=("RegNet",), stem=("stem",), blocks=("trunk_output",)),
    Architecture(
        "torchvision EfficientNet / MobileNet / ConvNeXt",
        classes=("EfficientNet", "MobileNetV2", "MobileNetV3", "ConvNeXt"),
        blocks=("features",),
    ),
)
# Raw parameters that are positions or tokens, not weights: no weight decay (what timm's no_weight_decay() lists).
# Embedding tables (`....position_embeddings.weight`, BERT's) keep the usual decay, as in Hugging Face's examples.
NO_WEIGHT_DECAY = re.compile(
    r"(^|\.)(pos_embed|position_embeddings|pos_embedding|cls_token|class_token|class_embedding|dist_token|"
    r"distillation_token|mask_token|register_tokens|relative_position_bias_table)$"
)


def block_path(module: nn.Module, path: str) -> str:
    """The first of "a|b|..." that names a submodule of `module`."""
    for candidate in path.split("|"):
        try:
            module.get_submodule(candidate)
            return candidate
        except AttributeError:
            continue
    raise AttributeError(f"{type(module).__name__} has none of the block lists {path}")


def by_model_type(model_type: str | None) -> Architecture | None:
    return next((a for a in REGISTRY if model_type in a.model_types), None)


def lookup(model: nn.Module) -> Architecture | None:
    """The entry for a model (transformers by config.model_type, torchvision by class name)."""
    config = getattr(model, "config", None)
    found = by_model_type(getattr(config, "model_type", None))
    if found is not None:
        return found
    if not type(model).__module__.startswith("torchvision."):
        return None
    return next((a for a in REGISTRY if type(model).__name__ in a.classes), None)


def shared_blocks_note(model: nn.Module) -> str | None:
    """One line for architectures whose blocks share weights, where layer-wise techniques cannot apply per block."""
    inner, _ = unwrap(model)
    entry = lookup(getattr(inner, "backbone", inner))
    return entry.shared_blocks if entry is not None else None


def takes_images(config) -> bool:
    """A checkpoint's modality: the registry, else whether transformers has an image classification class for it."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    entry = by_model_type(config.model_type)
    if entry is not None and entry.modality:
        return entry.modality == "image"
    return config.model_type == "timm_wrapper" or config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES


def has_native_classifier(config) -> bool:
    """Whether transformers has a classification class for this config (else TransferClassifier wraps the backbone)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    mapping = (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
        if takes_images(config)
        else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    )
    return config.model_type == "timm_wrapper" or config.model_type in mapping


def backbone_config(config):
    """The config of the part that sees the inputs: a dual encoder's vision tower, else the config itself."""
    entry = by_model_type(config.model_type)
    return config.vision_config if entry is not None and entry.vision_tower else config


def decays(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay only on weight matrices / kernels: never on biases, norm scales or other 1-D parameters,
    nor on position embeddings and special tokens."""
    return parameter.ndim > 1 and not name.endswith(".bias") and not NO_WEIGHT_DECAY.search(name)
