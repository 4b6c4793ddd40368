"""`jaxnets eval --tta ... --weights a,b`: evaluation protocols and ensembles (the VGG paper's
multi-crop, multi-scale and dense evaluation, and its "ConvNet fusion").

Each member of an ensemble keeps its own preprocessing (resize, crop, normalization) and so
reads the dataset through its own views; its softmax outputs, averaged over its views, are then
averaged over the members. The standard protocol (one centre crop) takes the batched path of
`jaxnets eval`; the others go image by image (train/tta.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxnets_cli import classes
from jaxnets_cli.evaluate import (
    Preprocessing,
    _Classifier,
    _eval_dataset,
    _head_size,
    _predict,
    load_weights,
)
from train.metrics import top_k_accuracy


@dataclasses.dataclass
class LoadedMember:
    arch: str
    source: str
    variables: dict
    preprocessing: Preprocessing
    head: classes.HeadClasses | None  # what its outputs are, if known
    spec: tuple[str, ...] | None  # its custom head
    num_classes: int


def parse_members(name: str, weights: str) -> list[tuple[str, str]]:
    """(architecture, weights) of each member of `--weights a,b` or `--weights vgg16=a,resnet50=b`
    (a bare source is a `name` network)."""
    members = []
    for item in (w.strip() for w in weights.split(",")):
        if not item:
            raise ValueError(f"--weights {weights!r}: an empty member")
        arch, sep, source = item.partition("=")
        members.append((arch, source) if sep else (name, item))
    return members


def load_members(name: str, weights: str, head_spec: str | None = None) -> list[LoadedMember]:
    """Every member's weights, with one class count among them.

    Raises:
      ValueError: an unknown architecture, weights that do not fit, or members whose heads
        have different class counts (one line).
    """
    from jaxnets.heads import canonical
    from jaxnets.registry import create_model

    loaded = []
    for arch, source in parse_members(name, weights):
        create_model(arch)  # an unknown architecture fails in one line, naming close ones
        variables, preprocessing, head, spec = load_weights(arch, source, head_spec)
        spec = canonical(spec)
        size = _head_size(arch, variables, spec)
        loaded.append(LoadedMember(arch, source, variables, preprocessing, head, spec, size))
    counts = {m.num_classes for m in loaded}
    if len(counts) > 1:
        listed = ", ".join(f"{m.source} {m.num_classes}" for m in loaded)
        raise ValueError(f"ensemble members have different class counts ({listed})")
    return loaded


def override_preprocessing(members: list[LoadedMember], resize: int | None, crop: int | None):
    """--resize/--crop in place of every member's own."""
    for member in members:
        if resize is not None:
            member.preprocessing = dataclasses.replace(member.preprocessing, resize=resize)
        if crop is not None:
            member.preprocessing = dataclasses.replace(member.preprocessing, crop=crop)
    return members


def evaluate_protocols(
    name: str, weights: str, data: str, *, tta: str = "", scales: str = "", batch_size: int = 64,
    limit: int = 0, data_dir: str = "", by_position: bool = False, head_spec: str | None = None,
    resize: int | None = None, crop: int | None = None,
) -> dict:  # fmt: skip
    """Top-1/top-5 of each member and of their average under protocol `tta`, with views per
    image and images/sec (the whole ensemble's)."""
    from train.data.protocol import parse_protocol

    members = override_preprocessing(load_members(name, weights, head_spec), resize, crop)
    protocols = [
        parse_protocol(tta, scales, m.preprocessing.resize, m.preprocessing.crop) for m in members
    ]
    probabilities, labels, seconds, mapping, skipped = [], None, 0.0, None, {}
    for member, protocol in zip(members, protocols, strict=True):
        dataset = _eval_dataset(data, data_dir, member.preprocessing, antialias=True)
        member_mapping = classes.map_classes(dataset.class_names, member.head, member.num_classes,
                                             by_position=by_position, data=data)  # fmt: skip
        mapping = mapping or member_mapping
        if not np.array_equal(member_mapping.labels, mapping.labels):
            raise ValueError(f"ensemble members map {data}'s classes to different outputs")
        scores, member_labels, images_per_sec = _member_scores(
            member, protocol, dataset, batch_size, limit
        )
        seconds += len(member_labels) / images_per_sec
        if labels is not None and not np.array_equal(labels, member_labels):
            raise ValueError(f"ensemble members read different images of {data}")
        probabilities.append(scores)
        labels = member_labels
        skipped.update(dataset.skipped)
    labels = mapping.labels[labels]
    rows = [
        {"model": m.arch, "weights": m.source, "scales": p.scales, "crop": p.crop,
         "views_per_image": p.views_per_image, **top_k_accuracy(s, labels)}
        for m, p, s in zip(members, protocols, probabilities, strict=True)
    ]  # fmt: skip
    return {
        "data": data, "images": len(labels), "protocol": protocols[0].name if tta else "standard",
        "tta": tta, "views_per_image": sum(p.views_per_image for p in protocols),
        "classes": {"mapping": mapping.how, "summary": mapping.summary}, "members": rows,
        **top_k_accuracy(np.mean(probabilities, axis=0), labels),
        "images_per_sec": len(labels) / seconds, "skipped_files": dict(sorted(skipped.items())),
    }  # fmt: skip


def _member_scores(member: LoadedMember, protocol, dataset, batch_size: int, limit: int):
    """(images, classes) softmax outputs of one member under `protocol`, the labels, and
    images/sec (compilation excluded)."""
    import jax

    from train.tta import Member, ViewScorer, score_dataset, view_function

    if protocol.standard:  # the batched evaluation: one centre crop per image
        classifier = _Classifier(member.arch, member.variables, batch_size,
                                 member.preprocessing.crop, member.spec)  # fmt: skip
        predictions = _predict(classifier, None, dataset, batch_size, limit)
        probabilities = np.asarray(jax.nn.softmax(predictions.logits))
        return probabilities, predictions.labels, predictions.images_per_sec
    scorer = ViewScorer(Member(member.arch, member.variables, member.spec), protocol,
                        member.num_classes, batch_size)  # fmt: skip
    scores = score_dataset([scorer], dataset.eval_examples(view_function(protocol)), dataset,
                           limit)  # fmt: skip
    return scores.probabilities, scores.labels, scores.images_per_sec


def format_protocol_report(r: dict) -> str:
    lines = [
        f"{r['data']}: {r['images']} images, protocol {r['protocol']}, "
        f"{_views(r['views_per_image'])} per image",
        f"classes: {r['classes']['summary']}",
    ]
    if r["skipped_files"]:
        lines.append(f"skipped {len(r['skipped_files'])} unreadable files, not scored")
    for m in r["members"]:
        lines.append(f"{m['model']} ({m['weights']}): top1 {m['top1']:.4f}  top5 {m['top5']:.4f}"
                     f"  ({_views(m['views_per_image'])})")  # fmt: skip
    what = "ensemble" if len(r["members"]) > 1 else "jaxnets"
    lines.append(f"{what:<12} top1 {r['top1']:.4f}  top5 {r['top5']:.4f}  "
                 f"{r['images_per_sec']:.1f} img/s")  # fmt: skip
    return "\n".join(lines)


def _views(count: int) -> str:
    return f"{count} view{'s' if count != 1 else ''}"
