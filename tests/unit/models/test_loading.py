import pytest
import torch

from hf_transfer.errors import TransferError
from hf_transfer.models.loading import ModelArguments, TransferClassifier, build_classifier, resolve_checkpoint


def test_native_class_when_it_fits_transfer_classifier_otherwise(tiny_bert_dir):
    checkpoint = resolve_checkpoint(ModelArguments(tiny_bert_dir))
    assert (
        type(build_classifier(checkpoint, ["a", "b"], ModelArguments(tiny_bert_dir))).__name__
        == "BertForSequenceClassification"
    )
    model = build_classifier(checkpoint, ["a", "b", "c"], ModelArguments(tiny_bert_dir, head="mlp"))
    assert isinstance(model, TransferClassifier) and model.config.num_labels == 3


def test_bundled_minilm_is_mean_pooled_as_it_was_trained():
    args = ModelArguments("bundled:minilm-l6")
    checkpoint = resolve_checkpoint(args)
    model = build_classifier(checkpoint, ["rotten", "fresh"], args)
    assert isinstance(model, TransferClassifier) and model.config.pooling == "mean"
    assert model.config.id2label == {0: "rotten", 1: "fresh"}


def test_mean_pooling_ignores_padding(tiny_bert_dir):
    args = ModelArguments(tiny_bert_dir, pooling="mean")
    model = build_classifier(resolve_checkpoint(args), ["a", "b"], args).eval()
    ids = torch.tensor([[101, 2204, 102]])
    padded = torch.tensor([[101, 2204, 102, 0, 0]])
    one = model.features(input_ids=ids, attention_mask=torch.ones_like(ids))
    two = model.features(input_ids=padded, attention_mask=torch.tensor([[1, 1, 1, 0, 0]]))
    assert torch.allclose(one, two, atol=1e-5)


def test_bundled_efficientnet_loads_strictly_into_timm():
    import timm

    from hf_transfer import assets

    timm.create_model("tf_efficientnet_lite0").load_state_dict(assets.efficientnet_lite0_state_dict(), strict=True)
    model = build_classifier(
        resolve_checkpoint(ModelArguments("bundled:efficientnet-lite0")),
        list("abc"),
        ModelArguments("bundled:efficientnet-lite0"),
    )
    reference = assets.efficientnet_lite0_state_dict()["conv_stem.weight"]
    assert torch.equal(model.timm_model.conv_stem.weight, reference)
    assert model.timm_model.classifier.out_features == 3


def test_timm_architecture_with_a_local_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet10t", num_classes=7)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        args = ModelArguments("resnet10t", weights=str(tmp_path / name))
        model = build_classifier(resolve_checkpoint(args), ["x", "y"], args)
        assert torch.equal(model.timm_model.conv1[0].weight, source.conv1[0].weight)
    args = ModelArguments("resnet18", weights=str(tmp_path / "w.safetensors"))
    with pytest.raises(TransferError, match="do not fit timm 'resnet18'"):
        build_classifier(resolve_checkpoint(args), ["x", "y"], args)


def test_a_pickled_object_is_refused_as_weights(tmp_path):
    torch.save({"weights": object()}, tmp_path / "evil.pth")
    with pytest.raises(TransferError, match="evil.pth"):
        resolve_checkpoint(ModelArguments("resnet10t", weights=str(tmp_path / "evil.pth")))


def test_transfer_classifier_round_trips_through_auto_classes(tmp_path, tiny_vit_dir):
    from transformers import AutoModelForImageClassification

    args = ModelArguments(tiny_vit_dir, head="mlp")
    model = build_classifier(resolve_checkpoint(args), ["p", "q"], args).eval()
    model.save_pretrained(tmp_path)
    again = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(pixel_values=pixels).logits, again(pixel_values=pixels).logits)
