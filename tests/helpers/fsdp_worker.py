"""Run by `torchrun --nproc_per_node 2` in test_scale_out: the toolkit's mechanisms on a model sharded with FSDP2's
`fully_shard` (gloo, CPU), which replaces every parameter with a new DTensor after the groups were made.

Each rank writes, per scenario, which parameters moved and a checksum of the full (unsharded) tensors.
Usage: fsdp_worker.py CHECKPOINT OUTPUT_DIR
"""

import json
import pathlib
import sys
import types

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForSequenceClassification

from hf_transfer.adapters.attach import AdapterGradientCheck, adapter_parameters
from hf_transfer.engine.optim import build_optimizer, discriminative_lrs
from hf_transfer.engine.unfreezing import GradualUnfreezing
from hf_transfer.models.layer_groups import bind, layer_groups
from hf_transfer.runs import adapter_files, saving

STEPS = 6


def shard(model, mesh):
    for module in model.modules():
        if type(module).__name__ == "BertLayer":
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full(model) -> dict:
    return {
        n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for n, p in model.named_parameters()
    }


def train(model, optimizer, callbacks=()):
    torch.manual_seed(dist.get_rank())  # each rank its own batch, as a distributed sampler gives
    args = types.SimpleNamespace(world_size=2, ddp_find_unused_parameters=None, gradient_accumulation_steps=1)
    state = types.SimpleNamespace(global_step=0, max_steps=STEPS)
    for callback in callbacks:
        callback.on_train_begin(args, state, None, model=model)
    for step in range(STEPS):
        state.global_step = step
        for callback in callbacks:
            callback.on_step_begin(args, state, None)
        inputs = torch.randint(5, 100, (4, 8))
        model(input_ids=inputs, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        for callback in callbacks:
            if hasattr(callback, "on_pre_optimizer_step"):
                callback.on_pre_optimizer_step(args, state, None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def summary(before: dict, model) -> dict:
    after = full(model)
    return {
        "moved": sorted(n for n in before if not torch.equal(before[n], after[n])),
        "checksum": {n: float(t.double().abs().sum()) for n, t in after.items()},
    }


def main(checkpoint: str, out: str) -> None:
    print("init", flush=True)  # the stage reached, for a launch that aborts without a Python traceback
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    print("gradual_unfreezing", flush=True)
    report = {}

    # gradual unfreezing: groups made on the model as loaded, the head from step 0, block 1 from step 3
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    groups = layer_groups(model)
    unfreezing = GradualUnfreezing(
        groups, [{"at_step": 0, "unfreeze": ["head"]}, {"at_step": 3, "unfreeze": ["block.1"]}]
    )
    unfreezing.resolve(STEPS, 3)
    shard(model, mesh)
    before = full(model)
    optimizer = build_optimizer(bind(groups, model), [0.01] * len(groups))
    train(model, optimizer, [unfreezing])
    report["gradual_unfreezing"] = summary(before, model)
    state_dict = saving.full_state_dict(model)  # every rank gathers; rank 0 writes, as training.finish does
    if dist.get_rank() == 0:
        saving.save_model(model, pathlib.Path(out) / "saved_model", state_dict=state_dict)

    print("discriminative_lrs", flush=True)
    # discriminative LRs: every live parameter in the optimizer once, at its group's LR
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    groups = layer_groups(model)
    lrs = discriminative_lrs(len(groups), 1e-2, factor=10)
    shard(model, mesh)
    before = full(model)
    bound = bind(groups, model)
    optimizer = build_optimizer(bound, lrs)
    in_optimizer = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    expected = {id(p): lr for group, lr in zip(bound, lrs) for p in group.parameters.values()}
    train(model, optimizer)
    report["discriminative_lrs"] = {
        **summary(before, model),
        "lrs_match": in_optimizer == expected,
        "live_in_optimizer": sum(id(p) in in_optimizer for p in model.parameters()),
        "live": len(list(model.parameters())),
    }

    print("lora", flush=True)
    # LoRA: the base frozen, the adapter and the head trained; the gradient check sees the sharded adapter
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2),
        LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"]),
    )
    check = AdapterGradientCheck(adapter_parameters(model))
    shard(model, mesh)
    before = full(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    train(model, optimizer, [check])
    report["lora"] = {**summary(before, model), "gradient_checked": check.checked}
    state_dict = saving.full_state_dict(model)
    if dist.get_rank() == 0:
        adapter_files.save(
            model, pathlib.Path(out) / "saved_adapter", {"model_name_or_path": checkpoint}, state_dict=state_dict
        )

    with open(f"{out}/rank{dist.get_rank()}.json", "w") as f:
        json.dump(report, f)
    dist.barrier()  # neither rank tears gloo down while the other still saves or gathers
    print("done", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
