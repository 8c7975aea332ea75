"""The strategy comparison: every strategy on the same data and seeds, a CSV, a markdown table that flags negative
transfer, plots; and the no-transfer baseline it relies on really starts from random weights."""

import csv
import subprocess
import sys

import pytest
import torch
from conftest import write_text_table


def test_random_init_redraws_every_pretrained_weight(tiny_bert_dir, capsys):
    from hf_transfer.models.loading import ModelArguments, build_classifier, resolve_checkpoint

    pretrained = build_classifier(
        resolve_checkpoint(ModelArguments(model_name_or_path=tiny_bert_dir)),
        ["a", "b"],
        ModelArguments(model_name_or_path=tiny_bert_dir),
    )
    scratch = build_classifier(
        resolve_checkpoint(ModelArguments(model_name_or_path=tiny_bert_dir)),
        ["a", "b"],
        ModelArguments(model_name_or_path=tiny_bert_dir, random_init=True),
    )
    body = {n: p for n, p in pretrained.named_parameters() if not n.startswith("classifier") and p.ndim > 1}
    changed = [n for n, p in scratch.named_parameters() if n in body and not torch.equal(p, body[n])]
    assert len(changed) == len(body), "every pretrained weight matrix is re-drawn"
    assert "random initialisation:" in capsys.readouterr().out


def test_random_init_with_an_adapter_is_refused(tiny_bert_dir, text_csv, tmp_path):
    import recipes.lora_bert as lora_bert
    from hf_transfer.errors import TransferError

    with pytest.raises(TransferError, match="--random_init puts the adapter on a random base"):
        lora_bert.run(
            model_name_or_path=tiny_bert_dir,
            train_file=str(text_csv),
            random_init=True,
            output_dir=str(tmp_path / "out"),
        )


def test_negative_transfer_is_flagged():
    sys.path.insert(0, "scripts")
    from compare_strategies import negative_transfer, table

    runs = [
        {
            "strategy": s,
            "per_class": 10,
            "seed": 1,
            "test_accuracy": a,
            "test_f1_macro": a,
            "trainable_params": 1,
            "train_runtime": 1.0,
        }
        for s, a in (("full_finetune", 0.70), ("lora", 0.60), ("random_init", 0.65))
    ]
    assert negative_transfer(runs, 10) == ["lora"]
    assert "Negative transfer at 10 per class**: random initialisation matches or beats lora" in table(
        runs, ["full_finetune", "lora", "random_init"]
    )
    floor = {**runs[0], "strategy": "zero_shot", "test_accuracy": 0.62}
    bigger = {**runs[1], "per_class": 20, "test_accuracy": 0.66}
    assert (
        "Zero-shot (no labels) scores 62.0%; beaten by full_finetune from 10 per class, lora from 20 per class, "
        "random_init from 10 per class." in table([*runs, floor, bigger], ["zero_shot", "full_finetune", "lora"])
    )


def test_comparison_writes_csv_table_and_plots_and_resumes(tmp_path, tiny_bert_dir):
    train = write_text_table(tmp_path / "train", rows_per_class=16)
    test = write_text_table(tmp_path / "test", rows_per_class=6)
    command = [
        sys.executable,
        "scripts/compare_strategies.py",
        "--model_name_or_path",
        tiny_bert_dir,
        "--train_file",
        str(train),
        "--test_file",
        str(test),
        "--per_class",
        "4",
        "8",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--strategies",
        "zero_shot",
        "feature_extraction",
        "full_finetune",
        "random_head",
        "random_init",
        "--output",
        str(tmp_path / "runs.jsonl"),
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 10 and {r["strategy"] for r in rows} == {
        "zero_shot",
        "feature_extraction",
        "full_finetune",
        "random_head",
        "random_init",
    }
    assert "| 8 | random_init |" in (tmp_path / "comparison.md").read_text()
    assert "Zero-shot (no labels) scores" in (tmp_path / "comparison.md").read_text()
    for name in (
        "accuracy_vs_examples_per_class.png",
        "accuracy_vs_trainable_params.png",
        "accuracy_vs_train_time.png",
    ):
        assert (tmp_path / name).stat().st_size > 1000
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len((tmp_path / "runs.jsonl").read_text().splitlines()) == 10, (
        "finished runs are not redone"
    )
