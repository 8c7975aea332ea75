"""What a distillation run reports beside the student's own scores: the teacher's scores on the same splits,
both sizes, and the inference speed-up measured in the same run on the same examples."""

from __future__ import annotations

import numpy as np

from ..data.loading import values_of
from ..engine.throughput import inference_rate
from ..metrics import classification_report
from ..runs.inference import encoded_batches
from .distillation import Teacher, teacher_logits

SPEED_EXAMPLES = 256  # examples timed per model: enough for a stable rate, small enough for a CPU


def teacher_scores(teacher: Teacher, job, order: list[int], batch_size: int) -> dict:
    """teacher_{eval,test}_{accuracy,f1_macro} on the splits the student is scored on, and the teacher's size."""
    scores = {"teacher": teacher.name, "teacher_params": _count(teacher.model)}
    for split, prefix in (("validation", "teacher_eval"), ("test", "teacher_test")):
        if split in job.data.splits:
            table = job.data.splits[split]
            predicted = teacher_logits(teacher, table, order, batch_size).argmax(-1).numpy()
            report = classification_report(np.asarray(table["label"]), predicted, job.data.label_names)
            scores.update({f"{prefix}_accuracy": report["accuracy"], f"{prefix}_f1_macro": report["f1_macro"]})
    return scores


def speed_comparison(teacher: Teacher, job, trainer) -> dict:
    """Examples per second of the teacher and of the student (forward pass, batches of --per_device_eval_batch_size,
    each model fed by its own preprocessing) on the first examples of the test split (else validation, else train)."""
    split = next(s for s in ("test", "validation", "train") if s in job.data.splits)
    table = job.data.splits[split]
    rows = range(min(SPEED_EXAMPLES, len(table)))
    batch_size = trainer.args.per_device_eval_batch_size
    inputs = values_of(table, "text" if teacher.modality == "text" else "image", rows)
    pairs = values_of(table, "text_pair", rows) if "text_pair" in table.column_names else None
    teacher_batches = list(encoded_batches(teacher.run, inputs, text_pairs=pairs, batch_size=batch_size))
    student = trainer.accelerator.unwrap_model(trainer.model)
    device = next(student.parameters()).device
    dataset = job.datasets[split]
    student_batches = []
    for start in range(0, len(rows), batch_size):
        batch = job.collator([dataset[i] for i in range(start, min(start + batch_size, len(rows)))])
        student_batches.append({k: v.to(device) for k, v in batch.items() if k != "labels"})
    teacher_rate, student_rate = (
        inference_rate(teacher.model, teacher_batches),
        inference_rate(student, student_batches),
    )
    student_params, teacher_params = _count(student), _count(teacher.model)
    return {
        "teacher_examples_per_second": round(teacher_rate, 1),
        "student_examples_per_second": round(student_rate, 1),
        "inference_speedup": round(student_rate / teacher_rate, 2),
        "speed_measured_on": f"{len(rows)} {split} examples, {device}",
        "student_params": student_params,
        "parameter_ratio": round(student_params / max(1, teacher_params), 3),
    }


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def summary_lines(results: dict) -> str:
    """Teacher vs student in three lines, for the console."""

    def pct(key):
        return f"{100 * results[key]:.2f}%" if isinstance(results.get(key), (int, float)) else "n/a"

    return (
        f"teacher test acc : {pct('teacher_test_accuracy')} ({results['teacher_params']:,} params)\n"
        f"student test acc : {pct('test_accuracy')} ({results['student_params']:,} params, {results['parameter_ratio']:.0%} of the teacher's)\n"
        f"inference speedup: x{results['inference_speedup']:.2f} ({results['student_examples_per_second']:,} vs "
        f"{results['teacher_examples_per_second']:,} examples/s on {results['speed_measured_on']})"
    )
