"""The on-disk feature cache: a second run on the same backbone and data skips extraction and trains the same head;
another seed or a superset of the data extracts only examples never seen; changing the weights or the
preprocessing rebuilds it; shards are written whole, evicted least recently used first; --no_feature_cache opts out."""

import json

import pytest
import torch
from conftest import failure_reasons, launch_on_two_processes, write_text_table

import recipes.feature_extraction as feature_extraction
from hf_transfer.features import cache as feature_cache


def run(tmp_path, name, **options):
    defaults = {
        "num_train_epochs": 3,
        "output_dir": str(tmp_path / name),
        "feature_cache_dir": str(tmp_path / "cache"),
    }
    return feature_extraction.run(**{**defaults, **options})


def stored_rows(cache, folder="*"):
    """{example key: features} of every shard in the cache (or in one model's folder)."""
    from safetensors.torch import load_file

    rows = {}
    for shard in sorted(cache.glob(f"{folder}/*.safetensors")):
        stored = load_file(str(shard))
        rows.update({bytes(k.tolist()): f for k, f in zip(stored["keys"], stored["features"])})
    return rows


def test_a_second_run_reads_features_from_disk_and_matches(tmp_path, tiny_bert_dir, text_csv, monkeypatch):
    first = run(tmp_path, "first", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    assert (
        set(first["feature_cache"].values()) == {"extracted"}
        and len(list((tmp_path / "cache").glob("*/*.safetensors"))) == 1
    )

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although every split was cached")

    monkeypatch.setattr(feature_cache, "extract_features", no_backbone)
    second = run(tmp_path, "second", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    assert set(second["feature_cache"].values()) == {"hit"}
    assert second["eval_accuracy"] == first["eval_accuracy"] and second["train_loss"] == pytest.approx(
        first["train_loss"]
    )
    assert second["head_l2"] == first["head_l2"]


def test_changed_data_weights_or_preprocessing_rebuild_the_cache(tmp_path, tiny_bert_dir, text_csv):
    run(tmp_path, "base", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    assert set(
        run(tmp_path, "length", model_name_or_path=tiny_bert_dir, train_file=str(text_csv), max_seq_length=4)[
            "feature_cache"
        ].values()
    ) == {"extracted"}
    from transformers import AutoModel

    changed = tmp_path / "changed-weights"
    model = AutoModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        model.encoder.layer[0].output.dense.weight.add_(0.01)
    model.save_pretrained(changed)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (changed / name).write_bytes((__import__("pathlib").Path(tiny_bert_dir) / name).read_bytes())
    assert set(
        run(tmp_path, "weights", model_name_or_path=str(changed), train_file=str(text_csv))["feature_cache"].values()
    ) == {"extracted"}
    off = run(tmp_path, "off", model_name_or_path=tiny_bert_dir, train_file=str(text_csv), no_feature_cache=True)
    assert set(off["feature_cache"].values()) == {"off"}
    assert json.loads((tmp_path / "off" / "run_details.json").read_text())["feature_cache"]["train"] == "off"


def test_image_features_key_on_the_files_and_the_processor(tmp_path, tiny_vit_dir, image_dir):
    first = run(tmp_path, "a", model_name_or_path=tiny_vit_dir, train_dir=str(image_dir))
    again = run(tmp_path, "b", model_name_or_path=tiny_vit_dir, train_dir=str(image_dir))
    assert set(first["feature_cache"].values()) == {"extracted"} and set(again["feature_cache"].values()) == {"hit"}
    touched = next(image_dir.rglob("*.png"))
    touched.write_bytes(touched.read_bytes())  # same bytes, new modification time: that image is read again
    assert (
        "partial"
        in run(tmp_path, "c", model_name_or_path=tiny_vit_dir, train_dir=str(image_dir))["feature_cache"].values()
    )


def test_two_processes_extract_shards_that_gather_into_the_single_process_features(tmp_path, tiny_bert_dir, text_csv):
    result = launch_on_two_processes(
        "recipes/feature_extraction.py",
        [
            "--model_name_or_path",
            tiny_bert_dir,
            "--train_file",
            text_csv,
            "--num_train_epochs",
            "2",
            "--output_dir",
            tmp_path / "ddp",
            "--feature_cache_dir",
            tmp_path / "ddp-cache",
            "--min_validation_per_class",
            "1",  # as the in-process run below (tiny_files_hold_out_validation)
        ],
    )
    assert result.returncode == 0, failure_reasons(result)
    run(
        tmp_path,
        "single",
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        feature_cache_dir=str(tmp_path / "single-cache"),
    )
    sharded, single = stored_rows(tmp_path / "ddp-cache"), stored_rows(tmp_path / "single-cache")
    assert sharded.keys() == single.keys() and len(single) == 24, "the same keys: ranks agree on the fingerprints"
    for key in single:
        assert torch.allclose(sharded[key], single[key], atol=1e-5), "shards gathered back in order"


def test_a_classifier_without_features_method_gives_its_heads_input_and_keys_on_the_layers_below_it():
    """A checkpoint's own class (here timm's): the features are what its classifier receives; the cache key changes
    with any weight below the head and not with the head itself (a new head does not invalidate the features)."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, default_data_collator

    from hf_transfer.features.extraction import ExtractionSettings, extract_features, new_head

    torch.manual_seed(0)
    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="resnet10t", num_labels=3)).eval()
    images = torch.randn(5, 3, 32, 32)
    data = [{"pixel_values": image, "labels": torch.tensor(i % 3)} for i, image in enumerate(images)]
    features, labels = extract_features(model, data, default_data_collator, ExtractionSettings(batch_size=2)).tensors
    with torch.no_grad():
        expected = model.timm_model.forward_head(model.timm_model.forward_features(images), pre_logits=True)
    assert torch.allclose(features, expected, atol=1e-5) and labels.tolist() == [0, 1, 2, 0, 1]

    key = feature_cache.model_fingerprint(model)
    with torch.no_grad():
        new_head(model).weight.add_(1.0)
    assert feature_cache.model_fingerprint(model) == key
    with torch.no_grad():
        model.timm_model.layer4[0].conv1.weight.add_(0.01)
    assert feature_cache.model_fingerprint(model) != key


def test_gradual_unfreezing_reads_the_features_a_feature_extraction_run_stored(tmp_path, tiny_bert_dir, text_csv):
    """Reused across recipes: the same backbone, pooling and data give the same keys in both."""
    import recipes.gradual_unfreeze as gradual_unfreeze

    run(tmp_path, "fe", model_name_or_path=tiny_bert_dir, train_file=str(text_csv), pooling="mean")
    results = gradual_unfreeze.run(
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        pooling="mean",
        head_phase="cached",
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        load_best_model_at_end=False,
        output_dir=str(tmp_path / "gu"),
        feature_cache_dir=str(tmp_path / "cache"),
    )
    assert results["head_phase_fit"]["feature_cache"] == {"train": "hit", "validation": "hit"}


def test_under_augment_the_head_phase_reads_the_unaugmented_images(tmp_path, tiny_vit_dir, image_dir):
    """The frozen layers see each image as it is evaluated, not a random crop: the features of an --augment run are
    the very ones a run without augmentation uses (same cache keys)."""
    import recipes.gradual_unfreeze as gradual_unfreeze

    common = dict(
        model_name_or_path=tiny_vit_dir,
        train_dir=str(image_dir),
        head_phase="cached",
        max_steps=1,
        save_strategy="no",
        eval_strategy="no",
        load_best_model_at_end=False,
        feature_cache_dir=str(tmp_path / "cache"),
    )
    augmented = gradual_unfreeze.run(**common, augment=True, output_dir=str(tmp_path / "augmented"))
    plain = gradual_unfreeze.run(**common, output_dir=str(tmp_path / "plain"))
    assert augmented["head_phase_fit"]["feature_cache"] == {"train": "extracted", "validation": "extracted"}
    assert plain["head_phase_fit"]["feature_cache"] == {"train": "hit", "validation": "hit"}


def test_extraction_is_fed_by_the_runs_workers_and_computed_in_its_precision(
    tmp_path, tiny_bert_dir, text_csv, monkeypatch
):
    """--dataloader_num_workers feeds the frozen layers from worker processes (the features, so the fitted head, are
    the same), and --bf16 runs them under autocast: features of their own, stored under their own key."""
    import os

    from hf_transfer.data import preprocessing

    readers = tmp_path / "readers"
    readers.mkdir()
    read = preprocessing.TokenizedDataset.__getitem__

    def recording(self, index):  # a file per reading process: workers are forked, so a list would not come back
        (readers / str(os.getpid())).touch()
        return read(self, index)

    monkeypatch.setattr(preprocessing.TokenizedDataset, "__getitem__", recording)
    common = dict(model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    in_process = run(tmp_path, "in-process", **common, no_feature_cache=True)
    assert [p.name for p in readers.iterdir()] == [str(os.getpid())]
    for p in readers.iterdir():
        p.unlink()
    with_workers = run(tmp_path, "workers", **common, no_feature_cache=True, dataloader_num_workers=2)
    workers = {p.name for p in readers.iterdir()}
    assert len(workers) == 2 and str(os.getpid()) not in workers  # the same two read every split: one pass over them
    assert (
        with_workers["eval_accuracy"] == in_process["eval_accuracy"]
        and with_workers["head_l2"] == in_process["head_l2"]
    )
    assert with_workers["train_loss"] == pytest.approx(in_process["train_loss"], rel=1e-5)

    cache = tmp_path / "cache"
    run(tmp_path, "fp32", **common)
    (fp32_folder,) = cache.iterdir()
    fp32 = stored_rows(cache)
    assert set(run(tmp_path, "bf16", **common, bf16=True)["feature_cache"].values()) == {"extracted"}
    (bf16_folder,) = [p for p in cache.iterdir() if p != fp32_folder]
    bf16 = stored_rows(bf16_folder.parent, bf16_folder.name)
    assert bf16.keys() == fp32.keys()
    half, full = torch.stack([bf16[k] for k in fp32]), torch.stack(list(fp32.values()))
    assert not torch.equal(half, full) and torch.allclose(half, full, atol=0.1, rtol=0.05)
    assert set(run(tmp_path, "bf16-again", **common, bf16=True)["feature_cache"].values()) == {"hit"}


def counting_extraction(monkeypatch):
    """Record how many examples each extraction runs through the backbone."""
    counts = []
    extract = feature_cache.extract_features

    def counting(model, dataset, *args, **kwargs):
        counts.append(len(dataset))
        return extract(model, dataset, *args, **kwargs)

    monkeypatch.setattr(feature_cache, "extract_features", counting)
    return counts


def test_another_seed_or_a_superset_extracts_only_examples_never_seen(tmp_path, tiny_bert_dir, monkeypatch):
    """The validation split drawn by another seed holds other examples, yet all of them were stored by the first
    run: nothing is extracted and the head sees the very same features. Added rows are the only ones extracted."""
    table = write_text_table(tmp_path / "pool", rows_per_class=12)
    counts = counting_extraction(monkeypatch)
    first = run(tmp_path, "seed1", model_name_or_path=tiny_bert_dir, train_file=str(table), seed=1)
    assert counts == [24] and set(first["feature_cache"].values()) == {"extracted"}
    stored = stored_rows(tmp_path / "cache")
    assert len(stored) == 24

    second = run(tmp_path, "seed2", model_name_or_path=tiny_bert_dir, train_file=str(table), seed=2)
    assert counts == [24] and set(second["feature_cache"].values()) == {"hit"}
    assert stored_rows(tmp_path / "cache").keys() == stored.keys(), "nothing new was written"

    superset = write_text_table(tmp_path / "superset", rows_per_class=14)  # the same 24 texts and 4 new ones
    third = run(tmp_path, "superset", model_name_or_path=tiny_bert_dir, train_file=str(superset), seed=1)
    assert counts == [24, 4] and "partial" in third["feature_cache"].values()
    assert len(stored_rows(tmp_path / "cache")) == 28 and len(list((tmp_path / "cache").glob("*/*.safetensors"))) == 2


def test_features_read_back_are_the_stored_ones_bit_for_bit(tmp_path, tiny_bert_dir, text_csv):
    """What a hit returns is exactly what extraction gave, in the split's own order, with the split's labels."""
    from hf_transfer.features.extraction import ExtractionSettings
    from hf_transfer.pipeline import training
    from hf_transfer.pipeline.arguments import parse_recipe_args

    args = parse_recipe_args(
        feature_extraction.DEFAULTS,
        [],
        {"model_name_or_path": tiny_bert_dir, "train_file": str(text_csv), "output_dir": str(tmp_path / "o")},
        extra_dataclasses=(feature_cache.FeatureCacheArguments,),
    )
    job = training.prepare(args, native=False)
    options = {"cache_dir": tmp_path / "cache"}
    fresh, status = feature_cache.cached_features(
        job.model, job.datasets, job.collator, ExtractionSettings(), **options
    )
    again, status_again = feature_cache.cached_features(
        job.model, job.datasets, job.collator, ExtractionSettings(batch_size=5), **options
    )
    assert set(status.values()) == {"extracted"} and set(status_again.values()) == {"hit"}
    for split in job.datasets:
        assert torch.equal(fresh[split].tensors[0], again[split].tensors[0])
        assert again[split].tensors[1].tolist() == list(job.datasets[split].labels)
    train = job.datasets["train"]
    reversed_train = torch.utils.data.Subset(train, list(range(len(train)))[::-1])
    reversed_train.labels = list(train.labels)[::-1]
    reversed_train.encodings = {k: list(v)[::-1] for k, v in train.encodings.items()}
    flipped, _ = feature_cache.cached_features(
        job.model, {"train": reversed_train}, job.collator, ExtractionSettings(), **options
    )
    assert torch.equal(flipped["train"].tensors[0], fresh["train"].tensors[0].flip(0))


def test_a_shard_is_written_whole_or_not_at_all_and_eviction_drops_the_least_recently_used(tmp_path, monkeypatch):
    import os

    import numpy as np
    import safetensors.torch

    from hf_transfer.features import store as feature_store

    shards = feature_store.FeatureStore(tmp_path, "a" * 64, {"model": "m"})
    keys = np.arange(3 * 16, dtype=np.uint8).reshape(3, 16)

    def interrupted(tensors, path):
        open(path, "wb").write(b"half a shard")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shards.write(keys, torch.ones(3, 4))
    monkeypatch.undo()
    assert shards.shards() == [] and not shards.read(keys).found.any(), "a partial file is never read as a shard"

    old = shards.write(keys, torch.ones(3, 4))
    new = shards.write(keys + 100, torch.zeros(3, 4))
    os.utime(old, ns=(1, 1))
    os.utime(new, ns=(2, 2))
    assert shards.read(keys).found.all()  # reading the old shard makes it the most recently used
    removed = feature_store.evict(tmp_path, max_bytes=old.stat().st_size)
    assert removed == [new] and shards.shards() == [old]


def test_cache_info_and_clear_on_the_command_line(tmp_path, tiny_bert_dir, text_csv):
    import subprocess
    import sys

    run(tmp_path, "first", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    cache = str(tmp_path / "cache")
    command = [sys.executable, "-m", "hf_transfer", "cache"]
    shown = subprocess.run(command + ["info", "--feature_cache_dir", cache], capture_output=True, text=True)
    assert shown.returncode == 0 and "24 examples" in shown.stdout and "float32" in shown.stdout, shown.stderr
    (tmp_path / "cache" / "notes.txt").write_text("not ours")  # e.g. a mistyped --feature_cache_dir
    cleared = subprocess.run(command + ["clear", "--feature_cache_dir", cache], capture_output=True, text=True)
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["notes.txt"], "only what the cache wrote goes"


def _write_shards(root, first_key, count):
    import numpy as np

    from hf_transfer.features.store import FeatureStore

    store = FeatureStore(root, "b" * 64, {"model": "m"})
    for n in range(count):
        keys = np.full((4, 16), first_key + n, dtype=np.uint8)
        keys[:, 0] = np.arange(4)
        store.write(keys, torch.full((4, 3), float(first_key + n)))


def test_two_processes_writing_at_once_leave_every_shard_whole(tmp_path):
    """Two runs (or ranks) storing into one model folder at the same time: every shard is complete and readable,
    and a reader running meanwhile only ever sees whole shards."""
    import multiprocessing

    import numpy as np

    from hf_transfer.features.store import FeatureStore

    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_shards, args=(tmp_path, start, 15)) for start in (0, 100)]
    for writer in writers:
        writer.start()
    store = FeatureStore(tmp_path, "b" * 64)
    while any(w.is_alive() for w in writers):
        for shard in store.shards():  # never a half-written file among the listed shards
            assert stored_rows(tmp_path, shard.parent.name)
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    keys = np.stack([np.full((4, 16), v, dtype=np.uint8) for v in [*range(15), *range(100, 115)]])
    keys[:, :, 0] = np.arange(4)
    found = store.read(keys.reshape(-1, 16))
    assert found.found.all() and len(store.shards()) == 30
    assert torch.equal(found.features[:, 0], torch.tensor(keys[:, 0, 1].repeat(4), dtype=torch.float32))


def test_feature_cache_max_gb_evicts_the_least_recently_used_shards(tmp_path, tiny_bert_dir, text_csv):
    """--feature_cache_max_gb: past the limit a run's new shard stays and the older ones go."""
    run(tmp_path, "first", model_name_or_path=tiny_bert_dir, train_file=str(text_csv))
    (first,) = (tmp_path / "cache").glob("*/*.safetensors")
    other = write_text_table(tmp_path / "other", rows_per_class=14)  # 4 examples the first run did not store
    run(tmp_path, "kept", model_name_or_path=tiny_bert_dir, train_file=str(other))
    assert len(list((tmp_path / "cache").glob("*/*.safetensors"))) == 2, "under the default limit both stay"
    tiny = run(
        tmp_path,
        "tiny",
        model_name_or_path=tiny_bert_dir,
        train_file=str(text_csv),
        feature_cache_max_gb=1e-9,
        max_seq_length=4,
    )  # new token ids: a new shard, then the limit applies
    shards = list((tmp_path / "cache").glob("*/*.safetensors"))
    assert set(tiny["feature_cache"].values()) == {"extracted"} and len(shards) == 1 and first not in shards
