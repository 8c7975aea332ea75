"""Knowledge distillation: a student learns from a teacher's softened class probabilities (Hinton et al. 2015).

loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * cross-entropy(student, label)

The T^2 keeps the soft term's gradients on the scale of the hard one as T grows. Examples without a label
(extra unlabelled inputs) contribute the soft term alone. The teacher's logits are computed once, by the
teacher's own preprocessing, when the student's inputs do not change between epochs; with random augmentation
the teacher runs on each augmented batch instead.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import torch
import torch.nn.functional as F

from ..data.loading import UNLABELED
from ..engine.trainer import TransferTrainer
from ..errors import TransferError
from ..runs.inference import LoadedRun, class_logits, load_run


@dataclasses.dataclass
class DistillationArguments:
    """The teacher, the student's depth and the loss."""

    teacher: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "the teacher: a run folder of this toolkit (full model or adapter), "
            "or any classification checkpoint (folder or Hub id)"
        },
    )
    student_layers: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "blocks of the teacher the student keeps, e.g. 0,2,4 "
            "(unless --model_name_or_path names the student)"
        },
    )
    student_num_layers: int | None = dataclasses.field(
        default=None, metadata={"help": "keep this many blocks, spread evenly (default: half)"}
    )
    temperature: float = dataclasses.field(
        default=4.0, metadata={"help": "softmax temperature of both models in the soft term"}
    )
    alpha: float = dataclasses.field(
        default=0.7, metadata={"help": "weight of the soft (teacher) term; 0 trains on hard labels alone"}
    )
    unlabeled_file: str | None = dataclasses.field(
        default=None, metadata={"help": "extra inputs without labels (text column, or image paths)"}
    )
    unlabeled_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "a folder of extra images without labels"}
    )
    max_unlabeled_samples: int | None = None


def check_options(options: DistillationArguments) -> None:
    """Values no run can use: one line before anything is loaded."""
    if not options.teacher:
        raise TransferError(
            "--teacher is required: a run folder (e.g. outputs/full_finetune) or a classification checkpoint"
        )
    if not 0.0 <= options.alpha <= 1.0:
        raise TransferError(f"--alpha {options.alpha:g} must be between 0 (hard labels only) and 1 (teacher only)")
    if not options.temperature > 0:
        raise TransferError(f"--temperature {options.temperature:g} must be positive (e.g. 4)")
    if options.student_layers and options.student_num_layers:
        raise TransferError(
            "--student_layers and --student_num_layers both choose the student's blocks: give only one"
        )


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """The loss above, averaged over the batch (the soft term over every row, the hard term over labelled rows)."""
    student_logits = student_logits.float()
    labelled = labels != UNLABELED
    hard = (
        F.cross_entropy(student_logits[labelled], labels[labelled]) if labelled.any() else student_logits.sum() * 0.0
    )
    if teacher_logits is None or alpha == 0:
        return hard
    soft = (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=-1),
            F.log_softmax(teacher_logits.float() / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )
    return alpha * soft + (1 - alpha) * hard


# ---------------------------------------------------------------- the teacher


@dataclasses.dataclass
class Teacher:
    run: LoadedRun  # the model (in eval mode), its preprocessing and its labels
    name: str  # what the user passed as --teacher

    @property
    def modality(self) -> str:
        return self.run.modality

    @property
    def label_names(self) -> list[str]:
        return self.run.label_names

    @property
    def model(self) -> torch.nn.Module:
        return self.run.model

    def base_model_arguments(self, model_args) -> None:
        """Point `model_args` at what the teacher was built from, so the student gets the same preprocessing."""
        from ..runs.adapter_files import BASE_MODEL_FILE

        if self.run.zero_shot:
            raise TransferError(
                f"--teacher '{self.name}' is a zero-shot run ({self.run.zero_shot}): it scores label hypotheses and has "
                "no classifier head to cut a student from; pass a student with --model_name_or_path"
            )

        info_file = self.run.folder / BASE_MODEL_FILE
        if info_file.is_file():  # an adapter run: its base checkpoint, pooled and headed as it was trained
            info = json.loads(info_file.read_text())
            for key, value in info["model_args"].items():
                if hasattr(model_args, key) and key != "cache_dir":
                    setattr(model_args, key, value)
        else:
            model_args.model_name_or_path = str(self.run.folder)

    def merged(self) -> torch.nn.Module:
        """A copy of the teacher as one plain model (a LoRA-style adapter folded into its base)."""
        from ..adapters import attach as adapters

        method = adapters.method(self.model)
        if method == "bottleneck":
            raise TransferError(
                f"--teacher '{self.name}' is a bottleneck-adapter run: a student cannot be cut from it; "
                "pass a student with --model_name_or_path"
            )
        network = copy.deepcopy(self.model)
        if method:
            network = network.merge_and_unload()
        return network.cpu().train()

    def require_same_inputs(self, cut_from_teacher: bool) -> Teacher:
        if not cut_from_teacher:
            raise TransferError(
                "--augment runs the teacher on the student's augmented inputs, which need the teacher's preprocessing: "
                "drop --model_name_or_path (cut the student from the teacher) or drop --augment"
            )
        return self


