"""Contrastive fine-tuning and zero-shot: each option changes what it claims to, on weights loaded with
from_pretrained; the runs save and load like every other run; bad input is one line before anything is written."""

import json
import pathlib

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import in_fresh_process, pipeline_accuracy, write_text_table
from safetensors.torch import load_file

import recipes.contrastive_finetune as contrastive_finetune
import recipes.zero_shot as zero_shot
from hf_transfer import defaults
from hf_transfer.errors import TransferError


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_contrastive_run_trains_the_body_fits_the_head_and_loads_with_pipeline(tmp_path, tiny_bert_dir):
    train, test = write_text_table(tmp_path / "train", rows_per_class=16), write_text_table(tmp_path / "test", 10)
    common = {
        "model_name_or_path": tiny_bert_dir,
        "train_file": str(train),
        "test_file": str(test),
        "num_train_epochs": 2,
    }
    results = contrastive_finetune.run(**common, output_dir=str(tmp_path / "supcon"))
    assert results["recipe"] == "contrastive_finetune" and results["contrastive_seconds"] > 0
    assert results["divergence_restores"] == 0 and "eval_accuracy" in results
    saved = weights(tmp_path / "supcon")
    pretrained = load_file(str(next(iter(sorted(__import__("pathlib").Path(tiny_bert_dir).glob("*.safetensors"))))))
    layer = "encoder.layer.0.attention.self.query.weight"
    body = next(k for k in saved if k.endswith(layer))
    assert not torch.equal(
        saved[body], pretrained[next(k for k in pretrained if k.endswith(layer))]
    )  # the body trained
    loaded = pipeline_accuracy(tmp_path / "supcon", test, "text-classification")
    assert loaded["accuracy"] == pytest.approx(results["test_accuracy"])  # a fresh process predicts the same
    # each option changes the run: another loss, another temperature, a fixed head L2, lower learning rate
    for option, value in (("contrastive_loss", "cosine_pairs"), ("contrastive_loss", "triplet"), ("temperature", 0.5)):
        other = contrastive_finetune.run(**common, output_dir=str(tmp_path / f"{option}-{value}"), **{option: value})
        assert not torch.equal(weights(tmp_path / f"{option}-{value}")[body], saved[body]), option
        assert other["training_config"][option] == value
    fixed = contrastive_finetune.run(**common, output_dir=str(tmp_path / "l2"), head_l2=0.5)
    assert fixed["head_l2"] == 0.5 and "l2 0.5" in fixed["kept_because"]


def test_contrastive_run_with_lora_trains_only_the_adapter_and_saves_it(tmp_path, tiny_bert_dir):
    train = write_text_table(tmp_path / "train", rows_per_class=16)
    results = contrastive_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        num_train_epochs=2,
        peft_method="lora",
        output_dir=str(tmp_path / "lora"),
    )
    assert (
        results["adapter"] == "peft"
        and results["training_config"]["peft_method"] == "lora"
        and results["trainable_params"] < results["total_params"] / 10
    )
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    head = {k: v for k, v in load_file(str(tmp_path / "lora" / "adapter_model.safetensors")).items() if "head" in k}
    assert head and any(v.abs().sum() > 0 for v in head.values())  # the fitted head is saved with the adapter


def test_contrastive_bad_options_are_one_line(tmp_path, tiny_bert_dir, capsys):
    train = write_text_table(tmp_path / "train")
    common = {"model_name_or_path": tiny_bert_dir, "train_file": str(train), "output_dir": str(tmp_path / "out")}
    with pytest.raises(TransferError, match="--contrastive_loss 'hinge': choose one of supcon, cosine_pairs, triplet"):
        contrastive_finetune.run(**common, contrastive_loss="hinge")
    with pytest.raises(TransferError, match="--temperature 0: must be above 0"):
        contrastive_finetune.run(**common, temperature=0.0)
    with pytest.raises(TransferError, match="--peft_method 'adapterx': none .* or one of lora"):
        contrastive_finetune.run(**common, peft_method="adapterx")
    with pytest.raises(TransferError, match="fits a linear head on the trained features: use --head linear"):
        contrastive_finetune.run(**common, head="mlp")
    assert not (tmp_path / "out").exists()
    contrastive_finetune.run(**common, num_train_epochs=1, metric_for_best_model="f1_macro")
    assert "--metric_for_best_model: not used by contrastive fine-tuning" in capsys.readouterr().out


