"""Parameter-efficient fine-tuning: LoRA, DoRA, LoHa, LoKr or IA3 (peft), or bottleneck adapters.

The base stays frozen (BatchNorm statistics included); only the adapter, at `--learning_rate`, and the new
classification head, at `--head_learning_rate`, train, and only they are
saved (`adapter_config.json` + `adapter_model.safetensors`, or `bottleneck_config.json` +
`bottleneck_model.safetensors`, with `base_model.json` saying how to rebuild the base). Targets default
to the architecture's attention projections (query/value; timm ViT qkv + MLP; CNNs: their ungrouped
convolutions) and are checked: a name that matches nothing is an error listing candidates.
Supports --gradient_checkpointing (adapters still get gradients), --bf16 / --fp16 through Accelerate,
`accelerate launch`, and --push_to_hub --hub_model_id user/name (token from `hf auth login` / HF_TOKEN).
`recipes/lora_bert.py` and `recipes/lora_vit.py` are this recipe with text and image defaults.

    python recipes/peft_finetune.py --peft_method lora --lora_r 16           # bundled MiniLM on Rotten Tomatoes
    python recipes/peft_finetune.py --peft_method bottleneck --adapter_reduction_factor 16
    python recipes/peft_finetune.py --peft_method ia3 --model_name_or_path bert-base-uncased --train_file train.csv

    from recipes.peft_finetune import run; metrics = run(peft_method="dora", lora_r=8)
"""

from hf_transfer import defaults
from hf_transfer.adapters import attach as adapters
from hf_transfer.assets import is_bundled
from hf_transfer.cli import recipe_main
from hf_transfer.engine.finetuning import (
    FineTuningArguments,
    apply_batchnorm_policy,
    body_and_head_groups,
    group_learning_rates,
)
from hf_transfer.errors import TransferError
from hf_transfer.features.label_descriptions import LabelDescriptionArguments
from hf_transfer.hub import hub_offline
from hf_transfer.models.frozen_precision import keep_frozen_base_in_compute_precision
from hf_transfer.models.loading import resolve_checkpoint
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import HEAD_PHASES, HeadStartArguments, parse_recipe_args

DEFAULTS = {
    "num_train_epochs": defaults.FINETUNE_EPOCHS,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "head_phase": defaults.ADAPTER_HEAD_PHASE,
    "output_dir": "outputs/peft_finetune",
}


def run_with_defaults(recipe_defaults: dict, recipe: str, argv: list[str] | None, overrides: dict) -> dict:
    """The shared body of every adapter recipe; `recipe_defaults` are the recipe's own."""
    args = parse_recipe_args(
        recipe_defaults,
        argv if argv is not None else [],
        overrides,
        extra_dataclasses=(
            FineTuningArguments,
            adapters.AdapterArguments,
            HeadStartArguments,
            LabelDescriptionArguments,
        ),
    )
    default_model = recipe_defaults.get("model_name_or_path")
    if default_model and "model_name_or_path" not in args.explicit and not is_bundled(default_model):
        try:
            resolve_checkpoint(args.model)
        except TransferError:
            why = (
                "the Hub is offline (HF_HUB_OFFLINE=1) and it is not cached"
                if hub_offline()
                else "it could not be loaded from the Hub"
            )
            raise TransferError(
                f"the default checkpoint {default_model} needs the Hub and {why}: "
                "pass --model_name_or_path (a local folder, or bundled:minilm-l6 / bundled:efficientnet-lite0)"
            ) from None
    if args.model.random_init:
        raise TransferError(
            "--random_init puts the adapter on a random base that is not saved, so the run could not be reloaded: "
            "use recipes/full_finetune.py --random_init for a no-transfer baseline"
        )
    options, fine_tuning = args.option(adapters.AdapterArguments), args.option(FineTuningArguments)
    if "learning_rate" not in args.explicit:
        args.training.learning_rate = defaults.ADAPTER_LEARNING_RATES.get(
            options.peft_method, args.training.learning_rate
        )
    head_phase = training.check_head_start(args, otherwise=defaults.ADAPTER_HEAD_START)
    job = training.prepare(args, streams=True)
    head_fit = training.start_head(
        job,
        head_phase,
        args.option(LabelDescriptionArguments),
        HEAD_PHASES,
        otherwise=defaults.ADAPTER_HEAD_START,
        few_shot=defaults.ADAPTER_FEW_SHOT_HEAD_START,
    )
    model = adapters.attach(job.model, options, gradient_checkpointing=args.training.activation_checkpointing)
    args.resolved["frozen_weights_dtype"] = keep_frozen_base_in_compute_precision(
        model, args.training, options.peft_method
    )
    apply_batchnorm_policy(model, fine_tuning)
    groups = body_and_head_groups(model, fine_tuning, args.explicit)
    lrs = group_learning_rates(groups, args.training.learning_rate, fine_tuning, job.data.modality) if groups else None
    args.resolved.update(adapters.describe(model))  # the resolved targets go into all_results.json and the card
    print(
        f"{options.peft_method} on {', '.join(args.resolved['target_modules'])[:200]}: {adapters.trainable_report(model)}"
    )
    trainer = training.make_trainer(
        job,
        model=model,
        callbacks=[adapters.AdapterGradientCheck(adapters.adapter_parameters(model))],
        layer_groups=groups,
        group_lrs=lrs,
    )
    results = training.train_and_evaluate(job, trainer)
    results["layer_groups"] = training.describe_groups(groups, lrs) if groups else None
    if head_fit:
        results["head_phase_fit"] = head_fit
    return training.finish(job, trainer, results, recipe=recipe, model=model)


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Train an adapter and the head; returns the results also written to all_results.json."""
    return run_with_defaults(DEFAULTS, "peft_finetune", argv, overrides)


if __name__ == "__main__":
    recipe_main(run)
