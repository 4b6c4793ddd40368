"""`jaxnets eval`: accuracy of converted or trained weights on a dataset, optionally side by side
with torchvision on exactly the same preprocessed batches.

Preprocessing comes from the weights: torchvision's metadata for its own files and tags
(Resize 256 or 232, bilinear with antialias, CenterCrop 224, ImageNet mean/std), the training
config for a training workdir, or --resize/--crop. Dataset labels are matched with the head's
outputs by class name where the weights carry names (jaxnets_cli/classes.py).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from jaxnets_cli import classes
from train.metrics import top_k_accuracy


@dataclasses.dataclass
class Preprocessing:
    resize: int  # shorter side before the centre crop; 0: resize straight to crop x crop
    crop: int
    source: str  # where these numbers come from, for the report


def load_weights(name: str, weights: str, head_spec: str | None = None):
    """(variables, preprocessing, head classes or None, head spec or None) from a tag, a
    torchvision file (whose custom head is `head_spec`), an export or a workdir (which record
    their own)."""
    import json

    from jaxnets.convert import from_torchvision
    from jaxnets.export import is_export, load_variables
    from jaxnets.pretrained import list_weights, load_pretrained
    from train.workdir import CONFIG_FILE

    known = list_weights(name)
    if weights in [w.tag for w in known] + ["DEFAULT"]:
        variables, meta = load_pretrained(name, weights)
        head = classes.imagenet_head() if meta.classes is not None else None
        preprocessing = Preprocessing(meta.resize, meta.crop, f"torchvision {meta.tag}")
        return variables, preprocessing, head, None
    path = Path(weights)
    if path.is_dir():
        variables, meta = load_variables(path)
        if meta.get("arch") != name:
            raise ValueError(f"{weights} holds {meta.get('arch')}, not {name}")
        if meta.get("features_only"):
            raise ValueError(f"{weights} holds a backbone without its head: nothing to score")
        spec = meta.get("head")
        size = _head_size(name, variables, spec)
        head = classes.directory_head(meta, size, export=is_export(path))
        if "weights" in meta:  # an export of a torchvision tag
            w = meta["weights"]
            preprocessing = Preprocessing(w["resize"], w["crop"], f"torchvision {w['tag']}")
            return variables, preprocessing, head, spec
        config_file = path / CONFIG_FILE
        if config_file.is_file():  # a training workdir: evaluate as training did
            config = json.loads(config_file.read_text())
            crop = config.get("eval_image_size") or config["image_size"]  # FixRes: its own
            preprocessing = Preprocessing(config.get("eval_resize", 0), crop, f"{config_file}")
            return variables, preprocessing, head, spec
        return variables, Preprocessing(256, 224, "default (V1 recipe)"), head, spec
    variables = from_torchvision(name, path, **({"head": head_spec} if head_spec else {}))
    untrained = any(w.filename == path.name and w.classes is None for w in known)
    size = _head_size(name, variables, head_spec)
    head = classes.imagenet_head() if size == 1000 and not untrained else None
    return variables, preprocessing_for_file(name, path.name), head, head_spec


def _head_size(name: str, variables, spec: str | None) -> int:
    import jaxnets
    from jaxnets.heads import canonical, head_classes

    return head_classes(variables["params"], jaxnets.head_module(name), canonical(spec))


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
    antialias: bool = True, compare_antialias: bool = False, by_position: bool = False,
    head_spec: str | None = None, artifact: str | None = None,
) -> dict:  # fmt: skip
    """Top-1/top-5 and images/sec of jaxnets (and torchvision) on the evaluation split of `data`
    ('folder:PATH' or 'tfds:NAME'), its labels matched with the head by `map_classes`.
    compare_antialias: also evaluate with the other antialias setting and report how many top-1
    predictions change. by_position: take dataset labels as output indices, names unchecked.
    head_spec: the custom head of a torchvision file (exports and workdirs record theirs).
    artifact: an exported artifact of these weights (jaxnets export), also run in its own
    runtime on the same batches: its top-1 and its agreement with the JAX model."""
    try:
        import torchvision  # noqa: F401  (before tensorflow imports: PORTING.md)
    except ImportError:
        if compare_torch:
            raise

    variables, preprocessing, head, spec = load_weights(name, weights, head_spec)
    exported = _artifact_runner(artifact, name) if artifact else None  # fails before any work
    if resize is not None:
        preprocessing = dataclasses.replace(preprocessing, resize=resize, source="--resize")
    if crop is not None:
        preprocessing = dataclasses.replace(preprocessing, crop=crop)
    dataset = _eval_dataset(data, data_dir, preprocessing, antialias)
    head_size = _head_size(name, variables, spec)
    # Before compiling anything: a dataset the head cannot score fails at once.
    mapping = classes.map_classes(
        dataset.class_names, head, head_size, by_position=by_position, data=data
    )
    classifier = _Classifier(name, variables, batch_size, preprocessing.crop, spec)
    torch_model = _torch_model(name, variables, head_size, spec) if compare_torch else None

    def predictions(dataset, torch_model=None, exported=None) -> _Predictions:
        p = _predict(classifier, torch_model, dataset, batch_size, limit, exported)
        return dataclasses.replace(p, labels=mapping.labels[p.labels])  # both frameworks' labels

    ours = predictions(dataset, torch_model, exported)
    result = {
        "model": name, "weights": str(weights), "data": data, "images": len(ours.labels),
        "resize": preprocessing.resize, "crop": preprocessing.crop, "antialias": antialias,
        "preprocessing_from": preprocessing.source,
        "classes": {"mapping": mapping.how, "dataset": len(mapping.labels), "head": head_size,
                    "names_from": head.source if head else None, "summary": mapping.summary},
        **top_k_accuracy(ours.logits, ours.labels), "images_per_sec": ours.images_per_sec,
        "skipped_files": dict(sorted(dataset.skipped.items())),  # unreadable, not scored
    }  # fmt: skip
    if ours.torch_logits is not None:
        result.update(_torch_comparison(ours, result["top1"]))
    if ours.artifact_logits is not None:
        result["artifact"] = {
            "path": artifact, **top_k_accuracy(ours.artifact_logits, ours.labels),
            "top1_agreement": float(np.mean(
                ours.logits.argmax(-1) == ours.artifact_logits.argmax(-1))),
            "max_abs_logit_diff": float(np.abs(ours.logits - ours.artifact_logits).max()),
        }  # fmt: skip
    if compare_antialias:
        other = predictions(_eval_dataset(data, data_dir, preprocessing, not antialias)).logits
        result["other_antialias"] = {
            "antialias": not antialias, **top_k_accuracy(other, ours.labels),
            "top1_agreement": float(np.mean(ours.logits.argmax(-1) == other.argmax(-1))),
        }  # fmt: skip
    return result


class _Classifier:
    """The model's eval-mode forward pass, compiled up front for one batch shape, so that
    images/sec times every batch and never the compilation."""

    def __init__(self, name: str, variables, batch_size: int, crop: int, spec: str | None):
        import jax
        import jax.numpy as jnp

        import jaxnets

        self.variables = variables
        options = {"head": spec} if spec else {}
        model = jaxnets.create_model(name, num_classes=_head_size(name, variables, spec), **options)
        example = jnp.zeros((batch_size, crop, crop, 3), jnp.float32)
        with jax.default_matmul_precision("highest"):
            self._forward = (
                jax.jit(lambda variables, images: model.apply(variables, images, train=False))
                .lower(variables, example)
                .compile()
            )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(self.variables, batch))


@dataclasses.dataclass
class _Predictions:
    logits: np.ndarray
    torch_logits: np.ndarray | None
    labels: np.ndarray
    images_per_sec: float
    artifact_logits: np.ndarray | None = None


def _artifact_runner(path: str, name: str):
    """normalized NHWC batch -> logits of an exported artifact, in its runtime."""
    from jaxnets.deploy import runtime

    description = runtime.read_metadata(Path(path))
    if description.get("arch") != name:
        raise ValueError(f"--artifact {path} holds {description.get('arch')}, not {name}")
    if description.get("preprocessing"):
        raise ValueError(f"--artifact {path} takes uint8 images (--include-preprocessing); "
                         "evaluate one without")  # fmt: skip
    run = runtime.load_runner(Path(path))
    nchw = description["input"]["layout"] == "nchw"
    return lambda batch: run(np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if nchw else batch))


def _predict(classifier, torch_model, dataset, batch_size: int, limit: int,
             artifact=None) -> _Predictions:  # fmt: skip
    """Logits of the first `limit` (0: all) evaluation images, from jaxnets and, given a torch
    model or an artifact, from torchvision or the artifact's runtime on the same normalized
    batches."""
    import jax

    from train.data import normalize_on_host

    ours, theirs, exported, labels = [], [], [], []
    seconds, seen = 0.0, 0
    with jax.default_matmul_precision("highest"):
        for images, batch_labels, mask in dataset.eval_batches(batch_size):
            if limit and seen >= limit:
                break
            batch = normalize_on_host(images, dataset)  # fed to both frameworks
            start = time.perf_counter()
            logits = classifier(batch)
            seconds += time.perf_counter() - start
            ours.append(logits[mask])
            labels.append(batch_labels[mask])
            if torch_model is not None:
                theirs.append(torch_logits(torch_model, batch)[mask])
            if artifact is not None:
                exported.append(artifact(batch)[mask])
            seen += int(mask.sum())
    n = min(limit or seen, seen)
    return _Predictions(
        logits=np.concatenate(ours)[:n],
        torch_logits=np.concatenate(theirs)[:n] if torch_model is not None else None,
        labels=np.concatenate(labels)[:n],
        images_per_sec=seen / seconds if seconds else float("nan"),
        artifact_logits=np.concatenate(exported)[:n] if artifact is not None else None,
    )


def _torch_comparison(p: _Predictions, top1: float) -> dict:
    torch_accuracy = top_k_accuracy(p.torch_logits, p.labels)
    return {
        "torch": torch_accuracy,
        "top1_agreement": float(np.mean(p.logits.argmax(-1) == p.torch_logits.argmax(-1))),
        "max_abs_logit_diff": float(np.abs(p.logits - p.torch_logits).max()),
        "top1_diff_points": 100 * (top1 - torch_accuracy["top1"]),
    }


def _eval_dataset(data: str, data_dir: str, preprocessing: Preprocessing, antialias: bool):
    from train.data import load_eval_dataset, tfdata

    augmentation = tfdata.Augmentation(image_size=preprocessing.crop,
                                       eval_resize=preprocessing.resize,
                                       eval_antialias=antialias)  # fmt: skip
    return load_eval_dataset(data, augmentation, data_dir=data_dir)


def _torch_model(name: str, variables, num_classes: int, spec: str | None):
    """torchvision's model holding the same weights (converted back, bit-exact), with the
    custom head's nn.Sequential in place of its head."""
    import torch
    import torchvision

    import jaxnets
    from jaxnets.convert import to_torchvision
    from jaxnets.names import torch_module

    model = torchvision.models.get_model(name, num_classes=num_classes)
    if spec:
        head = torch_module(jaxnets.head_module(name))  # "fc", "classifier.6"
        in_features = model.get_submodule(head).in_features
        model.set_submodule(head, torch_head(spec, in_features, num_classes))
    state = to_torchvision(name, variables, head=spec)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    return model.eval()


