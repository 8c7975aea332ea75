"""Model cards: what a user who finds the output folder (or the Hub repo) needs to trust and reload it."""

from __future__ import annotations

import json
import pathlib

from .. import assets

HUB_IDS = {
    "bundled:minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
    "bundled:efficientnet-lite0": "timm/tf_efficientnet_lite0.in1k",
}


ZERO_SHOT_TASKS = {"nli": "zero-shot-classification", "image_text": "zero-shot-image-classification"}


def _percent(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def base_hub_id(results: dict) -> str | None:
    """The base checkpoint's Hub id, when it has one (bundled checkpoints are copies of Hub models)."""
    base = results["model_name_or_path"]
    base_id = HUB_IDS.get(base, base)
    return base_id if base_id.count("/") == 1 and not base_id.startswith((".", "/")) else None


# Licenses of the bundled checkpoints (both Apache-2.0: sentence-transformers/all-MiniLM-L6-v2, EfficientNet-Lite0).
BUNDLED_LICENSES = {"bundled:minilm-l6": "apache-2.0", "bundled:efficientnet-lite0": "apache-2.0"}


def hub_dataset_id(name: str | None) -> str | None:
    """A data set name the Hub can link to (user/name), not a local path or a bundled set."""
    if not name or assets.is_bundled(name) or name.startswith((".", "/", "~")) or pathlib.Path(name).exists():
        return None
    return name if name.count("/") == 1 else None


def base_license(base: str) -> str | None:
    """The base checkpoint's license when it is known here: bundled ones, or a local folder whose card says it."""
    if base in BUNDLED_LICENSES:
        return BUNDLED_LICENSES[base]
    readme = pathlib.Path(base) / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        try:
            return ModelCard.load(readme).data.license
        except Exception:  # noqa: BLE001 - a base card we cannot parse has no license for us to copy
            return None
    return None


def card_metadata(results: dict, *, recipe: str, adapter: str | None, tags: list[str], repo_id: str | None = None):
    """The card's front matter as the Hub reads it (huggingface_hub's ModelCardData): library, base model, task,
    license, data set, and a model-index with accuracy and macro-F1 on the validation and test splits."""
    from huggingface_hub import EvalResult, ModelCardData

    task = f"{results.get('modality', 'text')}-classification"
    dataset = results.get("dataset") or "unknown"
    dataset_id = hub_dataset_id(dataset)
    evaluations = []
    for prefix, split in (("eval", "validation"), ("test", "test")):
        for metric, name, config in (("accuracy", "accuracy", None), ("f1_macro", "macro-F1", "macro")):
            value = results.get(f"{prefix}_{metric}")
            if isinstance(value, (int, float)):
                evaluations.append(
                    EvalResult(
                        task_type=task,
                        dataset_type=dataset_id or dataset,
                        dataset_name=dataset,
                        dataset_split=split,
                        metric_type=metric.split("_")[0],
                        metric_name=name,
                        metric_config=config,
                        metric_value=round(float(value), 4),
                    )
                )
    return ModelCardData(
        library_name="peft" if adapter == "peft" else "transformers" if not adapter else "hf_transfer",
        base_model=base_hub_id(results),
        pipeline_tag=ZERO_SHOT_TASKS.get(results.get("zero_shot_method"), task),
        license=base_license(results["model_name_or_path"]),
        datasets=[dataset_id] if dataset_id else None,
        tags=tags,
        metrics=["accuracy", "f1"],
        model_name=repo_id
        or f"{(base_hub_id(results) or str(results['model_name_or_path'])).rstrip('/').split('/')[-1]}-{recipe}",
        eval_results=evaluations or None,
    )


def model_card(results: dict, *, recipe: str, model_class: str, repo_id: str | None = None) -> str:
    base = results["model_name_or_path"]
    adapter = results.get("adapter")  # "peft", "bottleneck" or None (a full model)
    config = results.get("training_config", {})
    peft_method = config.get("peft_method") if adapter else None
    tags = ["hf_transfer", recipe.replace("_", "-"), f"{results.get('modality', '')}-classification"]
    if adapter:
        tags += [peft_method] + (["peft"] if adapter == "peft" else ["adapter"])
    front = card_metadata(results, recipe=recipe, adapter=adapter, tags=tags, repo_id=repo_id).to_yaml()
    front = ["---", *front.splitlines(), "---"]
    what = (
        f"a {peft_method} adapter for"
        if adapter
        else "merged into"
        if results.get("merged_from")
        else "zero-shot with"
        if recipe == "zero_shot"
        else "fine-tuned"
    )
    lines = [
        *front,
        "",
        f"# {recipe.replace('_', ' ')}: {what} {base}",
        "",
        f"Trained with hf_transfer recipe `{recipe}` from `{base}`"
        + (
            " (bundled in an installed package: " + assets.BUNDLED_CHECKPOINTS[base[len(assets.PREFIX) :]][2] + ")"
            if assets.is_bundled(base)
            else ""
        )
        + f" on `{results.get('dataset', '')}` ({results.get('train_samples', '?')} training examples, labels: {', '.join(results.get('label_names', []))}).",
        "",
        *(
            [
                f"Merged from the adapter `{results['merged_from']}`: the adapter's updates are folded into the base weights.",
                "",
            ]
            if results.get("merged_from")
            else []
        ),
        "## Results",
        "",
        "| split | accuracy | macro-F1 | examples |",
        "|---|---|---|---|",
    ]
    for split in ("eval", "test"):
        if f"{split}_accuracy" in results:
            lines.append(
                f"| {split} | {_percent(results[f'{split}_accuracy'])} | {_percent(results.get(f'{split}_f1_macro'))} | {results.get(f'{split}_samples', '?')} |"
            )
    lines += [
        "",
        f"Trainable parameters: {results.get('trainable_params', 0):,} of {results.get('total_params', 0):,} "
        f"({results.get('trainable_percent', 0)}%).",
    ]
    if results.get("teacher"):
        lines += [
            "",
            f"Distilled from the teacher `{results['teacher']}` (temperature {config.get('temperature')}, alpha {config.get('alpha')}"
            + (f", blocks {results['student_layers']} of the teacher kept" if results.get("student_layers") else "")
            + (f", {results['unlabeled_samples']} unlabelled examples" if results.get("unlabeled_samples") else "")
            + "): "
            f"teacher test accuracy {_percent(results.get('teacher_test_accuracy'))} with {results.get('teacher_params', 0):,} parameters; "
            f"this student runs x{results.get('inference_speedup', 0):.2f} faster ({results.get('speed_measured_on', '')}).",
        ]
    if results.get("methods"):
        lines += [
            "",
            f"Adapted to the target domain `{config.get('target_dataset_name') or config.get('target_file') or config.get('target_dir')}` "
            f"({results.get('target_samples', '?')} unlabelled examples) with {' + '.join(results['methods'])}: target test accuracy "
            f"{_percent(results.get('target_test_accuracy'))} (the same model trained on the source alone: "
            f"{_percent(results.get('source_only_target_test_accuracy'))}); source test accuracy {_percent(results.get('test_accuracy'))} "
            f"(source alone: {_percent(results.get('source_only_test_accuracy'))}).",
        ]
    fit = results.get("head_phase_fit") or {}
    score = (
        f"validation accuracy {_percent(fit['eval_accuracy'])}"
        if "eval_accuracy" in fit
        else f"cross-validated accuracy {_percent(fit.get('cv_accuracy'))}"
    )
    if fit.get("label_descriptions") and "prior_scale" in fit:
        described = "; ".join(f"{label}: {sentence!r}" for label, sentence in fit["label_descriptions"].items())
        lines += [
            "",
            "The new head was first fitted as a logistic regression on the pretrained layers' features with its L2 "
            f"pulling toward the zero-shot classifier of its label descriptions ({described[:400]}; {score}, "
            f"L2 {fit.get('head_l2', 0):g}, the zero-shot weights scaled by "
            f"{fit['prior_scale']:g}), then trained on with them.",
        ]
    elif fit.get("label_descriptions"):
        described = "; ".join(f"{label}: {sentence!r}" for label, sentence in fit["label_descriptions"].items())
        lines += [
            "",
            f"The new head started as the zero-shot classifier of its label descriptions ({described[:400]}): each "
            "label's row the pretrained encoder's embedding of its sentence; then it trained with every layer.",
        ]
    elif fit:
        lines += [
            "",
            f"The new head was first fitted as a logistic regression on the pretrained layers' features (LP-FT, Kumar et al. "
            f"2022; {score}, L2 {fit.get('head_l2', 0):g}"
            + (f": {fit['kept_because']}" if fit.get("kept_because") else "")
            + "), then trained on with them.",
        ]
    if "kept_epoch" in results:
        lines += [
            "",
            f"Weights kept: epoch {results['kept_epoch']:g} of {results['epochs_trained']:g} ({results['kept_because']}).",
        ]
    elif results.get("head_solver") == "lbfgs":
        lines += [
            "",
            f"Head: a logistic regression on the frozen features, fitted to convergence by L-BFGS ({results['kept_because']}).",
        ]
    if results.get("saved_weights_bytes"):
        lines[-1] += f" Saved weights: {results['saved_weights_bytes'] / 2**20:.2f} MiB."
    figures = {"training_curves.png": "Training curves", "confusion_matrix.png": "Confusion matrix"}
    for name in results.get("figures") or []:
        lines += ["", f"![{figures.get(name, name)}]({name})"]
    lines += [
        "",
        "## Training configuration",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## How to load",
        "",
        *_how_to_load(results, adapter, model_class, repo_id or "<this folder or repo>"),
        "",
    ]
    return "\n".join(lines)


def _how_to_load(results: dict, adapter: str | None, model_class: str, where: str) -> list[str]:
    modality = results.get("modality", "text")
    task = f"{modality}-classification"
    example = '"a quietly moving film"' if modality == "text" else '"photo.jpg"'
    tools = [
        "",
        "Predict on new inputs, or evaluate on a new labelled set, from the command line:",
        "",
        "```bash",
        f"hf-transfer predict --model {where} --{'input_file new.csv' if modality == 'text' else 'input_dir photos/'} --output_file predictions.csv",
        f"hf-transfer evaluate --model {where} --{'test_file test.csv' if modality == 'text' else 'test_dir photos_test/'}",
        "```",
    ]
    if results.get("zero_shot_method") in ZERO_SHOT_TASKS:
        hypotheses = list((results.get("label_descriptions") or {}).values())
        return [
            "A zero-shot run: each label is a hypothesis, and the one the checkpoint scores highest wins. transformers' "
            "zero-shot pipeline gives the same scores; `zero_shot.json` maps each hypothesis to its label.",
            "",
            "```python",
            "from transformers import pipeline",
            "",
            f'classifier = pipeline("{ZERO_SHOT_TASKS[results["zero_shot_method"]]}", model="{where}")',
            f'classifier({example}, candidate_labels={hypotheses!r}, hypothesis_template="{{}}")',
            "```",
            *tools,
        ]
    if adapter:
        lines = [
            "```python",
            "import hf_transfer",
            "",
            "# rebuilds the base as it was trained, then loads the adapter and its head",
            f'model, processor = hf_transfer.load_adapter("{where}")',
            "```",
        ]
        if adapter == "peft":
            lines += [
                "",
                "For `pipeline()` and the Auto classes, fold the adapter into the base first "
                "(`hf-transfer merge <this folder> merged/`), then load `merged/` as a full model.",
            ]
        return lines + tools
    remote = model_class == "TransferClassifier"
    register = (
        ["import hf_transfer  # registers this run's class (TransferClassifier) with transformers' Auto classes"]
        if remote
        else []
    )
    lines = [
        "```python",
        *register,
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("{task}", model="{where}")',
        f"classifier({example})",
        "```",
    ]
    if remote:
        lines += [
            "",
            "Without hf_transfer installed, transformers can run the class's code shipped in this folder "
            "(`transfer_classifier.py`: a pretrained backbone, its pooling and a new head; torch and transformers only) "
            "if you pass `trust_remote_code=True` — your choice: read the file first, as for any remote code.",
        ]
    auto = "AutoModelForImageClassification" if modality == "image" else "AutoModelForSequenceClassification"
    lines += [
        "",
        "or with the Auto classes:",
        "",
        "```python",
        *register,
        f"from transformers import {auto}",
        f'model = {auto}.from_pretrained("{where}")',
        "```",
    ]
    return lines + tools
