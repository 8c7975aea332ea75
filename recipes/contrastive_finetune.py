"""Contrastive fine-tuning: the body learns which examples share a class, then a linear head is fitted on its features.

SetFit's idea (Tunstall et al. 2022) through `Trainer`: the pretrained body (or, with `--peft_method lora`, an adapter
on it) trains on the features the classification head sees, with an in-batch loss over every pair of a class-balanced
batch (`--contrastive_loss supcon`, Khosla et al. 2020; `cosine_pairs`, SetFit's own objective; `triplet`,
batch-hard), instead of sampled pairs. Then the new linear head is fitted as a logistic regression by L-BFGS on the
trained features (its L2 chosen on validation, or fixed by measurement when the run holds no validation split out).
For text the features are pooled as the checkpoint was trained (mean pooling for sentence-transformers checkpoints
such as the bundled MiniLM); images: any image checkpoint the other recipes take. The run is saved like every other:
`pipeline()`, `hf-transfer predict / evaluate / push`, distillation.

    python recipes/contrastive_finetune.py --max_train_samples_per_class 16     # bundled MiniLM, Rotten Tomatoes
    python recipes/contrastive_finetune.py --train_file train.csv --test_file test.csv
    python recipes/contrastive_finetune.py --peft_method lora                     # the adapter learns the objective

    from recipes.contrastive_finetune import run; metrics = run(max_train_samples_per_class=16)
"""

import time

from hf_transfer import defaults
from hf_transfer.adapters import attach as adapters
from hf_transfer.cli import recipe_main
from hf_transfer.contrastive.trainer import (
    ContrastiveArguments,
    ContrastiveTrainer,
    epochs_for_min_steps,
    phase_arguments,
)
from hf_transfer.errors import TransferError
from hf_transfer.features.extraction import new_head
from hf_transfer.features.head_fitting import single_linear
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args

DEFAULTS = {
    "num_train_epochs": defaults.CONTRASTIVE_EPOCHS,
    "per_device_train_batch_size": defaults.CONTRASTIVE_BATCH_SIZE,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "peft_method": "none",
    "output_dir": "outputs/contrastive_finetune",
}


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Contrastive training of the body, then a fitted head; returns the results also written to all_results.json."""
    args = parse_recipe_args(
        DEFAULTS,
        argv if argv is not None else [],
        overrides,
        extra_dataclasses=(ContrastiveArguments, adapters.AdapterArguments),
    )
    options, adapter = args.option(ContrastiveArguments), args.option(adapters.AdapterArguments)
    options.check(args)
    if adapter.peft_method not in ("none", *defaults.ADAPTER_LEARNING_RATES):
        raise TransferError(
            f"--peft_method {adapter.peft_method!r}: none (the whole body trains) or one of {', '.join(defaults.ADAPTER_LEARNING_RATES)}"
        )
    learning_rates = defaults.CONTRASTIVE_LEARNING_RATES
    if adapter.peft_method != "none":
        learning_rates = dict.fromkeys(learning_rates, defaults.ADAPTER_LEARNING_RATES.get(adapter.peft_method))
    job = training.prepare(args, native=False, learning_rates=learning_rates)
    epochs = epochs_for_min_steps(options, args, len(job.datasets["train"]))
    if epochs != args.training.num_train_epochs:
        print(
            f"contrastive phase: {epochs:g} epochs, for at least --contrastive_min_steps {options.contrastive_min_steps} optimizer steps"
        )
        args.training.num_train_epochs = epochs
    if single_linear(new_head(job.model)) is None:
        raise TransferError("contrastive fine-tuning fits a linear head on the trained features: use --head linear")
    model = job.model
    if adapter.peft_method != "none":
        model = adapters.attach(model, adapter, gradient_checkpointing=args.training.activation_checkpointing)
        args.resolved.update(adapters.describe(model))
        print(
            f"{adapter.peft_method} on {', '.join(args.resolved['target_modules'])[:200]}: {adapters.trainable_report(model)}"
        )
    trainer = training.make_trainer(
        job,
        model=model,
        trainer_class=ContrastiveTrainer,
        training_args=phase_arguments(args.training),
        train_labels=job.data.splits["train"]["label"],
        loss=options.contrastive_loss,
        temperature=options.temperature,
    )
    training.clear_previous_run(job, trainer)
    started = time.perf_counter()
    train_result = trainer.train()
    contrastive_seconds = round(time.perf_counter() - started, 3)
    has_validation = "validation" in job.datasets
    head = training.refit_head(
        job,
        model,
        l2=options.head_l2 if options.head_l2 is not None or has_validation else defaults.CONTRASTIVE_HEAD_L2,
    )
    results = {
        "train_loss": train_result.metrics.get("train_loss"),
        "contrastive_steps": trainer.state.global_step,
        "contrastive_seconds": contrastive_seconds,
        "train_runtime": round(contrastive_seconds + head["head_feature_seconds"] + head["head_fit_seconds"], 3),
        **head,
        **trainer.divergence_guard.summary(),
        **training.evaluate_splits(job, training.make_trainer(job, model=model)),
    }
    return training.finish(job, trainer, results, recipe="contrastive_finetune", model=model)


if __name__ == "__main__":
    recipe_main(run)
