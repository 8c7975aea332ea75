"""TransferClassifier: a pretrained backbone, a pooling rule and a new head.

Used where a checkpoint's own classification class does not fit (mean pooling as sentence-transformers
trained it, an MLP head, frozen-feature training). This file imports only torch and transformers: a
saved run carries a copy of it and names it in config.json's `auto_map`, the Hub's convention for custom
architectures: a user who chooses to pass `trust_remote_code=True` can load the run with `pipeline()` and
the Auto classes in a process that never imports hf_transfer (`import hf_transfer` registers the class instead).
"""

from __future__ import annotations

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import SequenceClassifierOutput


@strict
class TransferClassifierConfig(PreTrainedConfig):
    """A pretrained backbone, a pooling rule and a new head."""

    model_type = "hf_transfer_classifier"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    backbone_config: PreTrainedConfig | dict | None = None
    pooling: str = "cls"
    head: str = "linear"
    head_hidden_size: int = 256
    head_dropout: float = 0.1


class ClassificationHead(nn.Module):
    """Linear, or a one-hidden-layer MLP, on pooled features."""

    def __init__(
        self, in_features: int, num_labels: int, kind: str = "linear", hidden_size: int = 256, dropout: float = 0.1
    ):
        super().__init__()
        if kind == "linear":
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_labels))
        else:
            self.layers = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_features, hidden_size),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, num_labels),
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def pool(outputs, pooling: str, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if pooling == "pooler":
        return outputs.pooler_output.flatten(1)  # CNNs pool to (batch, channels, 1, 1)
    hidden = outputs.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    if hidden.dim() == 4:  # CNN feature map (batch, channels, h, w)
        return hidden.mean(dim=(2, 3))
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def takes_pixels(config: PreTrainedConfig) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    # vision towers of dual encoders (clip_vision_model, siglip_vision_model) have no classification class of their own
    return config.model_type in (
        "timm_wrapper",
        *MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    ) or config.model_type.endswith("_vision_model")


def feature_size(config: PreTrainedConfig, backbone: nn.Module) -> int:
    if config.model_type == "timm_wrapper":
        return backbone.timm_model.num_features
    for attribute in ("hidden_size", "num_features", "hidden_dim"):  # hidden_dim: EfficientNet's pooled width
        if isinstance(getattr(config, attribute, None), int):
            return getattr(config, attribute)
    if getattr(config, "hidden_sizes", None):
        return config.hidden_sizes[-1]
    raise ValueError(
        f"cannot tell the feature size of a '{config.model_type}' backbone: use --pooling auto with a linear head"
    )


class TransferClassifier(PreTrainedModel):
    """Backbone + pooling + head, for checkpoints whose own classification class does not fit."""

    config_class = TransferClassifierConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True

    def __init__(self, config: TransferClassifierConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        if config.backbone_config.model_type != "timm_wrapper" and takes_pixels(config.backbone_config):
            self.main_input_name = "pixel_values"
        self.head = ClassificationHead(
            feature_size(config.backbone_config, self.backbone),
            config.num_labels,
            config.head,
            config.head_hidden_size,
            config.head_dropout,
        )
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear) and any(module is m for m in self.head.modules()):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def features(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None) -> torch.Tensor:
        """Pooled backbone features: what the head sees."""
        if pixel_values is not None:
            outputs = self.backbone(pixel_values=pixel_values)
        else:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            outputs = self.backbone(**inputs)
        return pool(outputs, self.config.pooling, attention_mask if pixel_values is None else None)

    def forward(
        self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None, labels=None, **kwargs
    ):
        return classification_output(
            self.head(self.features(input_ids, attention_mask, token_type_ids, pixel_values)), labels
        )


def classification_output(logits: torch.Tensor, labels: torch.Tensor | None) -> SequenceClassifierOutput:
    """Logits and, given labels, the cross-entropy loss: shared by TransferClassifier and head-only training."""
    loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
    return SequenceClassifierOutput(loss=loss, logits=logits)
