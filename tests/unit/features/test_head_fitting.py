"""The head fitted on cached features: a logistic regression fitted to convergence with its L2 strength chosen on
validation, or AdamW with the run's schedule; both on the device, without Trainer steps."""

import json
import types

import pytest
import torch

import recipes.feature_extraction as feature_extraction
from hf_transfer.errors import TransferError
from hf_transfer.features.head_fitting import L2_PATH, fit_by_gradient_steps, fit_logistic_regression, resolve_solver
from hf_transfer.models.transfer_classifier import ClassificationHead


def blobs(n_per_class=40, classes=3, dim=12, seed=0):
    """Gaussian classes that overlap, features on very different scales (as pooled features are)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    features = centres[labels] + 1.5 * torch.randn(len(labels), dim, generator=generator)
    scales = torch.logspace(-2, 1, dim)
    return features * scales + 3.0, labels


def test_logistic_regression_is_fitted_to_convergence_and_takes_raw_features():
    train, validation = blobs(seed=0), blobs(seed=1)
    linear = torch.nn.Linear(12, 3)
    fit = fit_logistic_regression(linear, train, validation, l2_path=(0.01,), max_iter=200)
    assert fit.results["head_l2"] == 0.01 and len(fit.results["head_candidates"]) == 2  # one strength, two scalings
    # undo the folding: the weights on the scaled features must be a stationary point of the penalised loss
    x, y = train
    mean = x.mean(0)
    scale = x.std(0) if fit.results["head_feature_scaling"] == "per feature" else x.std().expand(12)
    weight = (linear.weight.detach().T * scale[:, None]).requires_grad_()
    bias = (linear.bias.detach() + mean @ linear.weight.detach().T).requires_grad_()
    loss = torch.nn.functional.cross_entropy((x - mean) / scale @ weight + bias, y) + 0.01 * weight.pow(2).sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-4 and bias.grad.abs().max() < 1e-4
    with torch.no_grad():  # the head on raw features gives exactly what the fit scored on validation
        accuracy = (linear(validation[0]).argmax(1) == validation[1]).float().mean().item()
    kept = next(c for c in fit.results["head_candidates"] if c["scaling"] == fit.results["head_feature_scaling"])
    assert accuracy == pytest.approx(kept["eval_accuracy"], abs=1e-4)


def test_the_l2_strength_is_the_one_best_on_validation():
    linear = torch.nn.Linear(12, 3)
    fit = fit_logistic_regression(linear, blobs(n_per_class=8, seed=2), blobs(seed=3))
    candidates = fit.results["head_candidates"]
    assert len(candidates) == 2 * len(L2_PATH)
    best = max(c["eval_accuracy"] for c in candidates)
    kept = [
        c
        for c in candidates
        if c["l2"] == fit.results["head_l2"] and c["scaling"] == fit.results["head_feature_scaling"]
    ]
    assert kept[0]["eval_accuracy"] == best
    assert len({c["eval_accuracy"] for c in candidates}) > 1  # the strengths really differ


def training_args(**overrides):
    values = {
        "seed": 0,
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": 6,
        "warmup_steps": 0.0,
        "weight_decay": 0.0,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "linear",
        "max_grad_norm": 1.0,
    }
    return types.SimpleNamespace(**{**values, **overrides})


def test_gradient_steps_follow_the_run_and_keep_the_best_epoch(monkeypatch):
    train, validation = blobs(seed=0), blobs(seed=1)
    head = ClassificationHead(12, 3, "mlp", hidden_size=8, dropout=0.0)
    start = {k: v.clone() for k, v in head.state_dict().items()}
    fit = fit_by_gradient_steps(head, train, validation, training_args())
    assert fit.results["epochs_trained"] == 6
    evaluations = [e for e in fit.log_history if "eval_accuracy" in e]
    assert len(evaluations) == 6 and max(e["eval_accuracy"] for e in evaluations) == next(
        e["eval_accuracy"] for e in evaluations if e["epoch"] == fit.results["kept_epoch"]
    )
    with torch.no_grad():
        assert (head(validation[0]).argmax(1) == validation[1]).float().mean().item() == pytest.approx(
            max(e["eval_accuracy"] for e in evaluations)
        )
    other = ClassificationHead(12, 3, "mlp", hidden_size=8, dropout=0.0)
    other.load_state_dict(start)
    fit_by_gradient_steps(other, train, validation, training_args(learning_rate=1e-4))
    assert not torch.equal(other.layers[1].weight, head.layers[1].weight)  # the learning rate is used
    last = fit_by_gradient_steps(other, train, validation, training_args(load_best_model_at_end=False))
    assert last.results["kept_epoch"] == 6 and last.results["kept_because"] == "last epoch"
    steps, original_step = [], torch.optim.AdamW.step
    monkeypatch.setattr(
        torch.optim.AdamW, "step", lambda self, *a, **k: (steps.append(1), original_step(self, *a, **k))[1]
    )
    capped = fit_by_gradient_steps(
        other, train, validation, training_args(max_steps=10)
    )  # 120 examples, 8 steps an epoch
    assert len(steps) == 10 and capped.results["epochs_trained"] == 2


def test_solver_choice_and_its_errors():
    assert resolve_solver("auto", ClassificationHead(4, 2, "linear")) == "lbfgs"
    assert resolve_solver("auto", ClassificationHead(4, 2, "mlp")) == "adamw"
    with pytest.raises(TransferError, match="--head linear"):
        resolve_solver("lbfgs", ClassificationHead(4, 2, "mlp"))
    with pytest.raises(TransferError, match="choose one of"):
        resolve_solver("sgd", ClassificationHead(4, 2, "linear"))


def test_only_a_head_that_is_a_linear_map_of_its_input_is_fitted_as_a_logistic_regression():
    """A norm before the Linear layer (LeViT's BatchNorm1d, torchvision ConvNeXt's LayerNorm2d) would transform the
    features the regression was fitted to: such a head trains by gradient steps. Dropout and Flatten are the identity
    at inference, so a head with them beside its Linear layer is fitted."""
    from torch import nn

    from hf_transfer.features.head_fitting import single_linear

    assert isinstance(single_linear(nn.Sequential(nn.Dropout(0.1), nn.Flatten(), nn.Linear(4, 2))), nn.Linear)
    for head in (
        nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)),
        nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(4, 2), nn.Tanh()),
    ):
        assert single_linear(head) is None
        assert resolve_solver("auto", head) == "adamw"
        with pytest.raises(TransferError, match="fits a linear head"):
            resolve_solver("lbfgs", head)


def test_recipe_options_change_the_head(tmp_path, tiny_bert_dir, text_csv, capsys):
    common = {
        "model_name_or_path": tiny_bert_dir,
        "train_file": str(text_csv),
        "feature_cache_dir": str(tmp_path / "cache"),
    }
    chosen = feature_extraction.run(**common, output_dir=str(tmp_path / "auto"))
    assert chosen["head_solver"] == "lbfgs" and chosen["head_l2"] in L2_PATH and "kept_epoch" not in chosen
    assert (
        "learning_rate" not in chosen["training_config"]
        and "fitted to convergence by L-BFGS" in (tmp_path / "auto" / "README.md").read_text()
    )
    fixed = feature_extraction.run(**common, output_dir=str(tmp_path / "fixed"), head_l2=30.0, learning_rate=0.5)
    assert fixed["head_l2"] == 30.0 and len(fixed["head_candidates"]) == 2
    assert "--learning_rate: not used by --head_solver lbfgs" in capsys.readouterr().out
    weak = feature_extraction.run(**common, output_dir=str(tmp_path / "weak"), head_l2=1e-4)
    from safetensors.torch import load_file

    # A much stronger penalty: a worse fit of the training set and logits that vary less between examples (compared as
    # functions of the features: the saved weights also fold in the feature scaling each fit chose, so their norms are
    # not comparable). On ten random tiny BERTs the spread shrank 2.8x to 10^7x, the training loss rose in every one.
    assert weak["train_loss"] < fixed["train_loss"]
    heads = [load_file(tmp_path / name / "model.safetensors")["head.layers.1.weight"] for name in ("weak", "fixed")]
    features = torch.cat(
        [load_file(path)["features"] for path in (tmp_path / "cache").glob("*/*.safetensors")]
    ).float()
    spread = [((features - features.mean(0)) @ head.T).std() for head in heads]
    assert spread[1] < spread[0] / 2, spread
    stepped = feature_extraction.run(
        **common, output_dir=str(tmp_path / "adamw"), head_solver="adamw", num_train_epochs=4
    )
    assert stepped["head_solver"] == "adamw" and stepped["epochs_trained"] == 4
    assert "training_curves.png" in json.loads((tmp_path / "adamw" / "run_details.json").read_text())["figures"]
    feature_extraction.run(
        **common, output_dir=str(tmp_path / "live"), cache_features=False, head_l2=1.0, num_train_epochs=1
    )
    assert "--head_l2: not used without cached features" in capsys.readouterr().out
    with pytest.raises(TransferError, match="--head_solver lbfgs fits a linear head"):
        feature_extraction.run(**common, output_dir=str(tmp_path / "bad"), head="mlp", head_solver="lbfgs")
    assert not (tmp_path / "bad").exists()


def test_a_fitted_head_loads_with_pipeline_in_a_fresh_process_and_predicts_what_was_scored(tmp_path, tiny_bert_dir):
    from conftest import pipeline_accuracy, write_text_table

    train, test = (
        write_text_table(tmp_path / "train", rows_per_class=16),
        write_text_table(tmp_path / "test", rows_per_class=10),
    )
    out = tmp_path / "run"
    results = feature_extraction.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        test_file=str(test),
        output_dir=str(out),
        feature_cache_dir=str(tmp_path / "cache"),
    )
    assert results["head_solver"] == "lbfgs"
    assert pipeline_accuracy(out, test, "text-classification")["accuracy"] == pytest.approx(results["test_accuracy"])


def test_a_flatten_then_linear_head_is_fitted_on_its_flattened_input_and_a_larger_input_is_refused():
    """transformers' ResNet head is Sequential(Flatten, Linear) and takes the pooled features as (N, C, 1, 1)."""
    (x, y), (vx, vy) = blobs(), blobs(seed=1)
    flat, spatial = torch.nn.Linear(x.shape[1], 3), torch.nn.Linear(x.shape[1], 3)
    fit_logistic_regression(flat, (x, y), (vx, vy), l2_path=(1e-3,))
    fit_logistic_regression(spatial, (x[:, :, None, None], y), (vx[:, :, None, None], vy), l2_path=(1e-3,))
    assert torch.allclose(flat.weight, spatial.weight, atol=1e-5) and torch.allclose(
        flat.bias, spatial.bias, atol=1e-5
    )
    with pytest.raises(TransferError, match="more than a linear map"):
        fit_logistic_regression(
            torch.nn.Linear(x.shape[1], 3),
            (x[:, :, None, None].expand(-1, -1, 2, 2), y),
            (vx[:, :, None, None].expand(-1, -1, 2, 2), vy),
            l2_path=(1e-3,),
        )


