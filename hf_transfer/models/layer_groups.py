"""Layer groups: a model's parameters as ordered groups from input to output.

embeddings / stem, each transformer block or CNN stage, pooler / neck, head. Everything that
freezes, unfreezes or spreads learning rates works on these groups. The model is asked for its
structure (timm's `group_matcher`, transformers' `base_model`), and the architecture registry
(`architectures.py`) names the block lists models do not declare; users override with regex
patterns, and a pattern that matches nothing, or an architecture we cannot read, is an error
that lists the model's top-level modules.
"""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from ..errors import TransferError
from .wrappers import canonical_name, live_parameters, unwrap


@dataclasses.dataclass
class LayerGroup:
    name: str
    parameters: dict[str, nn.Parameter]  # full names in the model passed to layer_groups -> parameter

    def __len__(self) -> int:
        return len(self.parameters)

    def numel(self) -> int:
        return sum(p.numel() for p in self.parameters.values())


def bind(groups: list[LayerGroup], model: nn.Module) -> list[LayerGroup]:
    """The same groups over the live parameters of `model`, matched by name.

    Engines replace parameters: FSDP2's `fully_shard` swaps every one for a DTensor, so groups that hold the
    objects captured before wrapping would freeze, thaw and optimise nothing. Groups are made on the model as
    loaded and bound again to the model training actually runs (the optimizer's and the callbacks' model).
    """
    live = live_parameters(model)
    bound = []
    for group in groups:
        parameters = {}
        for name in group.parameters:
            parameter = live.get(canonical_name(name))
            if parameter is None:
                hint = (
                    " (FSDP1 flattens parameters: set fsdp_use_orig_params: true, or use fsdp_version: 2)"
                    if any("_flat_param" in n for n in live)
                    else ""
                )
                raise TransferError(
                    f"layer group '{group.name}': parameter '{name}' is not in the model being trained{hint}"
                )
            parameters[name] = parameter
        bound.append(LayerGroup(group.name, parameters))
    return bound


def top_level_modules(model: nn.Module) -> str:
    inner, _ = unwrap(model)
    return ", ".join(f"{n} ({type(m).__name__})" for n, m in inner.named_children())


def layer_groups(model: nn.Module, patterns: list[str] | None = None) -> list[LayerGroup]:
    """Ordered groups, input to output; every parameter in exactly one group."""
    inner, prefix = unwrap(model)
    if patterns:
        groups = _groups_from_patterns(inner, patterns)
    else:
        groups = _discover(inner)
    if prefix:
        groups = [LayerGroup(g.name, {prefix + n: p for n, p in g.parameters.items()}) for g in groups]
    _check_partition(model, groups)
    return [g for g in groups if len(g)]


def _check_partition(model: nn.Module, groups: list[LayerGroup]) -> None:
    seen: dict[int, str] = {}
    for group in groups:
        for name, parameter in group.parameters.items():
            if id(parameter) in seen:
                raise TransferError(
                    f"parameter '{name}' is in layer groups '{seen[id(parameter)]}' and '{group.name}': fix the group patterns"
                )
            seen[id(parameter)] = group.name
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise TransferError(
            f"parameter '{missing[0]}' (and {len(missing) - 1} more) is in no layer group: add a pattern for it; "
            f"top-level modules: {top_level_modules(model)}"
        )


def _groups_from_patterns(model: nn.Module, patterns: list[str]) -> list[LayerGroup]:
    """One group per regex, in order; a parameter joins the first pattern it matches (re.search)."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise TransferError(f"layer group pattern '{pattern}' is not a valid regex ({exc})") from None
    groups = [LayerGroup(p, {}) for p in patterns]
    for name, parameter in model.named_parameters():
        for group, regex in zip(groups, compiled):
            if regex.search(name):
                group.parameters[name] = parameter
                break
    empty = [g.name for g in groups if not g.parameters]
    if empty:
        raise TransferError(
            f"layer group pattern '{empty[0]}' matches no parameter: top-level modules are {top_level_modules(model)}"
        )
    return groups


# ---------------------------------------------------------------- discovery


def _discover(model: nn.Module) -> list[LayerGroup]:
    from .architectures import lookup
    from .transfer_classifier import TransferClassifier

    if isinstance(model, TransferClassifier):
        # the backbone's own head-side layers (BERT's pooler, ViT's final norm) sit with our head
        backbone = [
            LayerGroup(g.name, {"backbone." + n: p for n, p in g.parameters.items()})
            for g in _discover(model.backbone)
            if len(g)
        ]
        tail = backbone.pop().parameters if backbone[-1].name in ("neck", "head") else {}
        return backbone + [LayerGroup("head", {**tail, **dict(model.head.named_parameters(prefix="head"))})]
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "group_matcher"):
        return _timm_groups(timm_model, "timm_model.")
    if hasattr(model, "group_matcher") and hasattr(model, "pretrained_cfg"):
        return _timm_groups(model, "")
    if hasattr(model, "base_model") and hasattr(model, "config"):  # transformers
        return _transformers_groups(model)
    entry = lookup(model)
    if entry is not None and entry.classes:  # torchvision
        return _torchvision_groups(model, entry)
    raise TransferError(
        f"cannot find the layer groups of a {type(model).__name__}: pass layer_group_patterns "
        f"(regexes, input to output); its top-level modules are {top_level_modules(model)}"
    )


def _timm_groups(timm_model: nn.Module, prefix: str) -> list[LayerGroup]:
    from timm.models import group_parameters

    grouped = group_parameters(timm_model, timm_model.group_matcher(coarse=True))
    parameters = dict(timm_model.named_parameters())
    ordered = list(grouped.items())
    groups = []
    for i, (_, names) in enumerate(ordered):
        name = "stem" if i == 0 else ("head" if i == len(ordered) - 1 else f"stage.{i - 1}")
        groups.append(LayerGroup(name, {prefix + n: parameters[n] for n in names}))
    classifier = timm_model.pretrained_cfg.get("classifier", "head")
    if not any(n.startswith(classifier) for n in grouped[ordered[-1][0]]):  # num_classes=0: no head in timm
        groups[-1].name = f"stage.{len(ordered) - 2}"
    return groups


def block_list(module: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """For architectures the registry does not know: the first ModuleList of same-typed blocks, in registration order."""
    for name, child in module.named_modules():
        if (
            isinstance(child, nn.ModuleList)
            and len(child) > 0
            and len({type(c) for c in child}) == 1
            and any(p.numel() for p in child.parameters())
        ):
            return name, child
    return None


def base_module(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, module) of a transformers classifier's backbone: the registry's, else the class's own base_model."""
    from .architectures import lookup

    entry = lookup(model)
    if entry is not None and entry.base and hasattr(model, entry.base):
        return entry.base, getattr(model, entry.base)
    base = model.base_model
    return next((n for n, m in model.named_modules() if m is base), ""), base


