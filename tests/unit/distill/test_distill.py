"""Distillation: the loss, students cut from teachers, the recipe's outputs and options, bad input; a real MiniLM
teacher distilled into a 3-block student on Rotten Tomatoes."""

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import NEGATIVE, POSITIVE, pipeline_accuracy, run_on_two_ranks, write_text_table
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
)

from hf_transfer.distill.distillation import distillation_loss
from hf_transfer.distill.student import default_layers, parse_layers, student_from_teacher, transformer_blocks
from hf_transfer.errors import TransferError
from recipes import distill, full_finetune

QUICK = {"num_train_epochs": 2, "save_strategy": "no", "load_best_model_at_end": False}


# ---------------------------------------------------------------- the loss


def test_loss_is_cross_entropy_at_alpha_zero_and_soft_only_on_unlabelled_rows():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, -100, -100])
    assert torch.allclose(
        distillation_loss(student, teacher, labels, 4.0, 0.0), F.cross_entropy(student[:4], labels[:4])
    )
    soft = F.kl_div(F.log_softmax(student / 4, -1), F.softmax(teacher / 4, -1), reduction="batchmean") * 16
    expected = 0.7 * soft + 0.3 * F.cross_entropy(student[:4], labels[:4])
    assert torch.allclose(distillation_loss(student, teacher, labels, 4.0, 0.7), expected, atol=1e-6)
    unlabelled = torch.full((6,), -100)
    assert torch.allclose(distillation_loss(student, teacher, unlabelled, 4.0, 0.7), 0.7 * soft, atol=1e-6)


def test_soft_term_vanishes_when_the_student_matches_the_teacher_and_its_gradient_points_at_the_teacher():
    teacher = torch.tensor([[2.0, -1.0, 0.5]])
    unlabelled = torch.tensor([-100])
    assert distillation_loss(teacher.clone(), teacher, unlabelled, 4.0, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, unlabelled, 2.0, 1.0).backward()
    assert student.grad.argmin().item() == teacher.argmax().item()  # gradient descent raises the teacher's top class


# ---------------------------------------------------------------- students cut from teachers


def test_default_layers_are_distilberts_choice_and_bad_indices_are_one_line():
    assert default_layers(12) == [0, 2, 4, 7, 9, 11]  # Sanh et al. 2019 keep every other block of BERT-base
    assert default_layers(6, 3) == [0, 2, 5]
    assert parse_layers("0,2,4", 6) == [0, 2, 4]
    for bad in ("0,6", "2,1", "a,b", ""):
        with pytest.raises(TransferError, match="student_layers"):
            parse_layers(bad, 6)
    with pytest.raises(TransferError, match="out of range"):
        default_layers(6, 7)


