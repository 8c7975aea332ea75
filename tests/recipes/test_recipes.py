"""Recipes end to end on tiny random checkpoints: outputs a user relies on, reload, config precedence."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import failure_reasons, launch_on_two_processes
from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune
from hf_transfer.data.loading import open_image
from hf_transfer.data.preprocessing import ImageConfig


def predictions_from_saved_text_model(out, texts):
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    batch = AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_full_finetune_text_writes_a_reloadable_run(tmp_path, tiny_bert_dir, text_csv):
    out = tmp_path / "out"
    results = full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(out),
        num_train_epochs=2,
        save_strategy="no",
        load_best_model_at_end=False,
    )
    for name in ("model.safetensors", "config.json", "tokenizer.json", "all_results.json", "README.md"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt")), "weights are written as safetensors only"
    saved = json.loads((out / "run_details.json").read_text())
    for key in ("eval_accuracy", "eval_f1_macro", "train_runtime", "trainable_params", "total_params"):
        assert key in saved
    assert saved["trainable_params"] == saved["total_params"] > 0
    assert saved["training_config"]["learning_rate"] == 5e-5  # text default
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "Results" in card
    assert predictions_from_saved_text_model(out, ["great film"]).shape == (1, 2)
    assert results["eval_accuracy"] == saved["eval_accuracy"]


def test_feature_extraction_keeps_the_backbone_and_reloads_exactly(tmp_path, tiny_bert_dir, text_csv):
    from safetensors.torch import load_file

    out = tmp_path / "out"
    results = feature_extraction.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(out),
        num_train_epochs=3,
        head="mlp",
        pooling="mean",
        learning_rate=1e-2,
    )
    assert 0 < results["trainable_params"] < results["total_params"] / 10
    before = load_file(f"{tiny_bert_dir}/model.safetensors")
    after = load_file(out / "model.safetensors")
    for key, value in before.items():
        assert torch.equal(after[f"backbone.{key}"], value), f"frozen backbone weight {key} changed"
    import hf_transfer  # noqa: F401  registers TransferClassifier

    texts = ["a wonderful moving film", "painfully bad"]
    logits = predictions_from_saved_text_model(out, texts)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_image_recipes_on_a_tiny_vit(tmp_path, tiny_vit_dir, image_dir):
    out = tmp_path / "vit"
    results = full_finetune.run(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(image_dir),
        output_dir=str(out),
        num_train_epochs=1,
        augment=True,
        save_strategy="no",
        load_best_model_at_end=False,
        per_device_train_batch_size=4,
    )
    assert results["training_config"]["learning_rate"] == 3e-4  # image default
    model = AutoModelForImageClassification.from_pretrained(out)
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(out)
    inputs = processor(open_image(str(next(image_dir.rglob("*.png")))), return_tensors="pt")
    assert model(**inputs).logits.shape == (1, 2)
    out2 = tmp_path / "vit-fe"
    results = feature_extraction.run(
        model_name_or_path=tiny_vit_dir, train_dir=str(image_dir), output_dir=str(out2), num_train_epochs=2
    )
    assert results["trainable_params"] == 32 * 2 + 2


def test_config_file_then_command_line_overrides(tmp_path, tiny_bert_dir, text_csv):
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_bert_dir}\ntrain_file: {text_csv}\nnum_train_epochs: 1\nlearning_rate: 0.001\n"
        f"save_strategy: 'no'\nload_best_model_at_end: false\n"
    )
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            "recipes/full_finetune.py",
            "--config",
            str(config),
            "--learning_rate",
            "0.0003",
            "--output_dir",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    saved = json.loads((out / "run_details.json").read_text())
    assert saved["training_config"]["learning_rate"] == 0.0003 and saved["training_config"]["num_train_epochs"] == 1


def test_image_config_resizes_and_normalises_as_the_checkpoint_says():
    config = ImageConfig(size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic", crop_pct=0.875)
    from PIL import Image

    white = Image.new(
        "L", (50, 30), 255
    )  # grayscale in, three channels out (timm's processor wants RGB, as our data path gives)
    for processor, image in (
        (config.processor(), white),
        (config.processor(timm_architecture="resnet10t"), white.convert("RGB")),
    ):
        tensor = processor(image, return_tensors="pt")["pixel_values"][0]
        assert tensor.shape == (3, 24, 24) and torch.allclose(tensor, torch.ones_like(tensor), atol=1e-5)
    assert config.train_transform()(white.convert("RGB")).shape == (3, 24, 24)


@pytest.mark.parametrize("recipe", ["full_finetune", "feature_extraction"])
def test_help_lists_hf_argument_names(recipe):
    result = subprocess.run(
        [sys.executable, f"recipes/{recipe}.py", "--help"], capture_output=True, text=True, check=True
    )
    for name in (
        "--model_name_or_path",
        "--train_file",
        "--output_dir",
        "--max_train_samples_per_class",
        "--dataset_name",
        "--config",
    ):
        assert name in result.stdout
    own = "--head_learning_rate" if recipe == "full_finetune" else "--cache_features"
    assert (
        result.stdout.index(own)
        < result.stdout.index("--model_name_or_path")
        < result.stdout.index("--per_device_train_batch_size")
    ), "the recipe's own options come first, Trainer's last"


@pytest.mark.parametrize("recipe", ["full_finetune", "feature_extraction"])
def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_bert_dir, text_csv, recipe):
    out = tmp_path / "out"
    result = launch_on_two_processes(
        f"recipes/{recipe}.py",
        [
            "--model_name_or_path",
            tiny_bert_dir,
            "--min_validation_per_class",
            "1",  # as in-process tests (tiny_files_hold_out_validation)
            "--train_file",
            text_csv,
            "--num_train_epochs",
            "2",
            "--output_dir",
            out,
        ],
    )
    assert result.returncode == 0, failure_reasons(result)
    assert result.stdout.count(f"== {recipe}:") == 1, "only the main process writes and reports"
    saved = json.loads((out / "run_details.json").read_text())
    assert saved["world_size"] == 2 and saved["eval_samples"] > 0


def test_demo_data_and_its_caps_give_way_to_data_the_user_names(text_csv):
    from hf_transfer.pipeline.arguments import parse_recipe_args

    demo = parse_recipe_args(full_finetune.DEFAULTS, [])
    assert demo.data.dataset_name == "bundled:rotten_tomatoes" and demo.data.max_train_samples_per_class == 100
    own = parse_recipe_args(full_finetune.DEFAULTS, ["--train_file", str(text_csv)])
    assert (
        own.data.dataset_name is None
        and own.data.max_train_samples_per_class is None
        and own.data.max_eval_samples is None
    )
    capped = parse_recipe_args(
        full_finetune.DEFAULTS, ["--dataset_name", "bundled:mnist", "--max_train_samples_per_class", "5"]
    )
    assert capped.data.max_train_samples_per_class == 5 and capped.data.max_eval_samples is None


def test_preprocessed_images_are_kept_after_their_first_pass(tmp_path, monkeypatch):
    from conftest import write_image_folder

    from hf_transfer.data import preprocessing
    from hf_transfer.data.loading import DataArguments, load_labelled_data

    data = load_labelled_data(DataArguments(train_dir=str(write_image_folder(tmp_path / "images"))), seed=0)
    config = ImageConfig(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    decoded = []
    real_open = preprocessing.open_image
    monkeypatch.setattr(
        preprocessing, "open_image", lambda value, **options: decoded.append(value) or real_open(value, **options)
    )
    kept, _ = preprocessing.build_datasets(data, config.processor(), config, 128, augment=True, cache_images=True)
    first = [kept["validation"][i]["pixel_values"] for i in range(len(kept["validation"]))]
    count = len(decoded)
    again = [kept["validation"][i]["pixel_values"] for i in range(len(kept["validation"]))]
    assert len(decoded) == count and all(torch.equal(a, b) for a, b in zip(first, again)), (
        "the second pass reads the kept tensors"
    )
    crops = [kept["train"][0]["pixel_values"] for _ in range(4)]
    assert len(decoded) == count + 1, "an augmented split keeps its decoded images: later passes only augment"
    assert crops[0].shape == (3, 16, 16) and not all(torch.equal(crops[0], c) for c in crops[1:]), (
        "and its crops still differ every pass"
    )
    plain, _ = preprocessing.build_datasets(data, config.processor(), config, 128, augment=True, cache_images=False)
    plain["validation"][0], plain["validation"][0], plain["train"][0], plain["train"][0]
    assert len(decoded) == count + 5, "--cache_images false decodes every time"


@pytest.mark.parametrize("timm_architecture", [None, "resnet18"])
def test_kept_preprocessed_images_take_a_byte_per_value_and_give_the_processors_pixels(
    tmp_path, monkeypatch, timm_architecture
):
    """A split that is not augmented keeps the processor's resized uint8 image (a quarter of float32's memory); every
    pass, first or kept, in the main process or in DataLoader workers, gives exactly the processor's output."""
    import numpy as np
    from PIL import Image

    from hf_transfer.data import preprocessing
    from hf_transfer.data.loading import DataArguments, load_labelled_data

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i, shape in enumerate([(37, 53), (60, 20), (30, 30), (45, 61)]):  # noise: every rounding shows
            Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(
                tmp_path / "images" / label / f"{i}.png"
            )
    data = load_labelled_data(
        DataArguments(train_dir=str(tmp_path / "images"), validation_split_percentage=25), seed=0
    )
    config = ImageConfig(
        size=24, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic", crop_pct=0.875
    )
    processor = config.processor(timm_architecture)
    images = sum(len(frame) for frame in data.splits.values())
    budget = preprocessing.ImageMemoryBudget(total=images * 3 * 24 * 24)  # every split fits in uint8, none in float32
    datasets, collate = preprocessing.build_datasets(
        data, processor, config, 128, augment=False, cache_images=True, budget=budget
    )
    train = datasets["train"]
    assert train.cache.dtype == torch.uint8 and datasets["validation"].cache is not None and budget.left == 0
    expected = torch.stack(
        [processor(open_image(path), return_tensors="pt")["pixel_values"][0] for path in train.images]
    )
    loader = torch.utils.data.DataLoader(train, batch_size=3, num_workers=2, collate_fn=collate)
    assert torch.equal(torch.cat([batch["pixel_values"] for batch in loader]), expected), (
        "first pass, filled by workers"
    )
    assert bool(train.filled.all())
    assert torch.equal(torch.stack([train[i]["pixel_values"] for i in range(len(train))]), expected), (
        "later passes read the kept pixels"
    )
    # where the two halves would not reproduce the processor exactly, the split keeps float32 (and a 4-byte budget)
    monkeypatch.setattr(preprocessing._ProcessorTransform, "finish", lambda self, pixels: pixels.float())
    datasets, _ = preprocessing.build_datasets(data, processor, config, 128, augment=False, cache_images=True)
    assert datasets["train"].cache.dtype == torch.float32
    assert torch.equal(torch.stack([datasets["train"][i]["pixel_values"] for i in range(len(train))]), expected)


