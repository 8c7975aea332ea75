"""The command-line layer: the `hf-transfer` command, and the entry point every recipe file runs under.

    hf-transfer predict  --model outputs/full_finetune --input_file new.csv --output_file predictions.csv
    hf-transfer evaluate --model outputs/lora_vit --test_dir photos_test/
    hf-transfer advise   --train_dir photos/ --model_name_or_path bundled:efficientnet-lite0 ./my-vit
    hf-transfer merge    outputs/lora_bert outputs/lora_bert_merged
    hf-transfer push     outputs/lora_vit me/vit-photos-lora --private
    hf-transfer export   outputs/full_finetune --format onnx --output_dir outputs/full_finetune_onnx
    hf-transfer cache    info | clear

Training is not a subcommand: a recipe is a file (`python recipes/x.py`, `accelerate launch recipes/x.py`).
Nothing in the library imports this module; it parses arguments, calls the library, prints, and turns a
`TransferError` into one line `error: ...` with exit status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from .errors import TransferError


def command_line(function, **kwargs):
    """Run a command-line tool's function quietly; bad input ends in one line `error: ...` and exit code 2."""
    from .engine.console import command_line_output

    command_line_output()
    try:
        return function(**kwargs)
    except TransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def recipe_main(run_function) -> None:
    """Entry point for `python recipes/x.py` / `accelerate launch recipes/x.py`: one clear line on bad input."""
    try:
        command_line(run_function, argv=sys.argv[1:])
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Under `accelerate launch`, close the process group before exit as PyTorch asks: a rank exiting with it
    open while another still writes the run can abort in gloo's teardown."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _run_parser(command: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that reads a saved run: no abbreviated options, and --model naming the run."""
    parser = argparse.ArgumentParser(prog=f"hf-transfer {command}", description=description, allow_abbrev=False)
    parser.add_argument("--model", required=True, help="a run's output folder (full model or adapter) or a Hub repo")
    return parser


