"""`Trainer` with the toolkit's optimizer rules: no weight decay on biases or any norm (BatchNorm included)."""

from __future__ import annotations

from torch import nn
from transformers import Trainer


def decays(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay only on weight matrices / kernels: never on biases, norm scales or other 1-D parameters."""
    return parameter.ndim > 1 and not name.endswith(".bias")


class TransferTrainer(Trainer):
    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return [name for name, parameter in model.named_parameters() if decays(name, parameter)]