def test_candidate_choice_rules():
    """best: top validation accuracy, ties by loss. one_se: the strongest L2 within one standard error of the top."""
    from hf_transfer.features.head_fitting import choose_candidate

    path = [
        ((0.80, 0.90), ("one scale", 10.0)),
        ((0.85, 0.70), ("one scale", 1.0)),
        ((0.86, 0.50), ("one scale", 0.1)),
        ((0.86, 0.60), ("per feature", 0.3)),
    ]
    assert choose_candidate(path, "best", 500) == ("one scale", 0.1)
    assert choose_candidate(path, "one_se", 500) == ("one scale", 1.0)  # 0.85 >= 0.86 - sqrt(0.86 * 0.14 / 500)
    assert choose_candidate(path, "one_se", 5000) == ("per feature", 0.3)  # a larger validation set, a smaller error


def test_one_se_keeps_a_separable_fit_from_saturating():
    """On separable data every L2 strength is 100% accurate on validation and the lowest validation loss is the weakest
    L2, with the largest logits. The one-standard-error choice keeps the most regularised head instead."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1] * 6)
    features = torch.randn(12, 16, generator=generator) + 4.0 * labels[:, None]
    train, validation = (features[:10], labels[:10]), (features[10:], labels[10:])
    spreads = {}
    for choice in ("best", "one_se"):
        linear = torch.nn.Linear(16, 2)
        fit = fit_logistic_regression(linear, train, validation, choice=choice)
        assert all(c["eval_accuracy"] == 1.0 for c in fit.results["head_candidates"])
        with torch.no_grad():
            logits = linear(features)
        spreads[choice] = (logits[:, 1] - logits[:, 0]).abs().mean().item()
        assert (logits.argmax(1) == labels).all()
    assert fit.results["head_l2"] == max(L2_PATH) and "one standard error" in fit.results["kept_because"]
    assert spreads["best"] > 20 * spreads["one_se"], spreads


def test_a_prior_head_helps_a_few_examples_and_yields_where_it_says_nothing():
    """`prior` (the zero-shot head of the label names): the L2 pulls toward it, its scale fitted. From 4 examples per
    class, a prior pointing the right way beats no prior on held-out data; an unrelated or reversed prior is scaled to
    (almost) nothing, never turned round, and the fit is about as good as without it; one-SE cross-validation picks
    the strength in every case."""
    from hf_transfer.features.head_fitting import fit_cross_validated

    generator = torch.Generator().manual_seed(0)
    dim = 40
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=generator), dim=0)
    unrelated = torch.nn.functional.normalize(torch.randn(dim, generator=generator), dim=0)
    unrelated = torch.nn.functional.normalize(unrelated - (unrelated @ direction) * direction, dim=0)

    def draw(per_class):
        labels = torch.arange(2).repeat_interleave(per_class)
        sign = 2 * labels[:, None].float() - 1
        return torch.randn(2 * per_class, dim, generator=generator) + 1.5 * sign * direction + 2.0, labels

    train, held_out = draw(4), draw(1000)
    accuracy, scale = {}, {}
    for name, prior in {
        "none": None,
        "right": torch.stack([-direction, direction]),
        "unrelated": torch.stack([-unrelated, unrelated]),
        "reversed": torch.stack([direction, -direction]),
    }.items():
        linear = torch.nn.Linear(dim, 2)
        fit = fit_cross_validated(linear, train, choice="one_se", prior=prior)
        with torch.no_grad():
            accuracy[name] = (linear(held_out[0]).argmax(1) == held_out[1]).float().mean().item()
        scale[name] = fit.results.get("prior_scale")
    assert scale["none"] is None
    assert accuracy["right"] > accuracy["none"] + 0.05, accuracy
    assert accuracy["unrelated"] > accuracy["none"] - 0.06, accuracy  # 76% without a prior here
    assert abs(scale["unrelated"]) < 0.2 * scale["right"], scale
    assert scale["reversed"] < 0.01 * scale["right"] and accuracy["reversed"] > accuracy["none"] - 0.06, (
        scale,
        accuracy,
    )
