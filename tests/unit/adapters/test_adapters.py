"""Adapters on tiny random BERT / ViT / timm models: what trains, where adapters go, that the head is
saved with them, that base + adapter reloads to the same predictions, merging, and gradients under
activation checkpointing (transformers #26221, peft #310, wrong target names)."""

import json

import pytest
import torch
from torch import nn

from hf_transfer.adapters import attach as adapters
from hf_transfer.adapters import bottleneck
from hf_transfer.adapters.attach import AdapterArguments
from hf_transfer.adapters.targets import default_targets, head_modules, resolve_targets
from hf_transfer.errors import TransferError
from hf_transfer.models.loading import ModelArguments, build_classifier, resolve_checkpoint
from hf_transfer.pipeline import training
from hf_transfer.pipeline.arguments import parse_recipe_args
from hf_transfer.runs import adapter_files

PEFT_METHODS = ["lora", "dora", "loha", "lokr", "ia3"]


def classifier(path, labels=("neg", "pos"), **model_args):
    args = ModelArguments(model_name_or_path=path, **model_args)
    return build_classifier(resolve_checkpoint(args), list(labels), args)


def text_batch(tiny_bert_dir, texts=("a wonderful film", "dull and boring", "great acting")):
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(tiny_bert_dir)(list(texts), padding=True, return_tensors="pt"))


def image_batch(n=3):
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))}


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


# ---------------------------------------------------------------- what trains


@pytest.mark.parametrize("method", PEFT_METHODS + ["bottleneck"])
@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_only_adapter_and_head_train_and_the_adapted_model_starts_as_the_base(
    method, kind, tiny_bert_dir, tiny_vit_dir
):
    path, batch = (tiny_bert_dir, text_batch(tiny_bert_dir)) if kind == "bert" else (tiny_vit_dir, image_batch())
    model = classifier(path)
    before = logits(model, batch)
    base_names = {n for n, _ in model.named_parameters()}
    adapted = adapters.attach(model, AdapterArguments(peft_method=method))
    assert torch.allclose(logits(adapted, batch), before, atol=1e-6), (
        "an untrained adapter must not change the outputs"
    )
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    head = [n for n in trainable if "classifier" in n]
    assert head, "the new head trains"
    assert all(n.replace("base_model.model.", "") not in base_names or "classifier" in n for n in trainable), (
        "no base weight trains"
    )
    assert len(trainable) > len(head), "adapter weights train"


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_bottleneck_adapters_follow_attention_and_feedforward_of_every_block(kind, tiny_bert_dir, tiny_vit_dir):
    path, batch = (tiny_bert_dir, text_batch(tiny_bert_dir)) if kind == "bert" else (tiny_vit_dir, image_batch())
    model = adapters.attach(classifier(path), AdapterArguments(peft_method="bottleneck", adapter_reduction_factor=4))
    hosts = {
        n: m for n, m in model.named_modules() if isinstance(getattr(m, "adapter", None), bottleneck.BottleneckAdapter)
    }
    assert len(hosts) == 2 * 2, "attention output + feed-forward output in each of the 2 blocks"
    for adapter in (m.adapter for m in hosts.values()):
        assert adapter.down.out_features == 32 // 4
    # Give every adapter its own non-zero weights: each host's output must go through its own adapter
    # (a late-binding closure would route every hook to the last adapter).
    with torch.no_grad():
        for i, host in enumerate(hosts.values()):
            host.adapter.up.weight.normal_(generator=torch.Generator().manual_seed(i))
            host.adapter.up.bias.fill_(0.1 * (i + 1))
    for host in hosts.values():
        x = torch.randn(2, 5, host.in_features)
        assert torch.allclose(host(x), host.adapter(nn.functional.linear(x, host.weight, host.bias)), atol=1e-6)
        assert not torch.allclose(host(x), nn.functional.linear(x, host.weight, host.bias), atol=1e-3)


# ---------------------------------------------------------------- where adapters go