def load_teacher(name: str, device: str | None = None) -> Teacher:
    try:
        return Teacher(load_run(name, device=device), name)
    except TransferError as exc:
        raise TransferError(f"--teacher: {str(exc).removeprefix('--model ')}") from None


def label_order(teacher: Teacher, label_names: list[str]) -> list[int]:
    """The teacher's output index of each of the data's labels; the label sets must be the same."""
    index = {name: i for i, name in enumerate(teacher.label_names)}
    if set(index) != set(label_names):
        raise TransferError(
            f"teacher '{teacher.name}' predicts {sorted(index)} but the data's labels are {sorted(label_names)}: "
            "distil on data labelled like the teacher's training data"
        )
    return [index[name] for name in label_names]


def teacher_logits(teacher: Teacher, split, order: list[int], batch_size: int) -> torch.Tensor:
    """The teacher's logits for every row of a split (a Dataset, or a DataFrame of extra rows; the teacher's own
    preprocessing), columns in the data's label order. Under DDP each rank runs the teacher on its share of the rows
    and every rank gets them all."""
    from ..data.loading import columns_of, values_of
    from ..engine.sharding import rows_across_ranks

    def logits_for(rows):
        if teacher.modality == "text":
            pairs = values_of(split, "text_pair", rows) if "text_pair" in columns_of(split) else None
            texts = values_of(split, "text", rows)
            return (class_logits(teacher.run, texts, text_pairs=pairs, batch_size=batch_size),)
        return (class_logits(teacher.run, values_of(split, "image", rows), batch_size=batch_size),)

    (logits,) = rows_across_ranks(logits_for, len(split))
    return logits[:, order]


def reorder_outputs(model: torch.nn.Module, order: list[int], label_names: list[str]) -> None:
    """Permute a classifier's output units (its last Linear) so output i is `label_names[i]`."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(order)][-1]
    with torch.no_grad():
        last.weight.copy_(last.weight[order])
        if last.bias is not None:
            last.bias.copy_(last.bias[order])
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {n: i for i, n in enumerate(label_names)}


# ---------------------------------------------------------------- data with the teacher's logits


class WithTeacherLogits(torch.utils.data.Dataset):
    """Each item of `dataset` with the teacher's logits for it."""

    def __init__(self, dataset, logits: torch.Tensor):
        if len(dataset) != len(logits):
            raise ValueError(f"{len(dataset)} examples but {len(logits)} teacher logits")
        self.dataset, self.logits = dataset, logits

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return {**self.dataset[index], "teacher_logits": self.logits[index]}


class TeacherLogitsCollator:
    """The recipe's collator, with the teacher's logits stacked beside the batch (a class: workers pickle it)."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, items: list[dict]) -> dict:
        if "teacher_logits" not in items[0]:
            return self.collator(items)
        logits = torch.stack([item["teacher_logits"] for item in items])
        batch = self.collator([{k: v for k, v in item.items() if k != "teacher_logits"} for item in items])
        batch["teacher_logits"] = logits
        return batch


class DistillationTrainer(TransferTrainer):
    """Trains with `distillation_loss`; evaluates with cross-entropy. `teacher` (a module) runs on each training
    batch when the batches carry no precomputed teacher logits (augmented inputs)."""

    def __init__(
        self,
        *args,
        temperature: float,
        alpha: float,
        teacher: torch.nn.Module | None = None,
        teacher_order: list[int] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.temperature, self.alpha = temperature, alpha
        self.teacher, self.teacher_order = teacher, teacher_order
        self.model_accepts_loss_kwargs = False  # the loss is a batch mean; Trainer scales it for gradient accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        soft_targets = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        if soft_targets is None and self.teacher is not None and model.training and self.alpha > 0:
            with torch.no_grad():
                soft_targets = self.teacher(**inputs).logits[:, self.teacher_order]
        loss = distillation_loss(
            outputs.logits, soft_targets if model.training else None, labels, self.temperature, self.alpha
        )
        return (loss, outputs) if return_outputs else loss
