"""Every supported architecture splits into ordered groups with each parameter in exactly one."""

import pytest
import timm
import torchvision
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DeiTConfig,
    DeiTForImageClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    SwinConfig,
    SwinForImageClassification,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from hf_transfer.errors import TransferError
from hf_transfer.models.layer_groups import layer_groups, select_groups

TEXT = dict(
    vocab_size=100,
    hidden_size=16,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=20,
    max_position_embeddings=64,
)
VISION = dict(
    image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=20
)

ARCHITECTURES = {
    "bert": lambda: BertForSequenceClassification(BertConfig(**TEXT)),
    "roberta": lambda: RobertaForSequenceClassification(RobertaConfig(**TEXT, pad_token_id=1)),
    "distilbert": lambda: DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=100, dim=16, n_layers=3, n_heads=2, hidden_dim=20)
    ),
    "electra": lambda: ElectraForSequenceClassification(ElectraConfig(**TEXT, embedding_size=8)),
    "vit": lambda: ViTForImageClassification(ViTConfig(**VISION)),
    "deit": lambda: DeiTForImageClassification(DeiTConfig(**VISION)),
    "swin": lambda: SwinForImageClassification(
        SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 1, 2], window_size=2)
    ),
    "timm-resnet": lambda: timm.create_model("resnet10t", num_classes=3),
    "timm-vit": lambda: timm.create_model("vit_tiny_patch16_224", num_classes=3, depth=3, img_size=32),
    "timm-wrapper": lambda: TimmWrapperForImageClassification(
        TimmWrapperConfig(architecture="tf_efficientnet_lite0", num_labels=3)
    ),
    "tv-resnet": lambda: torchvision.models.resnet18(num_classes=3),
    "tv-efficientnet": lambda: torchvision.models.efficientnet_b0(num_classes=3),
    "tv-mobilenet": lambda: torchvision.models.mobilenet_v3_small(num_classes=3),
    "tv-convnext": lambda: torchvision.models.convnext_tiny(num_classes=3),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_parameter_in_exactly_one_ordered_group(name):
    model = ARCHITECTURES[name]()
    groups = layer_groups(model)
    counted = [id(p) for g in groups for p in g.parameters.values()]
    assert len(counted) == len(set(counted)) == len(list(model.parameters()))
    assert len(groups) >= 4, [g.name for g in groups]
    assert groups[-1].name == "head" and groups[0].name in ("embeddings", "stem")
    names = list(groups[-1].parameters)
    assert any(k in n for n in names for k in ("classifier", "head", "fc")), names


def test_peft_wrapped_model_keeps_its_groups():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        ARCHITECTURES["bert"](), LoraConfig(target_modules=["query", "value"], modules_to_save=["classifier"])
    )
    groups = layer_groups(model)
    assert [g.name for g in groups][:2] == ["embeddings", "block.0"] and groups[-1].name == "head"
    assert any("lora_A" in n for n in groups[1].parameters)
    assert len([p for g in groups for p in g.parameters.values()]) == len(list(model.parameters()))


def test_patterns_override_and_errors_name_the_modules():
    model = ARCHITECTURES["bert"]()
    groups = layer_groups(model, [r"embeddings", r"encoder\.layer\.[01]\.", r"encoder|pooler", r"classifier"])
    assert [len(g) for g in groups] == [5, 32, 18, 2]
    with pytest.raises(
        TransferError, match=r"pattern 'decoder' matches no parameter: top-level modules are bert \(BertModel\)"
    ):
        layer_groups(model, ["embeddings", "decoder", "."])
    with pytest.raises(TransferError, match=r"parameter 'bert\.encoder.* is in no layer group"):
        layer_groups(model, ["embeddings", "classifier"])


def test_unknown_architecture_is_an_error_listing_top_level_modules():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(TransferError, match=r"cannot find the layer groups of a Sequential.*0 \(Linear\)"):
        layer_groups(model)


def test_select_groups_by_index_name_and_regex():
    groups = layer_groups(ARCHITECTURES["bert"]())
    assert [g.name for g in select_groups(groups, [-1, "embeddings", r"block\.[12]"])] == [
        "head",
        "embeddings",
        "block.1",
        "block.2",
    ]
    with pytest.raises(TransferError, match="'blocks' names no layer group"):
        select_groups(groups, ["blocks"])
