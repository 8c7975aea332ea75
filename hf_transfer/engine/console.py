"""A calm console: one progress bar over training, one line of metrics per evaluation, the summary at the end.

Trainer's own output (a dict per log, a nested bar per evaluation) and dependency chatter that does
not concern the user (load reports for the new head we add on purpose, deprecation notices) are
replaced or silenced on the command line; our own one-line notes about the run and every error still show.
"""

from __future__ import annotations

import warnings

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class EpochLines(TrainerCallback):
    """A bar over optimizer steps (unless --disable_tqdm), and a line per evaluation:
    `epoch 3/10  train loss 0.512  val loss 0.480  accuracy 81.20%  macro-F1 80.10%`."""

    def __init__(self):
        self.bar = None
        self.train_loss = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not args.disable_tqdm:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True, leave=False)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.train_loss = logs["loss"]
        if "eval_loss" in logs:
            parts = [
                f"epoch {state.epoch:g}/{args.num_train_epochs:g}"
                if args.max_steps <= 0
                else f"step {state.global_step}/{state.max_steps}"
            ]
            if self.train_loss is not None:
                parts.append(f"train loss {self.train_loss:.4f}")
            parts.append(f"val loss {logs['eval_loss']:.4f}")
            parts += [
                f"{name} {100 * logs[key]:.2f}%"
                for key, name in (("eval_accuracy", "accuracy"), ("eval_f1_macro", "macro-F1"))
                if key in logs
            ]
            self._write("  ".join(parts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)


def calm(trainer) -> None:
    """Swap Trainer's console output for EpochLines."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(EpochLines())


def quiet_dependencies() -> None:
    """For command-line runs: transformers / datasets log errors only, and library deprecation notices are hidden."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # loading / writing bars for a few hundred tensors
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for message in ("None of the inputs have requires_grad", "torch.utils.checkpoint", "find_unused_parameters=True"):
        warnings.filterwarnings("ignore", message=f".*{message}.*")
