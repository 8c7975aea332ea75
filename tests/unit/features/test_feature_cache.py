"""The on-disk feature cache: a second run on the same backbone and data skips extraction and trains the same head;
changing the data, the weights or the preprocessing rebuilds it; --no_feature_cache opts out."""

import json

import pytest
import torch
from conftest import write_text_table

import recipes.feature_extraction as feature_extraction
from hf_transfer.features import cache as feature_cache


def run(tmp_path, name, **options):
    defaults = {
        "num_train_epochs": 3,
        "output_dir": str(tmp_path / name),
        "feature_cache_dir": str(tmp_path / "cache"),
    }
    return feature_extraction.run(**{**defaults, **options})


def test_a_second_run_reads_features_from_disk_and_matches(tmp_path, tiny_bert_dir, text_csv, monkeypatch):
    first = run(tmp_path, "first", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    assert (
        set(first["feature_cache"].values()) == {"extracted"}
        and len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    )

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although every split was cached")

    monkeypatch.setattr(feature_cache, "extract_features", no_backbone)
    second = run(tmp_path, "second", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    assert set(second["feature_cache"].values()) == {"hit"}
    assert second["eval_accuracy"] == first["eval_accuracy"] and second["train_loss"] == pytest.approx(
        first["train_loss"]
    )
    assert second["head_l2"] == first["head_l2"]


def test_changed_data_weights_or_preprocessing_rebuild_the_cache(tmp_path, tiny_bert_dir, text_csv):
    run(tmp_path, "base", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    other_data = write_text_table(tmp_path / "other", rows_per_class=14)
    assert (
        "extracted"
        in run(tmp_path, "data", model_name_or_path=tiny_bert_dir, train_file=str(other_data))[
            "feature_cache"
        ].values()
    )
    assert set(
        run(tmp_path, "length", model_name_or_path=tiny_bert_dir, train_file=str(text_csv), max_seq_length=4)[
            "feature_cache"
        ].values()
    ) == {"extracted"}
    from transformers import AutoModel

    changed = tmp_path / "changed-weights"
    model = AutoModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.add_(0.01)
    model.save_pretrained(changed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (changed / name).write_bytes((__import__("pathlib").Path(tiny_bert_dir) / name).read_bytes())
    assert set(
        run(tmp_path, "weights", model_name_or_path=str(changed), train_file=str(text_csv))["feature_cache"].values()
    ) == {"extracted"}
    off = run(tmp_path, "off", model_name_or_path=tiny_bert_dir, train_file=str(text_csv), no_feature_cache=True)
    assert set(off["feature_cache"].values()) == {"off"}
    assert json.loads((tmp_path / "off" / "run_details.json").read_text())["feature_cache"]["train"] == "off"


def test_image_features_key_on_the_files_and_the_processor(tmp_path, tiny_vit_dir, image_dir):
    first = run(tmp_path, "a", model_name_or_path=tiny_vit_dir, train_dir=str(image_dir))
    again = run(tmp_path, "b", model_name_or_path=tiny_vit_dir, train_dir=str(image_dir))
    assert set(first["feature_cache"].values()) == {"extracted"} and set(again["feature_cache"].values()) == {"hit"}
    touched = next(image_dir.rglob("*.png"))
    touched.write_bytes(touched.read_bytes())  # same bytes, new modification time: the split is read again
    assert (
        "extracted"
        in run(tmp_path, "c", model_name_or_path=tiny_vit_dir, train_dir=str(image_dir))["feature_cache"].values()
    )


def test_two_processes_extract_shards_that_gather_into_the_single_process_features(tmp_path, tiny_bert_dir, text_csv):
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    result = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "recipes/feature_extraction.py",
            "--use_cpu",
            "--model_name_or_path",
            tiny_bert_dir,
            "--train_file",
            str(text_csv),
            "--num_train_epochs",
            "2",
            "--output_dir",
            str(tmp_path / "ddp"),
            "--feature_cache_dir",
            str(tmp_path / "ddp-cache"),
            "--min_validation_per_class",
            "1",  # as the in-process run below (tiny_files_hold_out_validation)
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    reasons = [
        line for line in result.stderr.splitlines() if any(w in line for w in ("Error", "error", "terminate", "Abort"))
    ]
    assert result.returncode == 0, "\n".join(reasons[-30:])
    run(
        tmp_path,
        "single",
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        feature_cache_dir=str(tmp_path / "single-cache"),
    )
    sharded = {p.name: load_file(str(p)) for p in (tmp_path / "ddp-cache").glob("*.safetensors")}
    single = {p.name: load_file(str(p)) for p in (tmp_path / "single-cache").glob("*.safetensors")}
    assert sharded.keys() == single.keys() and len(single) == 2, "the same keys: ranks agree on the fingerprint"
    for name in single:
        assert torch.equal(sharded[name]["labels"], single[name]["labels"])
        assert torch.allclose(sharded[name]["features"], single[name]["features"], atol=1e-5), (
            "shards gathered back in order"
        )


def test_a_classifier_without_features_method_gives_its_heads_input_and_keys_on_the_layers_below_it():
    """A checkpoint's own class (here timm's): the features are what its classifier receives; the cache key changes
    with any weight below the head and not with the head itself (a new head does not invalidate the features)."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, default_data_collator

    from hf_transfer.features.extraction import ExtractionSettings, extract_features, new_head

    torch.manual_seed(0)
    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="resnet10t", num_labels=3)).eval()
    images = torch.randn(5, 3, 32, 32)
    data = [{"pixel_values": image, "labels": torch.tensor(i % 3)} for i, image in enumerate(images)]
    features, labels = extract_features(model, data, default_data_collator, ExtractionSettings(batch_size=2)).tensors
    with torch.no_grad():
        expected = model.timm_model.forward_head(model.timm_model.forward_features(images), pre_logits=True)
    assert torch.allclose(features, expected, atol=1e-5) and labels.tolist() == [0, 1, 2, 0, 1]

    key = feature_cache.model_fingerprint(model)
    with torch.no_grad():
        new_head(model).weight.add_(1.0)
    assert feature_cache.model_fingerprint(model) == key
    with torch.no_grad():
        model.timm_model.layer4[0].conv1.weight.add_(0.01)
    assert feature_cache.model_fingerprint(model) != key


def test_gradual_unfreezing_reads_the_features_a_feature_extraction_run_stored(tmp_path, tiny_bert_dir, text_csv):
    """Reused across recipes: the same backbone, pooling and data give the same keys in both."""
    import recipes.gradual_unfreeze as gradual_unfreeze

    run(tmp_path, "fe", model_name_or_path=tiny_bert_dir, train_file=str(text_csv), pooling="mean")
    results = gradual_unfreeze.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        pooling="mean",
        head_phase="cached",
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        load_best_model_at_end=False,
        output_dir=str(tmp_path / "gu"),
        feature_cache_dir=str(tmp_path / "cache"),
    )
    assert results["head_phase_fit"]["feature_cache"] == {"train": "hit", "validation": "hit"}


def test_under_augment_the_head_phase_reads_the_unaugmented_images(tmp_path, tiny_vit_dir, image_dir):
    """The frozen layers see each image as it is evaluated, not a random crop: the features of an --augment run are
    the very ones a run without augmentation uses (same cache keys)."""
    import recipes.gradual_unfreeze as gradual_unfreeze

    common = dict(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(image_dir),
        head_phase="cached",
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        load_best_model_at_end=False,
        feature_cache_dir=str(tmp_path / "cache"),
    )
    augmented = gradual_unfreeze.run(**common, augment=True, output_dir=str(tmp_path / "augmented"))
    plain = gradual_unfreeze.run(**common, output_dir=str(tmp_path / "plain"))
    assert augmented["head_phase_fit"]["feature_cache"] == {"train": "extracted", "validation": "extracted"}
    assert plain["head_phase_fit"]["feature_cache"] == {"train": "hit", "validation": "hit"}


def test_extraction_is_fed_by_the_runs_workers_and_computed_in_its_precision(
    tmp_path, tiny_bert_dir, text_csv, monkeypatch
):
    """--dataloader_num_workers feeds the frozen layers from worker processes (the features, so the fitted head, are
    the same), and --bf16 runs them under autocast: features of their own, stored under their own key."""
    import os

    from safetensors.torch import load_file

    from hf_transfer.data import preprocessing

    readers = tmp_path / "readers"
    readers.mkdir()
    read = preprocessing.TokenizedDataset.__getitem__

    def recording(self, index):  # a file per reading process: workers are forked, so a list would not come back
        (readers / str(os.getpid())).touch()
        return read(self, index)

    monkeypatch.setattr(preprocessing.TokenizedDataset, "__getitem__", recording)
    common = dict(model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    in_process = run(tmp_path, "in-process", **common, no_feature_cache=True)
    assert [p.name for p in readers.iterdir()] == [str(os.getpid())]
    for p in readers.iterdir():
        p.unlink()
    with_workers = run(tmp_path, "workers", **common, no_feature_cache=True, dataloader_num_workers=2)
    workers = {p.name for p in readers.iterdir()}
    assert len(workers) == 2 and str(os.getpid()) not in workers  # the same two read every split: one pass over them
    assert (
        with_workers["eval_accuracy"] == in_process["eval_accuracy"]
        and with_workers["head_l2"] == in_process["head_l2"]
    )
    assert with_workers["train_loss"] == pytest.approx(in_process["train_loss"], rel=1e-5)

    cache = tmp_path / "cache"
    run(tmp_path, "fp32", **common)
    fp32 = {p.name: load_file(str(p))["features"] for p in cache.glob("*.safetensors")}
    assert set(run(tmp_path, "bf16", **common, bf16=True)["feature_cache"].values()) == {"extracted"}
    bf16 = {p.name: load_file(str(p))["features"] for p in cache.glob("*.safetensors") if p.name not in fp32}
    assert len(fp32) == len(bf16) == 2
    for half in bf16.values():
        same_split = next(f for f in fp32.values() if f.shape == half.shape)
        assert not torch.equal(half, same_split) and torch.allclose(half, same_split, atol=0.1, rtol=0.05)
    assert set(run(tmp_path, "bf16-again", **common, bf16=True)["feature_cache"].values()) == {"hit"}
