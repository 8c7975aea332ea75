"""Pushing a finished run's folder to the Hub, with a model card that names the repo in its how-to-load snippet."""

from __future__ import annotations

import pathlib

from ..errors import TransferError
from ..hub import HubTarget, check_repo_id, push_folder
from .card import model_card
from .saving import read_results


def push_run(folder: str | pathlib.Path, target: HubTarget) -> str:
    """Push a recipe's output folder with a model card naming the repo in its how-to-load snippet."""
    folder = pathlib.Path(folder)
    check_repo_id(target.repo_id)
    if not folder.is_dir():
        raise TransferError(f"'{folder}' is not a folder: pass the output_dir of a finished hf_transfer run")
    results = read_results(folder)
    if not results:
        raise TransferError(f"'{folder}' has no all_results.json: pass the output_dir of a finished hf_transfer run")
    if not any(folder.glob("*.safetensors")):
        raise TransferError(f"'{folder}' holds no .safetensors weights: nothing to push")
    recipe = results.get("recipe", "hf_transfer")
    card = model_card(results, recipe=recipe, model_class=results.get("model_class", ""), repo_id=target.repo_id)
    message = f"hf_transfer {recipe}: {results.get('model_name_or_path')} on {results.get('dataset')}"
    return push_folder(folder, target, card, commit_message=message)