def test_zero_shot_heads_are_the_descriptions_and_the_run_loads(tmp_path, tiny_bert_dir):
    train, test = write_text_table(tmp_path / "train"), write_text_table(tmp_path / "test", 10)
    common = {"model_name_or_path": tiny_bert_dir, "train_file": str(train), "test_file": str(test)}
    results = zero_shot.run(**common, output_dir=str(tmp_path / "names"))
    assert results["label_descriptions"] == {"neg": "This example is neg.", "pos": "This example is pos."}
    described = zero_shot.run(
        **common,
        output_dir=str(tmp_path / "described"),
        label_descriptions='{"pos": "a wonderful moving film"}',
        label_template="A {label} one.",
    )
    assert described["label_descriptions"] == {"neg": "A neg one.", "pos": "a wonderful moving film"}
    head = "head.layers.1.weight"
    assert not torch.equal(weights(tmp_path / "names")[head], weights(tmp_path / "described")[head])
    assert pipeline_accuracy(tmp_path / "described", test, "text-classification")["accuracy"] == pytest.approx(
        described["test_accuracy"]
    )
    for bad, message in (
        ('{"maybe": "x"}', "describes label 'maybe', which the data does not have"),
        ("{not json", "is not valid JSON"),
        (str(tmp_path / "missing.json"), "no such file"),
    ):
        with pytest.raises(TransferError, match=message):
            zero_shot.run(**common, output_dir=str(tmp_path / "bad"), label_descriptions=bad)
    assert not (tmp_path / "bad").exists()


NLI_PIPELINE_SCORES = r"""
import json, sys
import pandas as pd
from transformers import pipeline
run, table = sys.argv[1:3]
hypotheses = json.load(open(run + "/zero_shot.json"))["hypotheses"]
classify = pipeline("zero-shot-classification", model=run, device="cpu")
scores = []
for text in pd.read_csv(table)["text"]:
    out = classify(text, candidate_labels=hypotheses, hypothesis_template="{}")
    scores.append([out["scores"][out["labels"].index(h)] for h in hypotheses])
assert "hf_transfer" not in sys.modules
print(json.dumps(scores))
"""