def test_student_keeps_the_teachers_blocks_and_reloads_at_its_new_depth(tmp_path, tiny_bert_dir):
    config = BertConfig.from_pretrained(tiny_bert_dir, num_hidden_layers=4, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "teacher")
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher").eval()
    student = student_from_teacher(teacher, [0, 3]).eval()
    assert len(teacher.bert.encoder.layer) == 4 and len(student.bert.encoder.layer) == 2
    for kept, original in ((0, 0), (1, 3)):
        for (name, a), (_, b) in zip(
            student.bert.encoder.layer[kept].named_parameters(),
            teacher.bert.encoder.layer[original].named_parameters(),
        ):
            assert torch.equal(a, b), name
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert (
        student.bert.encoder.layer[0].attention.self.query.weight
        is not teacher.bert.encoder.layer[0].attention.self.query.weight
    )
    student.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    assert reloaded.config.num_hidden_layers == 2
    inputs = {
        "input_ids": torch.tensor([[101, 2307, 2143, 102]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, student(**inputs).logits, atol=1e-6)


def test_teachers_a_student_cannot_be_cut_from_say_why_and_what_to_do():
    from tiny_architectures import TEXT, TRANSFORMER
    from transformers import (
        ModernBertConfig,
        ModernBertForSequenceClassification,
        ResNetConfig,
        ResNetForImageClassification,
        TimmWrapperConfig,
        TimmWrapperForImageClassification,
    )

    teachers = [
        (
            "timm rebuilds a model from its architecture name",
            TimmWrapperForImageClassification(TimmWrapperConfig(architecture="vit_tiny_patch16_224")),
        ),
        (
            "its blocks are not all alike",
            ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
        ),
        (
            "its blocks are not all alike",
            ModernBertForSequenceClassification(  # its first block has no attention norm
                ModernBertConfig(vocab_size=100, max_position_embeddings=64, **TRANSFORMER, **TEXT["modernbert"][1])
            ),
        ),
    ]
    for reason, teacher in teachers:
        with pytest.raises(TransferError, match=rf"{reason}.*--model_name_or_path"):
            transformer_blocks(teacher)


# ---------------------------------------------------------------- the recipe on tiny checkpoints


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("distill")
    data = write_text_table(root / "train", rows_per_class=16)
    full_finetune.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(data),
        output_dir=str(root / "teacher"),
        learning_rate=1e-3,
        **QUICK,
    )
    return root / "teacher", data


def unlabeled_csv(path, n=10):
    texts = [(POSITIVE + NEGATIVE)[i % 10] + f" again {i}" for i in range(n)]
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    return path


def test_distill_writes_a_run_that_pipeline_loads_in_a_fresh_process(tmp_path, tiny_teacher):
    teacher, data = tiny_teacher
    out = tmp_path / "student"
    results = distill.run(
        teacher=str(teacher),
        train_file=str(data),
        output_dir=str(out),
        student_layers="1",
        unlabeled_file=str(unlabeled_csv(tmp_path / "more.csv")),
        **QUICK,
    )
    for key in ("eval_accuracy", "teacher_eval_accuracy", "teacher_params", "student_params", "inference_speedup"):
        assert key in results, key
    assert results["student_layers"] == [1] and results["unlabeled_samples"] == 10
    assert results["student_params"] < results["teacher_params"]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert "Distilled from the teacher" in (out / "README.md").read_text()
    assert set(pipeline_accuracy(out, data, "text-classification")["labels"]) <= {"neg", "pos"}


def test_alpha_temperature_and_unlabelled_inputs_change_the_student(tmp_path, tiny_teacher):
    teacher, data = tiny_teacher

    def weights(name, **options):
        distill.run(
            teacher=str(teacher),
            train_file=str(data),
            output_dir=str(tmp_path / name),
            student_layers="1",
            seed=3,
            **QUICK,
            **options,
        )
        return load_file(str(tmp_path / name / "model.safetensors"))

    hard = weights("hard", alpha=0.0)
    soft = weights("soft", alpha=0.7)
    hotter = weights("hotter", alpha=0.7, temperature=1.0)
    more = weights("more", alpha=0.7, unlabeled_file=str(unlabeled_csv(tmp_path / "more.csv")))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    for name, other in (("alpha", soft), ("temperature", hotter), ("unlabeled_file", more)):
        reference = hard if name == "alpha" else soft
        assert not torch.equal(reference[key], other[key]), f"--{name} did not change the student"


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_teacher, tiny_bert_dir):
    teacher, data = tiny_teacher
    out = tmp_path / "never"
    other_labels = tmp_path / "other.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d"] * 3, "label": ["x", "y", "z", "x"] * 3}).to_csv(
        other_labels, index=False
    )
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"text": []}).to_csv(empty, index=False)
    cases = [
        ({"train_file": str(other_labels)}, "predicts"),
        ({"student_layers": "0,5"}, "out of range"),
        ({"alpha": 1.5}, "--alpha"),
        ({"teacher": str(tmp_path / "nowhere")}, "--teacher"),
        ({"unlabeled_file": str(empty)}, "empty"),
        ({"model_name_or_path": tiny_bert_dir, "augment": True}, "--augment"),
    ]
    for options, message in cases:
        with pytest.raises(TransferError, match=message):
            distill.run(**{"teacher": str(teacher), "train_file": str(data), "output_dir": str(out), **options})
        assert not out.exists(), options
    with pytest.raises(TransferError, match="--teacher is required"):
        distill.run(train_file=str(data), output_dir=str(out))


def test_image_student_with_augmentation_learns_from_the_teacher_on_each_batch(tmp_path, tiny_vit_dir, image_dir):
    teacher = tmp_path / "teacher"
    full_finetune.run(model_name_or_path=tiny_vit_dir, train_dir=str(image_dir), output_dir=str(teacher), **QUICK)
    common = {
        "teacher": str(teacher),
        "train_dir": str(image_dir),
        "student_layers": "1",
        "augment": True,
        "seed": 5,
        **QUICK,
    }
    live = distill.run(output_dir=str(tmp_path / "live"), **common)
    hard = distill.run(output_dir=str(tmp_path / "hard"), alpha=0.0, **common)
    assert live["train_loss"] != hard["train_loss"]
    assert json.loads((tmp_path / "live" / "config.json").read_text())["num_hidden_layers"] == 1


# ---------------------------------------------------------------- real weights, real data


