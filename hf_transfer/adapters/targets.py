"""Where adapters go, asked of the model: which layers LoRA / IA3 / bottleneck adapters attach to,
and which module is the new head that trains and saves with them.

The architecture registry (`architectures.py`) says where each family's attention projections and
feed-forward output are; a model it does not list gets peft's own table for its model type, else is
matched by the names its modules carry, and
CNNs get every Linear and ungrouped convolution of the body (ConvNeXt's pointwise layers hold most of
its weights; peft cannot put LoRA on depthwise convolutions). A user's `target_modules` is checked
against the model, and a name that matches nothing is an error listing the names that would (never
silently target nothing). Names match as in peft: a module's full name equals the target or ends
with "." + target.
"""

from __future__ import annotations

from torch import nn

from ..errors import TransferError
from ..models.architectures import BERT_TARGETS, DISTILBERT_TARGETS, Q_PROJ_TARGETS, TIMM_VIT_TARGETS, Targets, lookup
from ..models.layer_groups import base_module
from ..models.wrappers import unwrap

METHODS = ("lora", "dora", "loha", "lokr", "ia3", "bottleneck")
# For models the registry does not list: (leaf names that identify the family, its targets).
NAME_FAMILIES = (
    (("query", "value"), BERT_TARGETS),
    (("q_proj", "v_proj"), Q_PROJ_TARGETS),
    (("q_lin", "v_lin"), DISTILBERT_TARGETS),
    (("qkv",), TIMM_VIT_TARGETS),
)


def matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def within(name: str, modules: list[str]) -> bool:
    """Whether the module called `name` is one of `modules` or inside one."""
    return any(name == m or name.startswith(m + ".") for m in modules)


def head_modules(model: nn.Module) -> list[str]:
    """The newly initialised classification head(s): peft's `modules_to_save`, trained and saved with the adapter.

    transformers classes: the children beside the backbone (`classifier`, or our `head`); timm: the
    classifier its pretrained_cfg names; torchvision: the classifier attribute its models use.
    """
    model, _ = unwrap(model)
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and not hasattr(model, "backbone"):
        return [f"timm_model.{timm_model.pretrained_cfg.get('classifier', 'classifier')}"]
    if hasattr(model, "pretrained_cfg") and hasattr(model, "group_matcher"):  # a bare timm model
        return [model.pretrained_cfg.get("classifier", "head")]
    if getattr(model, "base_model", None) is None:  # torchvision
        heads = [
            name for name in ("fc", "classifier", "heads", "head") if isinstance(getattr(model, name, None), nn.Module)
        ][:1]
    else:
        _, base = base_module(model)
        heads = [
            name
            for name, child in model.named_children()
            if child is not base and any(True for _ in child.parameters())
        ]
    if not heads:
        raise TransferError(f"cannot find the classification head of a {type(model).__name__}: pass --modules_to_save")
    return heads


def _adaptable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and ungrouped Conv2d layers outside the head, by full name."""
    model, _ = unwrap(model)
    heads = head_modules(model)
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
        and not (isinstance(module, nn.Conv2d) and module.groups != 1)
        and not within(name, heads)
    }


# peft's LoHa / LoKr add their update by their own F.conv2d call with the layer's padding attribute, so a convolution
# whose forward does more (timm's Conv2dSame pads the input itself) gets an update of another shape; LoRA builds its
# update from the layer's own class and handles them.
OWN_CONV_CALL = ("loha", "lokr")


def beyond_their_conv(model: nn.Module, names: list[str]) -> list[str]:
    """Which of the named layers are Conv2d subclasses with their own forward (dynamic 'same' padding, weight
    standardisation ...)."""
    modules = _adaptable_modules(model)
    return [
        n for n in names if isinstance(modules.get(n), nn.Conv2d) and type(modules[n]).forward is not nn.Conv2d.forward
    ]


def family(model: nn.Module) -> Targets | None:
    """The model's adapter targets: the registry's entry, else a family recognised by its module names; None for CNNs."""
    inner, _ = unwrap(model)
    backbone = getattr(inner, "backbone", inner)  # TransferClassifier: the backbone's architecture
    entry = lookup(backbone)
    if entry is not None:
        return entry.targets
    from_peft = _peft_table(getattr(getattr(backbone, "config", None), "model_type", None))
    if from_peft is not None:
        return from_peft
    leaves = {name.rsplit(".", 1)[-1] for name in _adaptable_modules(model)}
    return next((targets for marker, targets in NAME_FAMILIES if set(marker) <= leaves), None)


def _peft_table(model_type: str | None) -> Targets | None:
    """peft's own per-architecture defaults (LoRA / IA3), for model types our registry does not list."""
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as IA3_FEEDFORWARD,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as IA3,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA,
    )

    if not model_type or model_type not in LORA:
        return None
    return Targets(
        tuple(LORA[model_type]),
        tuple(IA3.get(model_type, LORA[model_type])),
        tuple(IA3_FEEDFORWARD.get(model_type, ())),
        (),
    )


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
            raise TransferError(
                f"{option} '{target}' matches no Linear or Conv2d layer of {type(unwrap(model)[0]).__name__}: "
                f"candidates are {candidate_names(model)}"
            )
    return targets