@pytest.fixture(scope="module")
def tiny_nli_dir(tmp_path_factory, tiny_bert_dir):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-nli")
    names = ["contradiction", "neutral", "entailment"]
    config = BertConfig.from_pretrained(
        tiny_bert_dir, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    with torch.random.fork_rng():
        torch.manual_seed(1)
        BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(path)
    return str(path)


def test_zero_shot_with_an_nli_checkpoint_scores_like_transformers_pipeline_and_saves_a_run(
    tmp_path, tiny_nli_dir, tiny_bert_dir
):
    from hf_transfer.runs.evaluate import evaluate
    from hf_transfer.runs.predict import predict

    train, test = write_text_table(tmp_path / "train"), write_text_table(tmp_path / "test", 6)
    common = {"model_name_or_path": tiny_nli_dir, "train_file": str(train), "test_file": str(test)}
    results = zero_shot.run(**common, output_dir=str(tmp_path / "nli"))
    assert results["zero_shot_method"] == "nli" and results["trainable_params"] == 0
    assert results["label_descriptions"] == {"neg": "This example is neg.", "pos": "This example is pos."}
    saved, original = weights(tmp_path / "nli"), weights(pathlib.Path(tiny_nli_dir))
    assert saved.keys() == original.keys() and all(torch.equal(saved[k], original[k]) for k in saved)

    expected = np.array(in_fresh_process(NLI_PIPELINE_SCORES, tmp_path / "nli", test))
    predicted = predict(str(tmp_path / "nli"), input_file=str(test), all_scores=True)
    ours = predicted[[c for c in predicted.columns if c.startswith("probability_")]].to_numpy()
    assert ours.shape == expected.shape and np.allclose(ours, expected, atol=1e-5)
    labels = pd.read_csv(test)["label"].map({"neg": 0, "pos": 1}).to_numpy()
    assert results["test_accuracy"] == pytest.approx((expected.argmax(1) == labels).mean())
    assert evaluate(str(tmp_path / "nli"), test_file=str(test))["accuracy"] == pytest.approx(results["test_accuracy"])
    card = (tmp_path / "nli" / "README.md").read_text()
    assert "pipeline_tag: zero-shot-classification" in card and 'hypothesis_template="{}"' in card

    described = zero_shot.run(
        **common, output_dir=str(tmp_path / "described"), label_descriptions='{"pos": "a wonderful moving film"}'
    )
    assert json.loads((tmp_path / "described" / "zero_shot.json").read_text())["hypotheses"] == [
        "This example is neg.",
        "a wonderful moving film",
    ]
    assert described["test_loss"] != results["test_loss"]  # another hypothesis, other scores

    import recipes.distill as distill  # a zero-shot teacher labels data for a student given to it

    student = distill.run(
        teacher=str(tmp_path / "nli"),
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        output_dir=str(tmp_path / "student"),
        num_train_epochs=1,
    )
    assert student["label_names"] == ["neg", "pos"] and "teacher_eval_accuracy" in student
    with pytest.raises(TransferError, match="is a zero-shot run"):
        distill.run(teacher=str(tmp_path / "nli"), train_file=str(train), output_dir=str(tmp_path / "cut"))
    assert not (tmp_path / "cut").exists()

    import recipes.full_finetune as full_finetune  # a trained run replacing it is not read as zero-shot

    full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        output_dir=str(tmp_path / "nli"),
        overwrite_output_dir=True,
        num_train_epochs=1,
    )
    assert not (tmp_path / "nli" / "zero_shot.json").exists()
    from hf_transfer.runs.inference import load_run

    assert load_run(str(tmp_path / "nli")).zero_shot is None

    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"a": ["x", "y"] * 4, "b": ["z"] * 8, "label": ["p", "q"] * 4}).to_csv(pairs, index=False)
    with pytest.raises(TransferError, match="classifies single texts"):
        zero_shot.run(
            model_name_or_path=tiny_nli_dir,
            train_file=str(pairs),
            text_column_name="a,b",
            output_dir=str(tmp_path / "pairs"),
        )
    assert not (tmp_path / "pairs").exists()