@pytest.mark.slow
def test_minilm_student_of_three_blocks_beats_chance_and_the_teacher_is_scored_on_the_same_test_set(tmp_path):
    data = {
        "dataset_name": "bundled:rotten_tomatoes",
        "max_seq_length": 64,
        "max_train_samples_per_class": 100,
        "max_eval_samples": 200,
        "max_test_samples": 500,
    }
    teacher = full_finetune.run(
        model_name_or_path="bundled:minilm-l6", num_train_epochs=4, output_dir=str(tmp_path / "teacher"), **data
    )
    student = distill.run(
        teacher=str(tmp_path / "teacher"),
        student_num_layers=3,
        num_train_epochs=4,
        output_dir=str(tmp_path / "student"),
        **data,
    )
    assert student["teacher_test_accuracy"] == pytest.approx(teacher["test_accuracy"], abs=0.005)
    assert student["test_accuracy"] > 0.62, student["test_accuracy"]  # chance: 0.5
    assert student["student_layers"] == [0, 2, 5]
    # Speed is measured in scripts/benchmark_distill.py, not asserted here: a timed assertion failed under load
    # from another process. What the speed-up comes from is checked instead: half the blocks, fewer parameters.
    assert student["total_params"] < teacher["total_params"] and student["inference_speedup"] > 0


def test_a_teacher_with_its_labels_in_another_order_is_read_by_name(tmp_path, tiny_teacher):
    teacher, data = tiny_teacher
    model = AutoModelForSequenceClassification.from_pretrained(teacher)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = {0: "pos", 1: "neg"}
    model.config.label2id = {"pos": 0, "neg": 1}
    model.save_pretrained(tmp_path / "swapped")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(teacher).save_pretrained(tmp_path / "swapped")
    common = {
        "train_file": str(data),
        "student_layers": "0,1",
        "max_steps": 1,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
    }
    original = distill.run(teacher=str(teacher), output_dir=str(tmp_path / "a"), **common)
    swapped = distill.run(teacher=str(tmp_path / "swapped"), output_dir=str(tmp_path / "b"), **common)
    assert swapped["teacher_eval_accuracy"] == original["teacher_eval_accuracy"]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    saved_a, saved_b = (
        load_file(str(tmp_path / "a" / "model.safetensors")),
        load_file(str(tmp_path / "b" / "model.safetensors")),
    )
    assert torch.allclose(saved_a["classifier.weight"], saved_b["classifier.weight"], atol=1e-6), (
        "the cut student's head follows the data's order"
    )


def test_unlabeled_dir_and_its_cap_reach_the_student(tmp_path, tiny_vit_dir, image_dir, monkeypatch):
    """The capped number of unlabelled images is in every epoch's training batches, each with the teacher's soft
    targets and no hard label; without --unlabeled_dir there are none."""
    from conftest import write_image_folder

    from hf_transfer.data.loading import UNLABELED
    from hf_transfer.distill.distillation import DistillationTrainer

    seen = []
    original = DistillationTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        if model.training:
            unlabelled = inputs["labels"] == UNLABELED
            seen.append((int(unlabelled.sum()), bool(torch.isfinite(inputs["teacher_logits"][unlabelled]).all())))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(DistillationTrainer, "compute_loss", recording)
    teacher = tmp_path / "teacher"
    full_finetune.run(model_name_or_path=tiny_vit_dir, train_dir=str(image_dir), output_dir=str(teacher), **QUICK)
    extra = write_image_folder(tmp_path / "extra", per_class=5)  # 10 images; class folders are ignored
    common = {"teacher": str(teacher), "train_dir": str(image_dir), "student_layers": "1", "seed": 5, **QUICK}
    capped = distill.run(
        output_dir=str(tmp_path / "capped"), unlabeled_dir=str(extra), max_unlabeled_samples=4, **common
    )
    assert capped["unlabeled_samples"] == 4
    assert sum(n for n, _ in seen) == 4 * QUICK["num_train_epochs"] and all(finite for _, finite in seen)
    seen.clear()
    plain = distill.run(output_dir=str(tmp_path / "plain"), **common)
    assert plain["unlabeled_samples"] == 0 and seen and sum(n for n, _ in seen) == 0


# ---------------------------------------------------------------- several processes


def test_two_process_distillation_runs_the_teacher_once_over_the_data(tmp_path, tiny_teacher):
    teacher, data = tiny_teacher
    out = tmp_path / "out"
    rank0, rank1 = run_on_two_ranks(
        "distill",
        [
            "--teacher",
            teacher,
            "--train_file",
            data,
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "2",
            "--save_strategy",
            "no",
            "--load_best_model_at_end",
            "false",
        ],
        out,
    )
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), (
        "ranks diverged: they trained on different teacher logits"
    )
    results = json.loads((out / "run_details.json").read_text())
    scored = [sum(json.loads((tmp_path / "out-ranks" / f"rank{r}-teacher.json").read_text())) for r in (0, 1)]
    total = (
        results["train_samples"] + results["eval_samples"] + results["test_samples"]
    )  # soft targets, then the teacher's own scores
    assert sum(scored) == total and abs(scored[0] - scored[1]) <= 3, (scored, total)
