"""Run by `accelerate launch` in the DDP tests: `ddp_worker.py RECIPE ARGS...` runs the recipe, and each rank saves its own
weights to OUTPUT_DIR-ranks/rankN.safetensors before the run is written."""

import importlib
import os
import sys

from safetensors.torch import save_file

from hf_transfer import training

finish = training.finish


def finish_and_save_rank(job, trainer, results, **kwargs):
    state = {k: v.detach().cpu().contiguous() for k, v in trainer.accelerator.unwrap_model(job.model).state_dict().items()}
    save_file(state, os.path.join(job.args.training.output_dir + "-ranks", f"rank{trainer.args.process_index}.safetensors"))
    return finish(job, trainer, results, **kwargs)


training.finish = finish_and_save_rank
if __name__ == "__main__":
    importlib.import_module(f"recipes.{sys.argv[1]}").run(argv=sys.argv[2:])
