"""The data layer is `datasets` end to end: files become memory-mapped Arrow tables, splits and subsets are index
selections on them (never copies), texts are tokenised once by `Dataset.map` and cached, Hub-style sets keep their
split names, revision and undecoded images."""

import datasets
import numpy as np
import pandas as pd
import pytest
from conftest import write_text_table

from hf_transfer.data.loading import DataArguments, load_labelled_data, open_image
from hf_transfer.data.preprocessing import ImageDataset, TokenizedDataset
from hf_transfer.errors import TransferError


def test_a_csv_becomes_memory_mapped_splits_selected_by_index(tmp_path):
    table = write_text_table(tmp_path / "pool", rows_per_class=40)
    data = load_labelled_data(DataArguments(train_file=str(table), max_train_samples_per_class=10), seed=3)
    train, validation = data.splits["train"], data.splits["validation"]
    assert isinstance(train, datasets.Dataset) and isinstance(validation, datasets.Dataset)
    assert train.cache_files and train.cache_files == validation.cache_files, "both read the one Arrow file on disk"
    assert train._indices is not None and validation._indices is not None, "selections, not copies"
    assert train.features["label"].names == ["neg", "pos"] and data.sources["train"] == str(table)
    assert not set(train["text"]) & set(validation["text"]) and len(train) == 20


def test_the_seeded_draws_are_pandas_own(tmp_path):
    """Index selection draws exactly the rows `DataFrame.sample` drew when splits were frames: seeded results of
    earlier versions stay reproducible."""
    table = write_text_table(tmp_path / "pool", rows_per_class=30)
    data = load_labelled_data(DataArguments(train_file=str(table)), seed=7)
    frame = pd.read_csv(table)
    shuffled = frame.sample(frac=1.0, random_state=7)
    rank = shuffled.groupby("label", sort=False).cumcount().to_numpy()
    held = rank < 3  # 10% of 30 per class
    assert list(data.splits["validation"]["text"]) == shuffled["text"][held].tolist()
    assert list(data.splits["train"]["text"]) == shuffled["text"][~held].tolist()


def test_empty_and_numeric_text_cells_become_text(tmp_path):
    frame = pd.DataFrame({"text": [None, 12, "fine", "bad"] * 3, "label": ["a", "b"] * 6})
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    data = load_labelled_data(DataArguments(train_file=str(tmp_path / "mixed.csv"), min_validation_per_class=99))
    assert set(data.splits["train"]["text"]) == {"", "12", "fine", "bad"}


def test_tokenisation_is_cached_and_the_same_in_worker_processes(tmp_path, tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    table = write_text_table(tmp_path / "pool", rows_per_class=40)
    train = load_labelled_data(DataArguments(train_file=str(table)), seed=0).splits["train"]
    first = TokenizedDataset(train, tokenizer, 16)
    written = {f["filename"] for f in first.table.cache_files}
    again = TokenizedDataset(train, tokenizer, 16)
    assert {f["filename"] for f in again.table.cache_files} == written, "the second run reads the cached ids"
    workers = TokenizedDataset(train, tokenizer, 16, num_proc=2)
    assert list(workers.encodings["input_ids"]) == list(first.encodings["input_ids"])
    shorter = TokenizedDataset(train, tokenizer, 4)
    assert max(len(ids) for ids in shorter.encodings["input_ids"]) == 4
    item = first[3]
    assert item["labels"] == train[3]["label"] and item["input_ids"] == tokenizer(train[3]["text"])["input_ids"]


def hub_style_image_set(path, names=("circle", "square"), split_names=("fit", "dev")):
    """A DatasetDict as the Hub stores image sets: PNG bytes in an Image feature, ClassLabel labels."""
    import io

    from PIL import Image

    def png(value):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    table = datasets.Dataset.from_dict(
        {"img": [png(40 * (i % 2) + i) for i in range(12)], "label": [i % 2 for i in range(12)]}, features=features
    )
    datasets.DatasetDict({split: table for split in split_names}).save_to_disk(str(path))
    return path


def test_hub_split_names_and_undecoded_images(tmp_path):
    folder = hub_style_image_set(tmp_path / "hub")
    args = DataArguments(dataset_name=str(folder), image_column_name="img", train_split_name="fit")
    data = load_labelled_data(args)
    assert set(data.splits) == {"train", "validation"} and data.validation == "given", "'dev' is found as validation"
    assert data.label_names == ["circle", "square"] and data.modality == "image"
    stored = data.splits["train"][0]["image"]
    assert isinstance(stored, dict) and stored["bytes"][:4] == b"\x89PNG", "images stay encoded until read"
    pixels = ImageDataset(data.splits["train"], lambda image: np.asarray(image))[1]["pixel_values"]
    assert pixels.shape == (8, 8, 3) and open_image(stored).mode == "RGB"
    with pytest.raises(TransferError, match="has no split 'training'.*set --train_split_name"):
        load_labelled_data(
            DataArguments(dataset_name=str(folder), image_column_name="img", train_split_name="training")
        )


def test_unreadable_images_are_found_the_same_in_worker_processes(tmp_path):
    from conftest import write_image_folder

    root = write_image_folder(tmp_path / "images", per_class=8)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG not really")
    serial = load_labelled_data(DataArguments(train_dir=str(root), min_validation_per_class=99))
    parallel = load_labelled_data(
        DataArguments(train_dir=str(root), min_validation_per_class=99, preprocessing_num_workers=2)
    )
    assert serial.skipped_images == parallel.skipped_images == 1
    assert list(serial.splits["train"]["image"]) == list(parallel.splits["train"]["image"])
    assert not any("broken" in path for path in parallel.splits["train"]["image"])
    with pytest.raises(TransferError, match="unreadable image .*broken.png"):
        load_labelled_data(DataArguments(train_dir=str(root), strict=True, preprocessing_num_workers=2))
