"""What a run leaves behind works where users take it: pipeline() and the Auto classes in a fresh process that
never imports hf_transfer, predict / evaluate on new data, a clean output folder, pictures, a calm console."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import pipeline_accuracy, write_image_folder, write_text_table
from huggingface_hub import ModelCard

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune
import recipes.lora_vit as lora_vit
from hf_transfer.errors import TransferError
from hf_transfer.runs.evaluate import evaluate
from hf_transfer.runs.predict import predict


def image_table(folder, path):
    rows = [(str(p), p.parent.name) for p in sorted(folder.rglob("*.png"))]
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(path, index=False)
    return path


def test_text_run_of_our_own_class_loads_with_pipeline_and_matches_the_recipes_test_accuracy(tmp_path, tiny_bert_dir):
    train = write_text_table(tmp_path / "train", rows_per_class=16)
    test = write_text_table(tmp_path / "test", rows_per_class=10)
    out = tmp_path / "run"
    results = full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        pooling="mean",
        train_file=str(train),
        test_file=str(test),
        output_dir=str(out),
        num_train_epochs=3,
        learning_rate=1e-3,
    )
    assert results["model_class"] == "TransferClassifier" and (out / "transfer_classifier.py").is_file()
    assert (
        json.loads((out / "config.json").read_text())["auto_map"]["AutoModelForSequenceClassification"]
        == "transfer_classifier.TransferClassifier"
    )
    loaded = pipeline_accuracy(out, test, "text-classification")
    assert loaded["model"] == "TransferClassifier"
    assert loaded["accuracy"] == pytest.approx(results["test_accuracy"]), (
        "pipeline() predicts what the recipe evaluated"
    )
    report = evaluate(str(out), test_file=str(test))
    assert report["accuracy"] == pytest.approx(results["test_accuracy"]) and report["examples"] == 20
    assert (out / "evaluation" / "evaluation.json").is_file() and (
        out / "evaluation" / "confusion_matrix.png"
    ).is_file()
    card = (out / "README.md").read_text()
    parsed = ModelCard.load(
        out / "README.md"
    ).data  # what the Hub reads: metrics in the model-index, the task, the library
    metrics = {(r.dataset_split, r.metric_type): r.metric_value for r in parsed.eval_results}
    assert metrics[("test", "accuracy")] == pytest.approx(results["test_accuracy"], abs=1e-4)
    assert metrics[("validation", "f1")] == pytest.approx(results["eval_f1_macro"], abs=1e-4)
    assert parsed.pipeline_tag == "text-classification" and parsed.library_name == "transformers"
    assert (
        "trust_remote_code=True" in card
        and "![Training curves](training_curves.png)" in card
        and "![Confusion matrix](confusion_matrix.png)" in card
    )
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0].replace("<this folder or repo>", str(out))
    assert "trust_remote_code" not in snippet, "the card's code leaves trust_remote_code to the user"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run(
        [sys.executable, "-c", snippet + '\nprint(classifier("a quietly moving film"))'],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=600,
    )
    assert ran.returncode == 0 and "'label'" in ran.stdout, ran.stderr[-2000:]
    assert {"training_curves.png", "confusion_matrix.png"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("checkpoint-*")), "intermediate checkpoints are removed at the end"


def test_image_run_saves_the_processor_it_evaluated_with(tmp_path, tiny_vit_dir):
    train = write_image_folder(tmp_path / "train", per_class=8, size=50)
    test = write_image_folder(tmp_path / "test", per_class=5, size=50)
    out = tmp_path / "run"
    with pytest.raises(TransferError, match="--image_size 24: vit checkpoints take 32 px images"):
        full_finetune.run(model_name_or_path=tiny_vit_dir, train_dir=str(train), image_size=24, output_dir=str(out))
    results = full_finetune.run(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(train),
        test_dir=str(test),
        output_dir=str(out),
        num_train_epochs=3,
        learning_rate=1e-3,
    )
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 32, "width": 32}
    loaded = pipeline_accuracy(out, image_table(test, tmp_path / "test.csv"), "image-classification")
    assert loaded["accuracy"] == pytest.approx(results["test_accuracy"])
    assert evaluate(str(out), test_dir=str(test))["accuracy"] == pytest.approx(results["test_accuracy"])


def test_timm_run_keeps_its_preprocessing_in_config_json(tmp_path):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(weights))
    train = write_image_folder(tmp_path / "train", per_class=6)
    test = write_image_folder(tmp_path / "test", per_class=4)
    out = tmp_path / "run"
    results = full_finetune.run(
        model_name_or_path="resnet10t",
        weights=str(weights),
        train_dir=str(train),
        test_dir=str(test),
        image_size=48,
        output_dir=str(out),
        num_train_epochs=2,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 48, 48], (
        "timm and TimmWrapperImageProcessor read preprocessing from config.json"
    )
    loaded = pipeline_accuracy(out, image_table(test, tmp_path / "test.csv"), "image-classification")
    assert loaded["model"] == "TimmWrapperForImageClassification" and loaded["accuracy"] == pytest.approx(
        results["test_accuracy"]
    )


def test_processor_shapes_keep_their_resize_then_crop():
    from types import SimpleNamespace

    from hf_transfer.data.preprocessing import _processor_geometry

    dinov2 = SimpleNamespace(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True)
    convnext = SimpleNamespace(size={"shortest_edge": 224}, crop_pct=0.875, do_center_crop=False)
    vit = SimpleNamespace(size={"height": 224, "width": 224}, do_center_crop=False)
    assert _processor_geometry(dinov2, "d") == (224, pytest.approx(224 / 256))
    assert _processor_geometry(convnext, "c") == (224, 0.875)
    assert _processor_geometry(vit, "v") == (224, None)


def test_adapter_run_predicts_and_its_merge_loads_with_pipeline(tmp_path, tiny_vit_dir):
    train = write_image_folder(tmp_path / "train", per_class=8)
    test = write_image_folder(tmp_path / "test", per_class=4)
    out = tmp_path / "adapter"
    results = lora_vit.run(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(train),
        test_dir=str(test),
        output_dir=str(out),
        num_train_epochs=3,
    )
    frame = predict(str(out), input_dir=str(test), output_file=str(tmp_path / "predictions.csv"), all_scores=True)
    assert len(frame) == 8 and set(frame["predicted_label"]) <= {"circle", "square"}
    assert list(frame.columns) == [
        "input",
        "predicted_label",
        "probability",
        "probability_circle",
        "probability_square",
    ]
    truth = [p.split("/")[-2] for p in frame["input"]]
    assert sum(t == p for t, p in zip(truth, frame["predicted_label"])) / 8 == pytest.approx(results["test_accuracy"])
    from hf_transfer.runs.adapter_files import merge

    merged = merge(str(out), str(tmp_path / "merged"))
    loaded = pipeline_accuracy(merged, image_table(test, tmp_path / "test.csv"), "image-classification")
    assert loaded["accuracy"] == pytest.approx(results["test_accuracy"])


def test_an_output_folder_holding_a_run_is_refused_then_replaced_cleanly(tmp_path, tiny_vit_dir, image_dir):
    out = tmp_path / "run"
    lora_vit.run(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(image_dir),
        output_dir=str(out),
        num_train_epochs=1,
        keep_checkpoints=True,
    )
    assert (out / "adapter_config.json").is_file() and list(out.glob("checkpoint-*")), "--keep_checkpoints keeps them"
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(TransferError, match="already holds a run .*--overwrite_output_dir"):
        feature_extraction.run(
            model_name_or_path=tiny_vit_dir, train_dir=str(image_dir), output_dir=str(out), num_train_epochs=1
        )
    assert sorted(p.name for p in out.iterdir()) == before, "a refused run writes nothing"
    feature_extraction.run(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(image_dir),
        output_dir=str(out),
        num_train_epochs=1,
        overwrite_output_dir=True,
    )
    names = {p.name for p in out.iterdir()}
    assert (
        "adapter_config.json" not in names
        and "base_model.json" not in names
        and not any(n.startswith("checkpoint-") for n in names)
    )
    assert "notes.txt" in names, "files the user keeps there survive"
    assert json.loads((out / "run_details.json").read_text())["recipe"] == "feature_extraction"


def test_predict_and_evaluate_refuse_bad_input_in_one_line(tmp_path, tiny_bert_dir):
    train = write_text_table(tmp_path / "train")
    out = tmp_path / "run"
    full_finetune.run(model_name_or_path=tiny_bert_dir, train_file=str(train), output_dir=str(out), num_train_epochs=1)
    with pytest.raises(TransferError, match="exactly one of --input_file"):
        predict(str(out))
    with pytest.raises(TransferError, match="has no column 'sentence'"):
        predict(str(out), input_file=str(train), text_column_name="sentence")
    other = tmp_path / "other.csv"
    pd.DataFrame({"text": ["fine"], "label": ["neutral"]}).to_csv(other, index=False)
    with pytest.raises(TransferError, match="label 'neutral' that the model does not know"):
        evaluate(str(out), test_file=str(other))
    with pytest.raises(TransferError, match="is not a saved run"):
        predict(str(tmp_path), input_file=str(train))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_transfer.predict",
            "--model",
            str(out),
            "--input_file",
            str(train),
            "--output_file",
            str(tmp_path / "p.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "24 predictions written" in result.stdout
    assert len(pd.read_csv(tmp_path / "p.csv")) == 24


def test_bad_resume_report_to_and_label_columns_are_one_line_errors_before_anything_is_written(
    tmp_path, tiny_bert_dir, text_csv
):
    out = tmp_path / "run"
    cases = [
        ({"resume_from_checkpoint": str(tmp_path / "nope")}, "is not a checkpoint folder"),
        ({"resume_from_checkpoint": "true"}, "holds no checkpoint-\\* folder"),
        ({"report_to": "wandb"}, "--report_to wandb: the 'wandb' package is not installed"),
    ]
    for options, message in cases:
        with pytest.raises(TransferError, match=message):
            full_finetune.run(
                model_name_or_path=tiny_bert_dir, train_file=str(text_csv), output_dir=str(out), **options
            )
        assert not out.exists()
    listed = tmp_path / "multi.jsonl"
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [["x", "y"], ["x"], ["y"], ["x"]]}).to_json(
        listed, orient="records", lines=True
    )
    with pytest.raises(TransferError, match="holds a list .*multi-label data is not supported"):
        full_finetune.run(model_name_or_path=tiny_bert_dir, train_file=str(listed), output_dir=str(out))
    assert not out.exists()


def test_an_unlabelled_test_split_is_left_out_with_one_line(tmp_path, tiny_bert_dir, text_csv, capsys):
    test = tmp_path / "test.csv"
    pd.DataFrame({"text": ["one", "two"], "label": [None, None]}).to_csv(test, index=False)
    results = full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        test_file=str(test),
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
    )
    assert "has no labels" in capsys.readouterr().out and "test_accuracy" not in results and "eval_accuracy" in results


def test_tensorboard_logs_and_a_calm_console(tmp_path, tiny_bert_dir, text_csv):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "recipes/full_finetune.py",
            "--model_name_or_path",
            tiny_bert_dir,
            "--train_file",
            str(text_csv),
            "--output_dir",
            str(out),
            "--num_train_epochs",
            "3",
            "--report_to",
            "tensorboard",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((out / "runs").rglob("events.out.tfevents.*")), "--report_to tensorboard writes event files"
    lines = result.stdout.strip().splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 3 and len(lines) < 20, result.stdout
    assert "{'loss'" not in result.stdout and "LOAD REPORT" not in result.stdout + result.stderr
    assert "training:" in result.stderr and "step/s]" in result.stderr, "the command line shows a progress bar"
    # 12 examples per class: a 10% validation split would hold 1 of each, so none is held out, and it says so
    assert "data: 24 train / 0 validation / 0 test examples, 2 classes" in result.stdout, result.stdout
    assert "validation: none held out: 10% of train would hold 1 example of some class" in result.stdout


def test_a_saved_run_is_a_starting_point_for_a_new_task(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    from hf_transfer.models.loading import ModelArguments, build_classifier, resolve_checkpoint

    first = tmp_path / "first"
    full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        pooling="mean",
        train_file=str(write_text_table(tmp_path / "train")),
        output_dir=str(first),
        num_train_epochs=1,
        learning_rate=1e-3,
    )
    checkpoint = resolve_checkpoint(ModelArguments(model_name_or_path=str(first)))
    assert checkpoint.modality == "text" and checkpoint.trained_pooling == "mean"
    model = build_classifier(checkpoint, ["a", "b", "c"], ModelArguments(model_name_or_path=str(first)))
    saved = load_file(first / "model.safetensors")
    state = model.state_dict()
    backbone = [k for k in saved if k.startswith("backbone.")]
    assert backbone and all(torch.equal(state[k], saved[k]) for k in backbone), (
        "the fine-tuned backbone is where the new run starts"
    )
    assert model.head.layers[-1].out_features == 3


def test_the_examples_output_contract(tmp_path, tiny_bert_dir):
    """all_results.json and the per-stage files hold flat scalars (as Trainer.save_metrics writes them),
    trainer_state.json keeps the log history, and the details live in run_details.json."""
    train = write_text_table(tmp_path / "train", rows_per_class=12)
    test = write_text_table(tmp_path / "test", rows_per_class=4)
    out = tmp_path / "run"
    results = full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        test_file=str(test),
        output_dir=str(out),
        num_train_epochs=2,
        do_train=True,
        do_eval=True,
        do_predict=True,
    )
    flat = json.loads((out / "all_results.json").read_text())
    assert flat and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat.values())
    assert flat["test_accuracy"] == pytest.approx(results["test_accuracy"])
    assert set(json.loads((out / "train_results.json").read_text())) >= {"train_loss", "train_runtime"}
    assert all(k.startswith("eval_") for k in json.loads((out / "eval_results.json").read_text()))
    assert "test_accuracy" in json.loads((out / "test_results.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    assert sum("eval_loss" in entry for entry in state["log_history"]) == 2
    details = json.loads((out / "run_details.json").read_text())
    assert details["test_per_class"] and details["training_config"]["num_train_epochs"] == 2

    skipped = full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        test_file=str(test),
        output_dir=str(tmp_path / "no-test"),
        num_train_epochs=1,
        do_predict=False,
    )
    assert "test_accuracy" not in skipped and not (tmp_path / "no-test" / "test_results.json").exists()
    with pytest.raises(TransferError, match="--do_train false: a recipe always trains"):
        full_finetune.run(
            model_name_or_path=tiny_bert_dir, train_file=str(train), output_dir=str(tmp_path / "x"), do_train=False
        )
    with pytest.raises(TransferError, match="--do_predict: .* has no test split"):
        full_finetune.run(
            model_name_or_path=tiny_bert_dir, train_file=str(train), output_dir=str(tmp_path / "y"), do_predict=True
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_without_matplotlib_a_run_is_whole_and_says_the_figures_were_skipped(
    tmp_path, tiny_bert_dir, text_csv, capsys, monkeypatch
):
    from hf_transfer.runs import plots

    monkeypatch.setattr(plots, "available", lambda: False)  # as with `pip install hf-transfer-learning` alone
    out = tmp_path / "run"
    results = feature_extraction.run(model_name_or_path=tiny_bert_dir, train_file=str(text_csv), output_dir=str(out))
    assert plots.INSTALL_HINT in capsys.readouterr().out
    assert results["figures"] == [] and not list(out.glob("*.png"))
    assert (out / "model.safetensors").is_file() and "![" not in (out / "README.md").read_text()