def test_the_memory_budget_keeps_the_training_split_first(tmp_path, monkeypatch, capsys):
    from conftest import write_image_folder

    from hf_transfer.data import preprocessing
    from hf_transfer.data.loading import DataArguments, load_labelled_data

    data = load_labelled_data(DataArguments(train_dir=str(write_image_folder(tmp_path / "images"))), seed=0)
    config = ImageConfig(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    train_bytes = len(data.splits["train"]) * 3 * 32**2  # decoded uint8 at twice the size
    monkeypatch.setattr(preprocessing, "image_cache_budget", lambda: train_bytes)
    datasets, _ = preprocessing.build_datasets(data, config.processor(), config, 128, augment=True, cache_images=True)
    assert datasets["train"].shapes is not None and datasets["validation"].cache is None
    assert "images of validation are not kept in memory" in capsys.readouterr().out


def test_domain_adaptations_strong_augmentation_keeps_decoded_images_within_the_budget(tmp_path, monkeypatch, capsys):
    from conftest import write_image_folder

    from hf_transfer.data import preprocessing
    from hf_transfer.data.loading import DataArguments, load_labelled_data

    data = load_labelled_data(DataArguments(train_dir=str(write_image_folder(tmp_path / "images"))), seed=0)
    config = ImageConfig(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    frame = data.splits["train"]
    decoded = []
    real_open = preprocessing.open_image
    monkeypatch.setattr(
        preprocessing, "open_image", lambda value, **options: decoded.append(value) or real_open(value, **options)
    )
    strong = preprocessing.augmented_training_set(frame, config.strong_transform(), config.size)
    first = [strong[i]["pixel_values"] for i in range(len(strong))]
    second = [strong[i]["pixel_values"] for i in range(len(strong))]
    assert len(decoded) == len(frame), "later epochs only augment the kept images"
    assert first[0].shape == (3, 16, 16) and not all(torch.equal(a, b) for a, b in zip(first, second)), (
        "and still augment them anew"
    )
    monkeypatch.setattr(preprocessing, "image_cache_budget", lambda: 0)
    assert preprocessing.augmented_training_set(frame, config.strong_transform(), config.size).shapes is None
    assert "augmented training images are not kept in memory" in capsys.readouterr().out
    # one budget per run: the training split already kept for the source-only baseline leaves no room for a second copy
    train_bytes = preprocessing.kept_bytes(len(frame), config.size, augmented=True)
    budget = preprocessing.ImageMemoryBudget(total=train_bytes + 1)
    datasets, _ = preprocessing.build_datasets(
        data, config.processor(), config, 128, augment=True, cache_images=True, budget=budget
    )
    assert datasets["train"].shapes is not None and budget.left == 1
    assert (
        preprocessing.augmented_training_set(frame, config.strong_transform(), config.size, budget=budget).shapes
        is None
    )
    assert (
        preprocessing.augmented_training_set(
            frame, config.strong_transform(), config.size, budget=preprocessing.ImageMemoryBudget(total=train_bytes)
        ).shapes
        is not None
    )


def test_kept_decoded_images_change_nothing_but_decoding_and_workers_fill_them(tmp_path):
    """The same seed gives the same augmented pixels with and without kept images; DataLoader workers fill the shared
    store; an image larger than twice the training size is kept shrunk, aspect ratio intact."""
    import pandas as pd
    from conftest import write_image_folder
    from PIL import Image

    from hf_transfer.data import preprocessing
    from hf_transfer.data.loading import DataArguments, load_labelled_data

    folder = write_image_folder(tmp_path / "images", size=40)
    data = load_labelled_data(DataArguments(train_dir=str(folder)), seed=0)
    config = ImageConfig(size=20, mean=(0.5,) * 3, std=(0.5,) * 3)  # kept up to 40 px: these images whole
    kept = preprocessing.build_datasets(data, config.processor(), config, 128, augment=True, cache_images=True)[0][
        "train"
    ]
    fresh = preprocessing.build_datasets(data, config.processor(), config, 128, augment=True, cache_images=False)[0][
        "train"
    ]
    assert kept.shapes is not None and fresh.shapes is None
    loader = torch.utils.data.DataLoader(kept, batch_size=4, num_workers=2, collate_fn=preprocessing.collate_images)
    assert sum(len(batch["labels"]) for batch in loader) == len(kept)
    assert bool((kept.shapes > 0).all()), "workers decoded into the shared store"
    Image.new("RGB", (90, 45), (200, 10, 10)).save(tmp_path / "wide.png")
    wide = preprocessing.AugmentedImageDataset(
        pd.DataFrame({"image": [str(tmp_path / "wide.png")], "label": [0]}),
        config.train_transform(),
        config.size,
        keep_decoded=True,
    )
    assert (
        wide.image(0).size == (40, 20)
        and wide.shapes[0].tolist() == [20, 40]
        and wide[0]["pixel_values"].shape == (3, 20, 20)
    )
    assert wide.image(0).getpixel((5, 5)) == (200, 10, 10), "the kept pixels are the decoded ones"
    for index in range(len(kept)):
        torch.manual_seed(index)
        a = kept[index]["pixel_values"]
        torch.manual_seed(index)
        assert torch.equal(a, fresh[index]["pixel_values"]), index


def test_a_large_jpeg_is_kept_at_reduced_scale_with_the_same_picture(tmp_path):
    import numpy as np
    from PIL import Image

    from hf_transfer.data.preprocessing import decode

    rows, cols = np.mgrid[:300, :600]
    pixels = np.stack([(cols * 255 // 600), (rows * 255 // 300), ((rows + cols) % 256)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    kept = decode(str(tmp_path / "big.jpg"), 64)
    reference = Image.open(tmp_path / "big.jpg").convert("RGB").resize((64, 32), resample=3)
    assert kept.size == (64, 32)
    assert np.abs(np.asarray(kept, dtype=float) - np.asarray(reference, dtype=float)).mean() < 4
