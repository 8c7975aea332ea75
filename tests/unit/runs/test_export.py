"""ONNX export: the exported graph gives the run's logits on inputs of another batch size and length, loads with
onnxruntime and the run's own tokenizer / processor, and a failed check or an adapter run leaves nothing behind."""

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from conftest import write_image_folder

from hf_transfer.errors import TransferError
from hf_transfer.runs.export import export
from hf_transfer.runs.inference import load_run

FIXTURE = pathlib.Path(__file__).parents[2] / "fixtures" / "runs_0_1_0"
pytest.importorskip("onnxruntime")


def onnx_logits(folder, encoded):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {i.name: encoded[i.name].numpy() for i in session.get_inputs()})[0]


@pytest.mark.parametrize("run", ["full_native", "full_transfer_classifier"])
def test_a_text_run_exports_and_agrees_on_other_shapes(tmp_path, run):
    from transformers import AutoTokenizer

    report = export(str(FIXTURE / run), str(tmp_path / "onnx"))
    out = tmp_path / "onnx"
    assert report["max_abs_logit_difference"] <= 1e-4 and report["latency_ms"]["onnxruntime"] > 0
    assert json.loads((out / "export_report.json").read_text())["same_predictions"] is True
    tokenizer = AutoTokenizer.from_pretrained(out)  # the export carries its tokenizer
    texts = [
        "brilliant",
        "a dull tedious mess and a waste of time",
        "great acting",
        "clumsy",
        "a joy to watch 3",
        "painfully bad",
    ]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")  # 6 inputs of another length than the export's
    with torch.inference_mode():
        expected = load_run(str(FIXTURE / run), device="cpu").model(**encoded).logits.numpy()
    np.testing.assert_allclose(onnx_logits(out, encoded), expected, atol=1e-4)


def test_an_image_run_exports_with_its_processor(tmp_path, tiny_vit_dir):
    from transformers import AutoImageProcessor

    import recipes.full_finetune as full_finetune

    train = write_image_folder(tmp_path / "train", per_class=4, size=40)
    full_finetune.run(
        model_name_or_path=tiny_vit_dir, train_dir=str(train), output_dir=str(tmp_path / "run"), num_train_epochs=1
    )
    export(str(tmp_path / "run"), str(tmp_path / "onnx"), check_dir=str(train))
    processor = AutoImageProcessor.from_pretrained(tmp_path / "onnx")
    from PIL import Image

    images = [Image.open(p) for p in sorted(train.rglob("*.png"))[:3]]
    encoded = processor(images, return_tensors="pt")
    with torch.inference_mode():
        expected = load_run(str(tmp_path / "run"), device="cpu").model(**encoded).logits.numpy()
    np.testing.assert_allclose(onnx_logits(tmp_path / "onnx", encoded), expected, atol=1e-4)


def test_refusals_leave_nothing_behind(tmp_path):
    with pytest.raises(TransferError, match="is an adapter run: merge it into its base first"):
        export(str(FIXTURE / "lora_adapter"), str(tmp_path / "a"))
    with pytest.raises(TransferError, match="logits differ from the run's"):
        export(str(FIXTURE / "full_native"), str(tmp_path / "b"), tolerance=-1.0)
    with pytest.raises(TransferError, match="only onnx is supported"):
        export(str(FIXTURE / "full_native"), str(tmp_path / "c"), format="tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    shutil.copy(FIXTURE / "test.csv", tmp_path / "full" / "x.csv")
    with pytest.raises(TransferError, match="is not empty"):
        export(str(FIXTURE / "full_native"), str(tmp_path / "full"))


def test_a_merged_adapter_run_exports(tmp_path):
    from hf_transfer.runs.adapter_files import merge

    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE, runs)
    merge(str(runs / "lora_adapter"), str(tmp_path / "merged"), model_name_or_path=str(runs / "tiny-bert"))
    report = export(str(tmp_path / "merged"), str(tmp_path / "onnx"))
    assert report["max_abs_logit_difference"] <= 1e-4
    expected = np.array(json.loads((FIXTURE / "expected_probabilities.json").read_text())["lora_adapter"])
    import pandas as pd
    from transformers import AutoTokenizer

    texts = pd.read_csv(FIXTURE / "test.csv")["text"].tolist()
    encoded = AutoTokenizer.from_pretrained(tmp_path / "onnx")(texts, padding=True, return_tensors="pt")
    logits = onnx_logits(tmp_path / "onnx", encoded)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)  # what the adapter run predicted in 0.1.0
