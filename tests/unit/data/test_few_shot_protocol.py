"""Few-shot protocol: a training file too small to hold a useful validation split out of trains on every example,
and what validation would have chosen is cross-validated on the training examples instead, said in the results."""

import json

import torch
from conftest import write_text_table

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune
from hf_transfer.data.loading import DataArguments, load_labelled_data
from hf_transfer.features.head_fitting import fit_cross_validated, stratified_folds


def test_no_validation_is_held_out_of_a_small_file_and_one_is_of_a_larger_one(tmp_path, few_shot_protocol):
    small = load_labelled_data(DataArguments(train_file=str(write_text_table(tmp_path / "small", rows_per_class=16))))
    assert set(small.splits) == {"train"} and len(small.splits["train"]) == 32
    assert small.validation.startswith("none held out: 10% of train would hold 2 examples")
    middle = load_labelled_data(DataArguments(train_file=str(write_text_table(tmp_path / "mid", rows_per_class=64))))
    assert set(middle.splits) == {"train"} and middle.validation.startswith("none held out: 10% of train would hold 6")
    large = load_labelled_data(DataArguments(train_file=str(write_text_table(tmp_path / "large", rows_per_class=100))))
    assert len(large.splits["validation"]) == 20 and large.validation == "10% of train held out"
    forced = load_labelled_data(
        DataArguments(train_file=str(tmp_path / "small.csv"), min_validation_per_class=1)
    )  # the option restores the carve-out
    assert len(forced.splits["validation"]) == 4


def test_cross_validation_chooses_the_head_l2_that_held_out_folds_prefer():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat_interleave(12)
    signal = torch.randn(24, 1, generator=generator) * 0.3 + labels[:, None].float()
    features = torch.cat([signal, torch.randn(24, 30, generator=generator)], 1)  # one useful feature, 30 noise
    folds = stratified_folds(labels, 5, seed=0)
    assert sorted(torch.bincount(folds).tolist()) == [4, 4, 4, 6, 6]  # every class spread over the folds
    fit = fit_cross_validated(torch.nn.Linear(31, 2), (features, labels))
    scores = {(c["scaling"], c["l2"]): c["cv_accuracy"] for c in fit.results["head_candidates"]}
    chosen = (fit.results["head_feature_scaling"], fit.results["head_l2"])
    assert scores[chosen] == max(scores.values()) and "cross-validation" in fit.results["kept_because"]
    assert scores[chosen] > min(scores.values())  # the choice is not vacuous: weak L2 overfits the noise


def test_a_recipe_on_a_small_file_trains_on_every_example_and_says_how_it_chose(
    tmp_path, tiny_bert_dir, few_shot_protocol, capsys
):
    train = write_text_table(tmp_path / "train", rows_per_class=16)
    results = feature_extraction.run(
        model_name_or_path=tiny_bert_dir, train_file=str(train), test_file=str(train), output_dir=str(tmp_path / "fe")
    )
    assert results["train_samples"] == 32 and results["eval_samples"] == 0 and "eval_accuracy" not in results
    assert "cross-validation" in results["kept_because"]
    assert "validation: none held out" in capsys.readouterr().out
    saved = json.loads((tmp_path / "fe" / "run_details.json").read_text())
    assert saved["validation"].startswith("none held out")
    tuned = full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        output_dir=str(tmp_path / "ft"),
        num_train_epochs=2,
        load_best_model_at_end=True,
        head_phase="cached",  # LP-FT's fitted head, its L2 cross-validated (auto may start from the zero-shot head)
    )
    assert tuned["kept_because"] == "last epoch" and tuned["epochs_trained"] == 2
    assert "cross-validation" in tuned["head_phase_fit"]["kept_because"]
    assert "--load_best_model_at_end: not used, the run holds no validation split out" in capsys.readouterr().out