def torch_head(spec: str, in_features: int, num_classes: int):
    """The nn.Sequential a head spec stands for (jaxnets.heads)."""
    from torch import nn

    from jaxnets.heads import parse_head

    layers = []
    for kind, value in parse_head(spec):
        if kind == "linear":
            out_features = num_classes if value is None else value
            layers.append(nn.Linear(in_features, out_features))
            in_features = out_features
        else:
            layers.append(nn.ReLU() if kind == "relu" else nn.Dropout(value))
    return nn.Sequential(*layers)


def torch_images(batch: np.ndarray):
    """An NHWC numpy batch as the NCHW tensor torchvision takes."""
    import torch

    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def torch_logits(model, batch: np.ndarray) -> np.ndarray:
    """torchvision's logits for an NHWC float batch."""
    import torch

    with torch.no_grad():
        return model(torch_images(batch)).numpy()


def format_report(r: dict) -> str:
    lines = [
        f"{r['model']} ({r['weights']}) on {r['data']}: {r['images']} images, "
        f"Resize({r['resize']}{'' if r['antialias'] else ', no antialias'}) + "
        f"CenterCrop({r['crop']}) from {r['preprocessing_from']}",
        f"classes: {r['classes']['summary']}",
        *_skipped_line(r["skipped_files"]),
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
    if "artifact" in r:
        a = r["artifact"]
        lines += [
            f"artifact     top1 {a['top1']:.4f}  top5 {a['top5']:.4f}  ({a['path']})",
            f"top-1 agreement with jaxnets {a['top1_agreement']:.4f}, max |logit diff| "
            f"{a['max_abs_logit_diff']:.2e}",
        ]
    return "\n".join(lines)


def _skipped_line(skipped: dict[str, str]) -> list[str]:
    if not skipped:
        return []
    path, why = next(iter(skipped.items()))
    more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    return [f"skipped {len(skipped)} unreadable files, not scored: {path} ({why}){more}"]