CLIP_PIPELINE_SCORES = r"""
import json, pathlib, sys
from PIL import Image
from transformers import pipeline
run, folder = sys.argv[1:3]
hypotheses = json.load(open(run + "/zero_shot.json"))["hypotheses"]
classify = pipeline("zero-shot-image-classification", model=run, device="cpu")
paths = sorted(str(p) for p in pathlib.Path(folder).rglob("*.png"))
scores = []
for path in paths:
    out = classify(Image.open(path), candidate_labels=hypotheses, hypothesis_template="{}")
    scores.append([next(o["score"] for o in out if o["label"] == h) for h in hypotheses])
assert "hf_transfer" not in sys.modules
print(json.dumps({"paths": paths, "scores": scores}))
"""


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory, tiny_bert_dir):
    """A tiny random CLIP with the bundled MiniLM's tokenizer (no CLIP tokenizer ships in a package)."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    path = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}
    text = {
        **tower,
        "vocab_size": tokenizer.vocab_size,
        "max_position_embeddings": 64,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = CLIPConfig(
        text_config=text, vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=16
    )
    with torch.random.fork_rng():
        torch.manual_seed(2)
        CLIPModel(config).save_pretrained(path)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return str(path)


def test_zero_shot_with_an_image_text_checkpoint_scores_like_transformers_pipeline(tmp_path, tiny_clip_dir):
    from conftest import write_image_folder

    from hf_transfer.runs.evaluate import evaluate
    from hf_transfer.runs.predict import predict

    train, test = write_image_folder(tmp_path / "train"), write_image_folder(tmp_path / "test", per_class=3)
    results = zero_shot.run(
        model_name_or_path=tiny_clip_dir, train_dir=str(train), test_dir=str(test), output_dir=str(tmp_path / "clip")
    )
    assert results["zero_shot_method"] == "image_text" and results["trainable_params"] == 0
    assert results["label_descriptions"] == {"circle": "a photo of a circle.", "square": "a photo of a square."}
    expected = in_fresh_process(CLIP_PIPELINE_SCORES, tmp_path / "clip", test)
    predicted = predict(str(tmp_path / "clip"), input_dir=str(test), all_scores=True)
    by_path = {str(pathlib.Path(p).resolve()): row for p, row in zip(predicted["input"], predicted.to_dict("records"))}
    for path, row_scores in zip(expected["paths"], expected["scores"]):
        row = by_path[str(pathlib.Path(path).resolve())]
        assert [row["probability_circle"], row["probability_square"]] == pytest.approx(row_scores, abs=1e-5)
    truth = [pathlib.Path(p).parent.name for p in expected["paths"]]
    guessed = [["circle", "square"][int(np.argmax(s))] for s in expected["scores"]]
    assert results["test_accuracy"] == pytest.approx(np.mean([t == g for t, g in zip(truth, guessed)]))
    assert evaluate(str(tmp_path / "clip"), test_dir=str(test))["accuracy"] == pytest.approx(results["test_accuracy"])
    assert "pipeline_tag: zero-shot-image-classification" in (tmp_path / "clip" / "README.md").read_text()
    with pytest.raises(TransferError, match="zero-shot classifies images with an image-text checkpoint"):
        zero_shot.run(
            model_name_or_path="bundled:efficientnet-lite0", train_dir=str(train), output_dir=str(tmp_path / "cnn")
        )
    assert not (tmp_path / "cnn").exists()


def test_contrastive_min_steps_lengthens_a_few_shot_phase_unless_the_length_is_given(tmp_path, tiny_bert_dir, capsys):
    train = write_text_table(tmp_path / "train")  # 24 examples: one batch of 32 an epoch
    common = {"model_name_or_path": tiny_bert_dir, "train_file": str(train), "min_validation_per_class": 99}
    default = contrastive_finetune.run(**common, output_dir=str(tmp_path / "default"))
    longer = contrastive_finetune.run(**common, contrastive_min_steps=14, output_dir=str(tmp_path / "longer"))
    expected = max(defaults.CONTRASTIVE_EPOCHS, defaults.CONTRASTIVE_MIN_STEPS)
    assert default["contrastive_steps"] == expected and longer["contrastive_steps"] == 14
    assert "14 epochs, for at least --contrastive_min_steps 14" in capsys.readouterr().out
    given = contrastive_finetune.run(
        **common, contrastive_min_steps=14, num_train_epochs=3, output_dir=str(tmp_path / "given")
    )
    assert given["contrastive_steps"] == 3 and "--contrastive_min_steps: not used" in capsys.readouterr().out


def test_full_finetuning_can_start_its_head_as_the_zero_shot_classifier(tmp_path, tiny_bert_dir, capsys):
    """--head_phase label_descriptions: the head fine-tuning starts from is the zero-shot recipe's (the same
    validation predictions before any step), and other description options say when they are not used."""
    import recipes.full_finetune as full_finetune
    from hf_transfer.features.extraction import new_head
    from hf_transfer.features.label_descriptions import LabelDescriptionArguments
    from hf_transfer.pipeline import training
    from hf_transfer.pipeline.arguments import parse_recipe_args

    train = write_text_table(tmp_path / "train")
    common = {"model_name_or_path": tiny_bert_dir, "train_file": str(train), "label_template": "It is {label}."}
    zero = zero_shot.run(**common, output_dir=str(tmp_path / "zero"))
    args = parse_recipe_args(
        full_finetune.DEFAULTS,
        [],
        {**common, "output_dir": str(tmp_path / "start")},
        extra_dataclasses=(full_finetune.HeadStartArguments, LabelDescriptionArguments),
    )
    job = training.prepare(args, native=False)
    random_start = new_head(job.model).layers[1].weight.clone()
    training.head_from_label_descriptions(job, args.option(LabelDescriptionArguments))
    started = new_head(job.model).layers[1].weight
    assert not torch.equal(started, random_start)
    assert torch.equal(started.cpu(), weights(tmp_path / "zero")["head.layers.1.weight"])

    results = full_finetune.run(
        **common, head_phase="label_descriptions", num_train_epochs=1, output_dir=str(tmp_path / "tuned")
    )
    assert results["head_phase_fit"]["label_descriptions"] == zero["label_descriptions"]
    assert (
        "started as the zero-shot classifier of its label descriptions"
        in (tmp_path / "tuned" / "README.md").read_text()
    )
    full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        label_template="x {label}",
        head_phase="none",
        num_train_epochs=1,
        output_dir=str(tmp_path / "unused"),
    )
    assert "--label_template: not used" in capsys.readouterr().out


@pytest.mark.parametrize("zero_shot_score, start", [(0.99, "label_descriptions"), (0.5, "cached")])
def test_head_phase_auto_starts_few_shot_text_from_the_zero_shot_head_unless_it_is_at_chance(
    tmp_path, tiny_bert_dir, monkeypatch, few_shot_protocol, zero_shot_score, start
):
    """auto, with no validation split held out: the zero-shot head when it beats always answering the most frequent
    class on the training examples, else LP-FT's fitted head (the accuracy is forced each way; the heads are real)."""
    import recipes.full_finetune as full_finetune
    from hf_transfer.features import label_descriptions

    monkeypatch.setattr(label_descriptions, "zero_shot_accuracy", lambda *a: zero_shot_score)
    train = write_text_table(tmp_path / "train")  # 12 per class: no validation split is held out
    common = {"model_name_or_path": tiny_bert_dir, "train_file": str(train), "max_steps": 1, "learning_rate": 1e-12}
    results = full_finetune.run(**common, head_phase="auto", head_learning_rate=1e-12, output_dir=str(tmp_path / "a"))
    fit = results["head_phase_fit"]
    assert results["validation"].startswith("none held out")
    assert fit["head_start"] == start and fit["zero_shot_train_accuracy"] == zero_shot_score
    assert ("label_descriptions" in fit) == (start == "label_descriptions") and ("head_l2" in fit) == (
        start == "cached"
    )
    full_finetune.run(**common, head_phase=start, head_learning_rate=1e-12, output_dir=str(tmp_path / "reference"))
    assert weights(tmp_path / "a")["classifier.weight"] == pytest.approx(
        weights(tmp_path / "reference")["classifier.weight"], abs=1e-6
    )


