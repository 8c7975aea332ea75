"""Model cards: what a user who finds the output folder (or the Hub repo) needs to trust and reload it."""

from __future__ import annotations

import json

from . import assets

HUB_IDS = {"bundled:minilm-l6": "sentence-transformers/all-MiniLM-L6-v2", "bundled:efficientnet-lite0": "timm/tf_efficientnet_lite0.in1k"}


def _percent(value) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def base_hub_id(results: dict) -> str | None:
    """The base checkpoint's Hub id, when it has one (bundled checkpoints are copies of Hub models)."""
    base = results["model_name_or_path"]
    base_id = HUB_IDS.get(base, base)
    return base_id if base_id.count("/") == 1 and not base_id.startswith((".", "/")) else None


def model_card(results: dict, *, recipe: str, model_class: str, repo_id: str | None = None) -> str:
    base = results["model_name_or_path"]
    adapter = results.get("adapter")  # "peft", "bottleneck" or None (a full model)
    config = results.get("training_config", {})
    peft_method = config.get("peft_method") if adapter else None
    tags = ["hf_transfer", recipe.replace("_", "-"), f"{results.get('modality', '')}-classification"]
    if adapter:
        tags += [peft_method] + (["peft"] if adapter == "peft" else ["adapter"])
    front = ["---", f"library_name: {'peft' if adapter == 'peft' else 'transformers' if not adapter else 'hf_transfer'}"]
    if base_hub_id(results):
        front.append(f"base_model: {base_hub_id(results)}")
    front += ["tags:", *[f"- {t}" for t in tags], "metrics:", "- accuracy", "- f1", "---"]
    what = f"a {peft_method} adapter for" if adapter else "merged into" if results.get("merged_from") else "fine-tuned"
    lines = [
        *front, "",
        f"# {recipe.replace('_', ' ')}: {what} {base}", "",
        f"Trained with hf_transfer recipe `{recipe}` from `{base}`"
        + (" (bundled in an installed package: " + assets.BUNDLED_CHECKPOINTS[base[len(assets.PREFIX):]][2] + ")" if assets.is_bundled(base) else "")
        + f" on `{results.get('dataset', '')}` ({results.get('train_samples', '?')} training examples, labels: {', '.join(results.get('label_names', []))}).", "",
        *([f"Merged from the adapter `{results['merged_from']}`: the adapter's updates are folded into the base weights.", ""] if results.get("merged_from") else []),
        "## Results", "", "| split | accuracy | macro-F1 | examples |", "|---|---|---|---|",
    ]
    for split in ("eval", "test"):
        if f"{split}_accuracy" in results:
            lines.append(f"| {split} | {_percent(results[f'{split}_accuracy'])} | {_percent(results.get(f'{split}_f1_macro'))} | {results.get(f'{split}_samples', '?')} |")
    lines += ["", f"Trainable parameters: {results.get('trainable_params', 0):,} of {results.get('total_params', 0):,} "
              f"({results.get('trainable_percent', 0)}%)."]
    if "kept_epoch" in results:
        lines += ["", f"Weights kept: epoch {results['kept_epoch']:g} of {results['epochs_trained']:g} ({results['kept_because']})."]
    if results.get("saved_weights_bytes"):
        lines[-1] += f" Saved weights: {results['saved_weights_bytes'] / 2**20:.2f} MiB."
    lines += ["", "## Training configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True, default=str), "```", "",
              "## How to load", "", *_how_to_load(results, adapter, model_class, repo_id or "<this folder or repo>"), ""]
    return "\n".join(lines)


def _how_to_load(results: dict, adapter: str | None, model_class: str, where: str) -> list[str]:
    auto = "AutoModelForImageClassification" if results.get("modality") == "image" else "AutoModelForSequenceClassification"
    if adapter:
        lines = ["```python", "import hf_transfer", "", "# rebuilds the base as it was trained, then loads the adapter and its head",
                 f"model, processor = hf_transfer.load_adapter(\"{where}\")", "```"]
        if adapter == "peft" and model_class != "TransferClassifier" and base_hub_id(results):
            labels = results.get("label_names", [])
            lines += ["", "or with peft directly:", "", "```python", "from peft import PeftModel", f"from transformers import {auto}", "",
                      f"labels = {labels!r}",
                      f"base = {auto}.from_pretrained(\"{base_hub_id(results)}\", num_labels=len(labels), id2label=dict(enumerate(labels)),",
                      "    label2id={l: i for i, l in enumerate(labels)}, ignore_mismatched_sizes=True)",
                      f"model = PeftModel.from_pretrained(base, \"{where}\")", "```"]
        return lines
    lines = ["```python"]
    if model_class == "TransferClassifier":
        lines.append("import hf_transfer  # registers TransferClassifier with the Auto classes")
    return lines + [f"from transformers import {auto}", f"model = {auto}.from_pretrained(\"{where}\")", "```"]
