"""Training speed as a user reads it: examples per second of the training loop alone, epoch by epoch, and peak
accelerator memory.

Trainer's `train_samples_per_second` divides by the whole `train()` call, evaluation and checkpoint saving
included, so it cannot say whether the data pipeline keeps the GPU busy, nor how much the decoded-image
cache gains from the second epoch on. This callback times each epoch's steps only (from the first step's
start to the last step's end, the accelerator synchronised), and the results record both.
"""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback


def synchronize() -> None:
    """Wait for queued accelerator work, so a timestamp covers it (nothing to wait for on the CPU)."""
    if torch.accelerator.is_available():
        torch.accelerator.synchronize()


class TrainingThroughput(TrainerCallback):
    def __init__(self):
        self.epochs: list[dict] = []  # {"samples": int, "seconds": float} per epoch
        self._started = None
        self._steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.epochs = []
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._started, self._steps = None, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if self._started is None:
            synchronize()
            self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._steps += 1

    def on_epoch_end(self, args, state, control, train_dataloader=None, **kwargs):
        if self._started is None or not self._steps:
            return
        synchronize()
        seconds = time.perf_counter() - self._started
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        samples = self._steps * per_step
        try:  # the last batch of an epoch is usually short; a stream (or accelerate's shard of one) has no length
            samples = min(samples, len(train_dataloader.dataset))
        except (AttributeError, TypeError):
            pass
        self.epochs.append({"samples": samples, "seconds": seconds})

    def results(self) -> dict:
        """For all_results.json: examples/s of the first epoch and of the later ones (cached inputs), and peak memory."""
        if not self.epochs:
            return {}
        rate = [e["samples"] / e["seconds"] for e in self.epochs]
        figures = {"train_loop_samples_per_second": [round(r, 1) for r in rate]}
        if len(self.epochs) > 1:
            later = self.epochs[1:]
            figures["train_loop_samples_per_second_after_first_epoch"] = round(
                sum(e["samples"] for e in later) / sum(e["seconds"] for e in later), 1
            )
        if torch.cuda.is_available():
            figures["peak_accelerator_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        return figures


def throughput_of(trainer) -> dict:
    callback = next((c for c in trainer.callback_handler.callbacks if isinstance(c, TrainingThroughput)), None)
    return callback.results() if callback is not None else {}


@torch.inference_mode()
def inference_rate(model: torch.nn.Module, batches: list[dict], repeats: int = 2) -> float:
    """Examples per second of `model`'s forward pass over `batches` (already on the model's device): one warm-up
    batch, then the best of `repeats` timed passes, the accelerator synchronised at the ends."""
    was_training = model.training
    model.eval()
    try:
        model(**batches[0])
        examples = sum(len(next(iter(b.values()))) for b in batches)
        best = float("inf")
        for _ in range(repeats):
            synchronize()
            start = time.perf_counter()
            for batch in batches:
                model(**batch)
            synchronize()
            best = min(best, time.perf_counter() - start)
    finally:
        model.train(was_training)
    return examples / best
