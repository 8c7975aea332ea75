"""Every bad input ends in one clear line naming the culprit, and leaves no output folder behind."""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import write_image_folder, write_text_table

from hf_transfer.errors import TransferError
from recipes.full_finetune import run


def fails(tmp_path, match, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(TransferError, match=match) as info:
        run(output_dir=str(out), num_train_epochs=1, **kwargs)
    assert "\n" not in str(info.value)
    assert not out.exists(), "a failed run must not leave an output folder"
    return str(info.value)


def test_missing_file(tmp_path, tiny_bert_dir):
    fails(
        tmp_path,
        r"--train_file '.*nope.csv' does not exist",
        model_name_or_path=tiny_bert_dir,
        train_file=str(tmp_path / "nope.csv"),
    )


def test_missing_image_folder(tmp_path, tiny_vit_dir):
    fails(
        tmp_path,
        r"--train_dir '.*nowhere' is not a folder",
        model_name_or_path=tiny_vit_dir,
        train_dir=str(tmp_path / "nowhere"),
    )


def test_empty_file(tmp_path, tiny_bert_dir):
    (tmp_path / "empty.csv").write_text("text,label\n")
    fails(
        tmp_path, r"empty.csv' has no rows", model_name_or_path=tiny_bert_dir, train_file=str(tmp_path / "empty.csv")
    )


def test_missing_text_column(tmp_path, tiny_bert_dir):
    path = write_text_table(tmp_path / "t", text_column="sentence")
    message = fails(tmp_path, r"has no column 'text'", model_name_or_path=tiny_bert_dir, train_file=str(path))
    assert "sentence" in message and "--text_column_name" in message


def test_missing_label_column(tmp_path, tiny_bert_dir):
    path = write_text_table(tmp_path / "t", label_column="y")
    fails(
        tmp_path,
        r"no label column 'label'.*--label_column_name",
        model_name_or_path=tiny_bert_dir,
        train_file=str(path),
    )


def test_missing_image_column(tmp_path, tiny_vit_dir):
    write_image_folder(tmp_path / "imgs")
    pd.DataFrame({"image": ["imgs/circle/0.png", "imgs/square/0.png"] * 3, "label": ["circle", "square"] * 3}).to_csv(
        tmp_path / "i.csv", index=False
    )
    fails(
        tmp_path,
        r"has no column 'picture'",
        model_name_or_path=tiny_vit_dir,
        train_file=str(tmp_path / "i.csv"),
        image_column_name="picture",
    )


def test_validation_label_never_seen_in_training(tmp_path, tiny_bert_dir):
    train = write_text_table(tmp_path / "train")
    pd.DataFrame({"text": ["meh", "fine"], "label": ["neutral", "pos"]}).to_csv(tmp_path / "val.csv", index=False)
    fails(
        tmp_path,
        r"val.csv has label 'neutral' that never occurs in the training data",
        model_name_or_path=tiny_bert_dir,
        train_file=str(train),
        validation_file=str(tmp_path / "val.csv"),
    )


def test_a_class_too_small_to_split_trains_whole_and_says_so(tmp_path, tiny_bert_dir, capsys):
    pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x", "x", "x", "lonely"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    results = run(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        model_name_or_path=tiny_bert_dir,
        train_file=str(tmp_path / "t.csv"),
    )
    assert results["train_samples"] == 4 and results["eval_samples"] == 0
    assert "validation: none held out: 10% of train would hold 0 examples of some class" in capsys.readouterr().out


def test_unreadable_image_is_an_error_with_strict(tmp_path, tiny_vit_dir):
    root = write_image_folder(tmp_path / "imgs")
    (root / "circle" / "broken.png").write_bytes(b"not a png")
    fails(
        tmp_path, r"unreadable image .*broken.png", model_name_or_path=tiny_vit_dir, train_dir=str(root), strict=True
    )


