"""The adapter recipes end to end on tiny random checkpoints (python, notebook call, 2-process launch),
and pushing to a stand-in Hub on 127.0.0.1: files and card that arrive, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import failure_reasons, launch_on_two_processes
from hub_server import FakeHub  # tests/helpers is on sys.path (conftest)

import recipes.lora_bert as lora_bert
from hf_transfer import defaults
from hf_transfer.errors import TransferError
from hf_transfer.runs import adapter_files

TOKEN = "hf_TestTokenThatMustNeverLeak0123"


def run_script(args, env=None, timeout=600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_lora_vit_with_python_writes_an_adapter_that_reloads(tmp_path, tiny_vit_dir, image_dir):
    out = tmp_path / "out"
    result = run_script(
        [
            "recipes/lora_vit.py",
            "--model_name_or_path",
            tiny_vit_dir,
            "--train_dir",
            str(image_dir),
            "--num_train_epochs",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainable params:" in result.stdout and "trainable%" in result.stdout, (
        "the trainable-parameter report is printed at start"
    )
    saved = json.loads((out / "run_details.json").read_text())
    assert saved["recipe"] == "lora_vit" and saved["adapter"] == "peft" and saved["world_size"] == 1
    assert saved["training_config"]["target_modules"] == ["q_proj", "v_proj"]
    assert saved["training_config"]["modules_to_save"] == ["classifier"]
    assert 0 < saved["trainable_params"] < saved["total_params"] and saved["trainable_percent"] < 20
    assert {"adapter_config.json", "adapter_model.safetensors", "base_model.json", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "hf_transfer.load_adapter" in card
    model, processor = adapter_files.load_adapter(str(out))
    from hf_transfer.data.loading import open_image

    image = open_image(str(next(image_dir.rglob("*.png"))))
    assert model(**processor(image, return_tensors="pt")).logits.shape == (1, 2)


def test_lora_vit_under_two_processes(tmp_path, tiny_vit_dir, image_dir):
    out = tmp_path / "out"
    result = launch_on_two_processes(
        "recipes/lora_vit.py",
        [
            "--model_name_or_path",
            tiny_vit_dir,
            "--train_dir",
            image_dir,
            "--num_train_epochs",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--output_dir",
            out,
        ],
    )
    assert result.returncode == 0, failure_reasons(result)
    assert result.stdout.count("== lora_vit:") == 1, "only the main process writes and reports"
    saved = json.loads((out / "run_details.json").read_text())
    assert saved["world_size"] == 2 and saved["adapter"] == "peft"
    model, _ = adapter_files.load_adapter(str(out))
    b = model.base_model.model.vit.layers[0].attention.v_proj.lora_B["default"].weight
    assert b.abs().sum() > 0, "the adapter trained under DDP"


def test_lora_vit_offline_without_a_model_says_so_in_one_line(tmp_path):
    result = run_script(
        ["recipes/lora_vit.py", "--output_dir", str(tmp_path / "out")], env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().count("\n") == 0
        and "google/vit-base-patch16-224-in21k needs the Hub and the Hub is offline" in result.stderr
    )
    assert "--model_name_or_path" in result.stderr and not (tmp_path / "out").exists()


def test_lora_bert_bf16_on_cpu_and_gradient_checkpointing(tmp_path, tiny_bert_dir, text_csv):
    results = lora_bert.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        bf16=True,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": True},
        learning_rate=1e-2,
        save_strategy="no",
        load_best_model_at_end=False,
    )
    assert results["mixed_precision"] == "bf16" and results["device"] == "cpu"
    assert results["training_config"]["frozen_weights_dtype"] == "bfloat16", (
        "the frozen base was stored in the autocast precision"
    )
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "out" / "adapter_model.safetensors")
    assert saved and all(t.dtype == torch.float32 for t in saved.values()), "the adapter and head it saves are fp32"
    model, _ = adapter_files.load_adapter(str(tmp_path / "out"))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 4 and all(p.abs().sum() > 0 for p in lora_b), (
        "every adapter trained under reentrant checkpointing"
    )


def test_fp16_on_cpu_is_a_clear_error(tmp_path, tiny_bert_dir, text_csv):
    if torch.accelerator.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TransferError, match="--fp16 needs a GPU"):
        lora_bert.run(
            model_name_or_path=tiny_bert_dir, train_file=str(text_csv), output_dir=str(tmp_path / "out"), fp16=True
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["dora", "loha", "lokr", "ia3", "bottleneck"])
def test_every_method_runs_as_a_recipe(method, tmp_path, tiny_bert_dir, text_csv):
    results = lora_bert.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        peft_method=method,
        save_strategy="no",
        load_best_model_at_end=False,
    )
    assert results["training_config"]["peft_method"] == method
    assert results["training_config"]["learning_rate"] == defaults.ADAPTER_LEARNING_RATES[method]
    assert results["trainable_params"] < results["total_params"] / 4


# ---------------------------------------------------------------- the Hub


def hub_env(hub, tmp_path, token=TOKEN):
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


def assert_token_never_leaks(result, folder):
    assert TOKEN not in result.stdout and TOKEN not in result.stderr
    for path in folder.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"the token was written into {path}"


def test_recipe_pushes_adapter_and_card_to_the_hub(tmp_path, tiny_bert_dir, text_csv):
    out = tmp_path / "out"
    with FakeHub(token=TOKEN) as hub:
        result = run_script(
            [
                "recipes/lora_bert.py",
                "--model_name_or_path",
                tiny_bert_dir,
                "--min_validation_per_class",
                "1",  # as in-process tests (tiny_files_hold_out_validation)
                "--train_file",
                str(text_csv),
                "--num_train_epochs",
                "1",
                "--output_dir",
                str(out),
                "--push_to_hub",
                "--hub_model_id",
                "alice/tiny-lora",
            ],
            env=hub_env(hub, tmp_path),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        files = hub.files("alice/tiny-lora")
        assert hub.repos["alice/tiny-lora"]["private"] is False
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "base_model.json",
        "all_results.json",
        "run_details.json",
        "trainer_state.json",
        "README.md",
        "tokenizer.json",
    } <= set(files)
    assert not any(name.startswith("checkpoint-") or name.endswith(".bin") for name in files), (
        "no checkpoints or pickles are pushed"
    )
    assert files["adapter_model.safetensors"] == (out / "adapter_model.safetensors").read_bytes()
    card = files["README.md"].decode()
    for expected in (
        "library_name: peft",
        "- lora",
        "## Results",
        "## Training configuration",
        '"lora_r": 8',
        'load_adapter("alice/tiny-lora")',
    ):
        assert expected in card, expected
    assert json.loads(files["all_results.json"])["eval_accuracy"] >= 0
    assert_token_never_leaks(result, out)


def test_a_pushed_full_run_carries_its_code_pictures_and_loading_snippet(tmp_path, tiny_bert_dir, text_csv):
    out = tmp_path / "out"
    with FakeHub(token=TOKEN) as hub:
        result = run_script(
            [
                "recipes/full_finetune.py",
                "--model_name_or_path",
                tiny_bert_dir,
                "--pooling",
                "mean",
                "--min_validation_per_class",
                "1",  # as in-process tests (tiny_files_hold_out_validation)
                "--train_file",
                str(text_csv),
                "--num_train_epochs",
                "1",
                "--output_dir",
                str(out),
                "--push_to_hub",
                "--hub_model_id",
                "alice/tiny-ft",
            ],
            env=hub_env(hub, tmp_path),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        files = hub.files("alice/tiny-ft")
    assert {
        "config.json",
        "model.safetensors",
        "transfer_classifier.py",
        "training_curves.png",
        "confusion_matrix.png",
        "tokenizer.json",
    } <= set(files)
    assert files["transfer_classifier.py"] == (out / "transfer_classifier.py").read_bytes()
    card = files["README.md"].decode()
    assert (
        "import hf_transfer" in card and 'pipeline("text-classification", model="alice/tiny-ft")' in card
    )  # the flag is the user's choice
    assert "![Training curves](training_curves.png)" in card
    assert_token_never_leaks(result, out)


def test_push_adapter_script_private_branch(tmp_path, tiny_bert_dir, text_csv):
    out = tmp_path / "out"
    lora_bert.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(out),
        num_train_epochs=1,
        peft_method="bottleneck",
        save_strategy="no",
        load_best_model_at_end=False,
    )
    with FakeHub(token=TOKEN) as hub:
        result = run_script(
            ["scripts/push_adapter.py", str(out), "alice/tiny-adapter", "--private", "--revision", "exp-1"],
            env=hub_env(hub, tmp_path),
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert hub.repos["alice/tiny-adapter"]["private"] is True
        files = hub.files("alice/tiny-adapter", "exp-1")
        assert all(auth == f"Bearer {TOKEN}" for _, path, auth in hub.requests if path != "/api/agent-harnesses")
    assert {"bottleneck_config.json", "bottleneck_model.safetensors", "base_model.json", "README.md"} <= set(files)
    assert "library_name: hf_transfer" in files["README.md"].decode() and "- bottleneck" in files["README.md"].decode()
    assert "branch exp-1" in result.stdout
    assert_token_never_leaks(result, out)


def test_hub_errors_are_one_line(tmp_path, tiny_bert_dir, text_csv):
    out = tmp_path / "out"
    lora_bert.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        output_dir=str(out),
        num_train_epochs=1,
        save_strategy="no",
        load_best_model_at_end=False,
    )
    with FakeHub(token=TOKEN) as hub:
        cases = {
            "no token": (hub_env(hub, tmp_path, token=None), "no Hugging Face token"),
            "unauthorized": (hub_env(hub, tmp_path, token="hf_wrong"), "rejected the token (401 Unauthorized)"),
            "offline": ({**hub_env(hub, tmp_path), "HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE=1 is set"),
        }
        for case, (env, message) in cases.items():
            result = run_script(["scripts/push_adapter.py", str(out), "alice/x"], env=env)
            assert result.returncode == 2 and message in result.stderr, (case, result.stderr[-500:])
            assert result.stderr.strip().count("\n") == 0, (case, result.stderr)
        forbidden = run_script(["scripts/push_adapter.py", str(out), "bob/x"], env=hub_env(hub, tmp_path))
        assert "403 Forbidden" in forbidden.stderr and forbidden.stderr.strip().count("\n") == 0
        assert not hub.repos
    closed = FakeHub(token=TOKEN)  # never started: nothing listens on its port
    closed.server.server_close()
    result = run_script(["scripts/push_adapter.py", str(out), "alice/x"], env=hub_env(closed, tmp_path))
    assert (
        result.returncode == 2 and "cannot reach the Hub" in result.stderr and result.stderr.strip().count("\n") == 0
    )
    result = run_script(["scripts/push_adapter.py", str(tmp_path), "alice/x"], env=hub_env(closed, tmp_path))
    assert "has no all_results.json" in result.stderr


def test_push_options_are_checked_before_training(tmp_path, tiny_bert_dir, text_csv):
    common = dict(model_name_or_path=tiny_bert_dir, train_file=str(text_csv), output_dir=str(tmp_path / "out"))
    with pytest.raises(TransferError, match="--push_to_hub needs --hub_model_id"):
        lora_bert.run(push_to_hub=True, **common)
    with pytest.raises(TransferError, match="--hub_token is not accepted"):
        lora_bert.run(hub_token=TOKEN, **common)
    with pytest.raises(TransferError, match="is not a Hub repo id"):
        lora_bert.run(push_to_hub=True, hub_model_id="not a repo", **common)
    with pytest.raises(TransferError, match="HF_HUB_OFFLINE=1 is set"):  # the test session runs offline
        lora_bert.run(push_to_hub=True, hub_model_id="alice/x", **common)
    assert not (tmp_path / "out").exists()


def test_hub_options_use_the_trainer_argument_names_and_switch_the_trainers_own_push_off():
    from hf_transfer.hub import HubTarget, target_from_training_args
    from hf_transfer.pipeline.arguments import parse_recipe_args

    args = parse_recipe_args(
        {}, ["--push_to_hub", "--hub_model_id", "alice/x", "--hub_private_repo", "true", "--hub_revision", "exp-1"]
    )
    assert target_from_training_args(args.training) == HubTarget("alice/x", private=True, revision="exp-1")
    assert args.training.push_to_hub is False, "the Trainer must not push checkpoints itself"


@pytest.mark.parametrize("head_phase", ["none", "label_descriptions", "auto"])
def test_an_adapter_run_can_start_its_head_as_the_zero_shot_classifier(
    tmp_path, tiny_bert_dir, text_csv, monkeypatch, head_phase
):
    """--head_phase works for adapters as for full fine-tuning: the head LoRA trains with starts as the zero-shot
    classifier of the label names (the one full fine-tuning starts from), or from its random initialisation; the
    default (auto) with a validation split held out starts from the random head, as every adapter was measured."""
    from transformers import TrainerCallback

    import recipes.full_finetune as full_finetune
    from hf_transfer.pipeline import training

    heads = {}

    class Inspect(TrainerCallback):
        def __init__(self, name):
            self.name = name

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            heads[self.name] = {
                n.rsplit(".", 1)[-1]: p.detach().clone()
                for n, p in model.named_parameters()
                if "classifier" in n and ("modules_to_save" in n or self.name == "full")
            }

    original = training.make_trainer
    common = dict(model_name_or_path=tiny_bert_dir, train_file=str(text_csv), num_train_epochs=1, save_strategy="no")
    common.update(load_best_model_at_end=False, seed=0)
    monkeypatch.setattr(
        training,
        "make_trainer",
        lambda job, callbacks=(), **kw: original(job, callbacks=[*callbacks, Inspect("lora")], **kw),
    )
    chosen = {} if head_phase == "auto" else {"head_phase": head_phase}  # auto: the default
    results = lora_bert.run(**common, **chosen, output_dir=str(tmp_path / "lora"))
    monkeypatch.setattr(training, "make_trainer", lambda job, **kw: original(job, callbacks=[Inspect("full")], **kw))
    full_finetune.run(**common, head_phase="label_descriptions", output_dir=str(tmp_path / "full"))
    assert heads["lora"].keys() == heads["full"].keys() == {"weight", "bias"}
    same = all(torch.allclose(heads["lora"][k], heads["full"][k], atol=1e-6) for k in ("weight", "bias"))
    assert same == (head_phase == "label_descriptions")
    assert ("label_descriptions" in results.get("head_phase_fit", {})) == (head_phase == "label_descriptions")
    if head_phase == "auto":
        assert results["eval_samples"] > 0 and "head_phase_fit" not in results, "no head fitted: the random start"
