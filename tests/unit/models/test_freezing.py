import torch
from torch import nn

from hf_transfer.models.freezing import count_parameters, freeze, unfreeze


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_frozen_batchnorm_keeps_running_statistics_in_train_mode():
    model = small_cnn()
    model(torch.randn(2, 3, 8, 8))
    freeze(model[:2])
    stats = (model[1].running_mean.clone(), model[1].running_var.clone(), model[1].num_batches_tracked.clone())
    conv = model[0].weight.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(3):
        loss = model(torch.randn(4, 3, 8, 8) * 5 + 3).sum()
        loss.backward()
        optimizer.step()
    assert torch.equal(model[1].running_mean, stats[0]) and torch.equal(model[1].running_var, stats[1])
    assert torch.equal(model[1].num_batches_tracked, stats[2])
    assert torch.equal(model[0].weight, conv) and model[0].weight.grad is None
    assert model[4].weight.grad is not None


def test_train_bn_leaves_affine_trainable_but_statistics_frozen():
    model = small_cnn()
    model(torch.randn(2, 3, 8, 8))
    freeze(model[:2], train_bn=True)
    assert model[1].weight.requires_grad and not model[0].weight.requires_grad
    mean = model[1].running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 8, 8) + 2).sum().backward()
    assert torch.equal(model[1].running_mean, mean)


def test_unfreeze_keeps_statistics_frozen_unless_asked():
    model = small_cnn()
    model(torch.randn(2, 3, 8, 8))
    freeze(model)
    assert count_parameters(model)["trainable_params"] == 0
    unfreeze(model)
    assert count_parameters(model)["trainable_percent"] == 100.0
    mean = model[1].running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 8, 8) + 2)
    assert torch.equal(model[1].running_mean, mean), "thawed weights, pretrained statistics"
    unfreeze(model, update_bn_statistics=True)
    model.train()
    model(torch.randn(4, 3, 8, 8) + 2)
    assert not torch.equal(model[1].running_mean, mean)
