"""The `jaxnets` command line.

Every failure a user can cause (a missing or corrupt file, weights of another architecture, an
existing output) ends in one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxnets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list architectures and their pretrained weights")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(run=_models)

    convert = commands.add_parser(
        "convert",
        help="torchvision weights -> jaxnets export directory, or back with --from-jax",
        description="jaxnets convert NAME --weights FILE|TAG --out DIR, or "
        "jaxnets convert NAME --from-jax DIR --out FILE.pth|FILE.safetensors",
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
    convert.add_argument("--num-classes", type=int, help="classes of the new model's head")
    convert.add_argument(
        "--reinit-head", action="store_true", help="drop a head of another size and start anew"
    )
    convert.set_defaults(run=_convert)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as e:
        print(f"jaxnets {args.command}: error: {e}", file=sys.stderr)
        return 2


def _models(args) -> int:
    import jaxnets
    from jaxnets.pretrained import list_weights

    rows = [
        {"name": name, "weights": [w.tag for w in list_weights(name)]}
        for name in jaxnets.list_models()
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['name']:<18} {' '.join(row['weights'])}")
    return 0


def _convert(args) -> int:
    import jax

    from jaxnets.convert import from_torchvision, save_state_dict, to_torchvision
    from jaxnets.export import load_variables, save_export
    from jaxnets.pretrained import list_weights, load_pretrained
    from jaxnets.registry import create_model

    create_model(args.name)  # an unknown name fails here, with the closest names
    if args.from_jax:
        variables, meta = load_variables(args.from_jax)
        if meta.get("arch") != args.name:
            raise ValueError(f"{args.from_jax} holds {meta.get('arch')}, not {args.name}")
        path = save_state_dict(to_torchvision(args.name, variables), args.out)
        print(f"wrote {path} ({args.name}, {meta.get('num_classes')} classes)")
        return 0

    meta = {"arch": args.name, "source": args.weights}
    tags = [w.tag for w in list_weights(args.name)] + ["DEFAULT"]
    if args.weights in tags:
        if args.num_classes or args.reinit_head:
            raise ValueError("--num-classes/--reinit-head apply to a weights file, not a tag")
        variables, weights = load_pretrained(args.name, args.weights)
        meta["weights"] = dataclasses.asdict(weights)
    else:
        variables = from_torchvision(
            args.name, args.weights, num_classes=args.num_classes, reinit_head=args.reinit_head
        )
    meta["num_classes"] = _head_classes(args.name, variables["params"])
    count = sum(math.prod(v.shape) for v in jax.tree.leaves(variables["params"]))
    out = save_export(args.out, variables, meta)
    print(f"wrote {out} ({args.name}, {meta['num_classes']} classes, {count:,} parameters)")
    return 0


def _head_classes(name: str, params: dict) -> int:
    from jaxnets.registry import head_module

    return int(params[head_module(name)]["kernel"].shape[-1])


if __name__ == "__main__":
    sys.exit(main())
