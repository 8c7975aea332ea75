"""A saved run as an ONNX model, checked against the run itself before anything is kept.

`hf-transfer export RUN --format onnx --output_dir DIR` writes `model.onnx` (logits out, batch and sequence length
dynamic) beside the run's config.json and tokenizer / image processor, the layout optimum's ORT classes read. The
export is run with onnxruntime on check inputs (yours with --check_file / --check_dir, else built-in examples) and
its logits are compared with the PyTorch run's: the largest difference and both latencies go into
`export_report.json`; a difference above the tolerance is an error and leaves no folder behind. Full models and
merged adapter runs export; an adapter run is merged first (`hf-transfer merge`).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

from ..errors import TransferError
from .adapter_files import BASE_MODEL_FILE
from .inference import encoded_batches, load_run, read_images

FORMATS = ("onnx",)
TOLERANCE = 1e-4  # fp32: the exported graph computes what PyTorch computes, up to operator order
CHECK_TEXTS = [
    "a quietly moving film",
    "the plot makes no sense at all",
    "what time does the shop open?",
    "great value, would buy again",
    "I did not expect to enjoy it this much",
]
LATENCY_RUNS = 20


class _LogitsOnly(torch.nn.Module):
    """The classifier with a single tensor out, so the graph has one named output."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).logits


def export(
    model: str,
    output_dir: str,
    *,
    format: str = "onnx",
    check_file: str | None = None,
    check_dir: str | None = None,
    text_column_name: str = "text",
    image_column_name: str = "image",
    opset: int = 17,
    tolerance: float = TOLERANCE,
) -> dict:
    """Export the run in `model` to `output_dir`; returns the report also written to export_report.json."""
    if format not in FORMATS:
        raise TransferError(f"--format {format}: only {', '.join(FORMATS)} is supported")
    out = pathlib.Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise TransferError(f"--output_dir '{out}' is not empty: name a new folder")
    if (pathlib.Path(model) / BASE_MODEL_FILE).is_file():
        raise TransferError(
            f"'{model}' is an adapter run: merge it into its base first (hf-transfer merge {model} MERGED_DIR), "
            "then export MERGED_DIR"
        )
    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise TransferError(f"export needs {package}: pip install 'hf-transfer-learning[onnx]'")
    run = load_run(model, device="cpu")
    inputs = _check_inputs(run, check_file, check_dir, text_column_name, image_column_name)
    encoded = next(encoded_batches(run, inputs, batch_size=len(inputs)))
    names = list(encoded)
    with torch.inference_mode():
        expected = run.model(**encoded).logits.float().numpy()

    staging = pathlib.Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent if out.parent.exists() else None))
    try:
        onnx_path = staging / "model.onnx"
        dynamic = {name: {0: "batch", **({1: "sequence"} if run.modality == "text" else {})} for name in names}
        torch.onnx.export(
            _LogitsOnly(run.model, names).eval(),
            tuple(encoded[n] for n in names),
            str(onnx_path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**dynamic, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        session = _session(onnx_path)
        feed = {n: encoded[n].numpy() for n in names}
        exported = session.run(["logits"], feed)[0]
        difference = float(np.abs(exported - expected).max())
        if not difference <= tolerance:
            raise TransferError(
                f"the exported model's logits differ from the run's by {difference:.2e} (tolerance {tolerance:g}): "
                "nothing was written; try another --opset"
            )
        report = {
            "format": format,
            "opset": opset,
            "source": str(model),
            "inputs": names,
            "check_examples": len(inputs),
            "max_abs_logit_difference": difference,
            "tolerance": tolerance,
            "same_predictions": bool((exported.argmax(1) == expected.argmax(1)).all()),
            "latency_ms": {
                "pytorch": _latency(lambda: run.model(**encoded)),
                "onnxruntime": _latency(lambda: session.run(["logits"], feed)),
            },
            "latency_batch": len(inputs),
            "device": "cpu",
        }
        report["onnxruntime_speedup"] = round(report["latency_ms"]["pytorch"] / report["latency_ms"]["onnxruntime"], 2)
        run.model.config.save_pretrained(staging)
        run.processor.save_pretrained(staging)
        (staging / "export_report.json").write_text(json.dumps(report, indent=2))
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report["output_dir"] = str(out)
    return report


def _session(path: pathlib.Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check_inputs(run, check_file, check_dir, text_column_name, image_column_name) -> list:
    """The inputs both models are run on: the user's (at most 64), else built-in texts or images."""
    if check_file or check_dir:
        from .predict import read_inputs

        inputs, _, _ = read_inputs(run.modality, check_file, check_dir, text_column_name, image_column_name)
        inputs = inputs[:64]
        if not inputs:
            raise TransferError(f"'{check_file or check_dir}' holds no inputs to check the export on")
        return read_images(inputs) if run.modality == "image" else inputs
    if run.modality == "text":
        return CHECK_TEXTS + [f"this is about {name}" for name in run.label_names[:3]]
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(4)]


@torch.inference_mode()
def _latency(call) -> float:
    """Median milliseconds of one call, after one warm-up call."""
    call()
    times = []
    for _ in range(LATENCY_RUNS):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)
