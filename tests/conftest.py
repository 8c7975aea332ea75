"""Shared fixtures: tiny random BERT / ViT checkpoints saved with save_pretrained (so loading is the
real from_pretrained path), small text tables and image folders. Nothing here touches the network."""

import atexit
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))  # tiny_architectures, hub_server: imported by name

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if "HF_TRANSFER_CACHE" not in os.environ:  # never the user's own cache; removed when the session ends
    os.environ["HF_TRANSFER_CACHE"] = tempfile.mkdtemp(prefix="hf_transfer-cache-")
    atexit.register(shutil.rmtree, os.environ["HF_TRANSFER_CACHE"], ignore_errors=True)

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hf_transfer import assets

POSITIVE = [
    "a wonderful moving film",
    "great acting and a superb script",
    "brilliant and funny",
    "a joy to watch",
    "beautifully made",
]
NEGATIVE = [
    "a dull tedious mess",
    "awful acting and a boring plot",
    "painfully bad",
    "a waste of time",
    "clumsy and lifeless",
]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(assets.bundled_checkpoint_path("bundled:minilm-l6"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng():  # the same weights whichever test asks first: results do not depend on test order
        torch.manual_seed(0)
        BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    path = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ViTModel(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def write_text_table(path, rows_per_class=12, suffix=".csv", label_column="label", text_column="text"):
    rng = np.random.default_rng(0)
    rows = [(POSITIVE[i % 5] + f" {i}", "pos") for i in range(rows_per_class)] + [
        (NEGATIVE[i % 5] + f" {i}", "neg") for i in range(rows_per_class)
    ]
    frame = pd.DataFrame(rows, columns=[text_column, label_column]).sample(
        frac=1.0, random_state=int(rng.integers(100))
    )
    path = path.with_suffix(suffix)
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
        ".json": lambda: frame.to_json(path, orient="records"),
        ".parquet": lambda: frame.to_parquet(path),
    }[suffix]()
    return path


@pytest.fixture
def text_csv(tmp_path):
    return write_text_table(tmp_path / "train")


def write_image_folder(root, per_class=6, classes=("circle", "square"), size=40, mode="RGB"):
    """Two visually distinct classes: a bright disc or a bright square on black."""
    yy, xx = np.mgrid[:size, :size]
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            r = size // 4 + i % 3
            mask = (
                ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < r * r)
                if label == "circle"
                else ((abs(yy - size / 2) < r) & (abs(xx - size / 2) < r))
            )
            pixels = (mask * 255).astype(np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / label / f"{i}.png")
    return root


@pytest.fixture
def image_dir(tmp_path):
    return write_image_folder(tmp_path / "images")


# Runs in a fresh interpreter: loads the run with transformers alone and scores it on a labelled table.
PIPELINE_ACCURACY = r"""
import json, os, sys
import pandas as pd
from transformers import pipeline
run, table, task = sys.argv[1:4]
remote = os.path.exists(os.path.join(run, "transfer_classifier.py"))
classify = pipeline(task, model=run, trust_remote_code=remote, device="cpu")
frame = pd.read_csv(table)
if task == "text-classification":
    predicted = [p["label"] for p in classify(frame["text"].tolist(), batch_size=8)]
else:
    from PIL import Image
    predicted = [classify(Image.open(path), top_k=1)[0]["label"] for path in frame["image"]]
assert "hf_transfer" not in sys.modules, "the run must load without hf_transfer"
print(json.dumps({"accuracy": sum(p == str(t) for p, t in zip(predicted, frame["label"])) / len(frame), "model": type(classify.model).__name__,
                  "labels": sorted(set(predicted))}))
"""


def in_fresh_process(script: str, *arguments):
    """Run `script` in a new interpreter outside the repository (so hf_transfer is not importable by accident) and
    return the JSON its last line prints."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def pipeline_accuracy(run_dir, table, task) -> dict:
    return in_fresh_process(PIPELINE_ACCURACY, run_dir, table, task)


def free_port() -> int:
    """A port nothing listens on, for one two-process launch, so launches never share torchrun's default (29500)
    with a previous launch's ranks that have not exited yet."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure_reasons(result: subprocess.CompletedProcess) -> str:
    """A failing rank's own reason sits far above torchrun's closing report: the lines that name errors."""
    words = ("Error", "error", "terminate", "what()", "Abort", "Traceback")
    lines = [line for line in result.stderr.splitlines() if any(w in line for w in words)]
    return (
        "\n".join(lines[-30:])
        + f"\n--- stderr tail ---\n{result.stderr[-1500:]}\n--- stdout tail ---\n{result.stdout[-300:]}"
    )


def launch_on_two_processes(script: str, arguments: list, env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch SCRIPT --use_cpu ARGUMENTS` on two CPU processes (torchrun + gloo: accelerate 1.15's
    `--cpu --num_processes 2` starts one), on a free port."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())]
    return subprocess.run(
        [*command, script, *map(str, arguments), "--use_cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def run_on_two_ranks(recipe: str, arguments: list, output_dir) -> tuple[dict, dict]:
    """`accelerate launch` of tests/helpers/ddp_worker.py RECIPE on two CPU processes; each rank's final weights,
    which the worker saves to OUTPUT_DIR-ranks."""
    from safetensors.torch import load_file

    ranks = pathlib.Path(f"{output_dir}-ranks")
    ranks.mkdir(exist_ok=True)
    result = launch_on_two_processes(
        "tests/helpers/ddp_worker.py",
        [recipe, "--output_dir", output_dir, *arguments],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert result.returncode == 0, failure_reasons(result)
    return load_file(ranks / "rank0.safetensors"), load_file(ranks / "rank1.safetensors")


@pytest.fixture(autouse=True)
def tiny_files_hold_out_validation(request, monkeypatch):
    """The tables and folders written here hold 6-12 examples per class, where a run now holds no validation split
    out (fewer than 5 per class: docs/data.md). Tests of other behaviour keep the split (as
    `--min_validation_per_class 1` does); a test of the few-shot protocol asks for the `few_shot_protocol` fixture."""
    if "few_shot_protocol" not in request.fixturenames:
        from hf_transfer import defaults

        monkeypatch.setattr(defaults, "MIN_VALIDATION_PER_CLASS", 1)


@pytest.fixture
def few_shot_protocol():
    """The toolkit's own rule for small training files (see tiny_files_hold_out_validation)."""


@pytest.fixture
def divergence_guard_off(monkeypatch):
    """Every TransferTrainer's divergence guard watching and never acting: a run as it trained before the guard."""
    from hf_transfer.engine import divergence

    monkeypatch.setattr(
        divergence.DivergenceGuard, "on_step_end", lambda self, *a, **k: setattr(self, "_pending", 0.0)
    )
