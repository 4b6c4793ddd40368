"""Writes a folder of real JPEG photographs in torchvision's ImageFolder layout, offline.

The pixels come from the two photographs scikit-learn ships (sklearn.datasets.load_sample_images:
china.jpg and flower.jpg, 427x640): each file is a random window of one of them, rescaled to an
ImageNet-like size (shorter side 300-500 pixels) and saved at JPEG quality 90. Class c draws
from photo c % 2, so the classes differ in content.

  python scripts/make_image_folder.py DIR --classes 10 --train-per-class 100 --val-per-class 20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make_image_folder(
    root, classes: int = 4, train_per_class: int = 8, val_per_class: int = 2, seed: int = 0,
    min_side: int = 300, max_side: int = 500,
) -> Path:  # fmt: skip
    """Creates root/{train,val}/class_XX/NNNN.jpg and returns root."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            photo = photos[c % len(photos)]
            for i in range(count):
                w = int(rng.integers(photo.width // 2, photo.width + 1))
                h = int(rng.integers(photo.height // 2, photo.height + 1))
                left = int(rng.integers(0, photo.width - w + 1))
                top = int(rng.integers(0, photo.height - h + 1))
                short = int(rng.integers(min_side, max_side + 1))
                scale = short / min(w, h)
                window = photo.crop((left, top, left + w, top + h))
                window = window.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
                window.save(folder / f"{i:04d}.jpg", quality=90)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=20)
    args = parser.parse_args()
    make_image_folder(args.root, args.classes, args.train_per_class, args.val_per_class)
    print(f"wrote {args.root}")


if __name__ == "__main__":
    main()
