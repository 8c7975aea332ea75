"""The GPU benchmark's own code paths, run on the CPU with a tiny ViT: a lent GPU's minutes go to measuring, not to
finding that a recipe's results changed shape. Speed itself is measured by the script on a GPU, not here."""

import argparse

import pytest
from conftest import write_image_folder


@pytest.fixture(scope="module")
def vit_with_head(tmp_path_factory, tiny_vit_dir):
    """The tiny ViT saved as an image classifier, as `random:vit-base` is (the limit loads it with its head)."""
    from transformers import AutoImageProcessor, ViTForImageClassification

    path = tmp_path_factory.mktemp("tiny-vit-classifier")
    ViTForImageClassification.from_pretrained(tiny_vit_dir, num_labels=2).save_pretrained(path)
    AutoImageProcessor.from_pretrained(tiny_vit_dir).save_pretrained(path)
    return str(path)


def test_every_benchmark_run_returns_its_figures_and_the_report_reads_them(tmp_path, vit_with_head):
    from scripts import benchmark_gpu

    options = argparse.Namespace(
        model_name_or_path=vit_with_head,
        train_dir=str(write_image_folder(tmp_path / "train", per_class=16)),
        test_dir=str(write_image_folder(tmp_path / "test", per_class=4)),
        image_size=None,
        batch_size=8,
        epochs=2,
        precision="fp32",
    )
    rows = [benchmark_gpu.measure_limit(options), benchmark_gpu.measure_plain(options)]
    rows += [benchmark_gpu.measure_recipe(name, options) for name in benchmark_gpu.RECIPES]
    limit = rows[0]
    assert limit["train_images_per_s"] > 0 and limit["forward_images_per_s"] > 0
    for row in rows[1:]:
        if row["run"] != "feature_extraction":
            assert len(row["epoch_images_per_s"]) == 2 and all(rate > 0 for rate in row["epoch_images_per_s"]), row[
                "run"
            ]
    extraction = next(r for r in rows if r["run"] == "feature_extraction")
    assert 0 < extraction["feature_s"] < extraction["wall_s"] and extraction["images"] > 0
    text = benchmark_gpu.report(rows, options)
    for name in ("plain", *[n for n in benchmark_gpu.RECIPES if n != "feature_extraction"]):
        assert f"| {name} |" in text
    assert "feature extraction end to end" in text and "extracting" in text
