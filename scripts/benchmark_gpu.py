"""Training speed on one GPU, every figure from one invocation: the compute-bound limit, a plain `Trainer`
baseline, and the recipes (full fine-tuning, LoRA, gradual unfreezing, feature extraction).

- limit: forward + backward + AdamW step on random tensors already on the GPU (no data pipeline), and the
  forward pass alone; the most any recipe could reach with this model, batch size and precision.
- plain: what a user writes with transformers + datasets and default arguments (`run_image_classification`
  style: an imagefolder data set, torchvision transforms per image, `Trainer` defaults, no workers).
- recipes: each recipe's `run()` with its default arguments, only the data, precision, batch size and
  epochs set. Images/s of the training loop alone (evaluation and checkpointing excluded, the figure
  all_results.json records as `train_loop_samples_per_second`), for the first epoch and the later ones,
  where the decoded-image cache serves the inputs. Feature extraction is timed end to end (extraction of
  every split plus the head's training and evaluation) against one forward pass over the same images at the limit.

Ratios to the plain `Trainer` use its fastest epoch after the first; "of the limit" uses each run's later epochs.
Each run gets its own process, so peak GPU memory is its own.

    python scripts/benchmark_gpu.py --model_name_or_path random:vit-base --train_dir fmnist/train --test_dir fmnist/test
    python scripts/benchmark_gpu.py --model_name_or_path ./my-vit --train_dir photos/ --precision fp16 --runs full_finetune lora
    python scripts/benchmark_gpu.py --model_name_or_path random:vit-base --train_dir fmnist/train --runs limit full_finetune full_finetune_augment
    python scripts/benchmark_gpu.py --model_name_or_path random:vit-base --train_dir fmnist/train --runs limit full_finetune full_finetune_waiting

`random:vit-base` is a randomly initialised ViT-B/16 at 224 px (speed does not depend on the weights; no download).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

RECIPES = {  # name -> (module, recipe options beyond the data and precision)
    "full_finetune": ("recipes.full_finetune", {}),
    "lora": ("recipes.lora_vit", {}),
    "gradual_unfreeze": ("recipes.gradual_unfreeze", {}),
    "feature_extraction": ("recipes.feature_extraction", {}),
    "full_finetune_augment": (
        "recipes.full_finetune",
        {"augment": True},
    ),  # later epochs: kept decoded images, only augmentation
    # Trainer's defaults for what the recipes change on a GPU: each step waits for the GPU twice (blocking batch copy, nan check)
    "full_finetune_waiting": (
        "recipes.full_finetune",
        {"accelerator_config": {"non_blocking": False}, "logging_nan_inf_filter": True},
    ),
}


def _precision(options) -> dict:
    return {"bf16": options.precision == "bf16", "fp16": options.precision == "fp16"}


def measure_limit(options) -> dict:
    """Images/s of training steps and of forward passes on tensors already on the GPU, in the run's precision."""
    import torch
    from accelerate import PartialState
    from transformers import AutoConfig, AutoModelForImageClassification

    from hf_transfer.engine.throughput import synchronize

    device = PartialState().device  # the device Accelerate (and so Trainer) would train on
    on_gpu = (
        device.type == "cuda"
    )  # the script measures a GPU; on the CPU only its smoke test runs (tests/recipes/test_benchmarks.py)
    config = AutoConfig.from_pretrained(options.model_name_or_path, num_labels=10)
    model = AutoModelForImageClassification.from_pretrained(
        options.model_name_or_path, config=config, ignore_mismatched_sizes=True
    ).to(device)
    size = options.image_size or getattr(config, "image_size", 224)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(options.precision)
    x = torch.randn(options.batch_size, 3, size, size, device=device)
    y = torch.randint(0, 10, (options.batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=options.precision == "fp16")

    def train_step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(pixel_values=x, labels=y).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def forward():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            model(pixel_values=x)

    def rate(step, repeats=30) -> float:
        for _ in range(5):
            step()
        synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        synchronize()
        return options.batch_size * repeats / (time.perf_counter() - started)

    model.train()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    train_rate = rate(train_step)
    peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
    model.eval()
    return {"run": "limit", "train_images_per_s": train_rate, "forward_images_per_s": rate(forward), "peak_gib": peak}


def measure_plain(options) -> dict:
    """Plain transformers + datasets, default arguments (HF's image-classification example, no workers)."""
    from datasets import load_dataset
    from torchvision import transforms as T
    from transformers import AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments

    from hf_transfer.data.preprocessing import collate_images
    from hf_transfer.engine.throughput import TrainingThroughput

    data = load_dataset("imagefolder", data_dir=options.train_dir, split="train")
    labels = data.features["label"].names
    processor = AutoImageProcessor.from_pretrained(options.model_name_or_path)
    size = options.image_size or processor.size.get("height") or processor.size["shortest_edge"]
    transform = T.Compose(
        [T.Resize((size, size)), T.ToTensor(), T.Normalize(processor.image_mean, processor.image_std)]
    )
    data.set_transform(
        lambda batch: {
            "pixel_values": [transform(image.convert("RGB")) for image in batch["image"]],
            "labels": batch["label"],
        }
    )
    model = AutoModelForImageClassification.from_pretrained(
        options.model_name_or_path, num_labels=len(labels), ignore_mismatched_sizes=True
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            out,
            per_device_train_batch_size=options.batch_size,
            num_train_epochs=options.epochs,
            learning_rate=1e-4,
            report_to="none",
            save_strategy="no",
            remove_unused_columns=False,
            disable_tqdm=True,
            **_precision(options),
        )
        throughput = TrainingThroughput()
        Trainer(
            model=model, args=args, train_dataset=data, data_collator=collate_images, callbacks=[throughput]
        ).train()
    figures = throughput.results()
    return {
        "run": "plain",
        "epoch_images_per_s": figures["train_loop_samples_per_second"],
        "peak_gib": figures.get("peak_accelerator_memory_gib"),
    }


def measure_recipe(name: str, options) -> dict:
    import importlib

    module_name, recipe_options = RECIPES[name]
    recipe = importlib.import_module(module_name)
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        results = recipe.run(
            model_name_or_path=options.model_name_or_path,
            train_dir=options.train_dir,
            test_dir=options.test_dir,
            output_dir=out,
            per_device_train_batch_size=options.batch_size,
            num_train_epochs=options.epochs,
            disable_tqdm=True,
            **({"image_size": options.image_size} if options.image_size else {}),
            **({"feature_cache_dir": cache} if name == "feature_extraction" else {}),
            **_precision(options),
            **recipe_options,
        )
        seconds = time.perf_counter() - started
    images = results["train_samples"] + results["eval_samples"] + results["test_samples"]
    return {
        "run": name,
        "epoch_images_per_s": results.get("train_loop_samples_per_second"),
        "peak_gib": results.get("peak_accelerator_memory_gib"),
        "wall_s": seconds,
        "feature_s": results.get("feature_seconds"),
        "images": images,
        "test_accuracy": results.get("test_accuracy"),
        "trainable_params": results.get("trainable_params"),
    }


def report(rows: list[dict], options) -> str:
    import torch

    limit = next(r for r in rows if r["run"] == "limit")
    plain = next((r for r in rows if r["run"] == "plain"), None)
    plain_rate = plain and max(plain["epoch_images_per_s"][1:] or plain["epoch_images_per_s"])
    full_peak = next((r["peak_gib"] for r in rows if r["run"] == "full_finetune"), None)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (CPU)"
    lines = [
        f"GPU: {device}; {options.model_name_or_path}, {options.precision}, batch {options.batch_size}, "
        f"{options.epochs:g} epochs on {options.train_dir}",
        "",
        "| run | images/s, epoch 1 | images/s, later epochs | of the limit | x plain Trainer | peak GPU memory (GiB) | x full FT memory |",
        "|---|---|---|---|---|---|---|",
        f"| compute-bound limit (fwd+bwd+AdamW on GPU tensors) | {limit['train_images_per_s']:,.0f} | | 100% | | {limit['peak_gib'] or 0:.2f} | |",
    ]
    for r in rows:
        if r["run"] in ("limit", "feature_extraction") or not r.get("epoch_images_per_s"):
            continue
        first, later = r["epoch_images_per_s"][0], r["epoch_images_per_s"][1:]
        best = sum(later) / len(later) if later else first
        ratio = f"x{best / plain_rate:.2f}" if plain_rate else ""
        memory = f"x{r['peak_gib'] / full_peak:.2f}" if full_peak and r["peak_gib"] else ""
        lines.append(
            f"| {r['run']} | {first:,.0f} | {best:,.0f} | {100 * best / limit['train_images_per_s']:.0f}% | {ratio} | {r['peak_gib'] or 0:.2f} | {memory} |"
        )
    extraction = next((r for r in rows if r["run"] == "feature_extraction"), None)
    if extraction:
        one_pass = extraction["images"] / limit["forward_images_per_s"]
        lines += [
            "",
            f"feature extraction end to end: {extraction['wall_s']:.1f} s for {extraction['images']:,} images (train, validation, test), "
            f"of which extracting their features {extraction['feature_s']:.1f} s; one forward pass over them at the limit "
            f"{one_pass:.1f} s: x{extraction['wall_s'] / one_pass:.1f} end to end, x{extraction['feature_s'] / one_pass:.1f} extracting",
        ]
    return "\n".join(lines)


def random_vit_base(folder: str) -> str:
    """A ViT-B/16 (224 px) with random weights and a ViT image processor, saved as a checkpoint folder."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    ViTForImageClassification(ViTConfig(num_labels=10)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True)
    parser.add_argument("--train_dir", required=True)
    parser.add_argument("--test_dir", default=None)
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16")
    parser.add_argument(
        "--runs", nargs="+", default=["limit", "plain", *list(RECIPES)[:4]], choices=["limit", "plain", *RECIPES]
    )
    parser.add_argument("--json", default=None, help="append every run's figures to this JSON-lines file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        from hf_transfer.engine.console import command_line_output

        command_line_output()
        row = {"limit": measure_limit, "plain": measure_plain}.get(
            options.worker, lambda o: measure_recipe(options.worker, o)
        )(options)
        print("RESULT " + json.dumps(row))
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit(
            "error: benchmark_gpu.py measures a CUDA GPU and none is visible (scripts/benchmark_peft.py measures on the CPU)"
        )
    runs = ["limit", *[r for r in options.runs if r != "limit"]]  # every ratio needs the limit
    scratch = tempfile.TemporaryDirectory()
    argv = list(sys.argv[1:])
    if options.model_name_or_path == "random:vit-base":
        argv[argv.index("random:vit-base")] = random_vit_base(scratch.name)
    rows = []
    for run in runs:
        started = time.time()
        done = subprocess.run([sys.executable, __file__, "--worker", run, *argv], capture_output=True, text=True)
        line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            print(f"error: {run} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(line[len("RESULT ") :]))
        print(f"  {run}: {time.time() - started:.0f} s  {line[len('RESULT ') :]}", flush=True)
        if options.json:
            with open(options.json, "a") as f:
                f.write(
                    json.dumps({**rows[-1], "precision": options.precision, "gpu": torch.cuda.get_device_name()})
                    + "\n"
                )
    if any(r["run"] == "limit" for r in rows):
        print("\n" + report(rows, options))


if __name__ == "__main__":
    main()