def default_targets(model: nn.Module, method: str) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules) for `method` on this model's architecture."""
    found = family(model)
    if found is None:
        layers = list(_adaptable_modules(model))
        name = type(unwrap(model)[0]).__name__
        if method == "bottleneck":
            raise TransferError(
                f"bottleneck adapters follow the attention and feed-forward projections of transformer blocks, and {name} has none "
                f"we recognise: pass --target_modules naming Linear layers (candidates: {candidate_names(model)}), or use --peft_method lora"
            )
        if not layers:
            raise TransferError(
                f"{name} has no layers we recognise for --peft_method {method}: pass --target_modules (candidates: {candidate_names(model)})"
            )
        inner, _ = unwrap(model)
        depthwise = sum(1 for m in inner.modules() if isinstance(m, nn.Conv2d) and m.groups != 1)
        own_forward = beyond_their_conv(model, layers) if method in OWN_CONV_CALL else []
        if own_forward:
            layers = [n for n in layers if n not in own_forward]
            print(
                f"{method} skips {', '.join(own_forward)}: peft's {method} adds its update by a plain convolution, and "
                f"{type(inner.get_submodule(own_forward[0])).__name__} computes more in its forward (use --peft_method lora to adapt it)"
            )
        if depthwise:
            print(
                f"{method} skips {depthwise} grouped (depthwise) convolutions, which peft cannot adapt: it goes on the {len(layers)} "
                "Linear and ungrouped convolutional layers of the body"
            )
        return layers, []  # CNN: every Linear and ungrouped convolution of the body
    modules = _adaptable_modules(model)

    def present(names: tuple[str, ...]) -> list[str]:  # a family's names this model really has
        return [t for t in names if any(matches(n, t) for n in modules)]

    chosen = {"ia3": found.ia3, "bottleneck": found.bottleneck}.get(method, found.low_rank)
    if not present(chosen):
        raise TransferError(
            f"{type(unwrap(model)[0]).__name__} has none of its family's {method} targets ({', '.join(chosen)}): "
            f"pass --target_modules (candidates: {candidate_names(model)})"
        )
    return present(chosen), (present(found.feedforward) if method == "ia3" else [])


def resolve_targets(
    model: nn.Module, method: str, targets: list[str] | None, feedforward: list[str] | None
) -> tuple[list[str], list[str]]:
    """The user's targets (checked) or the architecture's defaults; IA3's feed-forward modules must be among the targets."""
    if method not in METHODS:
        raise TransferError(f"--peft_method '{method}' is not one of {', '.join(METHODS)}")
    if not targets:
        targets, default_feedforward = default_targets(model, method)
    else:
        check_targets(model, targets)
        reached = [n for n in _adaptable_modules(model) if any(matches(n, t) for t in targets)]
        own_forward = beyond_their_conv(model, reached) if method in OWN_CONV_CALL else []
        if own_forward:
            raise TransferError(
                f"--target_modules reaches {own_forward[0]}, a {type(unwrap(model)[0].get_submodule(own_forward[0])).__name__} "
                f"whose forward does more than the convolution peft's {method} adds its update with: leave it out, or use --peft_method lora"
            )
        default_feedforward = []
        if (
            method == "ia3" and feedforward is None and family(model) is not None
        ):  # the family's feed-forward layers among the user's targets
            default_feedforward = [f for f in default_targets(model, method)[1] if f in targets]
    if method != "ia3":
        return targets, []
    feedforward = (
        default_feedforward if feedforward is None else check_targets(model, feedforward, "--feedforward_modules")
    )
    outside = [f for f in feedforward if f not in targets]
    if outside:
        raise TransferError(
            f"--feedforward_modules '{outside[0]}' is not in --target_modules: IA3 needs every feed-forward module targeted too"
        )
    return targets, feedforward
