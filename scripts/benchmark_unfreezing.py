"""Per-step cost of the head-only phase of gradual unfreezing against full fine-tuning.

Frozen groups are out of the backward pass (no graph is built below the lowest trainable layer), so
the head-only phase should be much cheaper per step. Baseline: a plain `transformers.Trainer` doing
full fine-tuning, measured in the same run on the same batches.

    python scripts/benchmark_unfreezing.py --steps 30
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import Trainer, TrainerCallback

from hf_transfer.engine.optim import discriminative_lrs
from hf_transfer.engine.unfreezing import GradualUnfreezing, Phase
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int = 3):
        self.warmup, self.times, self._start = warmup, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._start)


def measure(kind: str, args_list: list[str], steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        args = parse_recipe_args(
            {
                "max_steps": steps,
                "save_strategy": "no",
                "eval_strategy": "no",
                "load_best_model_at_end": False,
                "disable_tqdm": True,
                "logging_strategy": "no",
                "output_dir": out,
            },
            args_list,
        )
        job = training.prepare(args)
        timer = StepTimer()
        if kind == "plain Trainer, full fine-tuning (baseline)":
            trainer = Trainer(
                model=job.model,
                args=args.training,
                train_dataset=job.datasets["train"],
                data_collator=job.collator,
                callbacks=[timer],
            )
        else:
            groups = layer_groups(job.model)
            phases = (
                [Phase(unfreeze=["head"], at_step=0)]
                if "head-only" in kind
                else [Phase(unfreeze=list(range(len(groups))), at_step=0)]
            )
            unfreezing = GradualUnfreezing(groups, phases)
            trainer = training.make_trainer(
                job,
                callbacks=[timer],
                layer_groups=groups,
                group_lrs=discriminative_lrs(len(groups), 1e-3, 2.6),
                unfreezing=unfreezing,
            )
        trainer.train()
        return {
            "kind": kind,
            "step_s": sum(timer.times) / len(timer.times),
            "trainable": sum(p.numel() for p in job.model.parameters() if p.requires_grad),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "recipe_args", nargs="*", help="recipe arguments, e.g. --model_name_or_path bundled:efficientnet-lite0 ..."
    )
    options = parser.parse_args()
    torch.manual_seed(0)
    kinds = [
        "plain Trainer, full fine-tuning (baseline)",
        "gradual unfreezing, everything thawed",
        "gradual unfreezing, head-only phase",
    ]
    results = [measure(kind, options.recipe_args, options.steps) for kind in kinds]
    baseline = results[0]["step_s"]
    print(f"\nper-step time over {options.steps} steps (first 3 skipped); ratio to the plain-Trainer baseline")
    for r in results:
        print(
            f"  {r['kind']:45s} {1000 * r['step_s']:8.1f} ms/step  x{r['step_s'] / baseline:5.2f}   trainable {r['trainable']:>11,}"
        )


if __name__ == "__main__":
    main()
