"""A new head fitted on cached features, on the training device, in seconds instead of thousands of Trainer steps.

`lbfgs` (linear heads): an L2-regularised multinomial logistic regression fitted to convergence by full-batch
L-BFGS along a path of L2 strengths (strong to weak, each warm-started from the last), on features centred and
scaled two ways (per feature, and by one scale for all); the pair with the best validation accuracy is kept (or, for
a head that fine-tuning starts from, the strongest L2 within one standard error of it: CHOICES) and folded back into
the head, so the saved model takes raw features. This is the linear-probe protocol of
Kornblith et al. 2019 ("Do Better ImageNet Models Transfer Better?") and Radford et al. 2021 (CLIP).
`adamw` (any head, the MLP too): the run's learning rate, epochs, batch size, weight decay, schedule and
gradient clipping, on device-resident features, validated every epoch, the best epoch kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import torch
from torch import nn

from ..errors import TransferError

SOLVERS = ("auto", "lbfgs", "adamw")
L2_PATH = tuple(10.0 ** (p / 2) for p in range(3, -11, -1))  # 31.6 ... 1e-5, strong to weak
SCALINGS = ("one scale", "per feature")
ONE_THREAD_BELOW = 2**20  # feature values: a fit this small is hundreds of tiny products, faster on one CPU thread


@contextlib.contextmanager
def cpu_threads_for(features: torch.Tensor):
    """One CPU thread for a small fit: splitting a 16 x 384 product across cores costs more than it saves (a 5-fold
    cross-validated fit on 16 examples took 1.1 s on one thread against 5.2 s on two, on a 2-core machine)."""
    threads = torch.get_num_threads()
    small = features.device.type == "cpu" and features.numel() < ONE_THREAD_BELOW and threads > 1
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(threads)


@dataclasses.dataclass
class HeadFitArguments:
    head_solver: str = dataclasses.field(
        default="auto",
        metadata={
            "help": "how the head is fitted on cached features: lbfgs (logistic regression, L2 chosen on validation; linear heads), "
            "adamw (gradient steps with the run's learning rate, epochs and schedule), auto = lbfgs for a linear head, adamw for the MLP"
        },
    )
    head_l2: float | None = dataclasses.field(
        default=None, metadata={"help": "L2 strength for --head_solver lbfgs (default: chosen on validation)"}
    )


# Options of gradient training that a logistic regression fitted to convergence has no use for.
IGNORED_BY_LBFGS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "warmup_steps",
    "lr_scheduler_type",
    "max_grad_norm",
    "head_dropout",
    "optim",
    "load_best_model_at_end",
)


def unused_options_notice(solver: str, args) -> str | None:
    """One line naming the options the user set (RecipeArgs) that this solver does not use, and what to pass instead."""
    explicit, notes = args.explicit, []
    if solver == "lbfgs" and (ignored := [f"--{k}" for k in IGNORED_BY_LBFGS if k in explicit]):
        notes.append(
            f"{', '.join(ignored)}: not used by --head_solver lbfgs (a logistic regression fitted to convergence); "
            "pass --head_solver adamw to train the head with them"
        )
    if solver == "adamw" and args.option(HeadFitArguments).head_l2 is not None:
        notes.append(
            "--head_l2: not used by --head_solver adamw (its L2 is --weight_decay); pass --head_solver lbfgs with a linear head to use it"
        )
    if "metric_for_best_model" in explicit and args.training.metric_for_best_model not in (
        "accuracy",
        "eval_accuracy",
    ):
        notes.append("--metric_for_best_model: the head is chosen by validation accuracy on cached features")
    if "resume_from_checkpoint" in explicit:
        notes.append(
            "--resume_from_checkpoint: nothing to resume, the head is fitted again on the cached features in seconds"
        )
    return "; ".join(notes) or None


IDENTITY_AT_INFERENCE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Flatten, nn.Identity)


def single_linear(head: nn.Module) -> nn.Linear | None:
    """The head's Linear layer when the head is a linear map of its input: that layer alone, or beside modules that
    are the identity at inference (Dropout, Flatten). A norm (LeViT's BatchNorm1d, torchvision ConvNeXt's
    LayerNorm2d), an activation or a second layer would sit between the features and a logistic regression fitted
    to them, so such a head is not fitted that way (None)."""
    leaves = [m for m in head.modules() if not any(True for _ in m.children())]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    if len(linears) != 1 or not all(isinstance(m, (nn.Linear, *IDENTITY_AT_INFERENCE)) for m in leaves):
        return None
    return linears[0]


def resolve_solver(solver: str, head: nn.Module) -> str:
    if solver not in SOLVERS:
        raise TransferError(f"--head_solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    if solver == "lbfgs" and single_linear(head) is None:
        raise TransferError(
            "--head_solver lbfgs fits a linear head: use --head linear, or --head_solver adamw for the MLP head"
        )
    if solver == "auto":
        return "lbfgs" if single_linear(head) is not None else "adamw"
    return solver


def cached_head_phase(
    head_phase: str,
    model: nn.Module,
    choices: tuple[str, ...] = ("steps", "cached"),
    otherwise: str = "the head-only phase trains through Trainer steps",
) -> bool:
    """Whether the new head can be fitted first as a logistic regression on cached features (LP-FT's linear probe):
    `head_phase` is "cached" or "label_prior" and the head is one Linear layer (DistilBERT's and ModernBERT's are two
    modules, RoBERTa's two layers: they start random). `otherwise` says what a recipe does instead."""
    from ..adapters.targets import head_modules

    if head_phase not in choices:
        raise TransferError(f"--head_phase {head_phase!r}: choose one of {', '.join(choices)}")
    if head_phase not in ("cached", "label_prior"):  # label_prior: LP-FT's fit, pulled toward the zero-shot head
        return False
    heads = head_modules(model)
    if len(heads) != 1 or single_linear(model.get_submodule(heads[0])) is None:
        print(
            f"--head_phase {head_phase} fits a linear head, and the new head of this {type(model).__name__} ({', '.join(heads)}) is not one "
            f"Linear layer: {otherwise}"
        )
        return False
    return True


@dataclasses.dataclass
class HeadFit:
    results: dict
    log_history: list[dict]


def fit_head(
    head: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    solver: str,
    training_args,
    l2: float | None = None,
    choice: str = "best",
    prior: torch.Tensor | None = None,
) -> HeadFit:
    """Fit `head` in place on (features, labels) pairs; returns results for all_results.json and a log for the curves.
    `choice`: how lbfgs picks its L2 strength (CHOICES). Without a validation split, lbfgs chooses by cross-validation
    on train (defaults.HEAD_L2_FOLDS folds) and adamw keeps its last epoch. `prior` (lbfgs): a weight the L2 pulls
    toward instead of zero (`fit_logistic_regression`)."""
    device = training_args.device
    train = tuple(t.to(device) for t in train)
    validation = tuple(t.to(device) for t in validation) if validation is not None else None
    start = time.perf_counter()
    with cpu_threads_for(train[0]):
        fit = _fit(
            head, train, validation, solver=solver, training_args=training_args, l2=l2, choice=choice, prior=prior
        )
    fit.results.update(head_solver=solver, train_runtime=round(time.perf_counter() - start, 3))
    return fit


def _fit(head, train, validation, *, solver, training_args, l2, choice, prior) -> HeadFit:
    if solver == "lbfgs" and validation is None and l2 is None:
        return fit_cross_validated(single_linear(head), train, choice=choice, seed=training_args.seed, prior=prior)
    if solver == "lbfgs":
        return fit_logistic_regression(
            single_linear(head),
            train,
            validation if validation is not None else train,
            l2_path=(l2,) if l2 is not None else L2_PATH,
            choice=choice,
            scalings=SCALINGS if validation is not None else (SCALINGS[0],),
            prior=prior,
        )
    return fit_by_gradient_steps(head, train, validation, training_args)


def _accuracy_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return (logits.argmax(1) == labels).float().mean().item(), nn.functional.cross_entropy(logits, labels).item()


def _better(candidate: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Higher validation accuracy wins; on a tie, lower validation loss."""
    return best is None or candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] < best[1])


CHOICES = {
    "best": "best validation accuracy",
    "one_se": "the strongest L2 within one standard error of the best validation accuracy",
}


def choose_candidate(candidates: list[tuple[tuple[float, float], tuple]], choice: str, n_validation: int):
    """`candidates`: ((validation accuracy, loss), params) along the L2 path, strong to weak, per scaling.

    best: the highest accuracy, ties by lower loss. one_se: the strongest L2 whose accuracy is within one binomial
    standard error of the best (the one-standard-error rule, Hastie et al., The Elements of Statistical Learning, 7.10);
    between scalings at that L2, the lower loss."""
    if choice not in CHOICES:
        raise ValueError(f"choice {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "best":  # the first of exact ties, as _better keeps it
        return min(candidates, key=lambda c: (-c[0][0], c[0][1]))[1]
    top = max(score[0] for score, _ in candidates)
    floor = top - math.sqrt(top * (1 - top) / n_validation)
    eligible = [(params[1], score[1], params) for score, params in candidates if score[0] >= floor - 1e-9]
    return max(eligible, key=lambda c: (c[0], -c[1]))[2]


def fit_logistic_regression(
    linear: nn.Linear,
    train,
    validation,
    *,
    l2_path=L2_PATH,
    max_iter: int = 100,
    choice: str = "best",
    scalings: tuple[str, ...] = SCALINGS,
    prior: torch.Tensor | None = None,
) -> HeadFit:
    """Multinomial logistic regression, loss = mean cross-entropy + l2 * ||W||^2 on scaled features.

    `choice` picks among the fitted candidates (see CHOICES). `prior` (labels x features, raw features, e.g. the
    zero-shot head of the label names): W = a * prior + D with the L2 on D and the scale `a` >= 0 fitted, so a strong
    L2 keeps the prior's direction at the temperature the examples support (or drops it: a = 0), and a weak one fits
    the examples as without it."""
    x, y = train
    x = x.float().flatten(
        1
    )  # a head such as Sequential(Flatten, Linear) (transformers' ResNet) takes its pooled input as (N, C, 1, 1)
    validation = (validation[0].float().flatten(1), validation[1])
    if x.shape[1] != linear.in_features:
        raise TransferError(
            f"the new head's input has {x.shape[1]} values per example and its Linear layer takes {linear.in_features}: the head "
            "is more than a linear map, so it cannot be fitted as a logistic regression (feature extraction: --head_solver adamw; "
            "fine-tuning: --head_phase none, or steps for gradual unfreezing)"
        )
    classes = linear.out_features
    mean = x.mean(0)
    scales = {"one scale": x.std().clamp_min(1e-6).expand(x.shape[1]), "per feature": x.std(0).clamp_min(1e-6)}
    candidates, scores = [], []
    for scaling in scalings:
        scale = scales[scaling]
        xs, vs = (x - mean) / scale, (validation[0] - mean) / scale
        # W acts on scaled features: a raw-feature weight w is w * scale there
        pulled = None if prior is None else prior.T.to(x) * scale[:, None]
        weight = torch.zeros(x.shape[1], classes, device=x.device, requires_grad=True)  # D, away from the prior
        bias = torch.zeros(classes, device=x.device, requires_grad=True)
        # the prior's scale is softplus(r) >= 0, starting at 1: the label names' direction is kept or dropped, never
        # turned round (on a few examples whose names say nothing, a reversed zero-shot head fits them by chance)
        raw_scale = torch.full((), math.log(math.e - 1), device=x.device, requires_grad=prior is not None)

        def full_weight():  # the plain fit (no prior) is D alone: no extra product per evaluation
            return weight if pulled is None else nn.functional.softplus(raw_scale) * pulled + weight

        for l2 in l2_path:  # warm start: each strength begins from the previous (stronger) solution
            optimizer = torch.optim.LBFGS(
                [weight, bias, raw_scale] if prior is not None else [weight, bias],
                max_iter=max_iter,
                history_size=20,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-6,
                tolerance_change=1e-9,
            )

            def closure():
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(xs @ full_weight() + bias, y)
                loss = loss + l2 * weight.pow(2).sum()
                loss.backward()
                return loss

            optimizer.step(closure)
            with torch.no_grad():
                full = full_weight().detach()
                score = _accuracy_and_loss(vs @ full + bias, validation[1])
            scores.append(
                {"scaling": scaling, "l2": l2, "eval_accuracy": round(score[0], 4), "eval_loss": round(score[1], 4)}
                | ({"prior_scale": round(nn.functional.softplus(raw_scale).item(), 4)} if prior is not None else {})
            )
            candidates.append((score, (scaling, l2, full / scale[:, None], bias.detach().clone())))
    scaling, l2, raw_weight, bias = choose_candidate(candidates, choice, len(validation[1]))
    with torch.no_grad():  # logits = ((x - mean) / scale) W + b = x (W / scale) + (b - mean (W / scale))
        linear.weight.copy_(raw_weight.T.to(linear.weight))
        linear.bias.copy_((bias - mean @ raw_weight).to(linear.bias))
        train_loss = nn.functional.cross_entropy(linear(x), y).item()
    chosen = f"{len(scores)} candidates" if len(scores) > 1 else "the given --head_l2"
    results = {
        "head_l2": l2,
        "head_feature_scaling": scaling,
        "head_candidates": scores,
        "train_loss": train_loss,
        "kept_because": f"{CHOICES[choice]} of {chosen} (l2 {l2:g}, {scaling})",
    }
    if prior is not None:  # how far the examples scaled the prior (0: they found nothing in it)
        results["prior_scale"] = next(e for e in scores if e["l2"] == l2 and e["scaling"] == scaling)["prior_scale"]
    return HeadFit(results, [])


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """A fold number per example, each class spread evenly over the folds in a random order."""
    generator = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    for label in labels.unique():
        rows = torch.nonzero(labels.cpu() == label).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        fold[rows] = torch.arange(len(rows)) % folds
    return fold.to(labels.device)


def fit_cross_validated(
    linear: nn.Linear,
    train,
    *,
    choice: str = "best",
    seed: int = 0,
    folds: int | None = None,
    prior: torch.Tensor | None = None,
) -> HeadFit:
    """No validation split: each (scaling, L2) candidate scored by stratified k-fold cross-validation on train
    (accuracy and loss summed over the held-out folds), the chosen one then fitted on all of train."""
    from .. import defaults

    folds = folds or defaults.HEAD_L2_FOLDS
    x, y = train
    fold = stratified_folds(y, folds, seed)
    totals: dict[tuple[str, float], list[float]] = {}
    for k in range(folds):
        held = fold == k
        if not held.any() or held.all():
            continue
        scratch = nn.Linear(linear.in_features, linear.out_features).to(x.device)
        fit = fit_logistic_regression(scratch, (x[~held], y[~held]), (x[held], y[held]), prior=prior)
        for entry in fit.results["head_candidates"]:
            total = totals.setdefault((entry["scaling"], entry["l2"]), [0.0, 0.0])
            total[0] += entry["eval_accuracy"] * int(held.sum())
            total[1] += entry["eval_loss"] * int(held.sum())
    # totals keeps the fit's own order (scaling, then L2 strong to weak), the order choose_candidate expects
    candidates = [((acc / len(y), loss / len(y)), key) for key, (acc, loss) in totals.items()]
    scaling, l2 = choose_candidate(candidates, choice, len(y))
    fit = fit_logistic_regression(linear, train, train, l2_path=(l2,), scalings=(scaling,), prior=prior)
    fit.results.update(
        head_candidates=[
            {"scaling": key[0], "l2": key[1], "cv_accuracy": round(score[0], 4), "cv_loss": round(score[1], 4)}
            for score, key in candidates
        ],
        kept_because=f"{CHOICES[choice]} in {folds}-fold cross-validation on the training examples (no validation "
        f"split) of {len(candidates)} candidates (l2 {l2:g}, {scaling})",
    )
    return fit


def fit_by_gradient_steps(head: nn.Module, train, validation, args) -> HeadFit:
    """AdamW on device-resident features with the run's schedule; the epoch with the best validation accuracy is kept."""
    from transformers import get_scheduler, set_seed

    set_seed(args.seed)
    x, y = train
    batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
    steps_per_epoch = math.ceil(len(y) / batch_size)
    total = (
        args.max_steps
        if getattr(args, "max_steps", -1) > 0
        else steps_per_epoch * max(1, math.ceil(args.num_train_epochs))
    )
    epochs = math.ceil(total / steps_per_epoch)
    keep_best = getattr(args, "load_best_model_at_end", True) and validation is not None
    warmup = args.warmup_steps if args.warmup_steps >= 1 else math.ceil(args.warmup_steps * total)
    decay = [p for n, p in head.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in head.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=int(warmup), num_training_steps=total
    )
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    head.to(x.device)
    best, best_state, best_epoch, log = None, None, 0, []
    for epoch in range(1, epochs + 1):
        head.train()
        order, losses = torch.randperm(len(y), generator=generator).to(x.device), []
        for start in range(0, min(len(y), (total - (epoch - 1) * steps_per_epoch) * batch_size), batch_size):
            rows = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(head(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.max_grad_norm and args.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(head.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        head.eval()
        log.append(
            {"epoch": float(epoch), "loss": sum(losses) / len(losses), "learning_rate": scheduler.get_last_lr()[0]}
        )
        score = None
        if validation is not None:
            with torch.no_grad():
                score = _accuracy_and_loss(head(validation[0]), validation[1])
            log.append({"epoch": float(epoch), "eval_loss": score[1], "eval_accuracy": score[0]})
        if _better(score, best) or not keep_best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return HeadFit(
        {
            "kept_epoch": float(best_epoch),
            "kept_because": "best validation accuracy" if keep_best else "last epoch",
            "epochs_trained": float(epochs),
            "train_loss": next(e["loss"] for e in reversed(log) if "loss" in e),
        },
        log,
    )
