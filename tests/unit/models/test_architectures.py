"""The coverage matrix: every architecture family users bring, on tiny random configs saved with save_pretrained.

For each: the modality is right, layer groups run input to output with every parameter in exactly one group and
the classifier in `head`, adapters go by default on the attention / MLP projections (or the layers of a CNN that
hold its weights), and feature extraction, full fine-tuning (its head fitted first where the new head is one Linear
layer), gradual unfreezing and LoRA each run two steps and save a run whose preprocessing reloads. torchvision
models are covered at the library level (groups, head, adapter targets).
"""

import json

import pytest
import torch
from test_checkpoint_loading import assert_checkpoints_load_back_whole
from tiny_architectures import IMAGE, TEXT, TIMM, TORCHVISION, save_timm, save_transformers, torchvision_model

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune
import recipes.gradual_unfreeze as gradual_unfreeze
import recipes.lora_bert as lora_bert
from hf_transfer import assets
from hf_transfer.adapters.targets import default_targets, head_modules
from hf_transfer.models.architectures import decays
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.models.loading import ModelArguments, build_classifier, resolve_checkpoint

# What the default LoRA targets must include for each family (attention projections; CNNs: their weight-holding layers).
EXPECTED_TARGETS = {
    "bert": {"query", "value"},
    "roberta": {"query", "value"},
    "xlm-roberta": {"query", "value"},
    "electra": {"query", "value"},
    "albert": {"query", "value"},
    "deberta-v2": {"query_proj", "value_proj"},
    "distilbert": {"q_lin", "v_lin"},
    "mpnet": {"q", "v"},
    "modernbert": {"Wqkv"},
    "vit": {"q_proj", "v_proj"},
    "deit": {"q_proj", "v_proj"},
    "beit": {"q_proj", "v_proj"},
    "dinov2": {"q_proj", "v_proj"},
    "clip_vision_model": {"q_proj", "v_proj"},
    "siglip_vision_model": {"q_proj", "v_proj"},
    "swin": {"q_proj", "v_proj"},
    "pvt": {"query", "value"},
    "mobilevit": {"query", "value"},
    "timm:vit_tiny_patch16_224": {"qkv", "fc1", "fc2"},
}
# Families whose new classification head is more than one Linear layer (a pooler beside it, two layers, an activation):
# full fine-tuning starts their head from its random initialisation instead of fitting it first.
HEAD_NOT_ONE_LINEAR = {"roberta", "xlm-roberta", "electra", "mpnet", "distilbert", "deberta-v2", "modernbert"}
SIZES = {"timm:vit_tiny_patch16_224": None}  # a timm ViT keeps its 224 px; everything else runs at 32 px


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("architectures")
    tokenizer = str(assets.bundled_checkpoint_path("bundled:minilm-l6"))
    found = {kind: {"model_name_or_path": save_transformers(kind, root, tokenizer)} for kind in [*TEXT, *IMAGE]}
    found.update({f"timm:{arch}": {"model_name_or_path": arch, "weights": save_timm(arch, root)} for arch in TIMM})
    return found


def assert_groups_partition_input_to_output(model, groups, head_names, min_blocks=2):
    assert (
        groups[0].name in ("embeddings", "stem", "block.0") and groups[-1].name == "head"
    )  # PVT: patch embeddings open each stage
    names = [n for n, _ in model.named_parameters()]
    grouped = [n for g in groups for n in g.parameters]
    assert sorted(grouped) == sorted(names), "every parameter in exactly one group"
    for head in head_names:
        assert any(n.startswith(head + ".") for n in groups[-1].parameters), f"{head} is in the head group"
    blocks = [g for g in groups if g.name.startswith(("block.", "stage."))]
    assert len(blocks) >= min_blocks, [g.name for g in groups]
    order = {n: i for i, n in enumerate(names)}  # registration order runs input to output
    assert all(
        min(order[n] for n in a.parameters) < min(order[n] for n in b.parameters) for a, b in zip(blocks, blocks[1:])
    )


