"""Tiny random configs of the architectures users bring, built from transformers' own config classes and
timm / torchvision constructors; saved with save_pretrained so loading takes the real from_pretrained path."""

from __future__ import annotations

import pathlib

TEXT = {
    "bert": ("BertConfig", {}),
    "roberta": ("RobertaConfig", {}),
    "deberta-v2": (
        "DebertaV2Config",
        {
            "relative_attention": True,
            "pos_att_type": ["p2c", "c2p"],
            "position_buckets": 16,
            "max_relative_positions": 32,
        },
    ),
    "distilbert": ("DistilBertConfig", {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 37}),
    "albert": ("AlbertConfig", {"embedding_size": 16}),
    "electra": ("ElectraConfig", {"embedding_size": 16}),
    "mpnet": ("MPNetConfig", {}),
    "xlm-roberta": ("XLMRobertaConfig", {}),
    "modernbert": (
        "ModernBertConfig",
        {
            "global_attn_every_n_layers": 2,
            "local_attention": 8,
            "pad_token_id": 0,
            "bos_token_id": 101,
            "eos_token_id": 102,
            "cls_token_id": 101,
            "sep_token_id": 102,
        },
    ),
}
TRANSFORMER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
VIT = {"image_size": 32, "patch_size": 8, **TRANSFORMER}
IMAGE = {
    "vit": ("ViTConfig", VIT),
    "deit": ("DeiTConfig", VIT),
    "beit": ("BeitConfig", {**VIT, "use_relative_position_bias": True}),
    "dinov2": (
        "Dinov2Config",
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mlp_ratio": 1,
        },
    ),
    "clip_vision_model": ("CLIPVisionConfig", VIT),
    "siglip_vision_model": ("SiglipVisionConfig", VIT),
    "convnext": ("ConvNextConfig", {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 2, 1]}),
    "swin": (
        "SwinConfig",
        {"image_size": 32, "patch_size": 4, "embed_dim": 8, "depths": [1, 2], "num_heads": [1, 2], "window_size": 4},
    ),
    "pvt": (
        "PvtConfig",
        {
            "image_size": 32,
            "hidden_sizes": [8, 16, 24, 32],
            "depths": [1, 1, 1, 1],
            "num_attention_heads": [1, 1, 2, 2],
            "sequence_reduction_ratios": [4, 2, 1, 1],
            "mlp_ratios": [2, 2, 2, 2],
        },
    ),
    "mobilevit": (
        "MobileViTConfig",
        {"image_size": 32, "hidden_sizes": [16, 24, 32], "neck_hidden_sizes": [8, 8, 16, 16, 24, 24, 32]},
    ),
    "resnet": ("ResNetConfig", {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}),
    "efficientnet": (
        "EfficientNetConfig",
        {"image_size": 32, "width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320},
    ),
}
TIMM = ("vit_tiny_patch16_224", "convnext_atto", "efficientnet_b0", "resnet10t")
TORCHVISION = ("resnet18", "efficientnet_b0", "vit_b_16", "regnet_y_400mf")


def save_transformers(kind: str, root: pathlib.Path, tokenizer_dir: str | None = None) -> str:
    """A tiny checkpoint folder (backbone weights + its preprocessing) for a TEXT or IMAGE entry."""
    import transformers
    from transformers import AutoModel, AutoTokenizer, ConvNextImageProcessor, ViTImageProcessor

    path = root / kind
    if kind in TEXT:
        class_name, extra = TEXT[kind]
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        options = {"vocab_size": tokenizer.vocab_size, "max_position_embeddings": 128, **TRANSFORMER, **extra}
        if kind == "distilbert":
            options = {k: v for k, v in options.items() if k not in TRANSFORMER}
        config = getattr(transformers, class_name)(**options)
        tokenizer.save_pretrained(path)
    else:
        class_name, extra = IMAGE[kind]
        config = getattr(transformers, class_name)(**extra)
        if kind == "convnext":
            ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(path)
        else:
            ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    AutoModel.from_config(config).save_pretrained(path)
    return str(path)


def save_timm(architecture: str, root: pathlib.Path) -> str:
    """A safetensors state dict for `--model_name_or_path ARCH --weights FILE`."""
    import timm
    from safetensors.torch import save_file

    path = root / f"{architecture}.safetensors"
    save_file(timm.create_model(architecture, pretrained=False).state_dict(), str(path))
    return str(path)


def torchvision_model(name: str, num_classes: int = 2):
    import torchvision

    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
