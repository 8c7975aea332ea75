"""Images/s of an augmented training split through a DataLoader, per epoch, no model: what the data pipeline can
feed. Every figure from one run, on the same images:

- plain: what a user writes with torchvision, each image opened and decoded with PIL and augmented per item
  (RandomResizedCrop, flip, ColorJitter, ToTensor, Normalize), every epoch;
- hf_transfer, decoded every epoch (`--cache_images false`): the same work as plain, through the toolkit's dataset
  (its spread against plain is the run-to-run noise);
- hf_transfer, decoded images kept (the default when they fit the memory budget): the first epoch decodes (a large
  JPEG at reduced scale), shrinks to at most twice the training size and stores; later epochs only augment.

    python scripts/benchmark_data.py                                   # bundled Fashion-MNIST, 224 px
    python scripts/benchmark_data.py --sample_photos 40                # real colour photos shipped in scikit-image / matplotlib
    python scripts/benchmark_data.py --train_dir photos/ --image_size 224 --num_workers 4
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import tempfile
import time

import torch
from torchvision import transforms as T

from hf_transfer.data.loading import DataArguments, LabelledData, load_labelled_data, open_image
from hf_transfer.data.preprocessing import INTERPOLATIONS, ImageConfig, build_datasets, collate_images


class PlainAugmented(torch.utils.data.Dataset):
    def __init__(self, frame, config: ImageConfig):
        self.images, self.labels = list(frame["image"]), list(frame["label"])
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(config.size, interpolation=INTERPOLATIONS[config.interpolation]),
                T.RandomHorizontalFlip(),
                T.ColorJitter(0.2, 0.2, 0.2),
                T.ToTensor(),
                T.Normalize(config.mean, config.std),
            ]
        )

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"pixel_values": self.transform(open_image(self.images[index])), "labels": self.labels[index]}


SAMPLE_PHOTOS = {
    "skimage": (
        "data/astronaut.png",
        "data/chelsea.png",
        "data/coffee.png",
        "data/motorcycle_left.png",
        "data/rocket.jpg",
        "data/hubble_deep_field.jpg",
        "data/retina.jpg",
    ),
    "matplotlib": ("mpl-data/sample_data/grace_hopper.jpg",),
}


def write_sample_photos(folder: pathlib.Path, copies: int) -> pathlib.Path:
    """The colour photos that ship inside scikit-image and matplotlib, each written `copies` times as a JPEG, in two classes."""
    from PIL import Image

    photos = [
        pathlib.Path(importlib.util.find_spec(package).origin).parent / name
        for package, names in SAMPLE_PHOTOS.items()
        for name in names
    ]
    for i, photo in enumerate(photos):
        (folder / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image = Image.open(photo).convert("RGB")
        for copy in range(copies):
            image.save(folder / f"class{i % 2}" / f"{photo.stem}-{copy}.jpg", quality=90)
    return folder


def epochs_per_second(dataset, epochs: int, batch_size: int, num_workers: int) -> list[float]:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        collate_fn=collate_images,
        persistent_workers=num_workers > 0,
    )
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        seen = sum(len(batch["labels"]) for batch in loader)
        rates.append(seen / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", default="bundled:fashion_mnist")
    parser.add_argument("--train_dir", default=None)
    parser.add_argument(
        "--sample_photos",
        type=int,
        default=None,
        help="benchmark on this many JPEG copies of each bundled sample photo",
    )
    parser.add_argument("--max_train_samples_per_class", type=int, default=100)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=0)
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()
    if args.sample_photos:
        args.train_dir = str(write_sample_photos(pathlib.Path(scratch.name), args.sample_photos))
        args.max_train_samples_per_class = None
    data_args = DataArguments(
        dataset_name=None if args.train_dir else args.dataset_name,
        train_dir=args.train_dir,
        max_train_samples_per_class=args.max_train_samples_per_class,
    )
    loaded = load_labelled_data(data_args, seed=0, modality="image")
    sizes = sorted(
        {
            open_image(image).size
            for image in loaded.splits["train"].select(range(min(50, len(loaded.splits["train"]))))["image"]
        }
    )
    data = LabelledData({"train": loaded.splits["train"]}, loaded.label_names, "image", loaded.description)
    config = ImageConfig(args.image_size, (0.5,) * 3, (0.5,) * 3)
    runs = {"plain torchvision (PIL, per item)": PlainAugmented(data.splits["train"], config)}
    for label, keep in (("hf_transfer, decoded every epoch", False), ("hf_transfer, decoded images kept", True)):
        runs[label] = build_datasets(data, config.processor(), config, 128, augment=True, cache_images=keep)[0][
            "train"
        ]
    print(
        f"{len(data.splits['train'])} training images of {data.description} ({len(sizes)} sizes, e.g. {sizes[-1][0]}x{sizes[-1][1]}), "
        f"augmented to {args.image_size} px, batch {args.batch_size}, {args.num_workers} DataLoader workers, {torch.get_num_threads()} threads"
    )
    measured = {
        label: epochs_per_second(dataset, args.epochs, args.batch_size, args.num_workers)
        for label, dataset in runs.items()
    }
    plain = measured["plain torchvision (PIL, per item)"]
    print("| pipeline | " + " | ".join(f"epoch {e + 1} images/s (× plain)" for e in range(args.epochs)) + " |")
    print("|---|" + "---|" * args.epochs)
    for label, rates in measured.items():
        print(f"| {label} | " + " | ".join(f"{r:,.0f} (×{r / p:.2f})" for r, p in zip(rates, plain)) + " |")


if __name__ == "__main__":
    main()