def _transformers_groups(model: nn.Module) -> list[LayerGroup]:
    from .architectures import block_path, lookup

    base_prefix, base = base_module(model)
    entry = lookup(model)
    paths = [block_path(base, path) for path in entry.blocks] if entry is not None and entry.blocks else []
    lists = [(path, base.get_submodule(path)) for path in paths] or [block_list(base)]
    if not lists or lists[0] is None:
        raise TransferError(
            f"cannot find the transformer blocks of a {type(model).__name__}: pass layer_group_patterns; "
            f"its top-level modules are {top_level_modules(model)}"
        )
    within_base = (base_prefix + ".") if base_prefix else ""
    block_of = {f"{within_base}{path}.{i}": i for path, blocks in lists for i in range(len(blocks))}
    input_side = [within_base + path for path in (entry.input_side if entry else ())]
    groups = {"embeddings": {}, "neck": {}, "head": {}}
    block_groups = {i: {} for i in range(max(len(blocks) for _, blocks in lists))}
    seen_block = False
    for name, parameter in model.named_parameters():
        block = next((i for prefix, i in block_of.items() if name.startswith(prefix + ".")), None)
        if block is not None:
            block_groups[block][name] = parameter
            seen_block = True
        elif base_prefix and not name.startswith(within_base):
            groups["head"][name] = parameter
        elif any(name == p or name.startswith(p + ".") for p in input_side):
            groups["embeddings"][name] = parameter
        else:
            groups["neck" if seen_block else "embeddings"][name] = parameter
    return [
        LayerGroup("embeddings", groups["embeddings"]),
        *[LayerGroup(f"block.{i}", params) for i, params in block_groups.items()],
        LayerGroup("neck", groups["neck"]),
        LayerGroup("head", groups["head"]),
    ]


def _torchvision_groups(model: nn.Module, entry) -> list[LayerGroup]:
    """stem, then one group per block (each element of a listed container, or each listed module), neck, head."""

    def inside(name: str, prefixes) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    if len(entry.blocks) == 1:  # a container whose children are the stages
        container = entry.blocks[0]
        blocks = [f"{container}.{child}" for child, _ in model.get_submodule(container).named_children()]
    else:
        blocks = list(entry.blocks)
    named = dict(model.named_parameters())
    groups = [LayerGroup("stem", {n: p for n, p in named.items() if inside(n, entry.stem)})]
    groups += [
        LayerGroup(f"stage.{i}", {n: p for n, p in named.items() if inside(n, [b])}) for i, b in enumerate(blocks)
    ]
    if not entry.stem:  # the first child of the container is the stem (EfficientNet's features.0, RegNet's stem)
        groups = groups[1:]
        groups[0].name = "stem"
    groups.append(LayerGroup("neck", {n: p for n, p in named.items() if inside(n, entry.neck)}))
    taken = {n for g in groups for n in g.parameters}
    groups.append(LayerGroup("head", {n: p for n, p in named.items() if n not in taken}))
    return [g for g in groups if len(g)]


def select_groups(groups: list[LayerGroup], selectors) -> list[LayerGroup]:
    """Groups by index (negative from the output end), by exact name, or by regex on group names."""
    chosen = []
    for selector in selectors:
        if isinstance(selector, int):
            chosen.append(groups[selector])
            continue
        exact = [g for g in groups if g.name == selector]
        matches = exact or [g for g in groups if re.fullmatch(selector, g.name)]
        if not matches:
            raise TransferError(
                f"'{selector}' names no layer group: the groups are {', '.join(g.name for g in groups)}"
            )
        chosen.extend(matches)
    return list({id(g): g for g in chosen}.values())
