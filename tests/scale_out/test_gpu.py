"""Every recipe in fp16 and bf16 on a CUDA GPU, text and images (skipped without one; CI has none).

The image runs use the bundled pretrained EfficientNet-Lite0, whose BatchNorm and depthwise convolutions
are where fp16 went wrong before (an overflowing first step read as "no gradient reached the adapter").
The text runs use a tiny random BERT with its own small vocabulary, so nothing here needs the Hub.
"""

import importlib
import json
import math

import pytest
import torch
from conftest import NEGATIVE, POSITIVE, write_image_folder, write_text_table

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RECIPES = ["full_finetune", "gradual_unfreeze", "feature_extraction", "peft_finetune"]


@pytest.fixture(scope="module")
def tiny_bert_own_vocab(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert-vocab")
    words = sorted({w for sentence in POSITIVE + NEGATIVE for w in sentence.split()} | {str(i) for i in range(100)})
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"))
    BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=64,
        )
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("modality", ["text", "image"])
def test_recipe_trains_and_saves_in_mixed_precision(tmp_path, tiny_bert_own_vocab, modality, recipe, precision):
    if modality == "text":
        data = {
            "model_name_or_path": tiny_bert_own_vocab,
            "train_file": str(write_text_table(tmp_path / "train", rows_per_class=40)),
        }
    else:
        data = {
            "model_name_or_path": "bundled:efficientnet-lite0",
            "train_dir": str(write_image_folder(tmp_path / "images", per_class=24)),
            "image_size": 64,
        }
    module = importlib.import_module(f"recipes.{recipe}")
    out = tmp_path / "out"
    results = module.run(
        output_dir=str(out),
        num_train_epochs=3,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        **{precision: True},
        **data,
    )
    assert results["device"].startswith("cuda")
    assert results["mixed_precision"] == precision
    assert math.isfinite(results["train_loss"]) and math.isfinite(results["eval_loss"])
    assert results["train_loop_samples_per_second"] and results["peak_accelerator_memory_gib"] > 0
    saved = json.loads((out / "run_details.json").read_text())
    assert saved["training_config"][precision] is True

    from hf_transfer.runs.inference import class_probabilities, load_run, read_images

    run = load_run(str(out))
    inputs = (
        ["a joy to watch", "a dull tedious mess"]
        if modality == "text"
        else read_images([str(p) for p in sorted((tmp_path / "images" / "circle").glob("*.png"))[:2]])
    )
    probabilities = class_probabilities(run, inputs)
    assert torch.isfinite(torch.as_tensor(probabilities)).all()


@pytest.mark.parametrize("recipe", ["full_finetune", "lora_vit"])
def test_training_steps_never_wait_for_the_gpu(tmp_path, monkeypatch, recipe):
    """In the middle of an epoch nothing in a step, nor fetching the next batch, synchronises with the GPU, so the
    host queues the next step's kernels while the GPU runs this one (Trainer's defaults wait twice a step: a
    blocking batch copy and the nan check of the loss). The first synchronising call raises, with its traceback."""
    from hf_transfer.engine import throughput

    module = importlib.import_module(f"recipes.{recipe}")
    watched = range(2, 6)  # steps after the second: past the first step's one-off checks, before the epoch's end
    original = throughput.TrainingThroughput.on_step_end
    steps = []

    def watch_next_steps(self, args, state, control, **kwargs):
        original(self, args, state, control, **kwargs)
        steps.append(state.global_step)
        torch.cuda.set_sync_debug_mode("error" if state.global_step in watched else "default")

    monkeypatch.setattr(throughput.TrainingThroughput, "on_step_end", watch_next_steps)
    images = write_image_folder(tmp_path / "images", per_class=40)
    try:
        results = module.run(
            output_dir=str(tmp_path / "out"),
            model_name_or_path="bundled:efficientnet-lite0",
            train_dir=str(images),
            image_size=64,
            num_train_epochs=1,
            per_device_train_batch_size=4,
            bf16=True,
            disable_tqdm=True,
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert results["device"].startswith("cuda") and math.isfinite(results["train_loss"])
    assert max(steps) > max(watched) + 1, "the watched steps and the fetches after them are inside the epoch"
