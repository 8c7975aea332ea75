"""Full fine-tuning: every layer trained, the new head at its own learning rate, warmup then linear decay.

The pretrained body trains at `--learning_rate` (text 5e-5, images 3e-4 unless given; `--lowest_learning_rate`
spreads it as a range down to the input side), the new head at `--head_learning_rate`. BatchNorm keeps its
pretrained running statistics (`--update_bn_statistics` re-estimates them). By default (`--head_phase auto`) the
new linear head is first fitted as a logistic regression on cached features of the pretrained body (LP-FT, Kumar
et al. 2022), or, for few-shot text, set to the zero-shot classifier of the label names; then every layer
fine-tunes from it; `--head_phase none` starts from a random head.
`--supcon_weight` adds a supervised contrastive loss on the head's input features to cross-entropy (Gunel et al. 2021).
Supports: text (any AutoModelForSequenceClassification checkpoint) and images (any
AutoModelForImageClassification checkpoint, timm models, bundled EfficientNet-Lite0); CSV / JSON /
Parquet files, image folders, Hub / save_to_disk / bundled data sets; few-shot subsets;
`--config file.yaml` plus command-line overrides; `accelerate launch`.

    python recipes/full_finetune.py                       # bundled MiniLM on Rotten Tomatoes, 100 per class
    python recipes/full_finetune.py --model_name_or_path bundled:efficientnet-lite0 \
        --dataset_name bundled:fashion_mnist --max_train_samples_per_class 100 --image_size 96

    from recipes.full_finetune import run; metrics = run(num_train_epochs=3)
"""

from hf_transfer import defaults
from hf_transfer.cli import recipe_main
from hf_transfer.contrastive.joint import SupConArguments, SupConFineTuningTrainer
from hf_transfer.engine.finetuning import (
    FineTuningArguments,
    apply_batchnorm_policy,
    body_and_head_groups,
    group_learning_rates,
)
from hf_transfer.features.cache import FeatureCacheArguments
from hf_transfer.features.label_descriptions import LabelDescriptionArguments
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import HEAD_PHASES, HeadStartArguments, parse_recipe_args

DEFAULTS = {
    "num_train_epochs": defaults.FINETUNE_EPOCHS,
    "warmup_steps": 0.1,  # a ratio of all steps (transformers 5)
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "output_dir": "outputs/full_finetune",
}


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Fine-tune every layer; returns the results also written to all_results.json."""
    args = parse_recipe_args(
        DEFAULTS,
        argv if argv is not None else [],
        overrides,
        extra_dataclasses=(
            FineTuningArguments,
            HeadStartArguments,
            FeatureCacheArguments,
            LabelDescriptionArguments,
            SupConArguments,
        ),
    )
    head_phase = training.check_head_start(args)
    supcon = args.option(SupConArguments)
    supcon.check(args)
    job = training.prepare(args, learning_rates=defaults.BODY_LEARNING_RATES, streams=True)
    fine_tuning = args.option(FineTuningArguments)
    apply_batchnorm_policy(job.model, fine_tuning, random_init=args.model.random_init)
    head_fit = training.start_head(
        job,
        head_phase,
        args.option(LabelDescriptionArguments),
        HEAD_PHASES,
        few_shot=defaults.FULL_FINETUNE_FEW_SHOT_HEAD_START,
    )
    groups = body_and_head_groups(job.model, fine_tuning, args.explicit)
    lrs = group_learning_rates(groups, args.training.learning_rate, fine_tuning, job.data.modality) if groups else None
    trainer = training.make_trainer(
        job,
        layer_groups=groups,
        group_lrs=lrs,
        trainer_class=SupConFineTuningTrainer,
        supcon_weight=supcon.supcon_weight,
        temperature=supcon.supcon_temperature,
    )
    results = training.train_and_evaluate(job, trainer)
    results["supcon_weight"] = supcon.supcon_weight
    results["layer_groups"] = training.describe_groups(groups, lrs) if groups else None
    if head_fit:
        results["head_phase_fit"] = head_fit
    return training.finish(job, trainer, results, recipe="full_finetune")


if __name__ == "__main__":
    recipe_main(run)