def _parse_with_input_columns(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The options every command that feeds inputs to a run shares: which columns hold them, and the batch size."""
    parser.add_argument("--text_column_name", default="text", help="'a,b' for sentence pairs")
    parser.add_argument("--image_column_name", default="image")
    parser.add_argument("--batch_size", type=int, default=64)
    return parser.parse_args(argv)


def _predict(argv: list[str]) -> None:
    from .runs.predict import predict

    parser = _run_parser("predict", "Predict with a saved run on new, unlabelled inputs.")
    parser.add_argument("--input_file", help="CSV / JSON / JSONL / Parquet with a text column (or image paths)")
    parser.add_argument("--input_dir", help="a folder of images (searched recursively)")
    parser.add_argument(
        "--output_file", default="predictions.csv", help="CSV written (default: predictions.csv in the current folder)"
    )
    parser.add_argument("--all_scores", action="store_true", help="a probability column for every class")
    args = _parse_with_input_columns(parser, argv)
    frame = command_line(predict, **vars(args))
    counts = frame["predicted_label"].value_counts()
    print(
        f"{len(frame)} predictions written to {pathlib.Path(args.output_file).resolve()} ({', '.join(f'{k}: {v}' for k, v in counts.items())})"
    )


def _evaluate(argv: list[str]) -> None:
    from .runs.evaluate import evaluate

    parser = _run_parser("evaluate", "Evaluate a saved run on a new labelled file or image folder.")
    parser.add_argument("--test_file", help="CSV / JSON / JSONL / Parquet with text (or image paths) and labels")
    parser.add_argument("--test_dir", help="a folder with one subfolder of images per class")
    parser.add_argument(
        "--output_dir", help="where evaluation.json and confusion_matrix.png go (default: <model>/evaluation)"
    )
    parser.add_argument("--label_column_name", default="label")
    report = command_line(evaluate, **vars(_parse_with_input_columns(parser, argv)))
    print(
        f"{report['examples']} examples: accuracy {100 * report['accuracy']:.2f}%, macro-F1 {100 * report['f1_macro']:.2f}%"
    )
    for name, row in report["per_class"].items():
        print(
            f"  {name[:24]:<24} precision {row['precision']:.3f}  recall {row['recall']:.3f}  f1 {row['f1']:.3f}  n={row['support']}"
        )
    print(f"written to {report['output_dir']}/evaluation.json and confusion_matrix.png")


def _advise(argv: list[str]) -> None:
    from .advice import advise as advice_module

    if argv and argv[0] in ("-h", "--help"):
        print(advice_module.__doc__)
        print(
            "Options: --model_name_or_path NAME [NAME ...], the data options of every recipe (python recipes/full_finetune.py --help), "
            "--output_dir (default outputs/advice), --no_feature_cache, --feature_cache_dir."
        )
        return
    outcome = command_line(advice_module.advise, argv=argv)
    print(outcome["report"])


def _merge(argv: list[str]) -> None:
    from .runs.adapter_files import merge

    parser = argparse.ArgumentParser(
        prog="hf-transfer merge",
        allow_abbrev=False,
        description="Fold a trained peft adapter (LoRA, DoRA, LoHa, LoKr, IA3) into its base: a standalone model "
        "that reloads with from_pretrained and predicts what base + adapter predicted.",
    )
    parser.add_argument("adapter", help="an adapter folder written by an hf_transfer recipe, or its Hub repo id")
    parser.add_argument("merged_dir", help="a new (or empty) folder for the merged model")
    parser.add_argument(
        "--model_name_or_path", default=None, help="the base checkpoint, when it is no longer where training found it"
    )
    args = parser.parse_args(argv)
    out = command_line(
        merge, path_or_repo=args.adapter, out_dir=args.merged_dir, model_name_or_path=args.model_name_or_path
    )
    print(f"merged model written to {out}")


def _push(argv: list[str]) -> None:
    from .hub import HubTarget
    from .runs.push import push_run

    parser = argparse.ArgumentParser(
        prog="hf-transfer push",
        allow_abbrev=False,
        description="Push a finished run (adapter, merged or fully fine-tuned model) to the Hugging Face Hub "
        "with its model card. The token comes from `hf auth login` or HF_TOKEN and is never printed.",
    )
    parser.add_argument("output_dir", help="a recipe's output folder (with all_results.json)")
    parser.add_argument("repo_id", help="the Hub repo to push to: user/name")
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)"
    )
    parser.add_argument("--revision", default=None, help="push to this branch (created from main if missing)")
    args = parser.parse_args(argv)
    url = command_line(
        push_run,
        folder=args.output_dir,
        target=HubTarget(args.repo_id, private=args.private or None, revision=args.revision),
    )
    print(f"pushed {args.output_dir} to {url}" + (f" (branch {args.revision})" if args.revision else ""))


def _export(argv: list[str]) -> None:
    from .runs.export import FORMATS, TOLERANCE, export

    parser = argparse.ArgumentParser(
        prog="hf-transfer export",
        allow_abbrev=False,
        description="Export a saved full (or merged) run to ONNX, checked against the run's own logits.",
    )
    parser.add_argument(
        "model", help="a run's output folder (full model, or an adapter run merged with hf-transfer merge)"
    )
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    parser.add_argument(
        "--output_dir",
        required=True,
        help="a new folder: model.onnx, config, tokenizer / processor, export_report.json",
    )
    parser.add_argument(
        "--check_file", help="inputs to compare the two models on (CSV / JSON / Parquet of texts or image paths)"
    )
    parser.add_argument("--check_dir", help="a folder of images to compare the two models on")
    parser.add_argument("--text_column_name", default="text")
    parser.add_argument("--image_column_name", default="image")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest accepted |logit difference|")
    args = parser.parse_args(argv)
    report = command_line(export, **vars(args))
    latency = report["latency_ms"]
    print(
        f"exported to {report['output_dir']}/model.onnx: max |logit difference| {report['max_abs_logit_difference']:.2e} on "
        f"{report['check_examples']} inputs; latency for {report['latency_batch']} inputs on the CPU: PyTorch {latency['pytorch']:.1f} ms, "
        f"onnxruntime {latency['onnxruntime']:.1f} ms (x{report['onnxruntime_speedup']:.2f})"
    )


def _cache(argv: list[str]) -> None:
    import time

    from .features import store

    parser = argparse.ArgumentParser(
        prog="hf-transfer cache",
        allow_abbrev=False,
        description="The frozen-feature cache: what it holds (info), or remove all of it (clear).",
    )
    parser.add_argument("action", choices=("info", "clear"))
    parser.add_argument(
        "--feature_cache_dir", default=None, help="the cache folder (default ~/.cache/hf_transfer/features)"
    )
    args = parser.parse_args(argv)
    root = pathlib.Path(args.feature_cache_dir) if args.feature_cache_dir else store.default_root()
    if args.action == "clear":
        print(f"removed {store.clear(root) / 1e6:,.1f} MB of features from {root}")
        return
    entries = store.info(root)
    if not entries:
        print(f"{root}: no features stored")
        return
    print(f"{root}: {sum(e['bytes'] for e in entries) / 1e6:,.1f} MB in {len(entries)} model(s)")
    for entry in entries:
        model = entry["model"]
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["last_used"])) if entry["last_used"] else "never"
        print(
            f"  {model.get('model', '?')} ({model.get('class', '?')}, pooling {model.get('pooling')}, "
            f"{model.get('precision', '?')}): {entry['examples']:,} examples, {entry['shards']} shard(s), "
            f"{entry['bytes'] / 1e6:,.1f} MB, last used {used}  [{pathlib.Path(entry['folder']).name}]"
        )


COMMANDS = {
    "predict": (
        _predict,
        "predict with a saved run on new inputs (CSV of texts or image paths, or a folder of images)",
    ),
    "evaluate": (_evaluate, "evaluate a saved run on a labelled file or image folder"),
    "advise": (
        _advise,
        "rank checkpoints and pick a strategy for your data from frozen features, with the command to run",
    ),
    "merge": (_merge, "fold a peft adapter run into its base model"),
    "push": (_push, "push a finished run to the Hugging Face Hub with its model card"),
    "export": (_export, "export a full or merged run to ONNX, checked against the run's logits"),
    "cache": (_cache, "what the frozen-feature cache holds (info), or empty it (clear)"),
}


def main(argv: list[str] | None = None) -> None:
    """`hf-transfer COMMAND ...` (the console script); `python -m hf_transfer COMMAND ...` does the same."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: hf-transfer COMMAND [options]   (hf-transfer COMMAND --help for its options)\n\ncommands:")
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<9} {summary}")
        print(
            "\ntraining runs as a recipe: python recipes/<recipe>.py --help (or accelerate launch recipes/<recipe>.py)"
        )
        if not argv:
            sys.exit(2)
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f": did you mean '{close[0]}'?" if close else f": one of {', '.join(COMMANDS)}"
        print(f"error: unknown command '{name}'{hint}", file=sys.stderr)
        sys.exit(2)
    COMMANDS[name][0](rest)
