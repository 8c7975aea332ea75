"""One way to configure every recipe: recipe defaults < YAML (--config) < command line / run() keywords.

Argument names are those of Hugging Face's example scripts (`model_name_or_path`, `train_file`,
`output_dir`, ...) plus `TrainingArguments`. We remember which keys the user set, so a recipe can
pick modality-dependent defaults (a learning rate for text vs images) only where the user did not.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .. import defaults
from ..data.loading import DataArguments
from ..errors import TransferError
from ..models.loading import ModelArguments
from ..runs.saving import OutputArguments

# With no data named, every recipe runs on bundled real assets in a few minutes on a CPU.
DEMO_DATA = {"dataset_name": "bundled:rotten_tomatoes", "max_train_samples_per_class": 100, "max_eval_samples": 500}

# Defaults every recipe shares; recipes add their own on top.
COMMON_DEFAULTS = {
    "model_name_or_path": "bundled:minilm-l6",
    **DEMO_DATA,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "report_to": "none",
    "remove_unused_columns": False,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "seed": 42,
}


HEAD_PHASES = ("none", "cached", "label_descriptions", "label_prior", "auto")


@dataclasses.dataclass
class HeadStartArguments:
    """Where a new head starts before the body (or an adapter on it) trains with it; a recipe sets its own default."""

    head_phase: str = dataclasses.field(
        default=defaults.FULL_FINETUNE_HEAD_PHASE,
        metadata={
            "help": "cached: LP-FT, the new linear head is first fitted as a logistic regression on cached features of the pretrained "
            "body, then it trains with the body (chosen on validation: docs/results/defaults.md); none: the head starts from its random initialisation; "
            "label_descriptions: the head starts as the zero-shot classifier of recipes/zero_shot.py (text; --label_descriptions, --label_template); "
            "label_prior: as cached, with the L2 pulling the head toward that zero-shot classifier instead of toward zero (text); "
            "auto: few-shot text (no validation split held out) starts full fine-tuning from the zero-shot head unless its label "
            "names say nothing (then cached), adapters from label_prior; everything else from cached for full fine-tuning, "
            "from none for adapters (docs/results/fewshot.md)"
        },
    )


@dataclasses.dataclass
class RecipeArgs:
    model: ModelArguments
    data: DataArguments
    training: TrainingArguments
    output: OutputArguments
    explicit: set  # keys the user set (YAML, command line or keywords)
    options: dict = dataclasses.field(
        default_factory=dict
    )  # {dataclass: its parsed instance}: the recipe's own typed options
    resolved: dict = dataclasses.field(
        default_factory=dict
    )  # what the run settled later (e.g. an adapter's targets), recorded too

    def option(self, kind):
        """The recipe's parsed `kind` options (a dataclass it passed to parse_recipe_args); the dataclass's defaults
        when the recipe does not take those options (so the user cannot have set them)."""
        found = self.options.get(kind)
        return kind() if found is None else found

    def recorded_options(self) -> dict:
        """Every recipe option by name, then what the run resolved: as all_results.json and the model card record them."""
        flat = {}
        for values in self.options.values():
            flat.update(dataclasses.asdict(values))
        return {**flat, **self.resolved}


def _parser(extra_dataclasses=()) -> HfArgumentParser:
    # The recipe's own options first, then model, data and output folder, then Trainer's ~150: --help reads top-down.
    # No abbreviations: "--max_train_samples 7" must never be read as another option that merely starts with it.
    parser = HfArgumentParser(
        (*extra_dataclasses, ModelArguments, DataArguments, OutputArguments, TrainingArguments), allow_abbrev=False
    )
    parser.add_argument("--config", help="YAML file of argument values; the command line overrides them")
    return parser


def _read_yaml(path_text: str) -> dict:
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise TransferError(f"--config '{path}' does not exist: check the path")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TransferError(f"--config '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise TransferError(f"--config '{path}' must be a mapping of argument names to values")
    return loaded


def parse_recipe_args(
    defaults: dict, argv: list[str] | None = None, overrides: dict | None = None, extra_dataclasses=()
) -> RecipeArgs:
    """Parse argv (command line) or overrides (keywords from a notebook) on top of YAML and defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = dict(overrides or {})
    config_path = overrides.pop("config", None)
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise TransferError("--config needs a YAML file path")
        config_path = argv[at + 1]
        del argv[at : at + 2]
    from_yaml = _read_yaml(config_path) if config_path else {}

    parser = _parser(extra_dataclasses)
    known = {action.dest for action in parser._actions} - {"config", "help"}
    user_values = {**from_yaml, **overrides}
    unknown = sorted(set(user_values) - known)
    if unknown:
        where = f"--config '{config_path}'" if unknown[0] in from_yaml else "run()"
        raise TransferError(f"{where} has unknown argument '{unknown[0]}': see `python recipes/<recipe>.py --help`")
    _check_types(parser, user_values, config_path, from_yaml)
    argv_keys = {a.split("=")[0][2:].replace("-", "_") for a in argv if a.startswith("--")}
    device_defaults = _device_defaults()
    if "accelerator_config" in device_defaults:
        _keep_non_blocking(argv, user_values)
    parser.set_defaults(**{**COMMON_DEFAULTS, **device_defaults, **defaults, **user_values})
    try:
        _refuse_unknown_options(parser, argv)
        parsed = parser.parse_args_into_dataclasses(args=argv)
    except SystemExit as exc:  # argparse already printed its one-line reason
        if exc.code in (0, None):
            raise
        raise TransferError(f"bad command line: {' '.join(argv)}") from None
    except ValueError as exc:
        raise TransferError(str(exc).splitlines()[0]) from None
    explicit = set(user_values) | argv_keys
    *rest, model_args, data_args, output_args, training_args, _config_namespace = (
        parsed  # last: the non-dataclass --config
    )
    _check_precision(training_args)
    _one_data_source(data_args, explicit)
    _examples_names(data_args, explicit)
    _check_stages(training_args, explicit)
    options = {type(values): values for values in rest}
    _check_values(data_args, training_args, options)
    return RecipeArgs(model_args, data_args, training_args, output_args, explicit, options)


