"""Feature extraction: the pretrained backbone frozen (BatchNorm statistics included), a new head trained.

The backbone's pooled features are computed once and kept on disk under a fingerprint of the weights, the
preprocessed inputs and the labels, so the head trains for many epochs in seconds and a second run (another seed,
another head) skips extraction; `--no_feature_cache` opts out. With `--augment` (features change every epoch)
the frozen backbone runs in every step.
Text features are pooled as the checkpoint was trained (mean pooling for sentence-transformers
checkpoints such as the bundled MiniLM); `--head linear|mlp`, `--head_hidden_size`, `--head_dropout`.

    python recipes/feature_extraction.py                  # bundled MiniLM on Rotten Tomatoes, 100 per class
    python recipes/feature_extraction.py --model_name_or_path bundled:efficientnet-lite0 \
        --dataset_name bundled:fashion_mnist --max_train_samples_per_class 100 --max_test_samples 1000

    from recipes.feature_extraction import run; metrics = run(head="mlp")
"""

from hf_transfer import training
from hf_transfer.cli import parse_recipe_args, recipe_main
from hf_transfer.feature_cache import FeatureCacheArguments, cache_options, cached_features
from hf_transfer.features import HeadOnly, collate_features
from hf_transfer.freezing import freeze

DEFAULTS = {
    "learning_rate": 1e-3,
    "num_train_epochs": 30,
    "warmup_steps": 0.05,
    "lr_scheduler_type": "cosine",
    "weight_decay": 0.01,
    "output_dir": "outputs/feature_extraction",
}


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Train a new head on the frozen backbone; returns the results also written to all_results.json."""
    args = parse_recipe_args(DEFAULTS, argv if argv is not None else [], overrides, extra_dataclasses=(FeatureCacheArguments,))
    job = training.prepare(args, native=False)
    freeze(job.model.backbone)
    if args.extra["cache_features"] and not args.data.augment:
        job.model.to(args.training.device)
        cached, status = cached_features(job.model, job.datasets, job.collator, args.training.per_device_eval_batch_size,
                                         **cache_options(args.extra))
        if "hit" in status.values():
            print(f"features from the cache for {', '.join(s for s, v in status.items() if v == 'hit')} (--no_feature_cache to extract again)")
        trainer = training.make_trainer(job, model=HeadOnly(job.model.head), datasets=cached, collator=collate_features)
        results = training.train_and_evaluate(job, trainer, datasets=cached)
        results["feature_cache"] = status
    else:
        trainer = training.make_trainer(job)
        results = training.train_and_evaluate(job, trainer)
    return training.finish(job, trainer, results, recipe="feature_extraction")


if __name__ == "__main__":
    recipe_main(run)
