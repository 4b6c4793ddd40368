"""Every architecture exported to every format, run back in that format's runtime, compared with
the JAX model: the worst |logit difference| / logit scale per format, over batch 1 and 3 through
one dynamic-batch artifact, NHWC and NCHW (docs/export.md has the table).

    python scripts/export_sweep.py [--models resnet18,vgg16] [--formats onnx,tflite] [--json]

Weights: torchvision's random init with randomized BatchNorm statistics (the historic models:
Flax's init), at each architecture's own input size.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FORMATS = ("onnx", "stablehlo", "savedmodel", "tflite")
SUFFIX = {"onnx": ".onnx", "stablehlo": ".stablehlo", "savedmodel": "", "tflite": ".tflite"}


def variables_of(name: str):
    import jax
    import jax.numpy as jnp
    import torch
    import torchvision

    import jaxnets
    from jaxnets import layers
    from jaxnets_cli.feature_parity import randomize_batchnorm

    info = jaxnets.model_info(name)
    if name in ("alexnet_paper", "lenet5"):
        channels = 1 if name == "lenet5" else 3
        size = info.input_size
        with layers.forms("xla"):
            return jaxnets.create_model(name).init(
                jax.random.key(0), jnp.zeros((1, size, size, channels)), train=False
            )
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.get_model(name), 0)
    return jaxnets.from_torchvision(name, {k: v.numpy() for k, v in model.state_dict().items()})


def sweep_one(name: str, formats, scratch: Path) -> list[dict]:
    import jax

    import jaxnets
    from jaxnets.deploy import function, runtime

    variables = variables_of(name)
    size = jaxnets.model_info(name).input_size
    channels = function.input_channels(name, variables)
    x = np.random.default_rng(0).standard_normal((3, size, size, channels)).astype(np.float32)
    model = jaxnets.create_model(name, num_classes=variables["params"][
        jaxnets.model_info(name).head]["kernel"].shape[-1])  # fmt: skip
    with jax.default_matmul_precision("highest"):
        expected = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    rows = []
    for fmt in formats:
        for layout in ("nhwc", "nchw"):
            out = scratch / f"{name}-{layout}{SUFFIX[fmt]}"
            start = time.perf_counter()
            jaxnets.export_model(name, variables, fmt, out, layout=layout)
            seconds = time.perf_counter() - start
            run = runtime.load_runner(out)
            feed = x if layout == "nhwc" else x.transpose(0, 3, 1, 2)
            error = max(
                float(np.abs(run(np.ascontiguousarray(feed[:b])) - expected[:b]).max())
                / float(np.abs(expected[:b]).max())
                for b in (1, 3)
            )  # fmt: skip
            rows.append({"model": name, "format": fmt, "layout": layout, "relative_error": error,
                         "export_s": seconds, "transposes": _transposes(out)})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            _remove(out)
    return rows


def _transposes(path: Path) -> int | None:
    if path.suffix != ".onnx":
        return None
    import onnx

    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    return ops["Transpose"]


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
        path.with_name(path.name + ".json").unlink(missing_ok=True)


def main() -> None:
    import conftest  # noqa: F401  (torchvision before tensorflow; the test suite's CPU flags)

    import jaxnets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(jaxnets.list_models()))
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="jaxnets-export-sweep-") as scratch:
        for name in args.models.split(","):
            rows += sweep_one(name, args.formats.split(","), Path(scratch))
    if args.json:
        print(json.dumps(rows))
        return
    for fmt in args.formats.split(","):
        mine = [r for r in rows if r["format"] == fmt]
        worst = max(mine, key=lambda r: r["relative_error"])
        transposes = {r["layout"]: max(x["transposes"] for x in mine if x["layout"] == r["layout"])
                      for r in mine} if fmt == "onnx" else None  # fmt: skip
        print(f"{fmt:<11} {len(mine):>3} artifacts  worst {worst['relative_error']:.1e} "
              f"({worst['model']}, {worst['layout']})"
              + (f"  Transpose nodes at most: {transposes}" if transposes else ""))  # fmt: skip


if __name__ == "__main__":
    main()
