"""Test-time evaluation protocols: what `--tta` and `config.eval_tta` name, parsed without
TensorFlow (the views themselves are made in train/data/views.py).

A protocol is a comma-separated list:
  flip         each view and its horizontal mirror
  five-crop    torchvision's FiveCrop: the four corners and the centre, in that order
  ten-crop     torchvision's TenCrop: FiveCrop of the image, then of its mirror (with flip
               or five-crop: the same ten views, TenCrop holds those already)
  multi-scale  the shorter side resized to each of --scales (the VGG paper's Q), else to the
               weights' own resize only
  dense        the whole resized image, for the fully convolutional network (jaxnets.dense)
Crops and dense together are the VGG paper's "multi-crop & dense": both sets of views, their
softmax outputs averaged together. The empty protocol is the standard evaluation: Resize +
CenterCrop, one view.
"""

from __future__ import annotations

import dataclasses

PROTOCOLS = ("flip", "five-crop", "ten-crop", "multi-scale", "dense")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Attributes:
    crop: the side of every crop view.
    scales: shorter sides to resize to, one set of views each; 0 resizes straight to
      crop x crop (the digits' and CIFAR's evaluation).
    crops: 0 (dense alone), 1 (the centre crop), 5 (FiveCrop) or 10 (TenCrop) per scale.
    flip: mirror every view as well.
    dense: the whole resized image as a view (and its mirror with flip), per scale.
    """

    crop: int
    scales: tuple[int, ...]
    crops: int = 1
    flip: bool = False
    dense: bool = False

    @property
    def name(self) -> str:
        parts = [{0: "", 1: "center-crop", 5: "five-crop", 10: "ten-crop"}[self.crops]]
        parts += ["flip"] if self.flip and self.crops != 10 else []
        parts += ["dense"] if self.dense else []
        scales = ",".join(str(s or self.crop) for s in self.scales)
        return f"{'+'.join(p for p in parts if p)} at {scales}"

    @property
    def crop_views(self) -> int:
        mirrors = 2 if self.flip and self.crops != 10 else 1
        return self.crops * mirrors * len(self.scales)

    @property
    def dense_views(self) -> int:
        return (2 if self.flip else 1) * len(self.scales) if self.dense else 0

    @property
    def views_per_image(self) -> int:
        return self.crop_views + self.dense_views

    @property
    def standard(self) -> bool:
        """One centre crop at one scale: what evaluation does without a protocol."""
        return self.views_per_image == 1 and not self.dense


def parse_protocol(tta: str, scales: str | tuple[int, ...], resize: int, crop: int) -> Protocol:
    """The protocol `tta` names, at `scales` (multi-scale) or the weights' `resize`.

    Raises:
      ValueError: an unknown protocol, scales without multi-scale or
        multi-scale without scales, a scale that is not a positive integer or, for crops, is
        below the crop size (one line each).
    """
    names = [n.strip() for n in tta.split(",") if n.strip()] if tta else []
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise ValueError(f"--tta {tta!r}: unknown protocol {unknown[0]!r}; expected a "
                         f"comma-separated list of {', '.join(PROTOCOLS)}")  # fmt: skip
    parsed = _parse_scales(scales)
    if "multi-scale" in names and not parsed:
        raise ValueError(f"--tta {tta!r}: multi-scale needs --scales, e.g. 256,384,512")
    if parsed and "multi-scale" not in names:
        raise ValueError(f"--scales {scales!r}: only with --tta multi-scale")
    dense = "dense" in names
    crops = 10 if "ten-crop" in names else 5 if "five-crop" in names else 0 if dense else 1
    small = [s for s in parsed if s < crop]
    if crops and small:
        raise ValueError(f"--scales {scales!r}: {small[0]} is below the crop size {crop} (the "
                         "crops need a shorter side at least that long)")  # fmt: skip
    return Protocol(crop=crop, scales=parsed or (resize,), crops=crops, flip="flip" in names,
                    dense=dense)  # fmt: skip


def _parse_scales(scales: str | tuple[int, ...]) -> tuple[int, ...]:
    if not isinstance(scales, str):
        return tuple(scales)
    items = [s.strip() for s in scales.split(",") if s.strip()]
    if not all(s.isdigit() and int(s) > 0 for s in items):
        raise ValueError(f"--scales {scales!r}: expected positive integers, e.g. 256,384,512")
    return tuple(int(s) for s in items)
