"""Model cards: what a user who finds the output folder (or the Hub repo) needs to trust and reload it."""

from __future__ import annotations

import json

from . import assets

HUB_IDS = {"bundled:minilm-l6": "sentence-transformers/all-MiniLM-L6-v2", "bundled:efficientnet-lite0": "timm/tf_efficientnet_lite0.in1k"}


def _percent(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def model_card(results: dict, *, recipe: str, model_class: str, library_name: str = "transformers") -> str:
    base = results["model_name_or_path"]
    base_id = HUB_IDS.get(base, base)
    dataset = results.get("dataset", "")
    front = ["---", f"library_name: {library_name}", f"base_model: {base_id}" if "/" in base_id and not base_id.startswith(("/", ".")) else None,
             "tags:", "- hf_transfer", f"- {recipe.replace('_', '-')}", f"- {results.get('modality', '')}-classification", "metrics:", "- accuracy", "- f1",
             "---"]
    hyper = results.get("training_config", {})
    lines = [
        *[line for line in front if line is not None], "",
        f"# {recipe.replace('_', ' ')} of {base}", "",
        f"Fine-tuned with hf_transfer recipe `{recipe}` from `{base}`"
        + (" (bundled in an installed package: " + assets.BUNDLED_CHECKPOINTS[base[len(assets.PREFIX):]][2] + ")" if assets.is_bundled(base) else "")
        + f" on `{dataset}` ({results.get('train_samples', '?')} training examples, labels: {', '.join(results.get('label_names', []))}).", "",
        "## Results", "", "| split | accuracy | macro-F1 | examples |", "|---|---|---|---|",
    ]
    for split in ("eval", "test"):
        if f"{split}_accuracy" in results:
            lines.append(f"| {split} | {_percent(results[f'{split}_accuracy'])} | {_percent(results.get(f'{split}_f1_macro'))} | {results.get(f'{split}_samples', '?')} |")
    lines += ["", f"Trainable parameters: {results.get('trainable_params', 0):,} of {results.get('total_params', 0):,} "
              f"({results.get('trainable_percent', 0)}%).", "",
              "## Training configuration", "", "```json", json.dumps(hyper, indent=2, sort_keys=True, default=str), "```", "",
              "## How to load", "", "```python"]
    auto = "AutoModelForImageClassification" if results.get("modality") == "image" else "AutoModelForSequenceClassification"
    if model_class == "TransferClassifier":
        lines.append("import hf_transfer  # registers TransferClassifier with the Auto classes")
    lines += [f"from transformers import {auto}", f"model = {auto}.from_pretrained(\"<this folder or repo>\")"]
    lines += ["```", ""]
    return "\n".join(lines)
