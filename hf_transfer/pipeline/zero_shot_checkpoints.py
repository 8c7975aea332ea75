"""An NLI checkpoint or an image-text dual encoder (CLIP, SigLIP) as a zero-shot run: nothing is built or trained;
each label's description is a hypothesis (`models.zero_shot`), the validation and test splits are scored, and the
checkpoint is saved as it is, with `zero_shot.json` (the method, the labels and their hypotheses), so
`hf-transfer predict / evaluate` and transformers' zero-shot pipelines use the run."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoProcessor, set_seed

from .. import defaults, hub
from ..data.loading import label_series, load_labelled_data, values_of
from ..data.preprocessing import load_processor
from ..errors import TransferError
from ..features.label_descriptions import descriptions
from ..metrics import classification_report, confusion_matrix
from ..models.loading import Checkpoint
from ..models.zero_shot import entailment_id, is_image_text
from ..runs import saving
from ..runs.card import model_card
from ..runs.inference import LoadedRun, class_logits
from ..runs.push import push_run
from .arguments import RecipeArgs
from .training import describe_run, describe_splits, print_summary


def scoring_method(checkpoint: Checkpoint) -> str | None:
    """ "nli" or "image_text" where the checkpoint scores label sentences itself, else None (a sentence encoder)."""
    if checkpoint.modality == "text" and entailment_id(checkpoint.config) is not None:
        return "nli"
    if is_image_text(checkpoint.config):
        return "image_text"
    return None


def run_scored(args: RecipeArgs, options, checkpoint: Checkpoint, method: str) -> dict:
    """Score validation / test with one hypothesis per label, save the run; returns what all_results.json records."""
    set_seed(args.training.seed)
    out = pathlib.Path(args.training.output_dir)
    saving.check_output_dir(out, overwrite=args.output.overwrite_output_dir, resuming=False)
    hub_target = hub.target_from_training_args(args.training)
    if hub_target is not None:
        hub.check_access(hub_target)
    modality = "image" if method == "image_text" else "text"
    data = load_labelled_data(args.data, seed=args.training.seed, modality=modality)
    if data.modality != modality:
        raise TransferError(
            f"model '{checkpoint.name}' classifies {modality}s zero-shot but data '{data.description}' is "
            f"{data.modality}: give {'an image folder' if modality == 'image' else 'a table of texts'}"
        )
    if data.has_pairs:
        raise TransferError(
            "zero-shot with an NLI checkpoint classifies single texts: give one --text_column_name, not a pair"
        )
    describe_splits(data)
    if method == "image_text" and "label_template" not in args.explicit:
        options = dataclasses.replace(options, label_template=defaults.ZERO_SHOT_IMAGE_TEMPLATE)
    hypotheses = descriptions(options, data.label_names)
    if method == "image_text":
        model = AutoModel.from_pretrained(checkpoint.location, **checkpoint.load_kwargs)
        processor = AutoProcessor.from_pretrained(checkpoint.location, **checkpoint.load_kwargs)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint.location, **checkpoint.load_kwargs)
        processor = load_processor(checkpoint)
    model.requires_grad_(False)
    run = LoadedRun(
        model.to(args.training.device).eval(),
        processor,
        data.label_names,
        modality,
        out,
        args.data.max_seq_length,
        method,
        hypotheses,
    )
    print(
        f"zero-shot by {'NLI' if method == 'nli' else 'image-text similarity'}: each label is a hypothesis "
        f"({hypotheses[0]!r} …); the {data.size('train'):,} training examples are not used"
    )
    results = {
        "zero_shot_method": method,
        "label_descriptions": dict(zip(data.label_names, hypotheses)),
        "train_runtime": 0.0,
        "kept_because": "zero-shot: no training",
    }
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split not in data.splits:
            continue
        started = time.perf_counter()
        logits = class_logits(
            run, values_of(data.splits[split], modality), batch_size=args.training.per_device_eval_batch_size
        )
        labels = label_series(data.splits[split]).to_numpy().copy()
        predicted = logits.argmax(-1).numpy()
        report = classification_report(labels, predicted, data.label_names)
        results.update(
            {
                f"{prefix}_accuracy": report["accuracy"],
                f"{prefix}_f1_macro": report["f1_macro"],
                f"{prefix}_loss": float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels))),
                f"{prefix}_runtime": round(time.perf_counter() - started, 3),
                f"{prefix}_per_class": report["per_class"],
                f"{prefix}_confusion_matrix": confusion_matrix(labels, predicted, len(data.label_names)).tolist(),
            }
        )
    results.update(
        {
            **describe_run(args, data, model, "zero_shot"),
            "device": str(args.training.device),
            "training_config": {"max_seq_length": args.data.max_seq_length},
        }
    )
    if args.training.process_index != 0:
        return results
    if args.output.overwrite_output_dir:
        saving.clear_previous_run(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors
    processor.save_pretrained(out)
    (out / saving.ZERO_SHOT_FILE).write_text(
        json.dumps({"method": method, "label_names": data.label_names, "hypotheses": hypotheses}, indent=2)
    )
    saving.write_results(out, results)
    (out / "README.md").write_text(model_card(results, recipe="zero_shot", model_class=results["model_class"]))
    print_summary(results, out)
    if hub_target is not None:
        results["hub_url"] = push_run(out, hub_target)
        print(f"pushed to        : {results['hub_url']}")
    return results
