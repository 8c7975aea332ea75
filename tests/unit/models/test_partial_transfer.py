import torch
from transformers import BertConfig, BertForSequenceClassification

from hf_transfer.engine.unfreezing import GradualUnfreezing, default_phases
from hf_transfer.models.layer_groups import layer_groups
from hf_transfer.models.partial_transfer import reinitialize_groups


def tiny_bert():
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=20)
    )
    with torch.no_grad():  # make "pretrained" weights distinguishable from a fresh init
        for p in model.parameters():
            p.add_(1.0)
    return model


def test_reinitialize_only_the_chosen_groups():
    model = tiny_bert()
    groups = layer_groups(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    chosen = [g for g in groups if g.name == "block.2"]
    assert reinitialize_groups(model, chosen) == chosen[0].numel()
    for name, parameter in model.named_parameters():
        moved = not torch.equal(before[name], parameter)
        assert moved == name.startswith("bert.encoder.layer.2."), name


def test_keep_frozen_groups_never_thaw():
    groups = layer_groups(tiny_bert())
    phases = default_phases(len(groups), keep_frozen=2)  # as --keep_frozen_groups 2
    callback = GradualUnfreezing(groups, phases)
    callback.resolve(num_training_steps=100, steps_per_epoch=10)
    assert callback.trainable_at(10_000)[:2] == [False, False] and all(callback.trainable_at(10_000)[2:])
