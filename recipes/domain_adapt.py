"""Domain adaptation: a model trained on labelled source data made to work on a target domain whose labels are absent.

Methods (`--method`, combine with commas, e.g. `dann,pseudo_label`):
  pseudo_label  rounds of self-training on confident, class-balanced target predictions (Lee 2013; Zou et al. 2018)
  dann          a domain classifier behind a gradient-reversal layer, its weight ramped as in Ganin et al. 2016
  coral / mmd   align the pooled features' covariances (Sun & Saenko 2016) / kernel means (Long et al. 2015)
  augment       strong colour / contrast / polarity / framing augmentation of the source images
With --peft_method lora (or another adapter), the adapter and the head are what trains, in both models.
The same model is also trained on the source alone with the same seed and epochs, and both are scored on the
target test set (`--target_test_file/dir`, else the target set's own labels when it has them) and on the
source test set: adaptation that wrecks the source task shows.

    python recipes/domain_adapt.py --model_name_or_path bundled:efficientnet-lite0 --dataset_name bundled:mnist \
        --target_dir mnist_m/train --target_test_dir mnist_m/test --method dann --image_size 64
    python recipes/domain_adapt.py --train_file reviews.csv --target_file tweets.csv --method pseudo_label

    from recipes.domain_adapt import run; metrics = run(method="coral", target_file="target.csv")
"""

import copy
import tempfile

import numpy as np
import torch

from hf_transfer import defaults
from hf_transfer.adapters import attach as adapters
from hf_transfer.cli import recipe_main
from hf_transfer.data.loading import read_unlabeled
from hf_transfer.data.preprocessing import augmented_training_set
from hf_transfer.domain.adaptation import (
    ALIGNMENT,
    AdaptationModel,
    DomainAdaptationArguments,
    PairedCollator,
    PairedDataset,
    TrainingProgress,
    alignment_weights,
    check_options,
    class_probabilities,
    parse_methods,
    target_label_ids,
    with_prefix,
)
from hf_transfer.domain.pseudo_labels import round_report, select
from hf_transfer.engine.finetuning import (
    FineTuningArguments,
    apply_batchnorm_policy,
    body_and_head_groups,
    group_learning_rates,
)
from hf_transfer.errors import TransferError
from hf_transfer.features.extraction import ExtractionSettings
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args