def test_unreadable_image_is_skipped_counted_and_said_without_strict(tmp_path, capsys):
    from hf_transfer.data.loading import DataArguments, load_labelled_data

    root = write_image_folder(tmp_path / "imgs")
    (root / "circle" / "broken.png").write_bytes(b"not a png")
    data = load_labelled_data(DataArguments(train_dir=str(root)))
    assert data.skipped_images == 1
    said = capsys.readouterr().out
    assert "skipped 1 unreadable image (e.g. " in said and "broken.png" in said and "--strict" in said
    assert not any("broken" in p for split in data.splits.values() for p in split["image"])


def test_a_truncated_large_jpeg_is_found_although_the_check_decodes_it_small(tmp_path):
    """The readability check decodes a large JPEG at 1/8 scale (its cost is most of a photo's); that still reads every
    byte of it, so a file cut short is still skipped."""
    import numpy as np
    from PIL import Image

    from hf_transfer.data.loading import DataArguments, load_labelled_data

    root = write_image_folder(tmp_path / "imgs")
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "square" / "photo.jpg", quality=90)
    whole = (root / "square" / "photo.jpg").read_bytes()
    (root / "circle" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    data = load_labelled_data(DataArguments(train_dir=str(root)))
    assert data.skipped_images == 1
    kept = [p for split in data.splits.values() for p in split["image"]]
    assert any(p.endswith("photo.jpg") for p in kept) and not any(p.endswith("cut.jpg") for p in kept)


def test_unknown_model_name(tmp_path, text_csv):
    fails(
        tmp_path,
        r"unknown bundled checkpoint 'bundled:gpt9'.*bundled:minilm-l6",
        model_name_or_path="bundled:gpt9",
        train_file=str(text_csv),
    )


def test_hub_id_while_offline_names_id_and_bundled_alternatives(tmp_path, text_csv):
    message = fails(
        tmp_path,
        r"model 'someone/not-cached-model'",
        model_name_or_path="someone/not-cached-model",
        train_file=str(text_csv),
    )
    assert "offline" in message and "bundled:minilm-l6" in message and "bundled:efficientnet-lite0" in message


def test_local_checkpoint_folder_without_config(tmp_path, text_csv):
    (tmp_path / "ckpt").mkdir()
    fails(
        tmp_path,
        r"local checkpoint '.*ckpt' has no config.json",
        model_name_or_path=str(tmp_path / "ckpt"),
        train_file=str(text_csv),
    )


def test_text_model_on_image_data(tmp_path, tiny_bert_dir, image_dir):
    fails(tmp_path, r"takes text but data .* is image", model_name_or_path=tiny_bert_dir, train_dir=str(image_dir))


def test_unknown_config_key(tmp_path, tiny_bert_dir, text_csv):
    (tmp_path / "c.yaml").write_text("model_name_or_path: x\nlearning_rte: 0.1\n")
    fails(tmp_path, r"c.yaml' has unknown argument 'learning_rte'", config=str(tmp_path / "c.yaml"))


def test_command_line_prints_one_line_and_exits_2(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "recipes/full_finetune.py",
            "--train_file",
            str(tmp_path / "missing.csv"),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: --train_file") and "missing.csv" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "value, match",
    [
        ({"learning_rate": -1e-3}, r"--learning_rate -0.001 must be positive"),
        ({"head_learning_rate": 0.0}, r"--head_learning_rate 0 must be positive"),
        ({"image_size": 0}, r"--image_size 0 must be a positive number of pixels"),
        ({"image_size": -1}, r"--image_size -1 must be a positive number of pixels"),
        ({"num_train_epochs": "three"}, r"run\(\): num_train_epochs='three' is not a valid float"),
    ],
)
def test_values_no_run_can_use(tmp_path, tiny_bert_dir, text_csv, value, match):
    out = tmp_path / "out"
    with pytest.raises(TransferError, match=match) as info:
        run(
            **{
                "model_name_or_path": tiny_bert_dir,
                "train_file": str(text_csv),
                "output_dir": str(out),
                "num_train_epochs": 1,
                **value,
            }
        )
    assert "\n" not in str(info.value) and not out.exists()
