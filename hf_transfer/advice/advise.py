"""Which checkpoint and which strategy for your data, measured on frozen features and explained, with the command.

Each checkpoint's frozen features for the train and validation splits (never the test split) come from the
on-disk feature cache, so advice costs one forward pass and later feature-extraction runs reuse it. Checkpoints
are ranked by LogME (by the linear probe when training examples are fewer than feature dimensions); the
strategy comes from `strategy_rules`. Options for the recipe (e.g. --num_train_epochs) go into the advised command.

    hf-transfer advise --train_dir photos/ --model_name_or_path bundled:efficientnet-lite0 ./my-vit
    hf-transfer advise --dataset_name bundled:fashion_mnist --model_name_or_path bundled:efficientnet-lite0 --image_size 64

    from hf_transfer import advise; advice = advise(model_name_or_path=["a", "b"], train_file="train.csv")

Writes `advice.json` in --output_dir (default outputs/advice). `recipes/auto.py` runs the pick.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
import time

import numpy as np
import torch

from .. import defaults
from ..adapters.attach import AdapterArguments
from ..engine.finetuning import FineTuningArguments
from ..errors import TransferError
from ..features.cache import FeatureCacheArguments, cache_options, cached_features
from ..features.extraction import ExtractionSettings
from ..models.freezing import is_batchnorm
from ..pipeline import training
from ..pipeline.arguments import parse_recipe_args
from .rules import Measurements, recommend
from .transferability import (
    batchnorm_shift,
    cross_validated,
    knn_accuracy,
    labels_to_beat,
    linear_probe_accuracy,
    logme,
)

DEFAULTS = {"output_dir": "outputs/advice"}
SHIFT_EXAMPLES = 256  # training examples whose activations are compared with the stored BatchNorm statistics
# Options that steer the advice itself; every other option the user gives goes into the advised command.
ADVICE_ONLY = ("output_dir", "no_feature_cache", "feature_cache_dir", "cache_features", "model_name_or_path")
EXTRA_DATACLASSES = (FeatureCacheArguments, FineTuningArguments, AdapterArguments)


def measure(argv: list[str], overrides: dict) -> Measurements:
    """Frozen features of one checkpoint on the train and validation splits, and what they say."""
    started = time.perf_counter()
    args = parse_recipe_args(DEFAULTS, argv, overrides, extra_dataclasses=EXTRA_DATACLASSES)
    job = training.prepare(args, native=False)
    model = job.model.to(args.training.device).eval()
    splits = {s: job.datasets[s] for s in ("train", "validation") if s in job.datasets}
    cached, _ = cached_features(
        model,
        splits,
        job.collator,
        ExtractionSettings.of_run(args.training),
        **cache_options(args.option(FeatureCacheArguments)),
    )
    train_x, train_y = cached["train"].tensors
    val_x, val_y = cached["validation"].tensors if "validation" in cached else (None, train_y)
    counts = np.bincount(train_y.numpy(), minlength=len(job.data.label_names))
    shift = None
    if any(is_batchnorm(m) for m in model.backbone.modules()):
        sample = torch.utils.data.Subset(splits["train"], range(min(SHIFT_EXAMPLES, len(splits["train"]))))
        loader = torch.utils.data.DataLoader(
            sample, batch_size=args.training.per_device_eval_batch_size, collate_fn=job.collator
        )
        batches = ({k: v.to(args.training.device) for k, v in b.items() if k != "labels"} for b in loader)
        shift = batchnorm_shift(model, batches)
    zero_shot = beaten_from = None
    if job.data.modality == "text":  # strategy 0: the zero-shot classifier, and how many labels it takes to beat it
        from ..features.label_descriptions import (
            LabelDescriptionArguments,
            description_embeddings,
            descriptions,
            zero_shot_accuracy,
        )

        sentences = descriptions(LabelDescriptionArguments(), job.data.label_names)
        embeddings, _ = description_embeddings(model, job.processor, sentences, args.data.max_seq_length)
        held_x, held_y = (val_x, val_y) if val_x is not None else (train_x, train_y)
        zero_shot = zero_shot_accuracy(embeddings.cpu(), held_x, held_y)
        beaten_from = labels_to_beat(zero_shot, train_x, train_y, val_x, val_y.numpy() if val_x is not None else None)
    return Measurements(
        checkpoint=args.model.model_name_or_path,
        modality=job.data.modality,
        train_examples=len(train_y),
        classes=len(job.data.label_names),
        smallest_class=int(counts.min()),
        validation_examples=len(val_y) if val_x is not None else 0,
        parameters=sum(p.numel() for p in model.backbone.parameters()),
        feature_size=int(train_x.shape[1]),
        linear_probe=linear_probe_accuracy(train_x, train_y, val_x, val_y)
        if val_x is not None
        else cross_validated(linear_probe_accuracy, train_x, train_y, folds=defaults.HEAD_L2_FOLDS),
        knn=knn_accuracy(train_x, train_y, val_x, val_y)
        if val_x is not None
        else cross_validated(knn_accuracy, train_x, train_y, folds=defaults.HEAD_L2_FOLDS),
        logme=logme(train_x.numpy(), train_y.numpy()),
        majority_share=float(np.bincount(val_y.numpy()).max() / len(val_y)),
        batchnorm_shift=shift,
        seconds=round(time.perf_counter() - started, 1),
        zero_shot=zero_shot,
        labels_to_beat_zero_shot=beaten_from,
    )


def advise(argv: list[str] | None = None, **overrides) -> dict:
    """Measure every checkpoint given (`model_name_or_path`: one name or a list), rank them, recommend a strategy.

    Returns {"advice", "ranking", "ranked_by", "command", "report"}; the report is what the command line prints.
    """
    argv = list(argv or [])
    names, argv = _checkpoints(argv, overrides.pop("model_name_or_path", None))
    results = [measure(argv, {**overrides, **({"model_name_or_path": n} if n else {})}) for n in names]
    score = ranking_score(results)
    ranking = sorted(results, key=lambda m: getattr(m, score), reverse=True)
    best = ranking[0]
    advice = recommend(best)
    command = _command(advice, best, argv, overrides)
    report = _report(ranking, score, advice, command)
    outcome = {
        "advice": dataclasses.asdict(advice),
        "ranking": [dataclasses.asdict(m) for m in ranking],
        "ranked_by": score,
        "command": command,
        "report": report,
    }
    output_dir = pathlib.Path(option_value(argv, overrides, "output_dir") or DEFAULTS["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "advice.json").write_text(json.dumps(outcome, indent=2))
    return outcome


def ranking_score(results: list[Measurements]) -> str:
    """LogME where it holds; with fewer training examples than feature dimensions its evidence is dominated by the
    dimension (on 80 Rotten Tomatoes snippets it put a randomly initialised MiniLM above the pretrained one), so the
    linear probe on validation ranks instead."""
    return "logme" if all(m.train_examples > m.feature_size for m in results) else "linear_probe"


def _checkpoints(argv: list[str], given) -> tuple[list[str | None], list[str]]:
    """--model_name_or_path may name several checkpoints (space- or comma-separated); the rest of argv is kept."""
    names = [given] if isinstance(given, str) else list(given or [])
    rest, i = [], 0
    while i < len(argv):
        if argv[i].split("=")[0] == "--model_name_or_path":
            if "=" in argv[i]:
                names.append(argv[i].split("=", 1)[1])
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                names.append(argv[i])
                i += 1
            continue
        rest.append(argv[i])
        i += 1
    names = [n.strip() for name in names for n in str(name).split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise TransferError(f"--model_name_or_path names a checkpoint twice ({', '.join(names)}): give each once")
    return names or [None], rest  # None: the recipes' default checkpoint


def option_value(argv: list[str], overrides: dict, key: str):
    """An option's value from a command line (`--key v` or `--key=v`), else from keyword arguments."""
    for i, token in enumerate(argv):
        if token == f"--{key}" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(f"--{key}="):
            return token.split("=", 1)[1]
    return overrides.get(key)