DEFAULTS = {
    "num_train_epochs": 5,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.01,
    "output_dir": "outputs/domain_adapt",
}


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Adapt to the target domain; returns the results also written to all_results.json."""
    args = parse_recipe_args(
        DEFAULTS,
        argv if argv is not None else [],
        overrides,
        extra_dataclasses=(DomainAdaptationArguments, FineTuningArguments, adapters.AdapterArguments),
    )
    options = args.option(DomainAdaptationArguments)
    check_options(options)
    job = training.prepare(
        args, native=False, learning_rates=defaults.BODY_LEARNING_RATES
    )  # TransferClassifier: pooled features to align
    methods = parse_methods(options.method, job.data.modality)
    target, target_test = read_target(job, options)
    source_alone = job.datasets["train"]  # the baseline's training set: never augmented toward the target
    if "augment" in methods:
        job.datasets["train"] = augmented_training_set(
            job.data.splits["train"],
            job.image_config.strong_transform(),
            job.image_config.size,
            job.args.data.cache_images,
            job.image_budget,
        )
    target_train = training.dataset_for(job, target, "train")
    target_fixed = training.dataset_for(job, target, "target")
    scored = {"target_test": training.dataset_for(job, target_test, "target_test")} if target_test is not None else {}

    trainable = trainable_part(args)
    source_only = None
    if methods != ["pseudo_label"]:  # with pseudo_label alone, its first round is the source-only model
        source_only = train_source_only(job, trainable(copy.deepcopy(job.model)), source_alone, scored)
    classifier = trainable(job.model)  # job.model stays the base: what an adapter run records it was trained on
    apply_batchnorm_policy(classifier, args.option(FineTuningArguments))
    model = AdaptationModel(classifier, methods, alignment_weights(methods, options.alignment_weight))
    aligning = any(m in ALIGNMENT for m in methods)

    def train(labelled):
        trainer = make_trainer(job, model, PairedDataset(labelled, target_train) if aligning else labelled)
        results = training.train_and_evaluate(job, trainer)
        results.update(score(trainer, scored))
        return trainer, results

    trainer, results = train(job.datasets["train"])
    if source_only is None:
        source_only = {
            k: v for k, v in results.items() if k in ("test_accuracy", "eval_accuracy", "target_test_accuracy")
        }
    rounds, target_truth = [], target_label_ids(target, job.data.label_names, "target")
    for number in range(1, options.pseudo_label_rounds + 1 if "pseudo_label" in methods else 1):
        probabilities = class_probabilities(
            classifier, target_fixed, job.collator, ExtractionSettings.of_run(args.training), args.training.device
        )
        rows, labels = select(probabilities, options.pseudo_label_threshold, options.class_balance)
        report = round_report(number, rows, labels, len(target), len(job.data.label_names), target_truth)
        if len(rows) == 0:
            print(
                f"pseudo-label round {number}: no target prediction reaches {options.pseudo_label_threshold:g}: stopping "
                "(lower --pseudo_label_threshold to keep more)"
            )
            rounds.append(report)
            break
        pseudo = target.iloc[rows].copy()
        pseudo["label"] = labels
        trainer, results = train(
            torch.utils.data.ConcatDataset([job.datasets["train"], training.dataset_for(job, pseudo, "train")])
        )
        report["target_test_accuracy_after"] = results.get("target_test_accuracy")
        rounds.append(report)
        print(
            f"pseudo-label round {number}: kept {report['kept']} of {report['of']} target examples"
            + (
                f", {100 * report['pseudo_label_accuracy']:.1f}% of them right"
                if "pseudo_label_accuracy" in report
                else ""
            )
        )
    results.update(
        methods=methods,
        alignment_weights=model.weights,
        target_samples=len(target),
        target_test_samples=0 if target_test is None else len(target_test),
        pseudo_label_rounds=rounds or None,
        **{f"source_only_{k}": v for k, v in source_only.items()},
    )
    results = training.finish(job, trainer, results, recipe="domain_adapt", model=classifier)
    if trainer.is_world_process_zero():
        print(summary(results))
    return results


def trainable_part(args):
    """With --peft_method (e.g. lora), an adapter and the head train instead of every weight, in both models."""
    if "peft_method" not in args.explicit:
        return lambda classifier: classifier
    options = args.option(adapters.AdapterArguments)
    if "learning_rate" not in args.explicit:
        args.training.learning_rate = defaults.ADAPTER_LEARNING_RATES.get(
            options.peft_method, args.training.learning_rate
        )
    return lambda classifier: adapters.attach(classifier, options)


def read_target(job, options):
    """(unlabelled target frame, labelled target test frame or None); the target's labels must be the source's."""
    args = job.args
    test = read_unlabeled(
        args.data,
        file=options.target_test_file,
        folder=options.target_test_dir,
        modality=job.data.modality,
        option="target_test",
    )
    if options.target_dataset_name:
        target, dataset_test = target_from_dataset(job, options)
        if test is None:
            return target, dataset_test
    else:
        target = read_unlabeled(
            args.data,
            file=options.target_file,
            folder=options.target_dir,
            modality=job.data.modality,
            option="target",
            max_samples=options.max_target_samples,
            seed=args.training.seed,
        )
    if target is None:
        raise TransferError(
            "--target_file or --target_dir is required: the unlabelled inputs of the domain to adapt to"
        )
    if test is None and target_label_ids(target, job.data.label_names, target.attrs["source"]) is not None:
        test = target
    elif test is None:
        print(
            "the target set has no labels and no --target_test_file / --target_test_dir is given: target accuracy is not reported"
        )
        return target, None
    labels = target_label_ids(test, job.data.label_names, test.attrs["source"])
    if labels is None:
        raise TransferError(
            f"{test.attrs['source']} (target test set) has no labels: give a label column, or class subfolders"
        )
    test = test.copy()
    test["label"] = labels
    return target, test


def target_from_dataset(job, options):
    """A named data set as the target: its train split without labels, its test split (else validation) to score on
    unless --target_test_file / --target_test_dir name another."""
    from hf_transfer.data.loading import UNLABELED, DataArguments, load_labelled_data, to_frame

    if options.target_file or options.target_dir:
        raise TransferError(
            "--target_dataset_name and --target_file / --target_dir both name the target: give only one"
        )
    data = load_labelled_data(
        DataArguments(dataset_name=options.target_dataset_name, max_test_samples=job.args.data.max_test_samples),
        seed=job.args.training.seed,
        modality=job.data.modality,
    )
    names = np.array(data.label_names)
    # the recipe holds its target set as a frame, as it holds target files read by hand (docs/known_limits.md)
    target = to_frame(data.splits["train"]).assign(known_label=lambda f: names[f["label"].to_numpy()], label=UNLABELED)
    if options.max_target_samples and len(target) > options.max_target_samples:
        target = target.sample(n=options.max_target_samples, random_state=job.args.training.seed).reset_index(
            drop=True
        )
    test = data.splits["test"] if "test" in data.splits else data.splits.get("validation")
    test = to_frame(test) if test is not None else None
    if test is None:
        raise TransferError(
            f"{options.target_dataset_name} has no labelled test or validation split to score the adaptation on: give one"
        )
    test = test.assign(
        label=target_label_ids(
            test.assign(known_label=names[test["label"].to_numpy()]), job.data.label_names, options.target_dataset_name
        )
    )
    target.attrs["source"] = test.attrs["source"] = options.target_dataset_name
    return target, test


def make_trainer(job, model: AdaptationModel, train_dataset, training_args=None):
    fine_tuning = job.args.option(FineTuningArguments)
    groups = body_and_head_groups(model.classifier, fine_tuning, job.args.explicit)
    lrs = (
        group_learning_rates(groups, job.args.training.learning_rate, fine_tuning, job.data.modality)
        if groups
        else None
    )
    groups = with_prefix(groups, "classifier.", model.domain_classifier, "domain_classifier") if groups else None
    return training.make_trainer(
        job,
        model=model,
        datasets={**job.datasets, "train": train_dataset},
        collator=PairedCollator(job.collator),
        callbacks=[TrainingProgress(model)],
        layer_groups=groups,
        group_lrs=lrs,
        training_args=training_args,
    )


def train_source_only(job, classifier, source_train, scored: dict) -> dict:
    """The same classifier, seed and epochs on the source alone (checkpoints in a temporary folder): the baseline."""
    apply_batchnorm_policy(classifier, job.args.option(FineTuningArguments))
    with tempfile.TemporaryDirectory() as folder:
        training_args = copy.deepcopy(job.args.training)
        training_args.output_dir = folder
        trainer = make_trainer(job, AdaptationModel(classifier, [], {}), source_train, training_args)
        trainer.train()
        splits = {
            **({"eval": job.datasets["validation"]} if "validation" in job.datasets else {}),
            **({"test": job.datasets["test"]} if "test" in job.datasets else {}),
            **scored,
        }
        return {k: v for k, v in score(trainer, splits).items() if k.endswith("accuracy")}


def score(trainer, datasets: dict) -> dict:
    results = {}
    for prefix, dataset in datasets.items():
        metrics = trainer.predict(dataset, metric_key_prefix=prefix).metrics
        results.update({k: v for k, v in metrics.items() if k in (f"{prefix}_accuracy", f"{prefix}_f1_macro")})
    return results


def summary(results: dict) -> str:
    def pct(key):
        return f"{100 * results[key]:.2f}%" if isinstance(results.get(key), (int, float)) else "n/a"

    return (
        f"target test acc  : {pct('target_test_accuracy')} adapted ({'+'.join(results['methods'])}) vs "
        f"{pct('source_only_target_test_accuracy')} source only\n"
        f"source test acc  : {pct('test_accuracy')} adapted vs {pct('source_only_test_accuracy')} source only"
    )


if __name__ == "__main__":
    recipe_main(run)
