"""Run by `accelerate launch` in the DDP tests: `ddp_worker.py RECIPE ARGS...` runs the recipe, and each rank saves its own
weights to OUTPUT_DIR-ranks/rankN.safetensors before the run is written, and how many inputs its distillation teacher
scored (domain adaptation: its pseudo-labelling passes) to OUTPUT_DIR-ranks/rankN-teacher.json."""

import importlib
import json
import os
import sys

from safetensors.torch import save_file

from hf_transfer.distill import distillation
from hf_transfer.features import extraction as features
from hf_transfer.pipeline import training

finish = training.finish
class_logits, extract_features = distillation.class_logits, features.extract_features
scored = []


def counted_class_logits(run, inputs, **kwargs):
    scored.append(len(inputs))
    return class_logits(run, inputs, **kwargs)


def counted_extract_features(model, dataset, *args, **kwargs):  # what domain adaptation's pseudo-labelling calls
    scored.append(len(dataset))
    return extract_features(model, dataset, *args, **kwargs)


def finish_and_save_rank(job, trainer, results, **kwargs):
    state = {
        k: v.detach().cpu().contiguous() for k, v in trainer.accelerator.unwrap_model(job.model).state_dict().items()
    }
    save_file(
        state, os.path.join(job.args.training.output_dir + "-ranks", f"rank{trainer.args.process_index}.safetensors")
    )
    with open(
        os.path.join(job.args.training.output_dir + "-ranks", f"rank{trainer.args.process_index}-teacher.json"), "w"
    ) as file:
        json.dump(scored, file)
    return finish(job, trainer, results, **kwargs)


training.finish = finish_and_save_rank
distillation.class_logits = counted_class_logits
features.extract_features = counted_extract_features
if __name__ == "__main__":
    importlib.import_module(f"recipes.{sys.argv[1]}").run(argv=sys.argv[2:])
