"""`jaxnets models --details`: the model table, one row per architecture with the cost of one
forward pass (jaxnets.cost) and each of its torchvision weight sets."""

from __future__ import annotations

import math

from jaxnets.cost import model_cost
from jaxnets.pretrained import list_weights
from jaxnets.registry import list_models


def model_rows() -> list[dict]:
    """{name, params, image_size, gmacs, xla_gflops, weights: [{tag, acc1, acc5, file_size_mb,
    resize, crop}]} for every architecture; accuracies are None where torchvision publishes
    none (an untrained head)."""
    rows = []
    for name in list_models():
        cost = model_cost(name)
        weights = [
            {
                "tag": w.tag,
                "acc1": None if math.isnan(w.acc1) else w.acc1,
                "acc5": None if math.isnan(w.acc5) else w.acc5,
                "file_size_mb": w.file_size_mb,
                "resize": w.resize,
                "crop": w.crop,
            }
            for w in list_weights(name)
        ]
        rows.append({
            "name": name, "params": cost.params, "image_size": cost.image_size,
            "gmacs": round(cost.gmacs, 4), "xla_gflops": round(cost.xla_gflops, 4),
            "weights": weights,
        })  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'model':<18} {'params':>12} {'input':>5} {'GMACs':>8} {'XLA GFLOPs':>10}  "
        f"{'weights':<20} {'acc@1':>6} {'acc@5':>6} {'MB':>8} {'resize/crop':>11}"
    ]
    for row in rows:
        head = (f"{row['name']:<18} {row['params']:>12,} {row['image_size']:>5} "
                f"{row['gmacs']:>8.3f} {row['xla_gflops']:>10.3f}")  # fmt: skip
        if not row["weights"]:
            lines.append(head)
        for i, w in enumerate(row["weights"]):
            acc = " ".join("     -" if a is None else f"{a:6.2f}" for a in (w["acc1"], w["acc5"]))
            lines.append(
                f"{head if i == 0 else ' ' * len(head)}  {w['tag']:<20} {acc} "
                f"{w['file_size_mb']:>8.1f} {w['resize']:>7}/{w['crop']}"
            )
    return "\n".join(lines)