def test_default_targets_follow_the_architecture(tiny_bert_dir, tiny_vit_dir):
    import timm

    assert default_targets(classifier(tiny_bert_dir), "lora") == (["query", "value"], [])
    assert default_targets(classifier(tiny_bert_dir), "ia3") == (["key", "value", "output.dense"], ["output.dense"])
    assert default_targets(classifier(tiny_vit_dir), "lora") == (["q_proj", "v_proj"], [])
    assert default_targets(classifier(tiny_vit_dir), "bottleneck") == (["o_proj", "fc2"], [])
    timm_vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, depth=2)
    assert default_targets(timm_vit, "lora") == (["qkv", "fc1", "fc2"], [])
    assert head_modules(timm_vit) == ["head"]
    cnn = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)
    convs, _ = default_targets(cnn, "lora")
    assert "conv_stem" in convs and all(cnn.get_submodule(n).groups == 1 for n in convs), "ungrouped convolutions only"
    adapted = adapters.attach(cnn, AdapterArguments(lora_r=4))
    out = adapted(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)


@pytest.mark.parametrize("method", ["loha", "lokr"])
def test_loha_and_lokr_leave_out_convolutions_that_pad_themselves(method, capsys):
    """timm's Conv2dSame pads in its forward; peft's LoHa / LoKr add their update with a plain convolution of the
    layer's (zero) padding attribute, so on it the update had another shape and the forward crashed."""
    import timm

    cnn = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)
    convs, _ = default_targets(cnn, method)
    assert "conv_stem" not in convs and "blocks.0.0.conv_pw" in convs
    assert "skips conv_stem" in capsys.readouterr().out
    adapted = adapters.attach(cnn, AdapterArguments(peft_method=method, lora_r=4))
    adapted(torch.randn(2, 3, 64, 64)).sum().backward()
    with pytest.raises(TransferError, match="conv_stem, a Conv2dSame whose forward does more"):
        resolve_targets(
            timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3),
            method,
            ["conv_stem", "conv_pw"],
            None,
        )


def test_head_modules_asks_the_model(tiny_bert_dir, tiny_vit_dir):
    assert head_modules(classifier(tiny_bert_dir)) == ["classifier"]
    assert head_modules(classifier(tiny_bert_dir, pooling="mean")) == ["head"]
    import torchvision

    assert head_modules(torchvision.models.resnet18(num_classes=3)) == ["fc"]


def test_a_target_that_matches_nothing_lists_candidates(tiny_bert_dir):
    model = classifier(tiny_bert_dir)
    with pytest.raises(
        TransferError,
        match=r"'q_proj' matches no Linear or Conv2d layer of BertForSequenceClassification: candidates are .*query",
    ):
        resolve_targets(model, "lora", ["q_proj"], None)
    with pytest.raises(TransferError, match="--peft_method 'prefix' is not one of"):
        resolve_targets(model, "prefix", None, None)
    with pytest.raises(TransferError, match="--feedforward_modules 'intermediate.dense' is not in --target_modules"):
        resolve_targets(model, "ia3", ["query", "value"], ["intermediate.dense"])
    with pytest.raises(TransferError, match="--modules_to_save 'score' is not a module"):
        adapters.attach(model, AdapterArguments(modules_to_save="score"))


def test_user_targets_are_used(tiny_bert_dir):
    adapted = adapters.attach(classifier(tiny_bert_dir), AdapterArguments(target_modules="key, intermediate.dense"))
    lora_layers = {
        n.rsplit(".lora_A", 1)[0].split("base_model.model.")[1]
        for n, _ in adapted.named_parameters()
        if ".lora_A." in n
    }
    assert lora_layers == {
        f"bert.encoder.layer.{i}.{m}" for i in range(2) for m in ("attention.self.key", "intermediate.dense")
    }


# ---------------------------------------------------------------- gradients under activation checkpointing


def checkpointed_backward(model, adapted, batch):
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    adapted.train()
    adapted(**batch, labels=torch.tensor([0, 1, 0])).loss.backward()
    return {n: p.grad for n, p in adapters.adapter_parameters(adapted).items()}


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_lora_with_reentrant_checkpointing_gets_gradients_in_every_block(kind, tiny_bert_dir, tiny_vit_dir):
    path, batch = (tiny_bert_dir, text_batch(tiny_bert_dir)) if kind == "bert" else (tiny_vit_dir, image_batch())
    model = classifier(path)
    adapted = adapters.attach(model, AdapterArguments(), gradient_checkpointing=True)
    grads = checkpointed_backward(model, adapted, batch)
    lora_b = {n: g for n, g in grads.items() if "lora_B" in n}
    assert len(lora_b) == 4 and all(g is not None and g.abs().sum() > 0 for g in lora_b.values())


