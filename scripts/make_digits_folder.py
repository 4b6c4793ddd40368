"""Writes scikit-learn's handwritten digits as a torchvision ImageFolder of PNG files, offline.

The very images the digits demo trains on (train/data/arrays.py, load_digits): the 1,797 8x8
scans scaled to 0-255 as uint8, upscaled by PIL's bilinear resize to SIZE x SIZE, split 80/20
stratified with random_state=0 (1,437 train / 360 val), saved as lossless RGB PNGs (the grey
value in all three channels, as load_digits replicates it). Files are DIR/{train,val}/D/NNNN.png,
D the digit (the demo's class names "0".."9", which torchvision's ImageFolder sorts into the same
label order) and NNNN the image's row in that split of load_digits' arrays. Every file is then
read back and checked against load_digits exactly: same labels, and the pixels / 255 normalized
with the training split's mean and std equal its arrays bit for bit. So torchvision's reference
trainer (--data-path DIR) and `python -m train ... --config.dataset=folder:DIR` see the pixels
the in-memory demo sees.

  python scripts/make_digits_folder.py DIR --image-size 32
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def digits_uint8(image_size: int = 32):
    """(train_x, val_x, train_y, val_y): load_digits' split of its upscaled images, as uint8
    HxW arrays before its division by 255 and normalization."""
    from PIL import Image
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = (digits.images / 16.0 * 255.0).astype(np.uint8)
    resized = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
            for im in images
        ]
    )
    labels = digits.target.astype(np.int32)
    return train_test_split(resized, labels, test_size=0.2, stratify=labels, random_state=0)


def check_digits_folder(root, image_size: int = 32) -> None:
    """Raises ValueError unless root holds exactly load_digits(image_size)'s split, labels and
    pixels (after its /255, RGB replication and normalization), file row NNNN for row NNNN."""
    from PIL import Image

    from train.data.arrays import load_digits

    memory = load_digits(image_size)
    root = Path(root)
    splits = {
        "train": (memory.train_images, memory.train_labels),
        "val": (memory.eval_images, memory.eval_labels),
    }
    read = {}
    for split, (_, labels) in splits.items():
        files = sorted((root / split).glob("*/*"))
        if len(files) != len(labels):
            raise ValueError(f"{root / split}: {len(files)} files, expected {len(labels)}")
        pixels = np.zeros((len(labels), image_size, image_size, 3), np.uint8)
        found = np.full(len(labels), -1, np.int32)
        for path in files:
            row = int(path.stem)
            with Image.open(path) as image:
                if image.mode != "RGB" or image.size != (image_size, image_size):
                    expected = f"RGB {image_size}x{image_size}"
                    raise ValueError(f"{path}: {image.mode} {image.size}, expected {expected}")
                pixels[row] = np.asarray(image)
            found[row] = int(path.parent.name)
        if not np.array_equal(found, labels):
            raise ValueError(f"{root / split}: labels differ from load_digits'")
        read[split] = pixels.astype(np.float32) / 255.0
    mean, std = read["train"].mean(), read["train"].std()
    for split, (images, _) in splits.items():
        if not np.array_equal((read[split] - mean) / std, images):
            raise ValueError(f"{root / split}: pixels differ from load_digits'")


def make_digits_folder(root, image_size: int = 32, check: bool = True) -> Path:
    """Creates root/{train,val}/D/NNNN.png (D = 0..9), checks them against load_digits unless
    check=False, and returns root."""
    from PIL import Image

    train_x, val_x, train_y, val_y = digits_uint8(image_size)
    root = Path(root)
    for split, images, labels in (("train", train_x, train_y), ("val", val_x, val_y)):
        for digit in range(10):
            (root / split / str(digit)).mkdir(parents=True, exist_ok=True)
        for row, (image, label) in enumerate(zip(images, labels, strict=True)):
            rgb = np.repeat(image[..., None], 3, axis=-1)
            Image.fromarray(rgb, "RGB").save(root / split / str(label) / f"{row:04d}.png")
    if check:
        check_digits_folder(root, image_size)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--no-check", action="store_true", help="skip reading the files back against load_digits"
    )
    args = parser.parse_args()
    make_digits_folder(args.root, args.image_size, check=not args.no_check)
    print(f"wrote {args.root}" + ("" if args.no_check else " (checked against load_digits)"))


if __name__ == "__main__":
    main()
