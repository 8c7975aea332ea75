"""What a run leaves behind, and the folder it goes in.

A run folder loads wherever a Hugging Face user takes it: `pipeline()` and the Auto classes, in a process
that never imports hf_transfer. Models of our own class carry their code (`transfer_classifier.py`, named
in config.json's `auto_map`); image runs carry the preprocessing they were evaluated with. As in Hugging
Face's example scripts, a folder that already holds a run is refused unless `--overwrite_output_dir`, and
then nothing of the old run survives; intermediate checkpoints go at the end unless `--keep_checkpoints`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

from ..errors import TransferError
from ..models import transfer_classifier

CUSTOM_CODE = "transfer_classifier.py"
# What a run writes at the top of its folder; only these are removed by --overwrite_output_dir.
RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "test_results.json")
RUN_DETAILS = "run_details.json"  # everything a run records: the card, push, merge and our tools read it
ZERO_SHOT_FILE = "zero_shot.json"  # an NLI / image-text checkpoint's zero-shot run: its method, labels, hypotheses
RUN_FILE_PATTERNS = (
    *RESULT_FILES,
    RUN_DETAILS,
    ZERO_SHOT_FILE,
    "trainer_state.json",
    "README.md",
    "config.json",
    "*.safetensors",
    "adapter_config.json",
    "bottleneck_config.json",
    "base_model.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer*.json",
    "special_tokens_map.json",
    "vocab.txt",
    "training_args.bin",
    CUSTOM_CODE,
    "*.png",
    "evaluation",
    "checkpoint-*",
    "runs",
    "advice.json",
)
RUN_MARKERS = ("all_results.json", "config.json", "adapter_config.json", "bottleneck_config.json", "checkpoint-*")


@dataclasses.dataclass
class OutputArguments:
    """The output folder (names as in Hugging Face's example scripts)."""

    overwrite_output_dir: bool = dataclasses.field(
        default=False, metadata={"help": "replace the run already in --output_dir (its files are removed first)"}
    )
    keep_checkpoints: bool = dataclasses.field(
        default=False, metadata={"help": "keep the intermediate checkpoint-* folders (removed at the end by default)"}
    )


def write_results(output_dir: pathlib.Path, results: dict) -> None:
    """The Hugging Face examples' output contract: flat scalar metrics in all_results.json and per stage in
    train_results.json / eval_results.json / test_results.json (as `Trainer.save_metrics` writes them), and
    everything else (per-class reports, confusion matrices, configuration, fits) in run_details.json."""
    import json

    scalars = {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    stages = {
        "train": {k: v for k, v in scalars.items() if k.startswith("train_") or k == "epochs_trained"},
        "eval": {k: v for k, v in scalars.items() if k.startswith("eval_")},
        "test": {k: v for k, v in scalars.items() if k.startswith("test_")},
    }
    (output_dir / RUN_DETAILS).write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    (output_dir / "all_results.json").write_text(json.dumps(scalars, indent=4, sort_keys=True))
    for stage, metrics in stages.items():
        if any(not k.endswith("_samples") for k in metrics):  # a stage that ran, not only a split's size
            (output_dir / f"{stage}_results.json").write_text(json.dumps(metrics, indent=4, sort_keys=True))


def read_results(folder: pathlib.Path) -> dict:
    """What a run recorded: run_details.json, or all_results.json for runs saved before it existed (0.1.0)."""
    import json

    for name in (RUN_DETAILS, "all_results.json"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    return {}


def previous_run_files(output_dir: pathlib.Path) -> list[pathlib.Path]:
    if not output_dir.is_dir():
        return []
    return sorted({path for pattern in RUN_FILE_PATTERNS for path in output_dir.glob(pattern)})


def check_output_dir(output_dir: pathlib.Path, *, overwrite: bool, resuming: bool) -> None:
    """Before anything is loaded or written: never mix a new run into an old one."""
    if output_dir.exists() and not output_dir.is_dir():
        raise TransferError(f"--output_dir '{output_dir}' is a file: name a folder")
    if overwrite or resuming or not output_dir.is_dir():
        return
    found = sorted({p.name for marker in RUN_MARKERS for p in output_dir.glob(marker)})
    if found:
        raise TransferError(
            f"--output_dir '{output_dir}' already holds a run ({', '.join(found[:3])}): "
            "pass --overwrite_output_dir to replace it, or choose another --output_dir"
        )


def clear_previous_run(output_dir: pathlib.Path) -> None:
    """--overwrite_output_dir: remove what an earlier run wrote (and nothing else the user keeps there)."""
    for path in previous_run_files(output_dir):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def remove_checkpoints(output_dir: pathlib.Path) -> None:
    for path in output_dir.glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)


def full_state_dict(model) -> dict | None:
    """The whole state dict of a model FSDP sharded (FSDP2's DTensor parameters, or FSDP1 modules), gathered
    to the CPU of rank 0 (other ranks get an empty dict). A collective: every rank calls it. None when nothing
    is sharded, and save_pretrained reads the model itself."""
    from torch.distributed.tensor import DTensor

    sharded = any(isinstance(p, DTensor) for p in model.parameters()) or any(
        type(m).__name__ == "FullyShardedDataParallel" for m in model.modules()
    )
    if not sharded:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_model(model, output_dir: pathlib.Path, state_dict: dict | None = None) -> None:
    """save_pretrained, plus the code of our own class so it can load without hf_transfer (if the user passes trust_remote_code).
    `state_dict`: the gathered weights of a sharded model (full_state_dict)."""
    if isinstance(model, transfer_classifier.TransferClassifier):
        module = pathlib.Path(CUSTOM_CODE).stem
        model.config.auto_map = {
            "AutoConfig": f"{module}.TransferClassifierConfig",
            "AutoModelForSequenceClassification": f"{module}.TransferClassifier",
            "AutoModelForImageClassification": f"{module}.TransferClassifier",
        }
        shutil.copyfile(transfer_classifier.__file__, output_dir / CUSTOM_CODE)
    model.save_pretrained(output_dir, state_dict=state_dict)