@pytest.mark.slow
def test_real_contrastive_run_beats_chance_widely_on_held_out_reviews(tmp_path):
    results = contrastive_finetune.run(
        dataset_name="bundled:rotten_tomatoes",
        max_train_samples_per_class=16,
        max_eval_samples=200,
        max_test_samples=500,
        max_seq_length=64,
        output_dir=str(tmp_path / "run"),
    )
    assert results["test_accuracy"] > 0.6, results["test_accuracy"]  # chance: 0.5; 16 reviews per class
    details = json.loads((tmp_path / "run" / "run_details.json").read_text())
    assert details["training_config"]["contrastive_loss"] == "supcon"


def class_separation(run_dir, texts, labels) -> float:
    """Mean cosine similarity of the head's input features within a class minus across classes."""
    from hf_transfer.features.extraction import head_inputs
    from hf_transfer.runs.inference import encoded_batches, load_run

    run = load_run(str(run_dir))
    with torch.no_grad():
        features = torch.cat([head_inputs(run.model, batch) for batch in encoded_batches(run, texts)])
    z = torch.nn.functional.normalize(features.flatten(1), dim=-1)
    cosine, labels = z @ z.T, torch.as_tensor(labels)
    same, off_diagonal = labels[:, None] == labels[None, :], ~torch.eye(len(labels), dtype=torch.bool)
    return float(cosine[same & off_diagonal].mean() - cosine[~same].mean())


