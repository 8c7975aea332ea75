"""Gradual unfreezing with discriminative learning rates and frozen BatchNorm.

The model's layer groups (embeddings / stem, each block or stage, head) get absolute learning rates
falling by `--lr_factor` per group from the head's `--learning_rate` (or explicit `--group_lrs`).
Training starts with the head alone; every `--epochs_per_phase` one more group thaws from the output
end (or explicit `--phases`). Frozen groups get no gradients and their BatchNorm keeps its running
statistics (`--train_bn` trains BN's affine parameters anyway). `--keep_frozen_groups K` never thaws
the first K groups (ViT: patch embedding + K-1 blocks); `--reinit_groups K` re-initialises the last K
groups before the head (partial transfer). Resuming mid-schedule reproduces the uninterrupted run.

    python recipes/gradual_unfreeze.py                   # bundled MiniLM on Rotten Tomatoes, 100 per class
    accelerate launch recipes/gradual_unfreeze.py --model_name_or_path bundled:efficientnet-lite0 \
        --dataset_name bundled:fashion_mnist --max_train_samples_per_class 100 --image_size 128
    python recipes/gradual_unfreeze.py --config my_schedule.yaml   # phases: [{at_epoch: 0, unfreeze: [head]}, ...]

    from recipes.gradual_unfreeze import run; metrics = run(lr_factor=2.6)
"""

import dataclasses
import json

from hf_transfer import training
from hf_transfer.cli import parse_recipe_args, recipe_main, split_list
from hf_transfer.layer_groups import layer_groups
from hf_transfer.optim import discriminative_lrs
from hf_transfer.partial_transfer import reinitialize_groups
from hf_transfer.unfreezing import GradualUnfreezing, default_phases

DEFAULTS = {
    "learning_rate": 1e-3,  # the head's; the groups below it get less
    "num_train_epochs": 10,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "ddp_find_unused_parameters": True,  # frozen groups are unused parameters under DDP
    "output_dir": "outputs/gradual_unfreeze",
}


@dataclasses.dataclass
class ScheduleArguments:
    lr_factor: float = dataclasses.field(default=10.0, metadata={"help": "LR ratio between neighbouring groups (the seeds' 10: head 1e-3, last block 1e-4, ...; ULMFiT 2.6)"})
    group_lrs: str | None = dataclasses.field(default=None, metadata={"help": "explicit LRs, input to output, comma-separated"})
    layer_group_patterns: str | None = dataclasses.field(default=None, metadata={"help": "regexes, input to output, ';'-separated (default: ask the model)"})
    epochs_per_phase: float = dataclasses.field(default=1.0, metadata={"help": "epochs between thawing one more group"})
    phases: str | None = dataclasses.field(default=None, metadata={"help": "JSON list of {at_epoch|at_step, unfreeze, lr}"})
    rewarm_steps: int = dataclasses.field(default=0, metadata={"help": "re-warm a thawed group's LR over this many steps"})
    schedule: str | None = dataclasses.field(default=None, metadata={"help": "slanted_triangular (ULMFiT) instead of --lr_scheduler_type"})
    train_bn: bool = dataclasses.field(default=False, metadata={"help": "BatchNorm affine parameters train even in frozen groups"})
    keep_frozen_groups: int = dataclasses.field(default=0, metadata={"help": "the first K groups never thaw"})
    reinit_groups: int = dataclasses.field(default=0, metadata={"help": "re-initialise the last K groups before the head"})


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Gradual unfreezing + discriminative LRs; returns the results also written to all_results.json."""
    args = parse_recipe_args(DEFAULTS, argv if argv is not None else [], overrides, extra_dataclasses=(ScheduleArguments,))
    options = args.extra
    job = training.prepare(args)
    groups = layer_groups(job.model, split_list(options["layer_group_patterns"], ";"))
    if options["reinit_groups"]:
        reinitialize_groups(job.model, groups[-1 - options["reinit_groups"]:-1])
    explicit_lrs = split_list(options["group_lrs"])
    lrs = discriminative_lrs(len(groups), args.training.learning_rate, options["lr_factor"], [float(v) for v in explicit_lrs] if explicit_lrs else None)
    phases = options["phases"]
    phases = json.loads(phases) if isinstance(phases, str) else phases
    if phases is None:
        phases = [p for p in default_phases(len(groups), options["epochs_per_phase"]) if p.unfreeze[0] >= options["keep_frozen_groups"]]
    unfreezing = GradualUnfreezing(groups, phases, train_bn=options["train_bn"], rewarm_steps=options["rewarm_steps"])
    trainer = training.make_trainer(job, layer_groups=groups, group_lrs=lrs, unfreezing=unfreezing, schedule=options["schedule"])
    results = training.train_and_evaluate(job, trainer)
    results["layer_groups"] = [{"name": g.name, "lr": lr, "params": g.numel(), "thaws_at_step": s}
                               for g, lr, s in zip(groups, unfreezing.group_lrs(lrs), unfreezing.start_step)]
    return training.finish(job, trainer, results, recipe="gradual_unfreeze")


if __name__ == "__main__":
    recipe_main(run)
