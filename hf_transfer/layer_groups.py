"""Layer groups: a model's parameters as ordered groups from input to output.

embeddings / stem, each transformer block or CNN stage, pooler / neck, head. Everything that
freezes, unfreezes or spreads learning rates works on these groups. The model is asked for its
structure (timm's `group_matcher`, transformers' `base_model` and its block list) rather than
guessing names; users override with regex patterns, and a pattern that matches nothing, or an
architecture we cannot read, is an error that lists the model's top-level modules.
"""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from .errors import TransferError


@dataclasses.dataclass
class LayerGroup:
    name: str
    parameters: dict[str, nn.Parameter]  # full names in the model passed to layer_groups -> parameter

    def __len__(self) -> int:
        return len(self.parameters)

    def numel(self) -> int:
        return sum(p.numel() for p in self.parameters.values())


def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """Look through DDP / peft wrappers; return the inner model and its name prefix."""
    prefix = ""
    while True:
        if hasattr(model, "module") and type(model).__name__ in {"DistributedDataParallel", "DataParallel"}:
            model, prefix = model.module, prefix + "module."
        elif type(model).__name__.startswith("Peft") and hasattr(model, "base_model"):
            model, prefix = model.base_model.model, prefix + "base_model.model."
        else:
            return model, prefix


def top_level_modules(model: nn.Module) -> str:
    inner, _ = _unwrap(model)
    return ", ".join(f"{n} ({type(m).__name__})" for n, m in inner.named_children())


def layer_groups(model: nn.Module, patterns: list[str] | None = None) -> list[LayerGroup]:
    """Ordered groups, input to output; every parameter in exactly one group."""
    inner, prefix = _unwrap(model)
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
                raise TransferError(f"parameter '{name}' is in layer groups '{seen[id(parameter)]}' and '{group.name}': fix the group patterns")
            seen[id(parameter)] = group.name
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise TransferError(f"parameter '{missing[0]}' (and {len(missing) - 1} more) is in no layer group: add a pattern for it; "
                            f"top-level modules: {top_level_modules(model)}")


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
        raise TransferError(f"layer group pattern '{empty[0]}' matches no parameter: top-level modules are {top_level_modules(model)}")
    return groups


# ---------------------------------------------------------------- discovery


def _discover(model: nn.Module) -> list[LayerGroup]:
    from .modeling import TransferClassifier

    if isinstance(model, TransferClassifier):
        # the backbone's own head-side layers (BERT's pooler, ViT's final norm) sit with our head
        backbone = [LayerGroup(g.name, {"backbone." + n: p for n, p in g.parameters.items()}) for g in _discover(model.backbone) if len(g)]
        tail = backbone.pop().parameters if backbone[-1].name in ("neck", "head") else {}
        return backbone + [LayerGroup("head", {**tail, **dict(model.head.named_parameters(prefix="head"))})]
    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None and hasattr(timm_model, "group_matcher"):
        return _timm_groups(timm_model, "timm_model.")
    if hasattr(model, "group_matcher") and hasattr(model, "pretrained_cfg"):
        return _timm_groups(model, "")
    if hasattr(model, "base_model") and hasattr(model, "config"):  # transformers
        return _transformers_groups(model)
    if hasattr(model, "layer1") and hasattr(model, "fc"):  # torchvision ResNet
        return _children_groups(model, stem=["conv1", "bn1"], stages=["layer1", "layer2", "layer3", "layer4"])
    if isinstance(getattr(model, "features", None), nn.Sequential):  # torchvision EfficientNet / MobileNet / ConvNeXt / VGG
        features = model.features
        groups = [LayerGroup("stem" if i == 0 else f"stage.{i}", dict(child.named_parameters(prefix=f"features.{i}")))
                  for i, child in enumerate(features)]
        rest = {n: p for n, p in model.named_parameters() if not n.startswith("features.")}
        return groups + [LayerGroup("head", rest)]
    raise TransferError(f"cannot find the layer groups of a {type(model).__name__}: pass layer_group_patterns "
                        f"(regexes, input to output); its top-level modules are {top_level_modules(model)}")


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


def _block_list(module: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The first ModuleList of same-typed blocks, in registration order (encoder.layer, encoder.layers, ...)."""
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList) and len(child) > 0 and len({type(c) for c in child}) == 1 and \
                any(p.numel() for p in child.parameters()):
            return name, child
    return None


def _transformers_groups(model: nn.Module) -> list[LayerGroup]:
    base = model.base_model
    base_prefix = next((n for n, m in model.named_modules() if m is base), "")
    found = _block_list(base)
    if found is None:
        raise TransferError(f"cannot find the transformer blocks of a {type(model).__name__}: pass layer_group_patterns; "
                            f"its top-level modules are {top_level_modules(model)}")
    list_name, blocks = found
    full = (base_prefix + "." if base_prefix else "") + list_name
    groups = {"embeddings": {}, "neck": {}, "head": {}}
    block_groups = {i: {} for i in range(len(blocks))}
    seen_block = False
    for name, parameter in model.named_parameters():
        if name.startswith(full + "."):
            block_groups[int(name[len(full) + 1 :].split(".")[0])][name] = parameter
            seen_block = True
        elif base_prefix and not name.startswith(base_prefix + "."):
            groups["head"][name] = parameter
        else:
            groups["neck" if seen_block else "embeddings"][name] = parameter
    return [LayerGroup("embeddings", groups["embeddings"]),
            *[LayerGroup(f"block.{i}", params) for i, params in block_groups.items()],
            LayerGroup("neck", groups["neck"]), LayerGroup("head", groups["head"])]


def _children_groups(model: nn.Module, stem: list[str], stages: list[str]) -> list[LayerGroup]:
    named = dict(model.named_parameters())
    stem_group = {n: p for n, p in named.items() if n.split(".")[0] in stem}
    stage_groups = [LayerGroup(s, {n: p for n, p in named.items() if n.split(".")[0] == s}) for s in stages]
    rest = {n: p for n, p in named.items() if n.split(".")[0] not in stem + stages}
    return [LayerGroup("stem", stem_group), *stage_groups, LayerGroup("head", rest)]


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
            raise TransferError(f"'{selector}' names no layer group: the groups are {', '.join(g.name for g in groups)}")
        chosen.extend(matches)
    return list({id(g): g for g in chosen}.values())
