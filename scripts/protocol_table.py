"""The evaluation protocols' table for the README: top-1, views per image and images/sec of
trained weights under each protocol of `jaxnets eval --tta`, and an ensemble against its members.

  python scripts/protocol_table.py resnet18 --weights workdir/demo --data digits \
      --scales 32,36,40 [--ensemble workdir/demo,workdir/demo_seed1]
"""

from __future__ import annotations

import argparse

PROTOCOLS = ("", "flip", "five-crop", "ten-crop", "dense", "multi-scale", "dense,flip",
             "dense,multi-scale", "ten-crop,dense,multi-scale")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--scales", required=True, help="multi-scale's shorter sides")
    parser.add_argument("--ensemble", default="", help="comma-separated weights to fuse")
    args = parser.parse_args()

    from jaxnets.xla_flags import use_fast_cpu_flags

    use_fast_cpu_flags()
    import torchvision  # noqa: F401  (before tensorflow: PORTING.md)

    from jaxnets_cli.protocols import evaluate_protocols

    print("| protocol | views/image | top-1 | images/s |\n|---|---:|---:|---:|")
    for tta in PROTOCOLS:
        scales = args.scales if "multi-scale" in tta else ""
        r = evaluate_protocols(args.name, args.weights, args.data, tta=tta, scales=scales)
        name = f"`{tta}`" + (f" `--scales {scales}`" if scales else "") if tta else "standard"
        print(f"| {name} | {r['views_per_image']} | {r['top1']:.4f} | {r['images_per_sec']:.0f} |")
    if args.ensemble:
        r = evaluate_protocols(args.name, args.ensemble, args.data)
        for m in r["members"]:
            print(f"| member {m['weights']} | 1 | {m['top1']:.4f} | |")
        print(f"| ensemble of {len(r['members'])} | {r['views_per_image']} | {r['top1']:.4f} | "
              f"{r['images_per_sec']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