def _command(advice, best: Measurements, argv: list[str], overrides: dict) -> str:
    """The command that runs the advice: the user's own options (data, and any recipe option, which win), then the
    advised ones. Options the pick's recipe does not take then fail there in one line rather than vanish here."""
    user: dict[str, list[str]] = {}
    key = None
    for token in argv:
        if token.startswith("--"):
            key, _, value = token[2:].partition("=")
            user[key] = [value] if value else []
        elif key is not None:
            user[key].append(token)
    for key, value in overrides.items():
        user[key] = [] if value is True else [str(value).lower() if isinstance(value, bool) else str(value)]
    parts = ["python", advice.recipe, "--model_name_or_path", best.checkpoint]
    for key, values in user.items():
        if key not in ADVICE_ONLY:
            parts += [f"--{key}", *values]
    for key, value in advice.options.items():
        if key not in user:
            parts += [f"--{key}"] + (
                [] if value is True else [f"{value:g}" if isinstance(value, float) else str(value)]
            )
    return " ".join(shlex.quote(p) for p in parts)


def _report(ranking: list[Measurements], score: str, advice, command: str) -> str:
    lines = []
    if len(ranking) > 1:
        if score == "logme":
            lines.append("checkpoints, best first by LogME (linear probe and k-NN accuracy on validation beside it):")
        else:
            short = min(ranking, key=lambda m: m.train_examples - m.feature_size)
            lines.append(
                f"checkpoints, best first by linear-probe accuracy on validation: {short.train_examples} training examples are fewer "
                f"than {short.checkpoint}'s {short.feature_size} feature dimensions, where LogME does not rank reliably"
            )
        for k, m in enumerate(ranking, 1):
            lines.append(
                f"  {k}. {m.checkpoint}: LogME {m.logme:.3f}, linear probe {100 * m.linear_probe:.1f}%, k-NN {100 * m.knn:.1f}%"
            )
        other = "linear_probe" if score == "logme" else "logme"
        if max(ranking, key=lambda m: getattr(m, other)) is not ranking[0]:
            lines.append(
                f"  note: {other.replace('_', ' ')} would rank another checkpoint first; the ranking above uses {score.replace('_', ' ')}"
            )
    best = ranking[0]
    lines.append(f"{best.checkpoint}: {advice.reasons[0]}")
    if best.zero_shot is not None:
        where = "on validation" if best.validation_examples else "on the training examples"
        beaten = (
            f"a linear probe beats it from {best.labels_to_beat_zero_shot} labelled example"
            f"{'s' if best.labels_to_beat_zero_shot != 1 else ''} per class"
            if best.labels_to_beat_zero_shot
            else "no linear probe on the examples per class you have beats it: recipes/zero_shot.py may be the better start"
        )
        lines.append(
            f"  strategy 0, zero-shot (label names, no training): {100 * best.zero_shot:.1f}% {where}; {beaten}"
        )
    lines.append(f"→ {advice.strategy}: {advice.reasons[1]}")
    options = advice.options
    if "learning_rate" in options:
        lines.append(
            f"  learning rate {options['learning_rate']:g}, head {options['head_learning_rate']:g}, {options['num_train_epochs']} epochs (best epoch on validation kept)"
        )
    else:
        lines.append("  a logistic-regression head fitted to convergence, its L2 strength chosen on validation")
    lines.append(f"  measured in {sum(m.seconds for m in ranking):.0f} s; run it with:")
    lines.append(f"  {command}")
    return "\n".join(lines)