def test_the_gradient_check_stops_a_run_whose_adapters_get_no_gradient(tmp_path, tiny_vit_dir, image_dir):
    """Reentrant checkpointing on a frozen ViT without our input-grad hook: the adapters get nothing, and we say so."""
    args = parse_recipe_args(
        {},
        [],
        dict(
            model_name_or_path=tiny_vit_dir,
            train_dir=str(image_dir),
            output_dir=str(tmp_path / "out"),
            activation_checkpointing=True,
            activation_checkpointing_kwargs={"use_reentrant": True},
            num_train_epochs=1,
            save_strategy="no",
            eval_strategy="no",
            load_best_model_at_end=False,
        ),
        extra_dataclasses=(AdapterArguments,),
    )
    job = training.prepare(args)
    model = adapters.attach(job.model, AdapterArguments(), gradient_checkpointing=False)
    trainer = training.make_trainer(
        job, model=model, callbacks=[adapters.AdapterGradientCheck(adapters.adapter_parameters(model))]
    )
    with pytest.raises(TransferError, match="no gradient reached the 8 adapter tensors"):
        trainer.train()


# ---------------------------------------------------------------- saving, reloading, merging


def train_adapter(tmp_path, model_dir, data, method, **extra):
    """A short real training run through the library, as the recipes compose it; returns (trained model, output dir)."""
    out = tmp_path / f"out-{method}"
    args = parse_recipe_args(
        {},
        [],
        dict(
            model_name_or_path=model_dir,
            output_dir=str(out),
            num_train_epochs=2,
            learning_rate=5e-2,
            peft_method=method,
            **data,
            **extra,
        ),
        extra_dataclasses=(AdapterArguments,),
    )
    job = training.prepare(args)
    model = adapters.attach(job.model, args.option(AdapterArguments))
    trainer = training.make_trainer(job, model=model)
    training.finish(job, trainer, training.train_and_evaluate(job, trainer), recipe="test", model=model)
    return trainer.model, out


@pytest.mark.parametrize("method", ["lora", "ia3", "bottleneck"])
def test_base_plus_adapter_reproduces_the_trained_model_exactly(method, tmp_path, tiny_bert_dir, text_csv):
    trained, out = train_adapter(tmp_path, tiny_bert_dir, {"train_file": str(text_csv)}, method, pooling="mean")
    names = {p.name for p in out.iterdir()}
    weights = {"bottleneck": "bottleneck_model.safetensors"}.get(method, "adapter_model.safetensors")
    assert weights in names and "base_model.json" in names
    assert "model.safetensors" not in names and not any(n.endswith((".bin", ".pt")) for n in names), (
        "only the adapter is saved"
    )
    base_bytes = sum(p.numel() * 4 for p in classifier(tiny_bert_dir, pooling="mean").parameters())
    assert (out / weights).stat().st_size < base_bytes / 4
    from safetensors.torch import load_file

    assert any("head" in k for k in load_file(out / weights)), "the new head is saved with the adapter"
    reloaded, tokenizer = adapter_files.load_adapter(str(out))
    batch = dict(
        tokenizer(["a wonderful moving film", "painfully bad", "a joy to watch"], padding=True, return_tensors="pt")
    )
    expected = logits(trained, batch)
    assert torch.equal(logits(reloaded, batch), expected)
    assert not torch.allclose(logits(classifier(tiny_bert_dir, pooling="mean"), batch), expected), (
        "training changed the model"
    )
    saved = json.loads((out / "run_details.json").read_text())
    assert saved["adapter"] == ("bottleneck" if method == "bottleneck" else "peft")
    assert saved["trainable_params"] < saved["total_params"] / 4


def test_vit_lora_reloads_exactly_and_merges_to_a_standalone_model(tmp_path, tiny_vit_dir, image_dir):
    from transformers import AutoModelForImageClassification

    trained, out = train_adapter(tmp_path, tiny_vit_dir, {"train_dir": str(image_dir)}, "lora")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"] and config["base_model_name_or_path"] == tiny_vit_dir
    batch = image_batch()
    reloaded, processor = adapter_files.load_adapter(str(out))
    assert processor is not None
    assert torch.equal(logits(reloaded, batch), logits(trained, batch))
    merged_dir = adapter_files.merge(str(out), str(tmp_path / "merged"))
    merged = AutoModelForImageClassification.from_pretrained(merged_dir)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(logits(merged, batch), logits(trained, batch), atol=1e-5)
    assert "merged" in (merged_dir / "README.md").read_text()