@pytest.mark.parametrize("kind", [*TEXT, *IMAGE, *(f"timm:{a}" for a in TIMM)])
def test_architecture_coverage(kind, checkpoints, tmp_path, text_csv, image_dir):
    options = checkpoints[kind]
    image = kind not in TEXT
    checkpoint = resolve_checkpoint(ModelArguments(**options))
    assert checkpoint.modality == ("image" if image else "text")
    model = build_classifier(checkpoint, ["a", "b"], ModelArguments(**options))
    heads = head_modules(model)
    assert_groups_partition_input_to_output(
        model, layer_groups(model), heads, min_blocks=1 if kind == "albert" else 2
    )  # ALBERT shares one layer
    targets, _ = default_targets(model, "lora")
    assert targets and set(EXPECTED_TARGETS.get(kind, set())) <= set(targets), targets
    if kind in ("convnext",):
        assert any(t.endswith("pwconv1") for t in targets), (
            "ConvNeXt's pointwise layers hold its weights and get adapters"
        )
    assert_checkpoints_load_back_whole(model, tmp_path / "checkpoints")

    data = {"train_dir": str(image_dir)} if image else {"train_file": str(text_csv)}
    size = {"image_size": SIZES.get(kind, 32)} if image and SIZES.get(kind, 32) else {}
    short = {
        "max_steps": 2,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "per_device_train_batch_size": 4,
        **data,
        **size,
    }
    for recipe, extra in (
        (feature_extraction, {}),
        (full_finetune, {}),
        (gradual_unfreeze, {"epochs_per_phase": 1}),
        (lora_bert, {}),
    ):
        out = tmp_path / recipe.__name__.split(".")[-1]
        results = recipe.run(**options, **short, **extra, output_dir=str(out))
        assert results["eval_accuracy"] >= 0 and (out / "all_results.json").is_file()
        if recipe is full_finetune:
            assert ("head_phase_fit" in results) == (kind not in HEAD_NOT_ONE_LINEAR), (
                "the head is fitted first exactly where it is one Linear"
            )
    from transformers import AutoImageProcessor, AutoTokenizer

    run = tmp_path / "feature_extraction"
    if image:
        from PIL import Image

        processor = AutoImageProcessor.from_pretrained(run)
        pixels = processor(Image.new("RGB", (40, 40)), return_tensors="pt")["pixel_values"]
        side = SIZES.get(kind, 32) or 224
        assert pixels.shape[-2:] == (side, side)
    else:
        assert AutoTokenizer.from_pretrained(run)("a test")["input_ids"]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_at_the_library_level(name):
    model = torchvision_model(name)
    groups = layer_groups(model)
    assert_groups_partition_input_to_output(model, groups, head_modules(model))
    assert default_targets(model, "lora")[0]


def test_position_embeddings_and_tokens_get_no_weight_decay():
    model = torchvision_model("vit_b_16")
    named = dict(model.named_parameters())
    assert not decays("class_token", named["class_token"]) and not decays(
        "encoder.pos_embedding", named["encoder.pos_embedding"]
    )
    assert decays("conv_proj.weight", named["conv_proj.weight"]) and not decays(
        "conv_proj.bias", named["conv_proj.bias"]
    )
    assert not decays("vit.embeddings.position_embeddings", torch.nn.Parameter(torch.zeros(1, 5, 8)))
    assert not decays("cls_token", torch.nn.Parameter(torch.zeros(1, 1, 8)))
    assert decays("bert.embeddings.position_embeddings.weight", torch.nn.Parameter(torch.zeros(5, 8))), (
        "embedding tables decay as in HF's examples"
    )


def test_deberta_shares_its_relative_positions_with_the_input_side_and_albert_says_it_shares_layers(
    checkpoints, capsys, tmp_path, text_csv
):
    model = build_classifier(
        resolve_checkpoint(ModelArguments(**checkpoints["deberta-v2"])),
        ["a", "b"],
        ModelArguments(**checkpoints["deberta-v2"]),
    )
    groups = layer_groups(model)
    assert any("rel_embeddings" in n for n in groups[0].parameters), (
        "used by every block: thaws last, at the lowest LR"
    )
    gradual_unfreeze.run(
        **checkpoints["albert"],
        train_file=str(text_csv),
        max_steps=1,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        output_dir=str(tmp_path / "albert"),
    )
    assert "ALBERT shares one set of layer weights" in capsys.readouterr().out


def test_clip_checkpoints_are_image_models_and_train_on_their_vision_tower(tmp_path, image_dir):
    import transformers
    from tiny_architectures import VIT

    path = tmp_path / "clip"
    config = transformers.CLIPConfig(
        vision_config=VIT,
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "vocab_size": 99,
        },
    )
    transformers.CLIPModel(config).save_pretrained(path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    checkpoint = resolve_checkpoint(ModelArguments(model_name_or_path=str(path)))
    assert checkpoint.modality == "image"
    native = build_classifier(checkpoint, ["a", "b"], ModelArguments(model_name_or_path=str(path)))
    assert type(native).__name__ == "CLIPForImageClassification" and layer_groups(native)[-1].name == "head"
    assert head_modules(native) == ["classifier"]
    results = feature_extraction.run(
        model_name_or_path=str(path),
        train_dir=str(image_dir),
        max_steps=2,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        output_dir=str(tmp_path / "fe"),
    )
    saved = json.loads((tmp_path / "fe" / "config.json").read_text())
    assert saved["backbone_config"]["model_type"] == "clip_vision_model" and results["eval_accuracy"] >= 0
