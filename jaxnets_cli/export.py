"""`jaxnets export`: weights as a deployment artifact, checked in its own runtime before the
command reports success.

The weights are anything `jaxnets eval` takes; their preprocessing (resize, crop) and class
names travel into the artifact's description. After writing, the artifact is run in its runtime
on random inputs at batch 1 and 3 (its fixed batch otherwise) and compared with the JAX model;
an int8 artifact is also scored on the held-out split of its calibration data against the
float32 JAX model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxnets_cli.evaluate import load_weights

HELD_OUT_IMAGES = 1000  # the int8 report's images, from the calibration data's evaluation split


def run(args) -> int:
    import jaxnets
    from jaxnets import deploy

    variables, preprocessing, head, spec = load_weights(args.name, args.weights, args.head)
    prep = _preprocessing_inside(args, preprocessing)
    input_size = tuple(args.input_size) if args.input_size else (preprocessing.crop,) * 2
    jaxnets.deploy.function.check_input_size(args.name, input_size)
    calibration = held_out = None
    if args.quantize:
        if not args.calibration:
            raise ValueError("--quantize int8 needs --calibration DATA (digits, folder:PATH, "
                             "tfds:NAME)")  # fmt: skip
        calibration, held_out = _calibration_data(args, preprocessing, variables, spec)
        calibration = _as_input(calibration, args.layout)
    metadata = {
        "weights": args.weights, "classes": [n[-1] for n in head.names] if head else None,
        "weights_preprocessing": {"resize": preprocessing.resize, "crop": preprocessing.crop},
    }  # fmt: skip
    signature = deploy.Signature(input_size, args.batch, args.layout, args.dtype, prep)
    out = jaxnets.export_model(
        args.name, variables, args.format, args.out, input_size=input_size, batch=args.batch,
        layout=args.layout, dtype=args.dtype, preprocessing=prep, head=spec, opset=args.opset,
        quantize=args.quantize, calibration=calibration, metadata=metadata,
    )  # fmt: skip
    report = check_artifact(args.name, variables, out, signature, spec, held_out)
    print(format_report(out, args.format, report))
    return 0


def _preprocessing_inside(args, preprocessing):
    """The weights' evaluation transform for --include-preprocessing, else None."""
    from jaxnets import deploy

    if not args.include_preprocessing:
        if args.image_size:
            raise ValueError("--image-size is the size of the images --include-preprocessing "
                             "takes")  # fmt: skip
        return None
    if args.quantize:
        raise ValueError("--quantize with --include-preprocessing: quantize the network alone "
                         "(its input is normalized images)")  # fmt: skip
    image_size = tuple(args.image_size or (preprocessing.resize or preprocessing.crop,) * 2)
    return deploy.Preprocessing(image_size, preprocessing.resize, preprocessing.crop)


def check_artifact(name, variables, out: Path, signature, spec, held_out=None) -> dict:
    """The artifact against the JAX model it was made from: on random inputs, or for an int8
    artifact on held-out images (top-1 of both, agreement)."""
    from jaxnets.deploy import function, runtime

    run = runtime.load_runner(out)
    reference = _jax_reference(name, variables, signature, spec)
    report = {"bytes": _size(out), "operators": _onnx_operators(out)}
    if held_out is not None:
        images, labels = held_out
        images = _as_input(images, signature.layout)
        ours, theirs = _batched(reference, images), _batched(run, images)
        report["int8"] = {
            "images": len(labels),
            "top1_float32": float(np.mean(ours.argmax(-1) == labels)),
            "top1_int8": float(np.mean(theirs.argmax(-1) == labels)),
            "top1_agreement": float(np.mean(ours.argmax(-1) == theirs.argmax(-1))),
        }
        return report
    errors = {}
    channels = function.input_channels(name, variables)
    for batch in [signature.batch] if signature.batch else [1, 3]:
        images = _random_input(signature, batch, channels)
        expected = reference(images)
        errors[str(batch)] = float(np.abs(run(images) - expected).max() / np.abs(expected).max())
    report["relative_error"] = errors
    return report


