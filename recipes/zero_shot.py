"""Zero-shot: no training, each example goes to the label whose description the checkpoint finds it closest to.

The floor any training has to beat. Each label gets a sentence (`--label_descriptions` a JSON object or file,
else `--label_template`, default "This example is {label}."). A sentence encoder embeds it as it embeds examples
(mean pooling for sentence-transformers checkpoints such as the bundled MiniLM), and the new head's rows become
those unit-length embeddings, so the run is an ordinary saved run (`pipeline()`, `hf-transfer predict /
evaluate`). An NLI checkpoint (its labels include "entailment", e.g. an MNLI cross-encoder) takes each sentence as a
hypothesis instead, as transformers' `pipeline("zero-shot-classification")` does, and an image-text checkpoint (CLIP,
SigLIP) scores images against each label's prompt (default "a photo of a {label}."), as
`pipeline("zero-shot-image-classification")` does; those runs are the checkpoint with the hypotheses beside it. The
training split only names the labels; its examples are not used.

    python recipes/zero_shot.py                 # bundled MiniLM on Rotten Tomatoes, label names in the template
    python recipes/zero_shot.py --train_file train.csv --test_file test.csv \
        --label_descriptions '{"spam": "an advertisement or a scam", "ham": "a personal message"}'
    python recipes/zero_shot.py --model_name_or_path facebook/bart-large-mnli --train_file train.csv
    python recipes/zero_shot.py --model_name_or_path openai/clip-vit-base-patch32 --train_dir photos/ --test_dir test/

    from recipes.zero_shot import run; metrics = run(label_template="A {label} review.")
"""

import time

from hf_transfer.cli import recipe_main
from hf_transfer.errors import TransferError
from hf_transfer.features.head_fitting import IGNORED_BY_LBFGS
from hf_transfer.features.label_descriptions import LabelDescriptionArguments
from hf_transfer.models.loading import resolve_checkpoint
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args
from hf_transfer.pipeline.zero_shot_checkpoints import run_scored, scoring_method

DEFAULTS = {"output_dir": "outputs/zero_shot"}


def run(argv: list[str] | None = None, **overrides) -> dict:
    """Build the zero-shot classifier and evaluate it; returns the results also written to all_results.json."""
    args = parse_recipe_args(
        DEFAULTS, argv if argv is not None else [], overrides, extra_dataclasses=(LabelDescriptionArguments,)
    )
    if unused := [f"--{k}" for k in (*IGNORED_BY_LBFGS, "resume_from_checkpoint") if k in args.explicit]:
        print(f"{', '.join(unused)}: not used, a zero-shot run trains nothing")
    checkpoint = resolve_checkpoint(args.model)
    if method := scoring_method(checkpoint):
        return run_scored(args, args.option(LabelDescriptionArguments), checkpoint, method)
    job = training.prepare(args, native=False)
    if job.data.modality != "text":
        raise TransferError(
            "zero-shot classifies images with an image-text checkpoint (CLIP, SigLIP), not with "
            f"'{args.model.model_name_or_path}': pass one as --model_name_or_path, or run recipes/feature_extraction.py"
        )
    started = time.perf_counter()
    head = training.head_from_label_descriptions(job, args.option(LabelDescriptionArguments))
    print(f"zero-shot: the {len(job.data.splits['train']):,} training examples are not used")
    trainer = training.make_trainer(job)
    training.clear_previous_run(job, trainer)
    results = {
        "train_runtime": round(time.perf_counter() - started, 3),
        "kept_because": "zero-shot: no training",
        **head,
        **training.evaluate_splits(job, trainer),
    }
    return training.finish(job, trainer, results, recipe="zero_shot")


if __name__ == "__main__":
    recipe_main(run)