def _check_types(parser: HfArgumentParser, user_values: dict, config_path, from_yaml: dict) -> None:
    """A number given as text in run() or YAML (num_train_epochs="three") is one line, not argparse's usage dump."""
    actions = {action.dest: action for action in parser._actions}
    for key, value in user_values.items():
        kind = actions[key].type
        if kind in (int, float) and value is not None and not isinstance(value, bool):
            try:
                kind(value)
            except (TypeError, ValueError):
                where = f"--config '{config_path}'" if key in from_yaml else "run()"
                raise TransferError(f"{where}: {key}={value!r} is not a valid {kind.__name__}") from None


def _check_values(data_args, training: TrainingArguments, options: dict) -> None:
    """Values argparse accepts but no run can use: one line before anything is loaded or written."""
    positive = {"learning_rate": training.learning_rate}
    for values in options.values():
        positive.update(
            {
                k: getattr(values, k)
                for k in ("head_learning_rate", "lowest_learning_rate")
                if getattr(values, k, None) is not None
            }
        )
    for key, value in positive.items():
        if not value > 0:
            raise TransferError(f"--{key} {value:g} must be positive (e.g. 1e-4)")
    if data_args.image_size is not None and data_args.image_size < 1:
        raise TransferError(
            f"--image_size {data_args.image_size} must be a positive number of pixels (e.g. 224), or left unset for the checkpoint's own"
        )
    if training.max_steps <= 0 and not training.num_train_epochs > 0:
        raise TransferError(f"--num_train_epochs {training.num_train_epochs:g} must be positive (or set --max_steps)")
    _check_resume(training)
    _check_report_to(training)


def _check_resume(training: TrainingArguments) -> None:
    """--resume_from_checkpoint names a checkpoint-* folder, or is true / last: the newest in --output_dir."""
    value = training.resume_from_checkpoint
    if not value:
        return
    from transformers.trainer_utils import get_last_checkpoint

    if str(value).lower() in ("true", "last"):
        last = get_last_checkpoint(training.output_dir) if pathlib.Path(training.output_dir).is_dir() else None
        if last is None:
            raise TransferError(
                f"--resume_from_checkpoint {value}: '{training.output_dir}' holds no checkpoint-* folder to resume from"
            )
        training.resume_from_checkpoint = last
    elif not (pathlib.Path(value) / "trainer_state.json").is_file():
        raise TransferError(
            f"--resume_from_checkpoint '{value}' is not a checkpoint folder (no trainer_state.json): "
            "name a checkpoint-* folder of an earlier run, or pass true for the newest in --output_dir"
        )


REPORTING_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "comet_ml": ("comet_ml",),
    "mlflow": ("mlflow",),
    "neptune": ("neptune",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
    "trackio": ("trackio",),
    "codecarbon": ("codecarbon",),
    "swanlab": ("swanlab",),
    "azure_ml": ("azureml",),
    "dagshub": ("dagshub",),
    "flyte": ("flytekit",),
    "kubeflow": ("kubeflow",),
}


def _check_report_to(training: TrainingArguments) -> None:
    """An experiment tracker that is not installed is one line now, not a traceback once training starts."""
    import importlib.util

    for name in training.report_to or []:
        packages = REPORTING_PACKAGES.get(name, ())
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise TransferError(
                f"--report_to {name}: the '{packages[0]}' package is not installed: pip install {packages[0]}, or pass --report_to none"
            )


