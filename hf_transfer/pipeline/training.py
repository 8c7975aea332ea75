"""The steps every recipe shares: prepare (validate everything, write nothing), train, evaluate, save.

All input is checked in `prepare` before a file is written, so bad input never leaves a
half-written output folder.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np
import torch
from transformers import set_seed

from .. import defaults, hub
from ..adapters import attach as adapters
from ..data.loading import LabelledData, load_labelled_data
from ..data.preprocessing import (
    ImageConfig,
    ImageMemoryBudget,
    build_datasets,
    image_config,
    load_processor,
    save_image_processor,
    timm_architecture,
)
from ..engine.console import calm, follow_log_level
from ..engine.throughput import TrainingThroughput, throughput_of
from ..engine.trainer import TransferTrainer
from ..errors import TransferError
from ..metrics import classification_report, confusion_matrix, make_compute_metrics
from ..models.freezing import count_parameters
from ..models.loading import Checkpoint, build_classifier, resolve_checkpoint
from ..runs import adapter_files, plots, saving
from ..runs.card import model_card
from ..runs.push import push_run
from .arguments import HEAD_PHASES, HeadStartArguments, RecipeArgs


@dataclasses.dataclass
class Job:
    args: RecipeArgs
    data: LabelledData
    checkpoint: Checkpoint
    model: torch.nn.Module
    processor: object
    image_config: ImageConfig | None
    datasets: dict
    collator: object
    hub_target: hub.HubTarget | None = None
    image_budget: ImageMemoryBudget = dataclasses.field(
        default_factory=ImageMemoryBudget
    )  # memory for kept images, shared by every set built

    @property
    def output_dir(self) -> pathlib.Path:
        return pathlib.Path(self.args.training.output_dir)


def prepare(
    args: RecipeArgs, *, native: bool | None = None, learning_rates: dict | None = None, streams: bool = False
) -> Job:
    """Load and check data and checkpoint, build the classifier and the datasets. Writes nothing. `streams`: the
    recipe can train on a streamed training split (else --streaming is refused)."""
    set_seed(args.training.seed)
    follow_log_level(args.training)
    saving.check_output_dir(
        pathlib.Path(args.training.output_dir),
        overwrite=args.output.overwrite_output_dir,
        resuming=bool(args.training.resume_from_checkpoint),
    )
    hub_target = hub.target_from_training_args(args.training)
    if hub_target is not None:
        hub.check_access(hub_target)  # a missing or refused token fails now, not after training
    if args.data.streaming:
        set_up_streaming(args, streams)
    checkpoint = resolve_checkpoint(args.model)
    with args.training.main_process_first(desc="reading the data"):  # other ranks then read the Arrow cache
        data = load_labelled_data(
            args.data,
            seed=args.training.seed if args.training.data_seed is None else args.training.data_seed,
            modality=checkpoint.modality,
        )
    if data.modality != checkpoint.modality:
        raise TransferError(
            f"model '{checkpoint.name}' takes {checkpoint.modality} but data '{data.description}' is {data.modality}: "
            f"pick a {data.modality} checkpoint (e.g. "
            + ("bundled:minilm-l6" if data.modality == "text" else "bundled:efficientnet-lite0")
            + ")"
        )
    if "do_predict" in args.explicit and args.training.do_predict and "test" not in data.splits:
        raise TransferError(
            f"--do_predict: {data.description} has no test split: give --test_file / --test_dir, or leave --do_predict out"
        )
    if args.training.process_index == 0:  # one summary per run, not one per rank
        describe_splits(data)
    if "validation" not in data.splits:
        without_validation(args)
    model = build_classifier(checkpoint, data.label_names, args.model, native=native)
    processor = load_processor(checkpoint)
    img_cfg = None
    if data.modality == "image":  # evaluate with the processor the run will save
        img_cfg = image_config(checkpoint, model, processor, args.data.image_size)
        processor = img_cfg.processor(timm_architecture(model))
    budget = ImageMemoryBudget()
    with args.training.main_process_first(desc="tokenising"):  # one rank tokenises, the others read its cache
        datasets, collator = build_datasets(
            data,
            processor,
            img_cfg,
            args.data.max_seq_length,
            args.data.augment,
            args.data.cache_images,
            budget,
            args.data.preprocessing_num_workers,
        )
    if learning_rates and "learning_rate" not in args.explicit:
        args.training.learning_rate = learning_rates[data.modality]
    return Job(args, data, checkpoint, model, processor, img_cfg, datasets, collator, hub_target, budget)


def set_up_streaming(args: RecipeArgs, streams: bool) -> None:
    """--streaming only where the recipe can train on a stream, and with --max_steps (a stream has no length); each
    rank then reads its own shard."""
    if not streams:
        raise TransferError(
            "--streaming: this recipe needs its whole training split (features of every example, per-epoch "
            "schedules or class-balanced batches); stream with recipes/full_finetune.py --head_phase none or "
            "recipes/peft_finetune.py, or leave --streaming out"
        )
    if args.training.max_steps is None or args.training.max_steps <= 0:
        raise TransferError("--streaming: a stream has no length, so give --max_steps (the optimizer steps to train)")
    args.training.accelerator_config.dispatch_batches = False  # each rank reads its own shard of the stream


def describe_splits(data: LabelledData) -> None:
    """One line with the examples in each split; a warning when a given validation split is too small to choose
    anything on, or the line saying that none was held out."""
    sizes = {split: data.size(split) for split in data.splits}
    print(
        f"data: {sizes['train']:,} train / {sizes.get('validation', 0):,} validation / {sizes.get('test', 0):,} test examples, "
        f"{len(data.label_names)} classes ({data.description})"
    )
    if "validation" not in sizes:
        print(f"validation: {data.validation}")
    elif sizes["validation"] < defaults.MIN_VALIDATION_PER_CLASS * len(data.label_names):
        print(
            f"warning: {sizes['validation']} validation examples for {len(data.label_names)} classes are too few to choose "
            "the kept epoch or the head's L2 on: give --validation_file / --validation_dir, or a larger "
            "--validation_split_percentage"
        )


def without_validation(args: RecipeArgs) -> None:
    """No validation split: no per-epoch evaluation and no best-epoch reload (the last epoch is kept); one line
    names the options given for them, which then do nothing."""
    from transformers.trainer_utils import IntervalStrategy

    if given := [
        f"--{k}" for k in ("eval_strategy", "load_best_model_at_end", "metric_for_best_model") if k in args.explicit
    ]:
        print(f"{', '.join(given)}: not used, the run holds no validation split out (the last epoch is kept)")
    args.training.eval_strategy = IntervalStrategy.NO
    args.training.load_best_model_at_end = False


def dataset_for(job: Job, rows, split: str = "train"):
    """A torch dataset of extra rows (e.g. unlabelled inputs; a Dataset or a DataFrame) preprocessed exactly as the
    job's `split`."""
    args = job.args.data
    source = rows.attrs.get("source", "extra data") if hasattr(rows, "attrs") else "extra data"
    extra = LabelledData({split: rows}, job.data.label_names, job.data.modality, source)
    datasets, _ = build_datasets(
        extra,
        job.processor,
        job.image_config,
        args.max_seq_length,
        args.augment,
        args.cache_images,
        job.image_budget,
        args.preprocessing_num_workers,
    )
    return datasets[split]


