"""Run folders saved by hf_transfer 0.1.0, before the library moved into subpackages, still load and predict the
same: with `hf-transfer predict` (full model, TransferClassifier with its copied code, LoRA adapter) and with
`pipeline()` in a fresh process that never imports hf_transfer."""

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import pipeline_accuracy

from hf_transfer.runs.predict import predict

FIXTURE = pathlib.Path(__file__).parents[2] / "fixtures" / "runs_0_1_0"
EXPECTED = json.loads((FIXTURE / "expected_probabilities.json").read_text())


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy") / "runs"
    shutil.copytree(FIXTURE, root)
    info_path = (
        root / "lora_adapter" / "base_model.json"
    )  # the base was recorded where 0.1.0 trained it: point at the copy
    info = json.loads(info_path.read_text())
    info["model_name_or_path"] = info["model_args"]["model_name_or_path"] = str(root / "tiny-bert")
    info_path.write_text(json.dumps(info))
    return root


@pytest.mark.parametrize("run", ["full_native", "full_transfer_classifier", "lora_adapter"])
def test_a_run_saved_before_the_move_predicts_what_it_predicted_then(legacy, run):
    frame = predict(str(legacy / run), input_file=str(legacy / "test.csv"), all_scores=True)
    probabilities = frame[[c for c in frame.columns if c.startswith("probability_")]].to_numpy()
    np.testing.assert_allclose(probabilities, np.array(EXPECTED[run]), atol=1e-5)


@pytest.mark.parametrize("run", ["full_native", "full_transfer_classifier"])
def test_a_full_run_saved_before_the_move_loads_with_pipeline(legacy, run):
    expected = np.array(EXPECTED[run]).argmax(axis=1)
    labels = json.loads((legacy / run / "all_results.json").read_text())["label_names"]
    truth = pd.read_csv(legacy / "test.csv")["label"].astype(str)
    loaded = pipeline_accuracy(legacy / run, legacy / "test.csv", "text-classification")
    assert loaded["accuracy"] == pytest.approx(float(np.mean([labels[i] == t for i, t in zip(expected, truth)])))
