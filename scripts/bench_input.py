"""Images/sec of the ImageNet-style input pipeline on a folder of real JPEGs.

Measures the training pipeline (read, decode only the RandomResizedCrop window, resize to
224 antialiased, flip, batch as uint8), the V2 recipe's (the same at 176 pixels, then
TrivialAugmentWide) and the evaluation pipeline (decode, Resize(256), CenterCrop(224)) with 1
tf.data thread and with one per core. The V2 recipe's RandomErasing and MixUp/CutMix run on the
device, in the train step. Without --folder it first writes
real photographs (scripts/make_image_folder.py: 375-500 pixel shorter side, JPEG quality 90).

  python scripts/bench_input.py [--folder DIR] [--images 1024] [--epochs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def measure(dataset, split: str, batch_size: int, epochs: int) -> float:
    """Images/sec over `epochs` passes, after one warm-up pass (tf.data autotuning)."""
    passes = lambda epoch: (
        dataset.train_batches(0, epoch, 0, batch_size)
        if split == "train"
        else (batch[:2] for batch in dataset.eval_batches(batch_size))
    )
    for _ in passes(0):
        pass
    images, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        for batch_images, _ in passes(epoch):
            images += len(batch_images)
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="an ImageFolder root with train/ and val/")
    parser.add_argument("--images", type=int, default=1024, help="train images to write")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from make_image_folder import make_image_folder

    from train.data import tfdata

    root = args.folder
    if root is None:
        root = tempfile.mkdtemp(prefix="bench_input_")
        make_image_folder(root, classes=8, train_per_class=args.images // 8,
                          val_per_class=args.images // 32, min_side=375)  # fmt: skip
    v1 = tfdata.Augmentation(
        image_size=224, train_crop="random_resized_crop", hflip=True, eval_resize=256
    )
    v2 = dataclasses.replace(v1, image_size=176, auto_augment="ta_wide")
    pipelines = [("train", "train", v1), ("train_v2_ta_wide", "train", v2), ("val", "val", v1)]
    cores = os.cpu_count()
    rows = []
    for threads in sorted({1, cores}):
        options = tfdata.PipelineOptions(threads=threads)
        for name, split, augmentation in pipelines:
            dataset = tfdata.FolderDataset(root, augmentation, options)
            rate = measure(dataset, split, args.batch_size, args.epochs)
            rows.append({"pipeline": name, "threads": threads, "images_per_sec": rate,
                         "images_per_sec_per_thread": rate / threads})  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{cores} cores; {root}")
    print("| pipeline | tf.data threads | images/sec | images/sec per thread |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['pipeline']} | {r['threads']} | {r['images_per_sec']:.0f} | "
              f"{r['images_per_sec_per_thread']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