def make_trainer(
    job: Job,
    *,
    model=None,
    datasets=None,
    collator=None,
    callbacks=(),
    trainer_class=TransferTrainer,
    training_args=None,
    **kwargs,
):
    datasets = datasets or job.datasets
    trainer = trainer_class(
        model=model or job.model,
        args=training_args or job.args.training,
        train_dataset=datasets["train"],
        eval_dataset=datasets.get("validation"),
        data_collator=collator or job.collator,
        compute_metrics=make_compute_metrics(job.data.label_names),
        callbacks=[*callbacks, TrainingThroughput()],
        **kwargs,
    )
    calm(trainer)
    return trainer


def train_and_evaluate(job: Job, trainer, *, datasets=None) -> dict:
    """Train (resuming if asked), then evaluate on validation and test. Returns flat results."""
    clear_previous_run(job, trainer)
    train_result = trainer.train(resume_from_checkpoint=job.args.training.resume_from_checkpoint)
    results = {
        k: v
        for k, v in train_result.metrics.items()
        if k in ("train_runtime", "train_samples_per_second", "train_loss")
    }
    results.update(kept_epoch(trainer))
    results.update(trainer.divergence_guard.summary())
    results.update(throughput_of(trainer))
    results.update(evaluate_splits(job, trainer, datasets=datasets))
    return results


