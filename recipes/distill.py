"""Knowledge distillation: a small, fast student learns from a fine-tuned teacher's soft targets (Hinton et al. 2015).

The teacher (`--teacher`) is a run of this toolkit (full model or adapter) or any classification checkpoint.
The student is cut from the teacher by keeping a subset of its blocks (`--student_layers 0,2,5` or
`--student_num_layers 3`; half of them, spread evenly, by default, as DistilBERT initialises its student),
embeddings and head copied; or any checkpoint named with `--model_name_or_path` (a new head; with
`--random_init`, e.g. a small timm CNN trained from scratch). Loss: alpha * T^2 * KL + (1 - alpha) * cross-entropy
(`--temperature` 4, `--alpha` 0.7; `--alpha 0` is the same student on hard labels alone). Extra inputs without
labels (`--unlabeled_file` / `--unlabeled_dir`) are distilled on the teacher's soft targets alone.
Reports the teacher's and the student's accuracy on the same validation and test sets, both parameter counts,
and the inference speed-up measured in the same run.

    python recipes/full_finetune.py --output_dir outputs/teacher      # a MiniLM teacher on Rotten Tomatoes
    python recipes/distill.py --teacher outputs/teacher --student_num_layers 3
    python recipes/distill.py --teacher outputs/teacher --unlabeled_file more_reviews.csv --alpha 0.9

    from recipes.distill import run; metrics = run(teacher="outputs/teacher", student_layers="0,5")
"""

import torch

from hf_transfer import defaults
from hf_transfer.cli import recipe_main
from hf_transfer.data.loading import read_unlabeled
from hf_transfer.distill.distillation import (
    DistillationArguments,
    DistillationTrainer,
    TeacherLogitsCollator,
    WithTeacherLogits,
    check_options,
    label_order,
    load_teacher,
    reorder_outputs,
    teacher_logits,
)
from hf_transfer.distill.report import speed_comparison, summary_lines, teacher_scores
from hf_transfer.distill.student import default_layers, parse_layers, student_from_teacher, transformer_blocks
from hf_transfer.engine.finetuning import (
    FineTuningArguments,
    apply_batchnorm_policy,
    body_and_head_groups,
    group_learning_rates,
)
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args

DEFAULTS = {
    "num_train_epochs": defaults.FINETUNE_EPOCHS,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "output_dir": "outputs/distill",
}


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Distil the teacher into the student; returns the results also written to all_results.json."""
    args = parse_recipe_args(
        DEFAULTS,
        argv if argv is not None else [],
        overrides,
        extra_dataclasses=(DistillationArguments, FineTuningArguments),
    )
    options, fine_tuning = args.option(DistillationArguments), args.option(FineTuningArguments)
    check_options(options)
    teacher = load_teacher(options.teacher)
    cut_from_teacher = "model_name_or_path" not in args.explicit
    if cut_from_teacher:
        teacher.base_model_arguments(args.model)
        network = teacher.merged()
        num_blocks = len(transformer_blocks(network)[2])
        layers = (
            parse_layers(options.student_layers, num_blocks)
            if options.student_layers
            else default_layers(num_blocks, options.student_num_layers)
        )
    job = training.prepare(args, learning_rates=defaults.BODY_LEARNING_RATES)
    if cut_from_teacher and "head_learning_rate" not in args.explicit:  # the head is the teacher's, already trained
        fine_tuning.head_learning_rate = args.training.learning_rate
    order = label_order(teacher, job.data.label_names)
    if cut_from_teacher:
        job.model = student_from_teacher(network, layers)
        if order != sorted(order):
            reorder_outputs(job.model, order, job.data.label_names)
        print(
            f"student: blocks {','.join(map(str, layers))} of the teacher's {num_blocks}, embeddings and head copied"
        )
    unlabeled = read_unlabeled(
        args.data,
        file=options.unlabeled_file,
        folder=options.unlabeled_dir,
        modality=job.data.modality,
        option="unlabeled",
        max_samples=options.max_unlabeled_samples,
        seed=args.training.seed,
    )
    if unlabeled is not None and options.alpha == 0:
        print("--alpha 0 trains on hard labels alone: the unlabelled examples carry no loss and are not used")
        unlabeled = None
    train = job.datasets["train"]
    if unlabeled is not None:
        train = torch.utils.data.ConcatDataset([train, training.dataset_for(job, unlabeled)])
    live_teacher = None
    if args.data.augment and options.alpha > 0:  # inputs change every epoch: the teacher sees each augmented batch
        live_teacher = teacher.require_same_inputs(cut_from_teacher).model.to(args.training.device)
    elif options.alpha > 0:
        frames = [job.data.splits["train"]] + ([unlabeled] if unlabeled is not None else [])
        train = WithTeacherLogits(
            train,
            torch.cat([teacher_logits(teacher, f, order, args.training.per_device_eval_batch_size) for f in frames]),
        )

    apply_batchnorm_policy(job.model, fine_tuning, random_init=args.model.random_init)
    groups = body_and_head_groups(job.model, fine_tuning, args.explicit)
    lrs = group_learning_rates(groups, args.training.learning_rate, fine_tuning, job.data.modality) if groups else None
    trainer = training.make_trainer(
        job,
        datasets={**job.datasets, "train": train},
        collator=TeacherLogitsCollator(job.collator),
        trainer_class=DistillationTrainer,
        layer_groups=groups,
        group_lrs=lrs,
        temperature=options.temperature,
        alpha=options.alpha,
        teacher=live_teacher,
        teacher_order=order,
    )
    results = training.train_and_evaluate(job, trainer)
    results.update(teacher_scores(teacher, job, order, args.training.per_device_eval_batch_size))
    results.update(speed_comparison(teacher, job, trainer))
    results.update(
        unlabeled_samples=0 if unlabeled is None else len(unlabeled),
        student_layers=layers if cut_from_teacher else None,
    )
    results = training.finish(job, trainer, results, recipe="distill")
    if trainer.is_world_process_zero():
        print(summary_lines(results))
    return results


if __name__ == "__main__":
    recipe_main(run)