@pytest.mark.slow
def test_supcon_weight_pulls_each_class_together_in_a_real_encoder(tmp_path, few_shot_protocol):
    """--supcon_weight trains the features the head reads of the bundled MiniLM (from_pretrained) so that reviews of a
    class lie closer together than cross-entropy alone leaves them (twice as close after 8 steps), and held-out reviews
    follow."""
    import recipes.full_finetune as full_finetune
    from hf_transfer.assets import bundled_dataset

    splits, names, _ = bundled_dataset("bundled:rotten_tomatoes")
    train = splits["train"].groupby("label").sample(16, random_state=0)
    held_out = splits["validation"].groupby("label").sample(32, random_state=0)
    train.to_csv(tmp_path / "train.csv", index=False)
    common = {
        "model_name_or_path": "bundled:minilm-l6",
        "train_file": str(tmp_path / "train.csv"),
        "num_train_epochs": 4,
        "max_seq_length": 64,
        "head_phase": "none",
    }
    separation = {}
    for weight in (0.0, 0.9):
        results = full_finetune.run(**common, supcon_weight=weight, output_dir=str(tmp_path / str(weight)))
        assert results["supcon_weight"] == weight
        separation[weight] = [
            class_separation(tmp_path / str(weight), list(frame["text"]), [names.index(v) for v in frame["label"]])
            for frame in (train, held_out)
        ]
    (plain_train, plain_held_out), (joint_train, joint_held_out) = separation[0.0], separation[0.9]
    assert joint_train > 1.5 * plain_train > 0, separation  # measured: 0.093 against 0.042
    assert joint_held_out > plain_held_out, separation


def test_supcon_weight_is_off_by_default_and_bad_values_are_one_line(tmp_path, tiny_bert_dir, capsys):
    import recipes.full_finetune as full_finetune

    common = {"model_name_or_path": tiny_bert_dir, "train_file": str(write_text_table(tmp_path / "t")), "max_steps": 1}
    results = full_finetune.run(**common, supcon_temperature=0.1, output_dir=str(tmp_path / "default"))
    assert results["supcon_weight"] == defaults.FULL_FINETUNE_SUPCON_WEIGHT == 0.0
    assert "--supcon_temperature: not used" in capsys.readouterr().out
    for bad, message in ((1.0, "below 1"), (-0.1, "at least 0")):
        with pytest.raises(TransferError, match=message) as raised:
            full_finetune.run(**common, supcon_weight=bad, output_dir=str(tmp_path / "bad"))
        assert "\n" not in str(raised.value)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_label_prior_pulls_the_fitted_head_toward_the_label_names_and_is_loras_few_shot_start(
    tmp_path, few_shot_protocol
):
    """--head_phase label_prior on the bundled MiniLM (from_pretrained), 8 reviews per class: LP-FT's fitted head with
    its L2 pulling toward the zero-shot head lies closer to the zero-shot head than LP-FT's plain fit does, yet is not
    it; LoRA's default on such a file starts there and the run says so."""
    import recipes.full_finetune as full_finetune
    import recipes.peft_finetune as peft_finetune
    from hf_transfer.assets import bundled_dataset

    splits, _, _ = bundled_dataset("bundled:rotten_tomatoes")
    splits["train"].groupby("label").sample(8, random_state=0).to_csv(tmp_path / "train.csv", index=False)
    common = {
        "model_name_or_path": "bundled:minilm-l6",
        "train_file": str(tmp_path / "train.csv"),
        "max_steps": 1,
        "learning_rate": 1e-12,
        "head_learning_rate": 1e-12,
        "max_seq_length": 64,
    }
    heads, records = {}, {}
    for start in ("label_descriptions", "cached", "label_prior"):
        results = full_finetune.run(**common, head_phase=start, output_dir=str(tmp_path / start))
        heads[start] = torch.nn.functional.normalize(weights(tmp_path / start)["head.layers.1.weight"], dim=1)
        records[start] = results["head_phase_fit"]
    toward_names = {start: (heads[start] * heads["label_descriptions"]).sum(1).mean().item() for start in heads}
    assert toward_names["cached"] < toward_names["label_prior"] < 0.999, toward_names
    assert records["label_prior"]["prior_scale"] > 0 and "label_descriptions" in records["label_prior"]
    lora = peft_finetune.run(**common, peft_method="lora", output_dir=str(tmp_path / "lora"))
    assert lora["head_phase_fit"]["head_start"] == "label_prior" and "prior_scale" in lora["head_phase_fit"]
    assert "pulling toward the zero-shot classifier" in (tmp_path / "lora" / "README.md").read_text()