def clear_previous_run(job: Job, trainer) -> None:
    """With --overwrite_output_dir (and not resuming), the previous run's files go before this one trains."""
    if (
        job.args.output.overwrite_output_dir
        and not job.args.training.resume_from_checkpoint
        and trainer.is_world_process_zero()
    ):
        saving.clear_previous_run(job.output_dir)


def evaluate_splits(job: Job, trainer, *, datasets=None) -> dict:
    """Metrics, per-class report and confusion matrix of the kept weights on validation and test."""
    datasets = datasets or job.datasets
    results = {}
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split == "test" and "do_predict" in job.args.explicit and not job.args.training.do_predict:
            continue  # --do_predict false: the test split is left alone
        if split not in datasets:
            continue
        prediction = trainer.predict(datasets[split], metric_key_prefix=prefix)
        results.update(prediction.metrics)
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = np.argmax(logits, -1)
        results[f"{prefix}_per_class"] = classification_report(prediction.label_ids, predicted, job.data.label_names)[
            "per_class"
        ]
        results[f"{prefix}_confusion_matrix"] = confusion_matrix(
            prediction.label_ids, predicted, len(job.data.label_names)
        ).tolist()
    return results


def head_features(job: Job, splits: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """The new head's input features for `splits` (default: all), read from the on-disk cache or extracted now.

    Extracted from the inputs as they are evaluated (no --augment crops): the frozen layers see each example once.
    """
    from ..features.cache import FeatureCacheArguments, cache_options, cached_features
    from ..features.extraction import ExtractionSettings

    datasets = {split: job.datasets[split] for split in (splits or job.datasets) if split in job.datasets}
    if (
        job.args.data.augment and "train" in datasets
    ):  # only the training split is augmented; read once, so nothing kept
        train_only = LabelledData(
            {"train": job.data.splits["train"]}, job.data.label_names, job.data.modality, job.data.description
        )
        datasets["train"] = build_datasets(
            train_only, job.processor, job.image_config, job.args.data.max_seq_length, False, False
        )[0]["train"]
    job.model.to(job.args.training.device)
    cached, status = cached_features(
        job.model,
        datasets,
        job.collator,
        ExtractionSettings.of_run(job.args.training),
        **cache_options(job.args.option(FeatureCacheArguments)),
    )
    if "hit" in status.values():
        print(
            f"features from the cache for {', '.join(s for s, v in status.items() if v == 'hit')} (--no_feature_cache to extract again)"
        )
    return cached, status


def fit_head_first(job: Job, choice: str, prior: torch.Tensor | None = None) -> dict:
    """LP-FT's first step (Kumar et al. 2022): the new linear head fitted by L-BFGS on cached features of the
    pretrained layers below it, before any of them trains. `choice` (head_fitting.CHOICES) picks its L2 strength on
    validation; a recipe chooses it on validation splits, since the head's scale is a fine-tuning start, not only a
    classifier (a weakly regularised head has large logits, a saturated softmax). Returns what all_results.json records."""
    from ..features.extraction import new_head
    from ..features.head_fitting import fit_head

    started = time.perf_counter()
    cached, status = head_features(job, ("train", "validation"))
    feature_seconds = time.perf_counter() - started
    fit = fit_head(
        new_head(job.model),
        cached["train"].tensors,
        cached["validation"].tensors if "validation" in cached else None,
        solver="lbfgs",
        training_args=job.args.training,
        choice=choice,
        prior=prior,
    )
    l2, scaling = fit.results["head_l2"], fit.results["head_feature_scaling"]
    kept = next(c for c in fit.results["head_candidates"] if c["l2"] == l2 and c["scaling"] == scaling)
    score = "eval_accuracy" if "eval_accuracy" in kept else "cv_accuracy"
    summary = {
        "head_l2": l2,
        "head_feature_scaling": scaling,
        score: kept[score],
        "kept_because": fit.results["kept_because"],
        "fit_seconds": fit.results["train_runtime"],
        "feature_seconds": round(feature_seconds, 3),  # reading or extracting them: part of the run's training time
        "feature_cache": status,
        **({"prior_scale": fit.results["prior_scale"]} if prior is not None else {}),
    }
    print(
        f"new head fitted first: a logistic regression on cached features, fitted in {summary['fit_seconds']:.1f} s: "
        f"{'validation' if score == 'eval_accuracy' else 'cross-validated'} accuracy {100 * summary[score]:.2f}% ({summary['kept_because']})"
    )
    return summary


def check_head_start(args, otherwise: str = "cached") -> str:
    """`--head_phase` checked before anything loads (`otherwise`: what auto means outside few-shot text, as in
    `start_head`); returns it."""
    head_phase = args.option(HeadStartArguments).head_phase
    if head_phase not in HEAD_PHASES:
        raise TransferError(f"--head_phase {head_phase!r}: choose one of {', '.join(HEAD_PHASES)}")
    if head_phase not in ("label_descriptions", "label_prior", "auto") and (
        given := [f"--{k}" for k in ("label_descriptions", "label_template") if k in args.explicit]
    ):
        print(
            f"{', '.join(given)}: not used, the head starts from them only with --head_phase label_descriptions or auto"
        )
    if args.data.streaming and (head_phase == "cached" or (head_phase == "auto" and otherwise == "cached")):
        raise TransferError(
            f"--streaming: LP-FT's head fit (--head_phase {head_phase}) extracts features of every training "
            "example, which a stream does not hold: pass --head_phase none"
        )
    return head_phase


def start_head(
    job: Job,
    head_phase: str,
    options,
    choices: tuple[str, ...],
    otherwise: str = "cached",
    few_shot: str = "label_descriptions",
) -> dict:
    """Where the new head starts (`--head_phase`): LP-FT's fitted head (cached), the zero-shot head of the label
    descriptions (`options`), LP-FT's head pulled toward that zero-shot head (label_prior), its random initialisation
    (none), or auto — few-shot text (no validation split held out) as `few_shot` (label_descriptions: the zero-shot
    head when `zero_shot_start_helps`, else cached), everything else as `otherwise` (each the recipe's measured
    start). Returns what the results record under `head_phase_fit`."""
    from ..features.extraction import new_head
    from ..features.head_fitting import cached_head_phase, single_linear

    resuming = bool(job.args.training.resume_from_checkpoint)  # the checkpoint holds the head it started from
    random_init = job.args.model.random_init
    record, described = {}, None
    if head_phase == "auto":
        head_phase = otherwise
        if (
            job.data.modality == "text"
            and not job.args.data.streaming  # the check reads every training example
            and "validation" not in job.datasets
            and not resuming
            and not random_init
            and single_linear(new_head(job.model)) is not None  # a zero-shot head is one Linear layer
        ):
            described = label_description_embeddings(job, options)
            if few_shot == "label_descriptions":
                check = zero_shot_start_helps(job, described[1])
                head_phase = "label_descriptions" if check.pop("helps") else "cached"
                record = {"head_start": head_phase, **check}
            else:
                head_phase, record = few_shot, {"head_start": few_shot}
                print(f"head start: few-shot text (no validation split held out): --head_phase {few_shot}")
    fit_first = cached_head_phase(
        head_phase, job.model, choices=choices, otherwise="it starts from its random initialisation"
    )
    if head_phase == "label_descriptions" and not resuming:
        record.update(head_from_label_descriptions(job, options, described))
    elif head_phase == "label_prior" and fit_first and not random_init and not resuming:
        sentences, embeddings, length = described or label_description_embeddings(job, options)
        prior = embeddings.cpu() / (length * defaults.ZERO_SHOT_TEMPERATURE)  # the zero-shot head's weight
        record.update(fit_head_first(job, defaults.FULL_FINETUNE_HEAD_L2_CHOICE, prior=prior))
        record["label_descriptions"] = dict(zip(job.data.label_names, sentences))
    elif fit_first and random_init:
        print(
            f"--head_phase {head_phase} with --random_init: random features have nothing to probe, the head starts from its "
            "random initialisation"
        )
    elif fit_first and not resuming:
        checked = record.get("feature_seconds", 0.0)  # auto's check extracted them first: both count
        record.update(fit_head_first(job, defaults.FULL_FINETUNE_HEAD_L2_CHOICE))
        record["feature_seconds"] = round(record["feature_seconds"] + checked, 3)
    return record


def label_description_embeddings(job: Job, options) -> tuple[list[str], torch.Tensor, float]:
    """(one sentence per label, their unit embeddings by the job's model, their typical length)."""
    from ..features.label_descriptions import description_embeddings, descriptions

    if job.data.modality != "text":
        raise TransferError(
            "--head_phase label_descriptions and label_prior embed a sentence per label with a text encoder, which an image "
            "classifier has not: use --head_phase cached (zero-shot images: recipes/zero_shot.py with a CLIP checkpoint)"
        )
    sentences = descriptions(options, job.data.label_names)
    job.model.to(job.args.training.device)
    embeddings, length = description_embeddings(job.model, job.processor, sentences, job.args.data.max_seq_length)
    return sentences, embeddings, length


def zero_shot_start_helps(job: Job, embeddings: torch.Tensor) -> dict:
    """Few-shot text (no validation split held out): whether to start fine-tuning from the zero-shot head rather than
    a head fitted on a handful of examples (on the validation splits of the bundled text sets it ended 2–4 points
    higher at 8 and 16 per class: docs/results/fewshot.md). Not when the zero-shot head is no more accurate on the
    training examples than always answering their most frequent class: label names that say nothing (codes,
    digits) give such a head. Returns what the results record, with `helps`."""
    from ..features.label_descriptions import zero_shot_accuracy

    started = time.perf_counter()
    cached, _ = head_features(job, ("train",))
    feature_seconds = time.perf_counter() - started
    features, labels = cached["train"].tensors
    zero_shot = zero_shot_accuracy(embeddings.cpu(), features, labels)
    majority = float(torch.bincount(labels).max()) / len(labels)
    helps = zero_shot > majority
    print(
        f"head start: the zero-shot head scores {100 * zero_shot:.1f}% on the training examples (most frequent class "
        f"{100 * majority:.1f}%): "
        + ("starting from it" if helps else "its label names say little, so the head is fitted first (LP-FT)")
    )
    return {
        "zero_shot_train_accuracy": zero_shot,
        "majority_share": majority,
        "helps": helps,
        "feature_seconds": round(feature_seconds, 3),
    }


def head_from_label_descriptions(job: Job, options, described: tuple | None = None) -> dict:
    """The new head as a zero-shot classifier: its rows the checkpoint's embeddings of a sentence per label
    (`LabelDescriptionArguments`; `described`: `label_description_embeddings` already computed), so every label starts
    where the encoder places its description. Text only; one linear head. Returns what all_results.json records."""
    from ..features.extraction import new_head
    from ..features.label_descriptions import set_head_from_embeddings

    sentences, embeddings, length = described or label_description_embeddings(job, options)
    set_head_from_embeddings(new_head(job.model), embeddings, length, defaults.ZERO_SHOT_TEMPERATURE)
    print(f"new head: the zero-shot classifier of {len(sentences)} label descriptions")
    return {"label_descriptions": dict(zip(job.data.label_names, sentences))}


def kept_epoch(trainer) -> dict:
    """Which epoch's weights the run ends with: the best on validation (ties: lower loss) or the last."""
    state, args = trainer.state, trainer.args
    evaluations = [e for e in state.log_history if "eval_loss" in e]
    last_epoch = round(state.epoch or 0.0, 2)
    if args.load_best_model_at_end and state.best_global_step:
        best = next((e for e in evaluations if e.get("step") == state.best_global_step), None)
        if best is not None:
            return {
                "kept_epoch": round(best["epoch"], 2),
                "kept_because": f"best validation {args.metric_for_best_model or 'loss'}",
                "epochs_trained": last_epoch,
            }
    return {"kept_epoch": last_epoch, "kept_because": "last epoch", "epochs_trained": last_epoch}


def finish(job: Job, trainer, results: dict, *, recipe: str, model=None) -> dict:
    """Save the model (or only its adapter) with its preprocessing, all_results.json and a model card; push if asked."""
    model = trainer.accelerator.unwrap_model(model or job.model)
    results = {
        **results,
        **describe_run(job.args, job.data, model, recipe),
        "model_class": type(job.model).__name__,  # the classifier itself; peft wraps it in place
        "world_size": trainer.args.world_size,
        "device": str(trainer.args.device),
        "mixed_precision": str(trainer.accelerator.mixed_precision),
        "training_config": training_config(job, fitted_head=results.get("head_solver") == "lbfgs"),
    }
    state_dict = saving.full_state_dict(model)  # under FSDP every rank takes part in gathering the weights
    if state_dict is not None and adapters.method(model) == "bottleneck":
        raise TransferError(
            "bottleneck adapters cannot be saved from an FSDP-sharded model: train them with DDP, or use --peft_method lora"
        )
    if trainer.is_world_process_zero():
        out = job.output_dir
        out.mkdir(parents=True, exist_ok=True)
        if job.data.modality == "image":
            save_image_processor(
                job.image_config, model, str(out)
            )  # before the model: timm models keep it in config.json
        else:
            job.processor.save_pretrained(out)
        if adapters.method(model):
            weights = adapter_files.save(model, out, _base_model_info(job), state_dict=state_dict)
            results.update(adapter=adapters.method(model), saved_weights_bytes=weights.stat().st_size)
        else:
            saving.save_model(model, out, state_dict=state_dict)
            results["saved_weights_bytes"] = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        if not job.args.output.keep_checkpoints:
            saving.remove_checkpoints(out)
        results["figures"] = _draw_figures(trainer, results, job.data.label_names, out)
        trainer.save_state()  # trainer_state.json: the log history, as the examples keep it
        saving.write_results(out, results)
        (out / "README.md").write_text(model_card(results, recipe=recipe, model_class=results["model_class"]))
        print_summary(results, out)
        if job.hub_target is not None:
            try:
                results["hub_url"] = push_run(out, job.hub_target)
            except TransferError as exc:
                raise TransferError(
                    f"{exc} (the run is saved in {out}: push it later with hf-transfer push {out} {job.hub_target.repo_id})"
                ) from None
            print(f"pushed to        : {results['hub_url']}")
    trainer.accelerator.wait_for_everyone()  # every rank returns once the run is on disk
    return results


def describe_run(args: RecipeArgs, data: LabelledData, model, recipe: str) -> dict:
    """What every run records about itself: the recipe, checkpoint, data, splits and parameter counts."""
    return {
        **count_parameters(model),
        "recipe": recipe,
        "model_name_or_path": args.model.model_name_or_path,
        "model_class": type(model).__name__,
        "dataset": data.description,
        "modality": data.modality,
        "label_names": data.label_names,
        "train_samples": data.size("train"),
        "eval_samples": data.size("validation"),
        "validation": data.validation,
        "test_samples": data.size("test"),
        "skipped_unreadable_images": data.skipped_images,
        "seed": args.training.seed,
    }


def _draw_figures(trainer, results: dict, label_names: list[str], out: pathlib.Path) -> list[str]:
    """training_curves.png and the confusion matrix of the test split (else validation), for the card."""
    if not plots.available():
        print(plots.INSTALL_HINT)
        return []
    drawn = [plots.training_curves(trainer.state.log_history, out / "training_curves.png")]
    split = "test" if "test_confusion_matrix" in results else "eval"
    if f"{split}_confusion_matrix" in results:
        title = f"{'test' if split == 'test' else 'validation'} split, kept weights"
        drawn.append(
            plots.confusion_matrix(
                np.array(results[f"{split}_confusion_matrix"]), label_names, out / "confusion_matrix.png", title
            )
        )
    return [p.name for p in drawn if p is not None]


def describe_groups(groups, lrs: list[float], thaw_steps: list[int | None] | None = None) -> list[dict]:
    """The layer groups as all_results.json records them: name, base LR, parameter count (and when each thawed)."""
    described = [{"name": g.name, "lr": lr, "params": g.numel()} for g, lr in zip(groups, lrs)]
    for entry, step in zip(described, thaw_steps or []):
        entry["thaws_at_step"] = step
    return described


def _base_model_info(job: Job) -> dict:
    """What load_adapter needs to rebuild the base exactly: the checkpoint, how the head sits on it, the labels."""
    model_args = {k: v for k, v in dataclasses.asdict(job.args.model).items() if k not in ("cache_dir",)}
    info = {
        "model_name_or_path": job.args.model.model_name_or_path,
        "model_class": type(job.model).__name__,
        "model_args": model_args,
        "label_names": job.data.label_names,
        "modality": job.data.modality,
    }
    if job.image_config is not None:  # the preprocessing evaluated with, rebuilt exactly by load_adapter
        info.update(image_config=dataclasses.asdict(job.image_config), timm_architecture=timm_architecture(job.model))
    return info


def training_config(job: Job, *, fitted_head: bool = False) -> dict:
    """The settings that shaped the run (with a head fitted by L-BFGS, without the gradient-training ones it never used)."""
    t = job.args.training
    keys = (
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "weight_decay",
        "warmup_steps",
        "lr_scheduler_type",
        "seed",
        "bf16",
        "fp16",
        "gradient_checkpointing",
    )
    config = {k: getattr(t, k) for k in keys}
    config["lr_scheduler_type"] = str(getattr(t.lr_scheduler_type, "value", t.lr_scheduler_type))
    config.update(
        {
            k: getattr(job.args.data, k)
            for k in ("max_train_samples_per_class", "max_seq_length", "image_size", "augment")
        }
    )
    config.update({k: getattr(job.args.model, k) for k in ("pooling", "head")})
    config.update(job.args.recorded_options())
    if fitted_head:
        from ..features.head_fitting import IGNORED_BY_LBFGS

        config = {k: v for k, v in config.items() if k not in IGNORED_BY_LBFGS}
    return config


def print_summary(results: dict, out: pathlib.Path) -> None:
    def pct(key):
        return f"{100 * results[key]:.2f}%" if key in results else "n/a"

    kept = (
        f"epoch {results['kept_epoch']:g} of {results['epochs_trained']:g} ({results['kept_because']})"
        if "kept_epoch" in results
        else results.get("kept_because", "n/a")
    )
    print(
        f"\n== {results['recipe']}: {results['model_name_or_path']} on {results['dataset']} ==\n"
        f"trainable params : {results['trainable_params']:,} / {results['total_params']:,} ({results['trainable_percent']}%)\n"
        f"eval  accuracy   : {pct('eval_accuracy')}  macro-F1 {pct('eval_f1_macro')}\n"
        f"test  accuracy   : {pct('test_accuracy')}  macro-F1 {pct('test_f1_macro')}\n"
        f"kept             : {kept}\n"
        f"saved to         : {out}"
    )


def refit_head(job: Job, model, *, l2: float | None = None, choice: str = "best") -> dict:
    """After the body trained on another objective: extract the features it now gives (train, validation) and fit the
    new linear head on them by L-BFGS (`l2` fixed, else chosen on validation by `choice`). Returns what
    all_results.json records."""
    from ..features.extraction import ExtractionSettings, extract_features, new_head
    from ..features.head_fitting import fit_head

    settings = ExtractionSettings.of_run(job.args.training)
    model.to(job.args.training.device)
    splits = [s for s in ("train", "validation") if s in job.datasets]
    started = time.perf_counter()
    features = {s: extract_features(model, job.datasets[s], job.collator, settings).tensors for s in splits}
    extraction_seconds = time.perf_counter() - started
    head = new_head(job.model)  # under peft: the wrapper holding the trained copy of the head beside the original
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    fitted = torch.nn.Linear(linears[0].in_features, linears[0].out_features).to(linears[0].weight.device)
    fit = fit_head(
        fitted,
        features["train"],
        features.get("validation", features["train"]),
        solver="lbfgs",
        training_args=job.args.training,
        l2=l2,
        choice=choice,
    )
    with torch.no_grad():
        for linear in linears:  # every copy (peft keeps the original beside the one it saves)
            linear.weight.copy_(fitted.weight)
            linear.bias.copy_(fitted.bias)
    summary = {k: fit.results[k] for k in ("head_l2", "head_feature_scaling", "kept_because", "head_candidates")}
    summary.update(head_fit_seconds=fit.results["train_runtime"], head_feature_seconds=round(extraction_seconds, 3))
    return summary
