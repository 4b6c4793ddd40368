"""`jaxnets COMMAND`: the argument parsers and the one place errors become one line.

Every failure a user can cause (a missing or corrupt file, weights of another architecture, an
existing output) ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys

from jaxnets import extras

USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    RuntimeError,
    OSError,
    extras.MissingExtra,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxnets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_models(commands)
    _add_features(commands)
    _add_convert(commands)
    _add_eval(commands)
    _add_predict(commands)
    _add_parity(commands)
    _add_bench(commands)
    _add_export(commands)

    args = parser.parse_args(argv)
    from jaxnets.xla_flags import use_fast_cpu_flags

    use_fast_cpu_flags()  # the entry point's choice, made before JAX starts
    # orbax's absl warnings ("Given directory is read only", ...) say nothing to a user.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        return args.run(args)
    except USER_ERRORS as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"jaxnets {args.command}: error: {message}", file=sys.stderr)
        return 2


def _add_models(commands) -> None:
    models = commands.add_parser("models", help="list architectures and their pretrained weights")
    models.add_argument(
        "--details", action="store_true",
        help="the model table: parameters, GMACs of one forward pass, and per weight set "
        "acc@1, acc@5, file size and resize/crop",
    )  # fmt: skip
    models.add_argument("--json", action="store_true", help="print JSON rows (with the details)")
    models.set_defaults(run=_models)


def _add_features(commands) -> None:
    features = commands.add_parser(
        "features",
        help="an architecture's feature stages, or any of its nodes, by torchvision's names",
        description="jaxnets features NAME [--out-indices I,J | --return-nodes A,B | --nodes] "
        "[--size H,W]: what features_only or create_feature_extractor returns, with shapes",
    )
    features.add_argument("name", help="architecture, e.g. resnet50")
    features.add_argument("--out-indices", default="", help="feature stages, e.g. 2,3,4")
    features.add_argument(
        "--return-nodes", default="", metavar="NODES",
        help="nodes or modules, e.g. layer2,layer3.1.add,flatten: what each is and its shape",
    )  # fmt: skip
    features.add_argument("--nodes", action="store_true", help="every graph node and its shape")
    features.add_argument("--size", default="", help="input H,W (default: the model's own)")
    features.add_argument("--head", metavar="SPEC", help="with a custom head (see convert)")
    features.add_argument("--json", action="store_true", help="print JSON")
    features.set_defaults(run=_features)


def _features(args) -> int:
    from jaxnets_cli.features import describe, format_rows

    _known_model(args.name)
    rows = describe(
        args.name, nodes=args.nodes, return_nodes=args.return_nodes,
        out_indices=args.out_indices, size=args.size, head=args.head,
    )  # fmt: skip
    print(json.dumps(rows) if args.json else format_rows(rows))
    return 0


def _add_convert(commands) -> None:
    convert = commands.add_parser(
        "convert",
        help="torchvision weights -> jaxnets export directory, or back with --from-jax",
        description="jaxnets convert NAME --weights FILE|TAG --out DIR, or "
        "jaxnets convert NAME --from-jax DIR --out FILE.pth|FILE.safetensors "
        "[--format torchvision-checkpoint]",
    )
    convert.add_argument("name", help="architecture, e.g. resnet50")
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights",
        help="a .pth/.pt/.safetensors file, or a torchvision tag (IMAGENET1K_V1, IMAGENET1K_V2, "
        "DEFAULT) looked up in the torch hub cache and downloaded if absent",
    )
    source.add_argument(
        "--from-jax", metavar="DIR", help="a jaxnets export directory or a training workdir"
    )
    convert.add_argument("--out", required=True, help="output directory (or .pth/.safetensors)")
    convert.add_argument(
        "--format", choices=("state-dict", "torchvision-checkpoint"), default="state-dict",
        help="with --from-jax: a state_dict (default), or a training workdir as the checkpoint "
        "torchvision's reference trainer resumes ({model, optimizer, lr_scheduler, epoch, "
        "model_ema, args}; a .pth)",
    )  # fmt: skip
    convert.add_argument("--num-classes", type=int, help="classes of the new model's head")
    convert.add_argument(
        "--reinit-head", action="store_true", help="drop a head of another size and start anew"
    )
    convert.add_argument(
        "--head", metavar="SPEC",
        help="the weights' custom head, e.g. dropout:0.5,linear:256,relu,dropout:0.3,linear:N "
        "(an nn.Sequential in place of fc / classifier.6)",
    )  # fmt: skip
    convert.add_argument(
        "--features-only", action="store_true",
        help="drop the weights' head, whatever its shape: a backbone for features_only=True",
    )  # fmt: skip
    convert.set_defaults(run=_convert)


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export",
        help="weights -> ONNX, TF SavedModel, TFLite or StableHLO, checked in that runtime",
        description="jaxnets export NAME --weights SRC --format onnx|savedmodel|tflite|stablehlo "
        "--out PATH",
    )  # fmt: skip
    export.add_argument("name", help="architecture, e.g. resnet50")
    export.add_argument(
        "--weights", required=True,
        help="anything jaxnets eval takes: a torchvision .pth/.safetensors file or tag, a "
        "jaxnets export or a training workdir",
    )  # fmt: skip
    export.add_argument("--format", required=True, help="onnx, savedmodel, tflite or stablehlo")
    export.add_argument(
        "--out", required=True,
        help="the artifact: FILE.onnx, FILE.tflite, FILE.stablehlo or a SavedModel directory",
    )  # fmt: skip
    export.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"),
        help="the network's input (default: the weights' crop size)",
    )  # fmt: skip
    export.add_argument("--batch", type=int, help="a fixed batch size (default: dynamic)")
    export.add_argument(
        "--layout", default="nhwc", choices=["nhwc", "nchw"],
        help="nchw takes torch's layout: the ONNX file is a drop-in for torch.onnx.export's",
    )  # fmt: skip
    export.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"],
        help="bfloat16: savedmodel and stablehlo",
    )  # fmt: skip
    export.add_argument(
        "--include-preprocessing", action="store_true",
        help="take uint8 NHWC images of --image-size; the weights' resize, center crop and "
        "normalization run inside the artifact",
    )  # fmt: skip
    export.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"),
        help="with --include-preprocessing: the images' size (default: the weights' resize)",
    )  # fmt: skip
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (13 to 21)")
    export.add_argument("--quantize", choices=["int8"], help="post-training static int8")
    export.add_argument(
        "--calibration", metavar="DATA",
        help="for --quantize: digits, folder:PATH or tfds:NAME, with the weights' preprocessing "
        "(the training split where there is one; the report scores the evaluation split)",
    )  # fmt: skip
    export.add_argument("--calibration-images", type=int, default=512)
    export.add_argument(
        "--head", metavar="SPEC", help="the custom head of a torchvision file (see convert)"
    )
    export.set_defaults(run=_export)


def _add_eval(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="top-1/top-5 of weights on a dataset, optionally against torchvision",
        description="jaxnets eval NAME --weights FILE|DIR|TAG --data folder:PATH|tfds:NAME",
    )
    evaluate.add_argument("name", help="architecture, e.g. resnet50")
    evaluate.add_argument(
        "--weights", required=True,
        help="a torchvision .pth/.safetensors file or tag, a jaxnets export or a training "
        "workdir; several, comma-separated (NAME=SRC for another architecture), are an "
        "ensemble whose softmax outputs are averaged",
    )  # fmt: skip
    evaluate.add_argument(
        "--data", required=True,
        help="folder:PATH (PATH/val or PATH with class folders), tfds:NAME (validation split) "
        "or digits (scikit-learn's, its test split)",
    )  # fmt: skip
    _add_protocol_options(evaluate)
    evaluate.add_argument("--data-dir", default="", help="TFDS data_dir")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--resize", type=int, help="override the weights' resize (0: none)")
    evaluate.add_argument("--crop", type=int, help="override the weights' center crop")
    evaluate.add_argument("--limit", type=int, default=0, help="evaluate the first N images")
    evaluate.add_argument(
        "--no-antialias", action="store_true",
        help="resize without antialiasing (TF's plain bilinear), to measure what it changes",
    )  # fmt: skip
    evaluate.add_argument(
        "--compare-antialias", action="store_true",
        help="also evaluate with the other antialias setting: how many predictions change",
    )  # fmt: skip
    evaluate.add_argument(
        "--compare-torch", action="store_true",
        help="also run torchvision on the same batches: agreement and logit differences",
    )  # fmt: skip
    evaluate.add_argument(
        "--by-position", action="store_true",
        help="take dataset label i as head output i, without matching class names (the counts "
        "must agree): for a dataset whose class names are not the weights' own spelling",
    )  # fmt: skip
    evaluate.add_argument(
        "--head", metavar="SPEC", help="the custom head of a torchvision file (see convert)"
    )
    evaluate.add_argument(
        "--artifact", metavar="PATH",
        help="an artifact of these weights from jaxnets export (.onnx, .tflite, .stablehlo, a "
        "SavedModel), run in its own runtime on the same batches: top-1 and agreement",
    )  # fmt: skip
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(run=_eval)


def _add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="the top classes of images, with the weights' own preprocessing",
        description="jaxnets predict NAME --weights SRC IMAGE_OR_DIR ... [--topk 5] [--json]",
    )
    predict.add_argument("name", help="architecture, e.g. resnet50")
    predict.add_argument(
        "--weights", required=True,
        help="as jaxnets eval takes them: a torchvision file or tag, an export, a training "
        "workdir; several, comma-separated (NAME=SRC for another architecture): an ensemble",
    )  # fmt: skip
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="files or folders")
    predict.add_argument("--topk", type=int, default=5, help="classes shown per image")
    predict.add_argument("--batch-size", type=int, default=16, help="network batch (views)")
    predict.add_argument("--head", metavar="SPEC", help="the custom head of a torchvision file")
    predict.add_argument("--resize", type=int, help="override the weights' resize (0: none)")
    predict.add_argument("--crop", type=int, help="override the weights' center crop")
    predict.add_argument("--json", action="store_true", help="one JSON object per image")
    _add_protocol_options(predict)
    predict.set_defaults(run=_predict)


def _add_protocol_options(command) -> None:
    command.add_argument(
        "--tta", default="", metavar="PROTOCOLS",
        help="evaluation protocols, comma-separated: flip, five-crop, ten-crop, multi-scale, "
        "dense (train/data/protocol.py); softmax outputs averaged over the views",
    )  # fmt: skip
    command.add_argument(
        "--scales", default="", help="multi-scale: the shorter sides, e.g. 256,384,512"
    )


def _add_parity(commands) -> None:
    parity = commands.add_parser("parity", help="cross-framework parity runs")
    parity_kinds = parity.add_subparsers(dest="kind", required=True)
    parity_train = parity_kinds.add_parser(
        "train",
        help="the same SGD run in PyTorch and JAX: per-step losses",
        description="jaxnets parity train NAME --steps N --data SPEC",
    )
    parity_train.add_argument("name", help="architecture, e.g. resnet18")
    parity_train.add_argument("--steps", type=int, default=50)
    parity_train.add_argument("--data", default="digits", help="digits, folder:PATH, tfds:NAME")
    parity_train.add_argument("--data-dir", default="", help="TFDS data_dir")
    parity_train.add_argument("--batch-size", type=int, default=64)
    parity_train.add_argument("--image-size", type=int, default=32)
    parity_train.add_argument("--lr", type=float, default=0.01)
    parity_train.add_argument("--momentum", type=float, default=0.9)
    parity_train.add_argument("--nesterov", action="store_true")
    parity_train.add_argument("--weight-decay", type=float, default=5e-4)
    parity_train.add_argument(
        "--schedule", default="cosine", choices=["cosine", "constant", "step", "multistep"]
    )
    parity_train.add_argument("--seed", type=int, default=0)
    parity_train.add_argument(
        "--eval", action="store_true", help="compare test accuracies after training"
    )
    parity_train.add_argument(
        "--float64", action="store_true",
        help="run both frameworks in float64 (separates semantics from float32 rounding)",
    )  # fmt: skip
    parity_train.add_argument(
        "--noise-floor", action="store_true",
        help="also train torch from weights 1 ulp away (its own drift under float rounding) and "
        "measure the first float32 gradient of both frameworks against float64",
    )  # fmt: skip
    parity_train.add_argument("--json", action="store_true", help="print one JSON object")
    parity_train.set_defaults(run=_parity_train)
    parity_features = parity_kinds.add_parser(
        "features",
        help="every graph node against torchvision's create_feature_extractor",
        description="jaxnets parity features --models resnet50,vgg16|all [--mode eval|train|both]",
    )
    parity_features.add_argument("--models", default="all", help="comma-separated, or all")
    parity_features.add_argument(
        "--mode", default="eval", choices=["eval", "train", "both"],
        help="eval: float32 at 97x131; train: batch statistics in float64 at 48x64",
    )  # fmt: skip
    parity_features.add_argument("--json", action="store_true", help="print JSON rows")
    parity_features.set_defaults(run=_parity_features)


def _add_bench(commands) -> None:
    bench = commands.add_parser(
        "bench",
        help="train/inference throughput, compile time and memory: jaxnets vs torchvision",
        description="jaxnets bench --models resnet50,vgg16 --batch-size B --image-size S",
    )
    bench.add_argument(
        "--models", help="comma-separated architectures (default: resnet50; with --matrix, the "
        "matrix's models)",
    )  # fmt: skip
    bench.add_argument(
        "--task", default="train", choices=["train", "infer"],
        help="infer: CPU inference in every deployment runtime (jaxnets_cli/bench_infer.py)",
    )  # fmt: skip
    bench.add_argument("--batch-size", type=int, help="default: 16 (train), 32 (infer)")
    bench.add_argument("--image-size", type=int, help="default: 128 (train), 224 (infer)")
    bench.add_argument("--runs", type=int, default=50, help="infer: batch-1 calls timed")
    bench.add_argument(
        "--runtimes", help="infer: a comma-separated subset of jaxnets_cli.bench_infer.RUNTIMES"
    )
    bench.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "bf16"])
    bench.add_argument(
        "--steps", type=int, help="timed steps (default 10); infer: timed batches (default 3)"
    )
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    bench.add_argument(
        "--rounds", type=int, default=1,
        help="frameworks take turns this many times; rows report the median round",
    )  # fmt: skip
    bench.add_argument(
        "--frameworks",
        help="jaxnets and any of torch (eager), torch.compile (default: all three; with "
        "--matrix, jaxnets,torch)",
    )  # fmt: skip
    bench.add_argument(
        "--remat", action="store_true",
        help="ResNets: recompute residual blocks in the backward pass (other models: ignored)",
    )  # fmt: skip
    bench.add_argument(
        "--freeze", default="", metavar="LAYERS",
        help="also time each framework fine-tuning with these layers frozen (e.g. backbone)",
    )  # fmt: skip
    bench.add_argument(
        "--matrix", action="store_true",
        help="every (image size, batch) cell of jaxnets_cli.bench.MATRIX for resnet18, resnet50 "
        "and vgg16 (or the --models given among them), one line per cell with ratios",
    )  # fmt: skip
    bench.add_argument("--json", action="store_true", help="print JSON rows")
    bench.set_defaults(run=_bench)


def _models(args) -> int:
    import jaxnets
    from jaxnets.pretrained import list_weights
    from jaxnets_cli.models import format_table, model_rows

    if args.details or args.json:
        rows = model_rows()
        print(json.dumps(rows) if args.json else format_table(rows))
        return 0
    for name in jaxnets.list_models():
        print(f"{name:<18} {' '.join(w.tag for w in list_weights(name))}".rstrip())
    return 0


def _convert(args) -> int:
    import jax

    from jaxnets.convert import from_torchvision, save_state_dict, to_torchvision
    from jaxnets.export import load_variables, save_export
    from jaxnets.heads import canonical, head_classes
    from jaxnets.pretrained import list_weights, load_pretrained
    from jaxnets.registry import head_module

    _known_model(args.name)
    spec = canonical(args.head)  # a head spec that does not parse fails before any file is read
    if args.format == "torchvision-checkpoint":
        if not args.from_jax or not args.out.endswith(".pth"):
            raise ValueError("--format torchvision-checkpoint: from a training workdir "
                             "(--from-jax DIR) to a .pth file")  # fmt: skip
        extras.require("torch", "--format torchvision-checkpoint")
        from jaxnets_cli import torchvision_checkpoint

        print(torchvision_checkpoint.write(args.name, args.from_jax, args.out))
        return 0
    if args.from_jax:
        if args.head or args.features_only:
            raise ValueError("--head/--features-only describe torch weights; an export or a "
                             "workdir records its own head")  # fmt: skip
        variables, meta = load_variables(args.from_jax)
        if meta.get("arch") != args.name:
            raise ValueError(f"{args.from_jax} holds {meta.get('arch')}, not {args.name}")
        if meta.get("features_only"):
            raise ValueError(f"{args.from_jax} holds a backbone without its head; torchvision "
                             "models need one")  # fmt: skip
        state = to_torchvision(args.name, variables, head=meta.get("head"))
        path = save_state_dict(state, args.out)
        print(f"wrote {path} ({args.name}, {meta.get('num_classes')} classes)")
        return 0

    meta = {"arch": args.name, "source": args.weights}
    tags = [w.tag for w in list_weights(args.name)] + ["DEFAULT"]
    if args.weights in tags:
        if args.num_classes or args.reinit_head or args.head:
            raise ValueError(
                "--num-classes/--reinit-head/--head apply to a weights file, not a tag"
            )
        variables, weights = load_pretrained(args.name, args.weights)
        meta["weights"] = dataclasses.asdict(weights)
    else:
        variables = from_torchvision(
            args.name, args.weights, num_classes=args.num_classes, reinit_head=args.reinit_head,
            features_only=args.features_only, **({"head": args.head} if args.head else {}),
        )  # fmt: skip
    if args.features_only:
        meta.update(features_only=True, num_classes=None)
        what = "backbone, no head"
    else:
        classes = head_classes(variables["params"], head_module(args.name), spec)
        meta.update(head=args.head, num_classes=classes)
        what = f"{meta['num_classes']} classes"
    count = sum(math.prod(v.shape) for v in jax.tree.leaves(variables["params"]))
    out = save_export(args.out, variables, meta)
    print(f"wrote {out} ({args.name}, {what}, {count:,} parameters)")
    return 0


def _export(args) -> int:
    from jaxnets.deploy import FORMATS

    _known_model(args.name)
    if args.format not in FORMATS:
        raise ValueError(f"--format {args.format!r}: expected one of {', '.join(FORMATS)}")
    if args.format != "stablehlo":
        extras.require("export", f"--format {args.format}")
    _require_train()  # the weights' sources and calibration data are the training program's
    if (args.batch is not None and args.batch < 1) or args.calibration_images < 1:
        raise ValueError("--batch and --calibration-images must be >= 1")
    from jaxnets_cli.export import run

    return run(args)


def _eval(args) -> int:
    _known_model(args.name)
    _require_train()
    if args.compare_torch:
        extras.require("torch", "--compare-torch")
    from jaxnets_cli.evaluate import evaluate, format_report
    from jaxnets_cli.protocols import evaluate_protocols, format_protocol_report

    if args.tta or args.scales or "," in args.weights:
        if args.compare_torch or args.compare_antialias or args.no_antialias or args.artifact:
            raise ValueError(
                "--compare-torch, --compare-antialias, --no-antialias and --artifact evaluate one "
                "network's standard protocol: not with --tta or an ensemble"
            )
        result = evaluate_protocols(
            args.name, args.weights, args.data, tta=args.tta, scales=args.scales,
            batch_size=args.batch_size, limit=args.limit, data_dir=args.data_dir,
            by_position=args.by_position, head_spec=args.head, resize=args.resize,
            crop=args.crop,
        )  # fmt: skip
        print(json.dumps(result) if args.json else format_protocol_report(result))
        return 0
    result = evaluate(
        args.name, args.weights, args.data, batch_size=args.batch_size, resize=args.resize,
        crop=args.crop, compare_torch=args.compare_torch, limit=args.limit,
        data_dir=args.data_dir, antialias=not args.no_antialias,
        compare_antialias=args.compare_antialias, by_position=args.by_position,
        head_spec=args.head, artifact=args.artifact,
    )  # fmt: skip
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _predict(args) -> int:
    _known_model(args.name)
    _require_train()
    from jaxnets_cli.predict import run

    if args.topk < 1 or args.batch_size < 1:
        raise ValueError("--topk and --batch-size must be >= 1")
    return run(args)


def _parity_features(args) -> int:
    _require_train()  # torchvision before tensorflow, wherever that gets imported
    extras.require("torch", "this command")
    import torchvision

    from jaxnets.registry import list_models
    from jaxnets_cli.feature_parity import compare, format_table

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    originals = [n for n in list_models() if n in torchvision.models.list_models()]
    names = originals if names == ["all"] else names
    for name in names:
        _known_model(name)
        if name not in originals:
            raise ValueError(f"{name} has no torchvision original to compare with")
    modes = ["eval", "train"] if args.mode == "both" else [args.mode]
    rows = []
    for name in names:
        for mode in modes:
            rows.append(compare(name, mode))
            if not args.json:
                print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr)  # progress
    print(json.dumps(rows) if args.json else format_table(rows))
    return 0


def _parity_train(args) -> int:
    _known_model(args.name)
    _require_train()
    extras.require("torch", "this command")
    from jaxnets_cli.parity import ParitySettings, format_report, run

    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: expected >= 1")
    settings = ParitySettings(
        steps=args.steps, data=args.data, batch_size=args.batch_size,
        image_size=args.image_size, learning_rate=args.lr, momentum=args.momentum,
        nesterov=args.nesterov, weight_decay=args.weight_decay, schedule=args.schedule,
        seed=args.seed, evaluate=args.eval, data_dir=args.data_dir, float64=args.float64,
        noise_floor=args.noise_floor,
    )  # fmt: skip
    result = run(args.name, settings)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _bench(args) -> int:
    _require_train()
    if args.task == "infer":
        return _bench_infer(args)
    args.batch_size = 16 if args.batch_size is None else args.batch_size
    args.image_size = 128 if args.image_size is None else args.image_size
    args.steps = 10 if args.steps is None else args.steps
    from jaxnets_cli.bench import (
        MATRIX,
        BenchSettings,
        format_matrix,
        format_table,
        run,
        run_matrix,
    )

    models = tuple(m.strip() for m in (args.models or "resnet50").split(",") if m.strip())
    if args.matrix and args.models is None:
        models = tuple(MATRIX)
    elif args.matrix and not set(models) <= set(MATRIX):
        unknown = ", ".join(sorted(set(models) - set(MATRIX)))
        raise ValueError(f"--matrix: no cells for {unknown} (the matrix has {', '.join(MATRIX)})")
    for name in models:
        _known_model(name)
        if args.freeze:
            import jaxnets

            jaxnets.frozen_modules(name, args.freeze)  # an unknown layer fails now, in one line
    default_frameworks = "jaxnets,torch" if args.matrix else "jaxnets,torch,torch.compile"
    frameworks = tuple(f.strip() for f in (args.frameworks or default_frameworks).split(","))
    unknown = set(frameworks) - {"jaxnets", "torch", "torch.compile"}
    if unknown or "jaxnets" not in frameworks:
        raise ValueError(f"--frameworks {args.frameworks!r}: jaxnets plus torch, torch.compile")
    if min(args.batch_size, args.image_size, args.steps, args.rounds) < 1 or args.warmup < 0:
        raise ValueError("--batch-size, --image-size, --steps and --rounds must be >= 1")
    settings = BenchSettings(
        models=models, batch_size=args.batch_size, image_size=args.image_size,
        dtype="bfloat16" if args.dtype == "bf16" else args.dtype, steps=args.steps,
        warmup=args.warmup, frameworks=frameworks, remat=args.remat, rounds=args.rounds,
        freeze=args.freeze,
    )  # fmt: skip
    rows = run_matrix(settings) if args.matrix else run(settings)
    table = format_matrix(rows) if args.matrix else format_table(rows)
    print(json.dumps(rows) if args.json else table)
    return 0


def _bench_infer(args) -> int:
    extras.require("torch", "--task infer")
    extras.require("export", "--task infer")
    from jaxnets_cli import bench_infer

    if args.matrix or args.freeze or args.remat or args.frameworks:
        raise ValueError("--matrix, --freeze, --remat and --frameworks are --task train's")
    models = tuple(m.strip() for m in (args.models or "resnet18,resnet50,vgg16").split(","))
    for name in models:
        _known_model(name)
    runtimes = tuple(r.strip() for r in (args.runtimes or ",".join(bench_infer.RUNTIMES))
                     .split(","))  # fmt: skip
    unknown = sorted(set(runtimes) - set(bench_infer.RUNTIMES))
    if unknown:
        raise ValueError(f"--runtimes: unknown {', '.join(unknown)} (expected some of "
                         f"{', '.join(bench_infer.RUNTIMES)})")  # fmt: skip
    settings = bench_infer.InferSettings(
        models=models, image_size=224 if args.image_size is None else args.image_size,
        batch_size=32 if args.batch_size is None else args.batch_size,
        runs=args.runs, batches=3 if args.steps is None else args.steps, runtimes=runtimes,
    )  # fmt: skip
    if min(settings.image_size, settings.batch_size, settings.runs, settings.batches) < 1:
        raise ValueError("--image-size, --batch-size, --runs and --steps must be >= 1")
    rows = bench_infer.run(settings)
    print(json.dumps(rows) if args.json else bench_infer.format_table(rows))
    return 0


def _require_train() -> None:
    """The [train] extra, with TensorFlow started now: after torchvision where it is installed
    (importing torchvision after tensorflow segfaults, PORTING.md), and with its start-up
    lines off the terminal."""
    import contextlib

    extras.require("train", "this command")
    with contextlib.suppress(ImportError):
        import torchvision  # noqa: F401
    from train.entry import import_tensorflow

    import_tensorflow()


def _known_model(name: str) -> None:
    """Fails before any work for an unknown architecture, naming the closest ones."""
    from jaxnets.registry import create_model

    create_model(name)


if __name__ == "__main__":
    sys.exit(main())
