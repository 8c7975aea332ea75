"""Where adapters go, asked of the model: which layers LoRA / IA3 / bottleneck adapters attach to,
and which module is the new head that trains and saves with them.

One table holds the architecture knowledge (the attention projections and feed-forward output of
each family's blocks, found by the names the model's own modules carry); CNNs get their ungrouped
convolutions. A user's `target_modules` is checked against the model, and a name that matches
nothing is an error listing the names that would (never silently target nothing).
Names match as in peft: a module's full name equals the target or ends with "." + target.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from .errors import TransferError
from .layer_groups import _unwrap

METHODS = ("lora", "dora", "loha", "lokr", "ia3", "bottleneck")


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    marker: tuple[str, ...]  # leaf names whose presence identifies the family
    low_rank: tuple[str, ...]  # LoRA / DoRA / LoHa / LoKr: attention query and value (plus MLP for timm ViTs)
    ia3: tuple[str, ...]  # IA3: keys, values and the feed-forward output
    feedforward: tuple[str, ...]  # IA3 scales these layers' inputs instead of their outputs
    bottleneck: tuple[str, ...]  # the attention output and feed-forward output projections


FAMILIES = (
    Family("BERT-style (BERT, RoBERTa, ELECTRA)", ("query", "value"), ("query", "value"),
           ("key", "value", "output.dense"), ("output.dense",), ("attention.output.dense", "output.dense")),
    Family("ViT / q_proj-style", ("q_proj", "v_proj"), ("q_proj", "v_proj"), ("k_proj", "v_proj", "fc2"), ("fc2",), ("o_proj", "fc2")),
    Family("DistilBERT", ("q_lin", "v_lin"), ("q_lin", "v_lin"), ("k_lin", "v_lin", "lin2"), ("lin2",), ("out_lin", "lin2")),
    Family("timm ViT", ("qkv",), ("qkv", "fc1", "fc2"), ("qkv", "fc2"), ("fc2",), ("attn.proj", "fc2")),
)


def matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def within(name: str, modules: list[str]) -> bool:
    """Whether the module called `name` is one of `modules` or inside one."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def head_modules(model: nn.Module) -> list[str]:
    """The newly initialised classification head(s): peft's `modules_to_save`, trained and saved with the adapter.

    transformers classes: the children beside the base model (`classifier`, or our `head`); timm: the
    classifier its pretrained_cfg names.
    """
    model, _ = _unwrap(model)
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and not hasattr(model, "backbone"):
        return [f"timm_model.{timm_model.pretrained_cfg.get('classifier', 'classifier')}"]
    if hasattr(model, "pretrained_cfg") and hasattr(model, "group_matcher"):  # a bare timm model
        return [model.pretrained_cfg.get("classifier", "head")]
    base = getattr(model, "base_model", None)
    if base is None:  # torchvision: the classifier attribute its models use
        heads = [name for name in ("fc", "classifier", "heads", "head") if isinstance(getattr(model, name, None), nn.Module)][:1]
    else:
        heads = [name for name, child in model.named_children() if child is not base and any(True for _ in child.parameters())]
    if not heads:
        raise TransferError(f"cannot find the classification head of a {type(model).__name__}: pass --modules_to_save")
    return heads


def _adaptable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and ungrouped Conv2d layers outside the head, by full name."""
    model, _ = _unwrap(model)
    heads = head_modules(model)
    return {name: module for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv2d)) and not (isinstance(module, nn.Conv2d) and module.groups != 1)
            and not within(name, heads)}


def family(model: nn.Module) -> Family | None:
    leaves = {name.rsplit(".", 1)[-1] for name in _adaptable_modules(model)}
    return next((f for f in FAMILIES if set(f.marker) <= leaves), None)


def candidate_names(model: nn.Module, limit: int = 12) -> str:
    """Short names a user can target: each adaptable layer's last one or two name parts."""
    names = []
    for name in _adaptable_modules(model):
        parts = name.split(".")
        for short in (parts[-1], ".".join(parts[-2:])):
            if not short.split(".")[0].isdigit() and short not in names:
                names.append(short)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def check_targets(model: nn.Module, targets: list[str], option: str = "--target_modules") -> list[str]:
    """Every target must match at least one adaptable layer."""
    modules = _adaptable_modules(model)
    for target in targets:
        if not any(matches(name, target) for name in modules):
            raise TransferError(f"{option} '{target}' matches no Linear or Conv2d layer of {type(_unwrap(model)[0]).__name__}: "
                                f"candidates are {candidate_names(model)}")
    return targets


def default_targets(model: nn.Module, method: str) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules) for `method` on this model's architecture."""
    found = family(model)
    if found is None:
        convs = [name for name, m in _adaptable_modules(model).items() if isinstance(m, nn.Conv2d)]
        name = type(_unwrap(model)[0]).__name__
        if method == "bottleneck":
            raise TransferError(f"bottleneck adapters follow the attention and feed-forward projections of transformer blocks, and {name} has none "
                                f"we recognise: pass --target_modules naming Linear layers (candidates: {candidate_names(model)}), or use --peft_method lora")
        if not convs:
            raise TransferError(f"{name} has no layers we recognise for --peft_method {method}: pass --target_modules (candidates: {candidate_names(model)})")
        return convs, []  # CNN: every ungrouped convolution (peft cannot put LoRA on depthwise ones)
    modules = _adaptable_modules(model)

    def present(names: tuple[str, ...]) -> list[str]:  # a family's names this model really has
        return [t for t in names if any(matches(n, t) for n in modules)]

    if method == "ia3":
        return present(found.ia3), present(found.feedforward)
    if method == "bottleneck":
        return present(found.bottleneck), []
    return present(found.low_rank), []


def resolve_targets(model: nn.Module, method: str, targets: list[str] | None, feedforward: list[str] | None) -> tuple[list[str], list[str]]:
    """The user's targets (checked) or the architecture's defaults; IA3's feed-forward modules must be among the targets."""
    if method not in METHODS:
        raise TransferError(f"--peft_method '{method}' is not one of {', '.join(METHODS)}")
    if not targets:
        targets, default_feedforward = default_targets(model, method)
    else:
        check_targets(model, targets)
        default_feedforward = []
        if method == "ia3" and feedforward is None and family(model) is not None:  # the family's feed-forward layers among the user's targets
            default_feedforward = [f for f in default_targets(model, method)[1] if f in targets]
    if method != "ia3":
        return targets, []
    feedforward = default_feedforward if feedforward is None else check_targets(model, feedforward, "--feedforward_modules")
    outside = [f for f in feedforward if f not in targets]
    if outside:
        raise TransferError(f"--feedforward_modules '{outside[0]}' is not in --target_modules: IA3 needs every feed-forward module targeted too")
    return targets, feedforward
