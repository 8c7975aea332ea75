"""--streaming: the training split is read as a `datasets` IterableDataset (nothing of it stored), its labels read once
before training; the recipes that need a whole split refuse it in one line."""

import collections

import datasets
import pandas as pd
import pytest
from conftest import failure_reasons, launch_on_two_processes, write_text_table

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune
from hf_transfer.data.loading import DataArguments, load_labelled_data
from hf_transfer.data.preprocessing import build_datasets
from hf_transfer.errors import TransferError


def test_a_streamed_csv_is_labelled_shuffled_and_tokenised_as_it_is_read(tmp_path, tiny_bert_dir, capsys):
    from transformers import AutoTokenizer

    table = write_text_table(tmp_path / "pool", rows_per_class=30)
    data = load_labelled_data(DataArguments(train_file=str(table), streaming=True), seed=1)
    assert isinstance(data.splits["train"], datasets.IterableDataset) and data.streamed_examples == 60
    assert data.label_names == ["neg", "pos"] and set(data.splits) == {"train"}
    assert "read its 60 labels once (2 classes)" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    stream = build_datasets(data, tokenizer, None, 16, augment=False)[0]["train"]
    examples = list(stream)
    texts = pd.read_csv(table)
    expected = {tuple(tokenizer(t, truncation=True, max_length=16)["input_ids"]): label for t, label in texts.values}
    assert len(examples) == 60 and collections.Counter(e["labels"] for e in examples) == {0: 30, 1: 30}
    assert all(expected[tuple(e["input_ids"])] == ["neg", "pos"][e["labels"]] for e in examples)
    assert [tuple(e["input_ids"]) for e in examples] != list(expected), "shuffled in the buffer, not file order"


@pytest.mark.parametrize("recipe, options", [("full_finetune", {"head_phase": "none"}), ("lora_bert", {})])
def test_a_recipe_trains_on_a_stream_for_max_steps(tmp_path, tiny_bert_dir, recipe, options):
    """LoRA with its default head start (auto): outside few-shot text it needs no features of the training split, so a
    stream trains with it (full fine-tuning's auto fits LP-FT's head and is refused on a stream)."""
    import importlib

    train = write_text_table(tmp_path / "train", rows_per_class=40)
    validation = write_text_table(tmp_path / "validation", rows_per_class=6)
    results = importlib.import_module(f"recipes.{recipe}").run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        validation_file=str(validation),
        streaming=True,
        max_steps=6,
        per_device_train_batch_size=8,
        output_dir=str(tmp_path / "streamed"),
        **options,
    )
    assert results["train_samples"] == 80 and results["eval_samples"] == 12 and results["validation"] == "given"
    assert results["epochs_trained"] is not None and "eval_accuracy" in results
    assert "head_phase_fit" not in results


@pytest.mark.parametrize(
    "recipe, options, message",
    [
        (full_finetune, {"head_phase": "none"}, "give --max_steps"),
        (full_finetune, {"max_steps": 2}, "pass --head_phase none"),
        (feature_extraction, {"max_steps": 2}, "needs its whole training split"),
        (full_finetune, {"max_steps": 2, "head_phase": "none", "max_train_samples_per_class": 4}, "per-class"),
    ],
)
def test_what_a_stream_cannot_do_is_refused_before_anything_is_written(
    tmp_path, tiny_bert_dir, recipe, options, message
):
    train = write_text_table(tmp_path / "train", rows_per_class=10)
    out = tmp_path / "refused"
    with pytest.raises(TransferError, match=message):
        recipe.run(
            model_name_or_path=tiny_bert_dir, train_file=str(train), streaming=True, output_dir=str(out), **options
        )
    assert not out.exists()


def test_an_empty_label_in_the_stream_names_its_row(tmp_path):
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x", "y", None, "x"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    with pytest.raises(TransferError, match="row 2 has an empty label"):
        load_labelled_data(DataArguments(train_file=str(tmp_path / "t.csv"), streaming=True))


def test_two_processes_train_on_a_stream(tmp_path, tiny_bert_dir):
    """Under `accelerate launch` each rank reads its own share of the stream (dispatch_batches off): the run trains
    for --max_steps and saves, with no rank waiting on another's batches."""
    import json

    train = write_text_table(tmp_path / "train", rows_per_class=40)
    validation = write_text_table(tmp_path / "validation", rows_per_class=6)
    out = tmp_path / "ddp"
    result = launch_on_two_processes(
        "recipes/full_finetune.py",
        [
            "--model_name_or_path",
            tiny_bert_dir,
            "--train_file",
            train,
            "--validation_file",
            validation,
            "--streaming",
            "--head_phase",
            "none",
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "4",
            "--output_dir",
            out,
        ],
    )
    assert result.returncode == 0, failure_reasons(result)
    results = json.loads((out / "all_results.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and results["world_size"] == 2 and results["train_samples"] == 80
