"""Talking to the Hugging Face Hub: whether we may, pushing a finished run, and one clear error when we cannot.

The token comes only from the usual login (`hf auth login`) or the HF_TOKEN environment variable,
is handed straight to huggingface_hub, and never appears in a message, a log or a written file.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from . import assets
from .errors import TransferError

# Top-level files of an output folder that are pushed; checkpoints, logs and pickles stay home.
NOT_PUSHED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")


def hub_offline() -> bool:
    """True when the user said not to touch the network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def unreachable_checkpoint(name: str, exc: BaseException | None = None) -> TransferError:
    alternatives = assets.bundled_checkpoint_names()
    if hub_offline():
        return TransferError(
            f"model '{name}' is not a local folder and not in the Hugging Face cache, and the Hub is offline (HF_HUB_OFFLINE=1): "
            f"download it while online, pass a local folder, or use {alternatives}"
        )
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return TransferError(
        f"model '{name}' could not be loaded from the Hub{reason}: check the id and your network, pass a local folder, or use {alternatives}"
    )


# ---------------------------------------------------------------- pushing


@dataclasses.dataclass
class HubTarget:
    repo_id: str
    private: bool | None = None
    revision: str | None = None  # a branch; created if missing


def target_from_training_args(training) -> HubTarget | None:
    """Our push replaces the Trainer's (which would push every checkpoint, without our card).

    Reads --push_to_hub / --hub_model_id / --hub_private_repo / --hub_revision and switches the
    Trainer's own pushing off. --hub_token is refused: it would be pickled into training_args.bin.
    """
    if getattr(training, "hub_token", None):
        raise TransferError(
            "--hub_token is not accepted (it would be saved with the training arguments): "
            "log in with `hf auth login` or set HF_TOKEN instead"
        )
    if not training.push_to_hub:
        return None
    if not training.hub_model_id:
        raise TransferError("--push_to_hub needs --hub_model_id user/name: the Hub repo to push to")
    target = HubTarget(training.hub_model_id, training.hub_private_repo, training.hub_revision)
    check_repo_id(target.repo_id)
    training.push_to_hub = False
    return target


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        repo_id_ok = False
    else:
        repo_id_ok = repo_id.count("/") == 1
    if not repo_id_ok:
        raise TransferError(f"'{repo_id}' is not a Hub repo id: use user/name (letters, digits, '-', '_', '.')")


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_error(exc: BaseException, repo_id: str) -> TransferError:
    """One line for what went wrong talking to the Hub; never the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, TransferError):
        return exc
    if isinstance(exc, OfflineModeIsEnabled):
        return TransferError(
            f"cannot reach the Hub for '{repo_id}': offline mode is on (HF_HUB_OFFLINE=1): unset it to push"
        )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return TransferError(
                f"the Hub rejected the token (401 Unauthorized) for '{repo_id}': log in again with `hf auth login` or set a valid HF_TOKEN"
            )
        if status == 403:
            return TransferError(
                f"the token may not write to '{repo_id}' (403 Forbidden): use a token with write access to that namespace"
            )
        if status == 404:
            return TransferError(
                f"'{repo_id}' was not found on the Hub at {endpoint()} (404): check the repo id and revision"
            )
        return TransferError(f"the Hub at {endpoint()} answered {status} for '{repo_id}': try again later")
    return TransferError(
        f"cannot reach the Hub at {endpoint()} for '{repo_id}' ({type(exc).__name__}): check your network (and HF_ENDPOINT)"
    )


def check_access(target: HubTarget) -> str:
    """Fail before training, not after: a token exists and the Hub accepts it. Returns the user name."""
    from huggingface_hub import HfApi, get_token

    if hub_offline():
        raise TransferError(
            f"cannot push to '{target.repo_id}': HF_HUB_OFFLINE=1 is set; unset it, or push later with hf-transfer push"
        )
    token = get_token()
    if not token:
        raise TransferError(
            f"no Hugging Face token to push to '{target.repo_id}': run `hf auth login` or set HF_TOKEN"
        )
    try:
        return HfApi().whoami(token=token)["name"]
    except Exception as exc:  # noqa: BLE001 - translated to one line
        raise hub_error(exc, target.repo_id) from None


def files_to_push(folder: pathlib.Path) -> list[pathlib.Path]:
    """Top-level files only: weights, configs, preprocessing, results, card (no checkpoint-*/, runs/, pickles)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix not in NOT_PUSHED_SUFFIXES
    )


def push_folder(
    folder: pathlib.Path, target: HubTarget, card: str | None = None, commit_message: str = "Upload with hf_transfer"
) -> str:
    """Create the repo (and branch) if needed and commit the folder's files in one commit; returns the repo URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    check_access(target)
    api = HfApi()
    operations = [
        CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
        for p in files_to_push(folder)
        if not (card and p.name == "README.md")
    ]
    if card:
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    try:
        url = api.create_repo(target.repo_id, private=target.private, exist_ok=True)
        if target.revision and target.revision != "main":
            api.create_branch(target.repo_id, branch=target.revision, exist_ok=True)
        api.create_commit(target.repo_id, operations, commit_message=commit_message, revision=target.revision)
    except Exception as exc:  # noqa: BLE001 - translated to one line
        raise hub_error(exc, target.repo_id) from None
    return str(url)
