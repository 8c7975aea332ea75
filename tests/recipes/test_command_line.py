"""The command line has no traps: no abbreviations, the Hugging Face examples' names mean what they mean there,
a mistyped option names the closest real one, and every option named on the command line reaches the run."""

import dataclasses
import subprocess
import sys
import typing

import pytest
from conftest import write_text_table

from hf_transfer.adapters.attach import AdapterArguments
from hf_transfer.data.loading import DataArguments, load_labelled_data
from hf_transfer.distill.distillation import DistillationArguments
from hf_transfer.domain.adaptation import DomainAdaptationArguments
from hf_transfer.engine.finetuning import FineTuningArguments
from hf_transfer.errors import TransferError
from hf_transfer.features.cache import FeatureCacheArguments
from hf_transfer.features.head_fitting import HeadFitArguments
from hf_transfer.models.loading import ModelArguments
from hf_transfer.pipeline.arguments import parse_recipe_args
from hf_transfer.runs.saving import OutputArguments
from recipes.feature_extraction import FrozenBackboneArguments
from recipes.full_finetune import HeadStartArguments
from recipes.gradual_unfreeze import ScheduleArguments

RECIPE_OPTIONS = {  # each recipe's own option dataclasses, as it passes them to parse_recipe_args
    "full_finetune": (FineTuningArguments, HeadStartArguments, FeatureCacheArguments),
    "gradual_unfreeze": (FineTuningArguments, ScheduleArguments, FeatureCacheArguments),
    "feature_extraction": (FrozenBackboneArguments, FeatureCacheArguments, HeadFitArguments),
    "peft_finetune": (FineTuningArguments, AdapterArguments),
    "distill": (DistillationArguments, FineTuningArguments),
    "domain_adapt": (DomainAdaptationArguments, FineTuningArguments, AdapterArguments),
}
DATA_SOURCES = ("dataset_name", "train_file", "train_dir")


def test_the_examples_max_train_samples_is_a_total_and_is_kept_with_a_named_file(tmp_path):
    table = write_text_table(tmp_path / "train", rows_per_class=20)
    args = parse_recipe_args(
        {"output_dir": str(tmp_path / "o")}, ["--train_file", str(table), "--max_train_samples", "7"]
    )
    assert args.data.max_train_samples == 7 and args.data.max_train_samples_per_class is None
    data = load_labelled_data(args.data, seed=0)
    assert len(data.splits["train"]) == 7 and set(data.splits["train"]["label"]) == {0, 1}, (
        "7 in all, both classes kept"
    )


@pytest.mark.parametrize(
    ("typed", "suggestion"),
    [
        ("--max_eval", "--max_eval_samples"),
        ("--lerning_rate", "--learning_rate"),
        ("--max_train", "--max_train_samples"),
    ],
)
def test_no_abbreviation_is_accepted_and_a_mistyped_option_names_the_real_one(tmp_path, typed, suggestion):
    with pytest.raises(TransferError, match=f"unknown option {typed}: did you mean {suggestion}"):
        parse_recipe_args({"output_dir": str(tmp_path)}, [typed, "7"])


def test_the_examples_names_for_test_caps_and_text_columns_set_ours(tmp_path):
    args = parse_recipe_args(
        {"output_dir": str(tmp_path)}, ["--max_predict_samples", "9", "--text_column_names", "a,b"]
    )
    assert args.data.max_test_samples == 9 and args.data.text_column_name == "a,b"
    with pytest.raises(TransferError, match="--max_predict_samples and --max_test_samples are the same option"):
        parse_recipe_args({"output_dir": str(tmp_path)}, ["--max_predict_samples", "9", "--max_test_samples", "8"])


def _value_for(action, field):
    """A value unlike the default, of the option's own type, as the command line writes it."""
    if action.choices:
        return next(c for c in action.choices if c != action.default)
    kind = field.type if not isinstance(field.type, str) else eval(field.type, vars(typing))  # noqa: S307 - our own annotations
    kinds = set(typing.get_args(kind)) - {type(None)} or {kind}
    if bool in kinds:
        return not field.default
    if int in kinds:
        return 7
    if float in kinds:
        return 0.37
    return f"value-of-{field.name}"


@pytest.mark.parametrize("recipe", sorted(RECIPE_OPTIONS))
def test_every_option_named_on_the_command_line_reaches_the_run(tmp_path, recipe):
    from hf_transfer.pipeline.arguments import _parser

    own = RECIPE_OPTIONS[recipe]
    parser_fields = {
        f.name: f for kind in (*own, ModelArguments, DataArguments, OutputArguments) for f in dataclasses.fields(kind)
    }
    actions = {a.dest: a for a in _parser(own)._actions}
    argv, expected = ["--train_file", "train.csv", "--output_dir", str(tmp_path / "out")], {}
    for name, field in parser_fields.items():
        if name in DATA_SOURCES or name == "output_dir" or name not in actions:
            continue
        value = _value_for(actions[name], field)
        expected[name] = value
        argv += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    for alias in ("max_predict_samples", "text_column_names"):  # the examples' names: one value under both spellings
        argv += [
            f"--{alias}",
            str(expected[{"max_predict_samples": "max_test_samples", "text_column_names": "text_column_name"}[alias]]),
        ]
        expected.pop(alias)
    args = parse_recipe_args({}, argv, extra_dataclasses=own)
    holders = [args.model, args.data, args.output, *args.options.values()]
    reached = {name: next(getattr(h, name) for h in holders if hasattr(h, name)) for name in expected}
    assert reached == expected
    assert set(expected) <= args.explicit


def test_the_hf_transfer_command_names_a_mistyped_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "hf_transfer", "evalute"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "did you mean 'evaluate'" in result.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "hf_transfer", "predict", "--help"], capture_output=True, text=True, timeout=120
    )
    assert "predictions.csv in the current folder" in " ".join(helped.stdout.split()), (
        "--help names the default output"
    )
