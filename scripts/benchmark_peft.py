"""LoRA (r 8, r 16) and bottleneck adapters against full fine-tuning: accuracy, trainable parameters,
peak memory and time per step, at several training-set sizes.

Every run trains as the recipes do (10 epochs, validation each epoch, best epoch kept, each method's
default learning rate) and is scored on the held-out test split. The baseline is full fine-tuning with a
plain `transformers.Trainer`, measured in the same invocation on the same data. Each run gets its own
process, so peak memory is its own: on a GPU torch's peak allocation, on the CPU the peak resident
memory above what the process held when training began (sampled every 5 ms).

    python scripts/benchmark_peft.py --per_class 100 500                       # bundled MiniLM x Rotten Tomatoes
    python scripts/benchmark_peft.py --per_class 100 --strategies full lora_r8 dora ia3 --json results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

STRATEGIES = {  # name -> (recipe arguments, description)
    "full": ({}, "full fine-tuning, plain Trainer (baseline)"),
    "lora_r8": ({"peft_method": "lora", "lora_r": 8}, "LoRA r 8 (query, value)"),
    "lora_r16": ({"peft_method": "lora", "lora_r": 16}, "LoRA r 16 (query, value)"),
    "bottleneck": ({"peft_method": "bottleneck", "adapter_reduction_factor": 16}, "bottleneck adapters (hidden/16)"),
    "dora": ({"peft_method": "dora", "lora_r": 8}, "DoRA r 8"),
    "ia3": ({"peft_method": "ia3"}, "IA3"),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _make_memory_probe():
    """Measures peak memory between on_train_begin and on_train_end."""
    import torch
    from transformers import TrainerCallback

    class MemoryAndStepTimer(TrainerCallback):
        def __init__(self):
            self.step_times, self.peak, self.start_rss, self._running = [], 0, 0, False

        def on_train_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            else:
                self.start_rss, self.peak, self._running = _rss_bytes(), _rss_bytes(), True
                threading.Thread(target=self._sample, daemon=True).start()

        def _sample(self):
            while self._running:
                self.peak = max(self.peak, _rss_bytes())
                time.sleep(0.005)

        def on_train_end(self, args, state, control, **kwargs):
            self._running = False
            if torch.cuda.is_available():
                self.peak = torch.cuda.max_memory_allocated()

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_times.append(time.perf_counter() - self._t)

        def peak_mib(self) -> float:
            return (self.peak - self.start_rss) / 2**20

    return MemoryAndStepTimer()


def worker(strategy: str, per_class: int, epochs: float, recipe_argv: list[str]) -> dict:
    """One training run, composed from the library as the recipes compose it."""
    import torch
    from transformers import Trainer

    import recipes.full_finetune as full_finetune
    import recipes.peft_finetune as peft_finetune
    from hf_transfer import defaults
    from hf_transfer.adapters import attach as adapters
    from hf_transfer.pipeline import training
    from hf_transfer.pipeline.arguments import parse_recipe_args

    options, _ = STRATEGIES[strategy]
    probe = _make_memory_probe()
    with tempfile.TemporaryDirectory() as out:
        common = {
            "max_train_samples_per_class": per_class,
            "num_train_epochs": epochs,
            "output_dir": out,
            "disable_tqdm": True,
            "save_total_limit": 1,
        }
        if strategy == "full":
            args = parse_recipe_args(full_finetune.DEFAULTS, recipe_argv, common)
            job = training.prepare(args, learning_rates=defaults.BODY_LEARNING_RATES)
            model = job.model
            trainer = training.make_trainer(job, callbacks=[probe], trainer_class=Trainer)
        else:
            args = parse_recipe_args(
                peft_finetune.DEFAULTS,
                recipe_argv,
                {**common, **options},
                extra_dataclasses=(adapters.AdapterArguments,),
            )
            adapter_args = args.option(adapters.AdapterArguments)
            if "learning_rate" not in args.explicit:
                args.training.learning_rate = defaults.ADAPTER_LEARNING_RATES[adapter_args.peft_method]
            job = training.prepare(args)
            model = adapters.attach(job.model, adapter_args)
            trainer = training.make_trainer(job, model=model, callbacks=[probe])
        results = training.train_and_evaluate(job, trainer)
    counts = {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    steps = probe.step_times[3:] or probe.step_times
    return {
        "strategy": strategy,
        "per_class": per_class,
        "test_accuracy": results.get("test_accuracy"),
        "eval_accuracy": results.get("eval_accuracy"),
        "test_samples": len(job.data.splits.get("test", [])),
        "learning_rate": args.training.learning_rate,
        "trainable_params": counts["trainable"],
        "peak_train_memory_mib": probe.peak_mib(),
        "step_s": statistics.median(steps),
        "train_runtime_s": results.get("train_runtime"),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_class", type=int, nargs="+", default=[100, 500])
    parser.add_argument(
        "--strategies", nargs="+", default=["full", "lora_r8", "lora_r16", "bottleneck"], choices=list(STRATEGIES)
    )
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--json", default=None, help="append each run's figures to this JSON-lines file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "recipe_args", nargs="*", help="recipe arguments after --, e.g. -- --model_name_or_path ... --dataset_name ..."
    )
    options = parser.parse_args()
    if options.worker:
        job = json.loads(options.worker)
        print("RESULT " + json.dumps(worker(job["strategy"], job["per_class"], job["epochs"], options.recipe_args)))
        return
    strategies = ["full"] + [s for s in options.strategies if s != "full"]  # the baseline always runs
    rows = []
    for per_class in options.per_class:
        for strategy in strategies:
            spec = json.dumps({"strategy": strategy, "per_class": per_class, "epochs": options.epochs})
            started = time.time()
            done = subprocess.run(
                [sys.executable, __file__, "--worker", spec, "--", *options.recipe_args],
                capture_output=True,
                text=True,
            )
            line = next((text for text in done.stdout.splitlines() if text.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                sys.exit(f"error: {strategy} at {per_class} per class failed:\n{done.stderr[-2000:]}")
            row = json.loads(line[len("RESULT ") :])
            rows.append(row)
            print(
                f"  {strategy:10s} {per_class:4d}/class: test {100 * row['test_accuracy']:.2f}%  ({time.time() - started:.0f} s)",
                flush=True,
            )
            if options.json:
                with open(options.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    print(
        "\n| examples/class | method | test accuracy | % of full FT | trainable params | peak train memory (MiB) | step time (ms) | x baseline step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for per_class in sorted({r["per_class"] for r in rows}):
        group = [r for r in rows if r["per_class"] == per_class]
        base = next(r for r in group if r["strategy"] == "full")
        for r in group:
            print(
                f"| {per_class} | {STRATEGIES[r['strategy']][1]} | {100 * r['test_accuracy']:.2f}% | {100 * r['test_accuracy'] / base['test_accuracy']:.1f}% "
                f"| {r['trainable_params']:,} | {r['peak_train_memory_mib']:.0f} | {1000 * r['step_s']:.0f} | x{r['step_s'] / base['step_s']:.2f} |"
            )


if __name__ == "__main__":
    main()