def _device_defaults() -> dict:
    """On an accelerator, DataLoader workers (kept alive between epochs) feed it, and nothing in a training step
    makes the host wait for it, so the host queues the next step's kernels while the GPU runs this one: batches
    are copied from pinned memory without blocking (Trainer copies them blocking by default) and the step's loss
    is not checked for nan / inf on the host (Trainer's --logging_nan_inf_filter reads every step's loss back).
    Without an accelerator, train on the CPU outright: --bf16 then means CPU autocast rather than an error.
    The user's own settings win over both."""
    import os

    import torch

    if not torch.accelerator.is_available():
        return {"use_cpu": True}
    return {
        "dataloader_num_workers": min(8, max(1, (os.cpu_count() or 2) - 1)),
        "dataloader_persistent_workers": True,
        "accelerator_config": {"non_blocking": True},
        "logging_nan_inf_filter": False,
    }


def _keep_non_blocking(argv: list[str], user_values: dict) -> None:
    """A user's --accelerator_config that does not mention non_blocking keeps the device default (True) rather than
    replacing it with accelerate's False: asking for split_batches should not make every batch copy blocking."""

    def merged(value):
        if isinstance(value, str):
            try:
                value = (
                    json.loads(value)
                    if value.lstrip().startswith("{")
                    else json.loads(pathlib.Path(value).read_text())
                )
            except (OSError, ValueError):
                return None  # TrainingArguments says what is wrong with it
        if isinstance(value, dict) and "non_blocking" not in value:
            return json.dumps({**value, "non_blocking": True})
        return None

    for at, arg in enumerate(argv):
        if arg == "--accelerator_config" and at + 1 < len(argv) and (value := merged(argv[at + 1])):
            argv[at + 1] = value
        elif arg.startswith("--accelerator_config=") and (value := merged(arg.split("=", 1)[1])):
            argv[at] = f"--accelerator_config={value}"
    if "accelerator_config" in user_values and (value := merged(user_values["accelerator_config"])):
        user_values["accelerator_config"] = value


def _check_precision(training: TrainingArguments) -> None:
    import torch

    if training.fp16 and not torch.accelerator.is_available():
        raise TransferError(
            "--fp16 needs a GPU and none is available: on the CPU train in fp32 (the default) or pass --bf16"
        )


def _refuse_unknown_options(parser: HfArgumentParser, argv: list[str]) -> None:
    """A mistyped option is one line naming it and the closest real option, not a list of unused arguments."""
    import difflib

    _, unknown = parser.parse_known_args(argv)
    options = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    for arg in unknown:
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            longer = sorted((o for o in options if o.startswith(name)), key=len)  # a cut-short name: what it starts
            close = longer[:2] if longer else difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            hint = f": did you mean {' or '.join(close)}?" if close else ""
            raise TransferError(f"unknown option {name}{hint} (--help lists every option)")
    if unknown:
        raise TransferError(
            f"unexpected argument '{unknown[0]}': options are --name value (--help lists every option)"
        )


def _check_stages(training: TrainingArguments, explicit: set) -> None:
    """The examples' --do_train / --do_eval / --do_predict: a recipe trains, keeps its best epoch on validation and
    scores the test split when there is one, so true is what it does anyway, --do_predict false skips the test
    split, and a stage that cannot be left out is refused with what to run instead."""
    if "do_train" in explicit and not training.do_train:
        raise TransferError(
            "--do_train false: a recipe always trains; to score a saved run use "
            "`hf-transfer evaluate --model RUN --test_file FILE` (or --test_dir)"
        )
    if "do_eval" in explicit and not training.do_eval:
        raise TransferError(
            "--do_eval false: a recipe keeps its best epoch on validation, so it always evaluates: leave --do_eval out"
        )


def _examples_names(data_args: DataArguments, explicit: set) -> None:
    """Hugging Face examples' names for options we also spell our own way: one value, whichever name gave it."""
    for theirs, ours in (("max_predict_samples", "max_test_samples"), ("text_column_names", "text_column_name")):
        if theirs not in explicit:
            continue
        if ours in explicit and getattr(data_args, ours) != getattr(data_args, theirs):
            raise TransferError(f"--{theirs} and --{ours} are the same option with different values: give one")
        setattr(data_args, ours, getattr(data_args, theirs))


def _one_data_source(data_args: DataArguments, explicit: set) -> None:
    """The demo data set and its sample caps give way to data the user names; two named sources are an error."""
    named = [k for k in ("dataset_name", "train_file", "train_dir") if k in explicit and getattr(data_args, k)]
    if len(named) > 1:
        raise TransferError(f"--{named[0]} and --{named[1]} both name training data: give only one")
    if named:
        for key in DEMO_DATA:
            if key not in explicit:
                setattr(data_args, key, None)
