"""The advisor's pick, run end to end: measure the checkpoint(s) on frozen features, choose a strategy, run it.

Takes the data and model options of every recipe; `--model_name_or_path` may name several checkpoints (the
best by LogME is used). The chosen recipe gets the advised learning rates and epochs unless the command line
sets them; `advice.json` and the run's usual outputs land in --output_dir.

    python recipes/auto.py                                 # bundled MiniLM on Rotten Tomatoes, 100 per class
    python recipes/auto.py --model_name_or_path bundled:efficientnet-lite0 --dataset_name bundled:fashion_mnist \
        --max_train_samples_per_class 100 --image_size 64

    from recipes.auto import run; results = run(train_file="train.csv", validation_file="val.csv")
"""

import json
import pathlib

import recipes.feature_extraction as feature_extraction
import recipes.full_finetune as full_finetune
import recipes.peft_finetune as peft_finetune
from hf_transfer.advice.advise import advise, option_value
from hf_transfer.cli import recipe_main
from hf_transfer.runs.saving import check_output_dir

RECIPES = {"feature_extraction": feature_extraction.run, "full_finetune": full_finetune.run, "lora": peft_finetune.run}
DEFAULT_OUTPUT_DIR = "outputs/auto"


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Advise, then run the advised recipe; returns its results with the advice under "advice" and what measuring
    the checkpoint(s) took under "advice_seconds"."""
    argv = list(argv or [])
    output_dir = option_value(argv, overrides, "output_dir") or DEFAULT_OUTPUT_DIR
    overwrite = "--overwrite_output_dir" in argv or bool(overrides.get("overwrite_output_dir"))
    check_output_dir(
        pathlib.Path(output_dir), overwrite=overwrite, resuming=False
    )  # before the measuring, not after it
    with _scratch() as scratch:  # advice.json goes into the run folder once the run has written it
        outcome = advise(_without(argv, "--output_dir"), **{**overrides, "output_dir": scratch})
    print(outcome["report"])
    advice = outcome["advice"]
    checkpoint = outcome["ranking"][0]["checkpoint"]
    options = {k: v for k, v in advice["options"].items() if f"--{k}" not in argv and k not in overrides}
    results = RECIPES[advice["strategy"]](
        _without(argv, "--model_name_or_path"),
        **{**overrides, **options, "model_name_or_path": checkpoint, "output_dir": output_dir},
    )
    (pathlib.Path(output_dir) / "advice.json").write_text(json.dumps(outcome, indent=2))
    advice_seconds = sum(m["seconds"] for m in outcome["ranking"])  # the measuring, before the run's own time
    return {**results, "advice": advice, "advice_seconds": advice_seconds}


def _without(argv: list[str], flag: str) -> list[str]:
    """argv without one option and its value(s)."""
    kept, skipping = [], False
    for token in argv:
        if token.split("=")[0] == flag:
            skipping = "=" not in token
            continue
        if skipping and not token.startswith("--"):
            continue
        skipping = False
        kept.append(token)
    return kept


def _scratch():
    import tempfile

    return tempfile.TemporaryDirectory(prefix="hf_transfer-advice-")


if __name__ == "__main__":
    recipe_main(run)
