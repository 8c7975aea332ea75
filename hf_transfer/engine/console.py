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
        evaluates = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
        if "eval_loss" in logs or ("loss" in logs and not evaluates):  # no validation split: a line per training log
            parts = [
                f"epoch {state.epoch:g}/{args.num_train_epochs:g}"
                if args.max_steps <= 0
                else f"step {state.global_step}/{state.max_steps}"
            ]
            if self.train_loss is not None:
                parts.append(f"train loss {self.train_loss:.4f}")
            if "eval_loss" in logs:
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


# Notices that our own calls trigger on purpose and that ask nothing of the user: LoRA with gradient checkpointing
# feeds inputs without requires_grad (peft #1142 is why we use the non-reentrant variant), and gradual unfreezing
# under DDP has unused parameters by design. Only these messages are held back; every other warning shows.
EXPECTED_NOTICES = ("None of the inputs have requires_grad", "find_unused_parameters=True")


def command_line_output() -> None:
    """For command-line runs: no per-tensor loading bars from transformers / datasets, and the notices above held
    back. Library logging otherwise follows --log_level / --log_level_replica (`follow_log_level`), as in Trainer."""
    import datasets
    import transformers

    transformers.logging.disable_progress_bar()  # loading / writing bars for a few hundred tensors
    datasets.disable_progress_bars()
    for message in EXPECTED_NOTICES:
        warnings.filterwarnings("ignore", message=f".*{message}.*")


def follow_log_level(training_args) -> None:
    """transformers and datasets log at the level Trainer would use for this process (--log_level on the main
    process, --log_level_replica on the others; `passive` keeps the library default, warnings)."""
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    transformers.logging.set_verbosity(level)
    datasets.logging.set_verbosity(level)
