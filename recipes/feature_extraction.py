"""Feature extraction: the pretrained backbone frozen (BatchNorm statistics included), a new head trained.

The backbone's pooled features are computed once, as the run computes (its DataLoader workers, `--bf16` /
`--fp16`), and kept on disk under a fingerprint of the weights, the precision, the preprocessed inputs and the
labels, so a second run (another seed, another head) skips extraction; `--no_feature_cache` opts out. The head
is then fitted on the device in seconds: a linear head as a logistic regression fitted to convergence, its L2
strength chosen on validation (`--head_solver lbfgs`, `--head_l2`); the MLP head by AdamW with the run's learning
rate, epochs and schedule (`--head_solver adamw`).
With `--augment` (features change every epoch) the frozen backbone runs in every Trainer step.
Text features are pooled as the checkpoint was trained (mean pooling for sentence-transformers
checkpoints such as the bundled MiniLM); `--head linear|mlp`, `--head_hidden_size`, `--head_dropout`.

    python recipes/feature_extraction.py                  # bundled MiniLM on Rotten Tomatoes, 100 per class
    python recipes/feature_extraction.py --model_name_or_path bundled:efficientnet-lite0 \
        --dataset_name bundled:fashion_mnist --max_train_samples_per_class 100 --max_test_samples 1000

    from recipes.feature_extraction import run; metrics = run(head="mlp")
"""

import dataclasses
import time

from hf_transfer import defaults
from hf_transfer.cli import recipe_main
from hf_transfer.features.cache import FeatureCacheArguments
from hf_transfer.features.extraction import HeadOnly, collate_features
from hf_transfer.features.head_fitting import HeadFitArguments, fit_head, resolve_solver, unused_options_notice
from hf_transfer.models.freezing import freeze
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args

DEFAULTS = {
    "learning_rate": defaults.FROZEN_HEAD_LEARNING_RATE,
    "num_train_epochs": defaults.FROZEN_HEAD_EPOCHS,
    "warmup_steps": 0.05,
    "lr_scheduler_type": "cosine",
    "weight_decay": 0.01,
    "output_dir": "outputs/feature_extraction",
}


@dataclasses.dataclass
class FrozenBackboneArguments:
    cache_features: bool = dataclasses.field(
        default=True, metadata={"help": "run the frozen backbone once (ignored with --augment)"}
    )


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Train a new head on the frozen backbone; returns the results also written to all_results.json."""
    args = parse_recipe_args(
        DEFAULTS,
        argv if argv is not None else [],
        overrides,
        extra_dataclasses=(FrozenBackboneArguments, FeatureCacheArguments, HeadFitArguments),
    )
    job = training.prepare(args, native=False)
    freeze(job.model.backbone)
    head_fitting = args.option(HeadFitArguments)
    if args.option(FrozenBackboneArguments).cache_features and not args.data.augment:
        solver = resolve_solver(head_fitting.head_solver, job.model.head)
        if notice := unused_options_notice(solver, args):
            print(notice)
        started = time.perf_counter()
        cached, status = training.head_features(job)
        feature_seconds = round(
            time.perf_counter() - started, 3
        )  # extraction (or reading the cache): most of a run's time
        trainer = training.make_trainer(
            job, model=HeadOnly(job.model.head), datasets=cached, collator=collate_features
        )
        training.clear_previous_run(job, trainer)
        fit = fit_head(
            job.model.head,
            cached["train"].tensors,
            cached["validation"].tensors if "validation" in cached else None,
            solver=solver,
            training_args=args.training,
            l2=head_fitting.head_l2,
        )
        trainer.state.log_history.extend(fit.log_history)  # the training curves of the card
        results = {
            **fit.results,
            **training.evaluate_splits(job, trainer, datasets=cached),
            "feature_cache": status,
            "feature_seconds": feature_seconds,
        }
    else:
        if given := [f"--{k}" for k in ("head_solver", "head_l2") if k in args.explicit]:
            print(
                f"{', '.join(given)}: not used without cached features (--augment, --cache_features false): the head trains through Trainer steps"
            )
        trainer = training.make_trainer(job)
        results = training.train_and_evaluate(job, trainer)
    return training.finish(job, trainer, results, recipe="feature_extraction")


if __name__ == "__main__":
    recipe_main(run)
