"""`jaxnets eval`: accuracy of converted or trained weights on a dataset, optionally side by side
with torchvision on exactly the same preprocessed batches.

Preprocessing comes from the weights: torchvision's metadata for its own files and tags
(Resize 256 or 232, bilinear with antialias, CenterCrop 224, ImageNet mean/std), the training
config for a training workdir, or --resize/--crop.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Preprocessing:
    resize: int  # shorter side before the centre crop; 0: resize straight to crop x crop
    crop: int
    source: str  # where these numbers come from, for the report


def load_weights(name: str, weights: str):
    """(variables, preprocessing) from a tag, a torchvision file, an export or a workdir."""
    import json

    from jaxnets.convert import from_torchvision
    from jaxnets.export import load_variables
    from jaxnets.pretrained import list_weights, load_pretrained

    known = list_weights(name)
    if weights in [w.tag for w in known] + ["DEFAULT"]:
        variables, meta = load_pretrained(name, weights)
        return variables, Preprocessing(meta.resize, meta.crop, f"torchvision {meta.tag}")
    path = Path(weights)
    if path.is_dir():
        variables, meta = load_variables(path)
        if meta.get("arch") != name:
            raise ValueError(f"{weights} holds {meta.get('arch')}, not {name}")
        if "weights" in meta:  # an export of a torchvision tag
            w = meta["weights"]
            return variables, Preprocessing(w["resize"], w["crop"], f"torchvision {w['tag']}")
        config_file = path / "config.json"
        if config_file.is_file():  # a training workdir: evaluate as training did
            config = json.loads(config_file.read_text())
            return variables, Preprocessing(
                config.get("eval_resize", 0), config["image_size"], f"{config_file}"
            )
        return variables, Preprocessing(256, 224, "default (V1 recipe)")
    return from_torchvision(name, path), preprocessing_for_file(name, path.name)


def preprocessing_for_file(name: str, filename: str) -> Preprocessing:
    """torchvision's own files carry their recipe in the name (resnet50-11ad3fa6.pth is V2:
    Resize(232)); other files get the V1 recipe, Resize(256) + CenterCrop(224)."""
    from jaxnets.pretrained import list_weights

    for w in list_weights(name):
        if w.filename == filename:
            return Preprocessing(w.resize, w.crop, f"torchvision {w.tag}")
    return Preprocessing(256, 224, "default (V1 recipe)")


def evaluate(
    name: str, weights: str, data: str, *, batch_size: int = 64, resize: int | None = None,
    crop: int | None = None, compare_torch: bool = False, limit: int = 0, data_dir: str = "",
    antialias: bool = True, compare_antialias: bool = False,
) -> dict:  # fmt: skip
    """Top-1/top-5 and images/sec of jaxnets (and torchvision) on the evaluation split of `data`
    ('folder:PATH' or 'tfds:NAME'). compare_antialias: also evaluate with the other antialias
    setting and report how many top-1 predictions change."""
    try:
        import torchvision  # noqa: F401  (before tensorflow imports: PORTING.md)
    except ImportError:
        if compare_torch:
            raise
    import jax
    import jax.numpy as jnp

    import jaxnets
    from jaxnets.registry import head_module
    from train.data import normalize_on_host

    variables, preprocessing = load_weights(name, weights)
    if resize is not None:
        preprocessing = dataclasses.replace(preprocessing, resize=resize, source="--resize")
    if crop is not None:
        preprocessing = dataclasses.replace(preprocessing, crop=crop)
    num_classes = int(variables["params"][head_module(name)]["kernel"].shape[-1])
    model = jaxnets.create_model(name, num_classes=num_classes)
    # Compiled up front, so that images/sec times every batch and never the compilation.
    example = jnp.zeros((batch_size, preprocessing.crop, preprocessing.crop, 3), jnp.float32)
    with jax.default_matmul_precision("highest"):
        logits_of = (
            jax.jit(lambda variables, images: model.apply(variables, images, train=False))
            .lower(variables, example)
            .compile()
        )
    torch_model = _torch_model(name, variables, num_classes) if compare_torch else None

    def run_pass(antialias: bool, with_torch: bool):
        dataset = _eval_dataset(data, data_dir, preprocessing, antialias)
        if dataset.num_classes > num_classes:
            raise ValueError(
                f"{data} has {dataset.num_classes} classes, the {name} head only {num_classes}"
            )
        ours, theirs, labels = [], [], []
        seconds, timed_images, seen = 0.0, 0, 0
        with jax.default_matmul_precision("highest"):
            for images, batch_labels, mask in dataset.eval_batches(batch_size):
                if limit and seen >= limit:
                    break
                batch = normalize_on_host(images, dataset)  # fed to both frameworks
                start = time.perf_counter()
                logits = np.asarray(logits_of(variables, jnp.asarray(batch)))
                seconds += time.perf_counter() - start
                timed_images += int(mask.sum())
                ours.append(logits[mask])
                labels.append(batch_labels[mask])
                if with_torch:
                    theirs.append(torch_logits(torch_model, batch)[mask])
                seen += int(mask.sum())
        n = min(limit or seen, seen)
        theirs = np.concatenate(theirs)[:n] if with_torch else None
        rate = timed_images / seconds if seconds else float("nan")
        return np.concatenate(ours)[:n], theirs, np.concatenate(labels)[:n], rate

    ours, theirs, labels, rate = run_pass(antialias, torch_model is not None)
    result = {
        "model": name, "weights": str(weights), "data": data, "images": len(labels),
        "resize": preprocessing.resize, "crop": preprocessing.crop, "antialias": antialias,
        "preprocessing_from": preprocessing.source, **_accuracy(ours, labels),
        "images_per_sec": rate,
    }  # fmt: skip
    if theirs is not None:
        torch_accuracy = _accuracy(theirs, labels)
        result["torch"] = torch_accuracy
        result["top1_agreement"] = float(np.mean(ours.argmax(-1) == theirs.argmax(-1)))
        result["max_abs_logit_diff"] = float(np.abs(ours - theirs).max())
        result["top1_diff_points"] = 100 * (result["top1"] - torch_accuracy["top1"])
    if compare_antialias:
        other, _, _, _ = run_pass(not antialias, False)
        result["other_antialias"] = {
            "antialias": not antialias, **_accuracy(other, labels),
            "top1_agreement": float(np.mean(ours.argmax(-1) == other.argmax(-1))),
        }  # fmt: skip
    return result


def _eval_dataset(data: str, data_dir: str, preprocessing: Preprocessing, antialias: bool):
    from train import tfdata
    from train.data import load_eval_dataset

    augmentation = tfdata.Augmentation(image_size=preprocessing.crop,
                                       eval_resize=preprocessing.resize,
                                       eval_antialias=antialias)  # fmt: skip
    return load_eval_dataset(data, augmentation, data_dir=data_dir)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    return {
        "top1": float(np.mean(top5[:, 0] == labels)),
        "top5": float(np.mean(np.any(top5 == labels[:, None], axis=-1))),
    }


def _torch_model(name: str, variables, num_classes: int):
    """torchvision's model holding the same weights (converted back, bit-exact)."""
    import torch
    import torchvision

    from jaxnets.convert import to_torchvision

    model = torchvision.models.get_model(name, num_classes=num_classes)
    state = {k: torch.from_numpy(np.array(v)) for k, v in to_torchvision(name, variables).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def torch_logits(model, batch: np.ndarray) -> np.ndarray:
    """torchvision's logits for an NHWC float batch."""
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()).numpy()


def format_report(r: dict) -> str:
    lines = [
        f"{r['model']} ({r['weights']}) on {r['data']}: {r['images']} images, "
        f"Resize({r['resize']}{'' if r['antialias'] else ', no antialias'}) + "
        f"CenterCrop({r['crop']}) from {r['preprocessing_from']}",
        f"jaxnets      top1 {r['top1']:.4f}  top5 {r['top5']:.4f}  {r['images_per_sec']:.1f} img/s",
    ]
    if "torch" in r:
        lines += [
            f"torchvision  top1 {r['torch']['top1']:.4f}  top5 {r['torch']['top5']:.4f}",
            f"top-1 agreement {r['top1_agreement']:.4f}, max |logit diff| "
            f"{r['max_abs_logit_diff']:.2e}, top-1 difference {r['top1_diff_points']:+.2f} points",
        ]
    if "other_antialias" in r:
        o = r["other_antialias"]
        lines.append(
            f"antialias={o['antialias']}: top1 {o['top1']:.4f}  top5 {o['top5']:.4f}, same top-1 "
            f"prediction for {o['top1_agreement']:.4f} of the images"
        )
    return "\n".join(lines)
