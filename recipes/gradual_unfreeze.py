"""Gradual unfreezing with discriminative learning rates and frozen BatchNorm statistics.

The model's layer groups (embeddings / stem, each block or stage, head) get absolute learning rates: the
new head `--head_learning_rate`, the body `--learning_rate` — or, with `--lowest_learning_rate`, a range
from it at the input side up to `--learning_rate` at the top block (fastai's `slice(lo, hi)`); `--lr_factor F`
divides by F per group instead, `--group_lrs` sets every group's. Training starts with the head alone; every
`--epochs_per_phase` one more group thaws from the output end (or explicit `--phases`). Frozen groups get
no gradients; BatchNorm keeps its pretrained statistics in every phase (`--update_bn_statistics` lets
thawed groups re-estimate them; `--train_bn` trains BN's affine parameters in frozen groups too).
`--keep_frozen_groups K` never thaws the first K groups (ViT: patch embedding + K-1 blocks);
`--reinit_groups K` re-initialises the last K groups before the head (partial transfer). Resuming
mid-schedule reproduces the uninterrupted run. `--head_phase cached` (the default for images) runs the head-only
phase as a logistic regression fitted on cached features of the pretrained layers below the head (LP-FT, Kumar et
al. 2022), in seconds and to convergence; the top group then thaws with the head at step 0.

    python recipes/gradual_unfreeze.py                   # bundled MiniLM on Rotten Tomatoes, 100 per class
    accelerate launch recipes/gradual_unfreeze.py --model_name_or_path bundled:efficientnet-lite0 \
        --dataset_name bundled:fashion_mnist --max_train_samples_per_class 100 --image_size 128
    python recipes/gradual_unfreeze.py --config my_schedule.yaml   # phases: [{at_epoch: 0, unfreeze: [head]}, ...]

    from recipes.gradual_unfreeze import run; metrics = run(lr_factor=2.6)
"""

import dataclasses
import json

from hf_transfer import defaults
from hf_transfer.cli import recipe_main
from hf_transfer.engine.finetuning import FineTuningArguments, group_learning_rates
from hf_transfer.engine.unfreezing import GradualUnfreezing, default_phases
from hf_transfer.features.cache import FeatureCacheArguments
from hf_transfer.features.head_fitting import cached_head_phase
from hf_transfer.models.architectures import shared_blocks_note
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.models.partial_transfer import reinitialize_groups
from hf_transfer.options import split_list
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args

DEFAULTS = {
    "num_train_epochs": defaults.FINETUNE_EPOCHS,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "ddp_find_unused_parameters": True,  # frozen groups are unused parameters under DDP
    "output_dir": "outputs/gradual_unfreeze",
}


@dataclasses.dataclass
class ScheduleArguments:
    lr_factor: float | None = dataclasses.field(
        default=None,
        metadata={"help": "instead of a range: each group's LR is the one above's / F (e.g. 10, or ULMFiT's 2.6)"},
    )
    group_lrs: str | None = dataclasses.field(
        default=None, metadata={"help": "explicit LRs, input to output (head last), comma-separated"}
    )
    epochs_per_phase: float = dataclasses.field(
        default=1.0, metadata={"help": "epochs between thawing one more group"}
    )
    phases: str | None = dataclasses.field(
        default=None, metadata={"help": "JSON list of {at_epoch|at_step, unfreeze, lr}"}
    )
    rewarm_steps: int | None = dataclasses.field(
        default=defaults.GRADUAL_UNFREEZE_REWARM_STEPS,
        metadata={
            "help": "re-warm the LR of a group thawing mid-run over this many steps (default: the run's warm-up "
            "length; 0: it starts at the full LR)"
        },
    )
    schedule: str | None = dataclasses.field(
        default=None, metadata={"help": "slanted_triangular (ULMFiT) instead of --lr_scheduler_type"}
    )
    train_bn: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "BatchNorm affine parameters train even in frozen groups "
            "(the backward pass then reaches every group)"
        },
    )
    keep_frozen_groups: int = dataclasses.field(default=0, metadata={"help": "the first K groups never thaw"})
    reinit_groups: int = dataclasses.field(
        default=0, metadata={"help": "re-initialise the last K groups before the head"}
    )
    head_phase: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "cached: the head-only phase is a logistic regression fitted on cached features (LP-FT), then the top group thaws "
            "with the head at step 0; steps: the head trains alone through Trainer steps for --epochs_per_phase "
            "(default: cached for images, steps for text)"
        },
    )


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Gradual unfreezing + discriminative LRs; returns the results also written to all_results.json."""
    args = parse_recipe_args(
        DEFAULTS,
        argv if argv is not None else [],
        overrides,
        extra_dataclasses=(FineTuningArguments, ScheduleArguments, FeatureCacheArguments),
    )
    fine_tuning, schedule_options = args.option(FineTuningArguments), args.option(ScheduleArguments)
    job = training.prepare(args, learning_rates=defaults.GRADUAL_UNFREEZE_LEARNING_RATES)
    groups = layer_groups(job.model, split_list(fine_tuning.layer_group_patterns, ";"))
    if shared_blocks_note(job.model):
        print(shared_blocks_note(job.model))
    if schedule_options.reinit_groups:
        changed = reinitialize_groups(job.model, groups[-1 - schedule_options.reinit_groups : -1])
        print(
            f"partial transfer: re-initialised {changed:,} parameters in {', '.join(g.name for g in groups[-1 - schedule_options.reinit_groups : -1])}"
        )
    explicit_lrs = split_list(schedule_options.group_lrs)
    lrs = group_learning_rates(
        groups,
        args.training.learning_rate,
        fine_tuning,
        job.data.modality,
        factor=schedule_options.lr_factor,
        explicit=[float(v) for v in explicit_lrs] if explicit_lrs else None,
    )
    head_fitted = cached_head_phase(
        schedule_options.head_phase or defaults.GRADUAL_UNFREEZE_HEAD_PHASES[job.data.modality], job.model
    )
    head_fit = {}
    if head_fitted and not args.training.resume_from_checkpoint:  # resuming: the checkpoint holds the fitted head
        head_fit = training.fit_head_first(job, defaults.GRADUAL_UNFREEZE_HEAD_L2_CHOICE)
        if not schedule_options.phases:
            print("the top group thaws with the fitted head at step 0")
    phases = schedule_options.phases
    phases = json.loads(phases) if isinstance(phases, str) else phases
    if phases is None:
        phases = default_phases(
            len(groups),
            schedule_options.epochs_per_phase,
            head_fitted=head_fitted,
            keep_frozen=schedule_options.keep_frozen_groups,
        )
    unfreezing = GradualUnfreezing(
        groups,
        phases,
        train_bn=schedule_options.train_bn,
        rewarm_steps=schedule_options.rewarm_steps,
        update_bn_statistics=fine_tuning.update_bn_statistics,
    )
    trainer = training.make_trainer(
        job, layer_groups=groups, group_lrs=lrs, unfreezing=unfreezing, schedule=schedule_options.schedule
    )
    results = training.train_and_evaluate(job, trainer)
    results["layer_groups"] = training.describe_groups(groups, unfreezing.group_lrs(lrs), unfreezing.start_step)
    results["rewarm_steps"] = unfreezing.rewarm_length  # the default resolved to the run's warm-up length
    if head_fit:
        results["head_phase_fit"] = head_fit
    return training.finish(job, trainer, results, recipe="gradual_unfreeze")


if __name__ == "__main__":
    recipe_main(run)