def _onnx_operators(path: Path) -> dict[str, int] | None:
    if path.suffix != ".onnx":
        return None
    import collections

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def _random_input(signature, batch: int, channels: int) -> np.ndarray:
    """Images for the check: uint8 photographs' range with preprocessing, else normalized
    pixels' (standard normal)."""
    rng = np.random.default_rng(batch)
    spec = signature.input_spec(channels)
    shape = (batch, *spec.shape[1:])
    if signature.preprocessing:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def _jax_reference(name, variables, signature, spec):
    """The JAX function the artifact was made from, as JAX runs it (the CPU formulations),
    at the highest matmul precision."""
    import jax

    from jaxnets.deploy import function

    forward = jax.jit(function.inference_function(name, variables, signature, spec))

    def reference(images: np.ndarray) -> np.ndarray:
        with jax.default_matmul_precision("highest"):
            return np.asarray(forward(images)).astype(np.float32)

    return reference


def _batched(run, images: np.ndarray, size: int = 32) -> np.ndarray:
    return np.concatenate([run(images[i : i + size]) for i in range(0, len(images), size)])


def _as_input(images: np.ndarray, layout: str) -> np.ndarray:
    images = np.asarray(images, np.float32)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2) if layout == "nchw" else images)


def _calibration_data(args, preprocessing, variables, spec):
    """(calibration images, (held-out images, labels)): NHWC normalized float32, never the same
    images. Calibration reads the training split where the data has one at hand (digits, a
    folder's train/) and the report the evaluation split; with one split, they divide it."""
    import jaxnets
    from jaxnets.heads import head_classes
    from train.data import load_digits, load_eval_dataset, normalize_on_host, tfdata

    classes = head_classes(variables["params"], jaxnets.model_info(args.name).head, spec)
    crop = args.input_size[0] if args.input_size else preprocessing.crop
    augmentation = tfdata.Augmentation(image_size=crop, eval_resize=preprocessing.resize)
    data = args.calibration
    evaluation = load_eval_dataset(data, augmentation)
    if evaluation.num_classes != classes:
        raise ValueError(f"--calibration {data} has {evaluation.num_classes} classes, the "
                         f"weights {classes}")  # fmt: skip
    count = args.calibration_images
    train = Path(data.partition(":")[2]) / "train"
    if data == "digits":
        calibration = load_digits(crop).train_images[:count]
    elif data.startswith("folder:") and train.is_dir():
        train_split = load_eval_dataset(f"folder:{train}", augmentation)
        calibration = _images(train_split, count, normalize_on_host)[0]
    else:
        # One split only (a TFDS evaluation split, a folder without train/): the first
        # `count` images calibrate, the ones after them are the held-out report's.
        images, labels = _images(evaluation, count + HELD_OUT_IMAGES, normalize_on_host)
        if len(images) <= count:
            raise ValueError(f"--calibration {data}: its {len(images)} images leave none to "
                             f"score int8 on after --calibration-images {count}")  # fmt: skip
        return images[:count], (images[count:], labels[count:])
    held_out = _images(evaluation, HELD_OUT_IMAGES, normalize_on_host)
    return calibration, held_out


def _images(dataset, count: int, normalize) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for batch, batch_labels, mask in dataset.eval_batches(64):
        images.append(normalize(batch, dataset)[mask])
        labels.append(batch_labels[mask])
        if sum(len(x) for x in labels) >= count:
            break
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def format_report(out: Path, format: str, report: dict) -> str:
    lines = [f"wrote {out} ({format}, {report['bytes'] / 1e6:.1f} MB)"]
    if "int8" in report:
        q = report["int8"]
        lines.append(
            f"int8 on {q['images']} held-out images: top-1 {100 * q['top1_int8']:.2f}% "
            f"(float32 JAX {100 * q['top1_float32']:.2f}%), top-1 agreement "
            f"{100 * q['top1_agreement']:.2f}%"
        )
    else:
        errors = ", ".join(f"batch {b}: {e:.1e}" for b, e in report["relative_error"].items())
        lines.append(f"checked against JAX: max |logit difference| / logit scale {errors}")
    if report["operators"]:
        counts = ", ".join(f"{op} {n}" for op, n in report["operators"].items())
        lines.append(f"ONNX operators: {counts}")
    return "\n".join(lines)
