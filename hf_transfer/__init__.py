"""hf_transfer: transfer learning for the Hugging Face ecosystem, from a pretrained checkpoint and a few labelled examples."""

from .adapters.attach import AdapterArguments
from .data.loading import DataArguments, load_labelled_data
from .engine.optim import build_optimizer, discriminative_lrs, slanted_triangular
from .engine.unfreezing import GradualUnfreezing, Phase
from .errors import TransferError
from .metrics import classification_report, make_compute_metrics
from .models.freezing import count_parameters, freeze, unfreeze
from .models.layer_groups import LayerGroup, layer_groups
from .models.loading import (
    ModelArguments,
    TransferClassifier,
    TransferClassifierConfig,
    build_classifier,
    resolve_checkpoint,
)
from .runs.adapter_files import load_adapter
from .runs.adapter_files import merge as merge_adapter

__version__ = "0.2.0.dev0"


def __getattr__(name: str):
    """`hf_transfer.advise(...)` is the advisor function, imported on first use so that `python -m hf_transfer.advise`
    runs its module without the package having imported it first."""
    if name == "advise":
        from .advice.advise import advise

        globals()["advise"] = advise  # the import set the attribute to the module; the function is what users call
        return advise
    raise AttributeError(f"module 'hf_transfer' has no attribute '{name}'")


__all__ = [
    "AdapterArguments",
    "load_adapter",
    "merge_adapter",
    "TransferError",
    "freeze",
    "unfreeze",
    "count_parameters",
    "classification_report",
    "make_compute_metrics",
    "ModelArguments",
    "TransferClassifier",
    "TransferClassifierConfig",
    "build_classifier",
    "resolve_checkpoint",
    "DataArguments",
    "load_labelled_data",
    "LayerGroup",
    "layer_groups",
    "build_optimizer",
    "discriminative_lrs",
    "slanted_triangular",
    "GradualUnfreezing",
    "Phase",
    "advise",
]