def test_bottleneck_adapters_cannot_be_merged_and_nothing_is_written(tmp_path, tiny_bert_dir, text_csv):
    _, out = train_adapter(tmp_path, tiny_bert_dir, {"train_file": str(text_csv)}, "bottleneck")
    with pytest.raises(TransferError, match="cannot be folded into the base weights"):
        adapter_files.merge(str(out), str(tmp_path / "merged"))
    assert not (tmp_path / "merged").exists()


def test_an_adapter_saved_from_another_base_is_refused(tmp_path, tiny_bert_dir, text_csv):
    from transformers import BertConfig, BertModel

    _, out = train_adapter(tmp_path, tiny_bert_dir, {"train_file": str(text_csv)}, "bottleneck")
    other = tmp_path / "wider-bert"
    BertModel(
        BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    ).save_pretrained(other)
    with pytest.raises(TransferError, match="does not fit the rebuilt model"):
        adapter_files.load_adapter(str(out), model_name_or_path=str(other))
    with pytest.raises(TransferError, match="has no base_model.json"):
        adapter_files.load_adapter(str(tmp_path))


def test_lora_on_a_cnn_keeps_the_frozen_batchnorm_statistics():
    import torchvision

    cnn = torchvision.models.resnet18(num_classes=3)
    adapted = adapters.attach(cnn, AdapterArguments(lora_r=4))
    batchnorms = {n: m for n, m in cnn.named_modules() if isinstance(m, nn.BatchNorm2d)}
    before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in batchnorms.items()}
    optimizer = torch.optim.SGD([p for p in adapted.parameters() if p.requires_grad], lr=0.1)
    adapted.train()
    for _ in range(2):
        nn.functional.cross_entropy(adapted(torch.randn(4, 3, 32, 32) * 3 + 1), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, module in batchnorms.items():
        assert torch.equal(module.running_mean, before[name][0]) and torch.equal(
            module.running_var, before[name][1]
        ), name
    assert any(p.abs().sum() > 0 for n, p in adapted.named_parameters() if "lora_B" in n), "the adapters trained"


def test_the_gradient_check_waits_for_the_first_finite_step():
    """fp16: the first loss-scaled step may overflow and be skipped by the scaler; that is not 'no gradient'."""
    weight = torch.nn.Parameter(torch.zeros(2))
    check = adapters.AdapterGradientCheck({"lora_B": weight})
    weight.grad = torch.tensor([float("inf"), 1.0])
    check.on_pre_optimizer_step(None, None, None)
    assert not check.checked
    weight.grad = torch.tensor([0.5, 0.0])
    check.on_pre_optimizer_step(None, None, None)
    assert check.checked
    zero_head = adapters.AdapterGradientCheck({"lora_B": torch.nn.Parameter(torch.zeros(2))})
    zero_head.parameters["lora_B"].grad = torch.zeros(
        2
    )  # reached, but a zero-initialised head passes back zeros: fine
    zero_head.on_pre_optimizer_step(None, None, None)
    assert zero_head.checked
    cut_off = adapters.AdapterGradientCheck(
        {"lora_B": torch.nn.Parameter(torch.zeros(2))}
    )  # grad None: not in the backward pass
    with pytest.raises(TransferError, match="no gradient reached the 1 adapter tensors"):
        cut_off.on_pre_optimizer_step(None, None, None)


def test_lora_dropout_is_off_unless_asked(tiny_bert_dir):
    def dropouts(model):
        return {
            type(m.lora_dropout["default"]).__name__ + str(getattr(m.lora_dropout["default"], "p", ""))
            for m in model.modules()
            if hasattr(m, "lora_dropout")
        }

    assert dropouts(adapters.attach(classifier(tiny_bert_dir), AdapterArguments())) == {"Identity"}
    assert dropouts(adapters.attach(classifier(tiny_bert_dir), AdapterArguments(lora_dropout=0.2))) == {"Dropout0.2"}


def test_parameter_counts_hold_the_head_once(tiny_bert_dir):
    """peft keeps the original head beside the trained copy; the reported total is the served model's."""
    from hf_transfer.models.freezing import count_parameters

    model = classifier(tiny_bert_dir)
    base_total = count_parameters(model)["total_params"]
    adapted = adapters.attach(model, AdapterArguments(peft_method="lora"))
    lora = sum(p.numel() for n, p in adapted.named_parameters() if "lora_" in n)
    assert lora > 0
    counts = count_parameters(adapted)
    assert counts["total_params"] == base_total + lora
    head = sum(p.numel() for n, p in adapted.named_parameters() if "modules_to_save" in n)
    assert counts["trainable_params"] == lora + head


def saved_for_backward_bytes(model, batch) -> tuple[torch.Tensor, dict, int]:
    """Logits, gradients and the bytes of tensors autograd keeps for the backward pass (parameters not counted),
    for one bf16-autocast training step."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.zero_grad()
    torch.manual_seed(0)  # the same dropout masks
    with (
        torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        output = model(**batch, labels=torch.tensor([0, 1, 0]))
    output.loss.backward()
    return (
        output.logits.detach(),
        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        sum(kept.values()),
    )


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_a_lora_base_stored_in_bf16_computes_the_same_and_holds_less(kind, tiny_bert_dir, tiny_vit_dir):
    """Under bf16 autocast a frozen fp32 weight is cast at every call and its copy kept for backward; stored in bf16
    once it is neither duplicated nor kept twice, and autocast's numbers are the same to the bit."""
    from transformers import TrainingArguments

    from hf_transfer.models.frozen_precision import keep_frozen_base_in_compute_precision

    model = adapters.attach(
        classifier(tiny_bert_dir if kind == "bert" else tiny_vit_dir), AdapterArguments(lora_dropout=0.0)
    )
    with torch.no_grad():  # lora_B starts at zero: make the adapter part of the output, so lora_A gets a gradient too
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    model.train()
    batch = text_batch(tiny_bert_dir) if kind == "bert" else image_batch()
    frozen_linear = [m for m in model.modules() if type(m) is nn.Linear and not m.weight.requires_grad]
    needs_input_grad = (
        set()
    )  # frozen layers whose input's gradient is needed: autocast keeps their weight's bf16 copy for it
    hooks = [
        m.register_forward_pre_hook(lambda m, args: needs_input_grad.add(m) if args[0].requires_grad else None)
        for m in frozen_linear
    ]
    logits_before, grads_before, kept_before = saved_for_backward_bytes(model, batch)
    for hook in hooks:
        hook.remove()
    bf16 = TrainingArguments("unused", bf16=True, use_cpu=True)
    assert keep_frozen_base_in_compute_precision(model, bf16, "dora") is None, "DoRA normalises the base weight itself"
    assert keep_frozen_base_in_compute_precision(model, TrainingArguments("unused", use_cpu=True), "lora") is None
    assert keep_frozen_base_in_compute_precision(model, bf16, "lora") == "bfloat16"
    assert all(m.weight.dtype == torch.bfloat16 for m in frozen_linear)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable), "adapter and head train in fp32"
    logits_after, grads_after, kept_after = saved_for_backward_bytes(model, batch)
    assert torch.equal(logits_after, logits_before)
    assert grads_after.keys() == grads_before.keys() and all(
        torch.equal(grads_after[n], grads_before[n]) for n in grads_before
    )
    assert any("lora_A" in n and g.abs().sum() > 0 for n, g in grads_after.items())
    copies = sum(2 * m.weight.numel() for m in needs_input_grad)
    assert needs_input_grad and kept_before - kept_after == copies


@pytest.mark.parametrize("method", ["loha", "lokr"])
def test_loha_and_lokr_train_deberta_under_bf16_autocast(method, tmp_path):
    """peft's LoHa / LoKr layers returned fp32 under autocast where the layer they wrap returns bf16; DeBERTa then
    masked bf16 attention scores with the fp32 minimum and stopped ("cannot be converted to type c10::BFloat16")."""
    from tiny_architectures import save_transformers

    from hf_transfer import assets

    checkpoint = save_transformers("deberta-v2", tmp_path, str(assets.bundled_checkpoint_path("bundled:minilm-l6")))
    model = adapters.attach(classifier(checkpoint), AdapterArguments(peft_method=method)).train()
    batch = text_batch(checkpoint)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, labels=torch.tensor([0, 1, 0])).loss
    loss.backward()
    assert torch.isfinite(loss) and any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.adapter_parameters(model).values()
    )
    fp32 = model(**batch).logits
    assert fp32.dtype == torch.float32, "without autocast the layers return what they did"
