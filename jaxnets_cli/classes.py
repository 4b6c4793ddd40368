"""Which head output is which dataset class, for `jaxnets eval`.

Dataset labels are matched to the head's outputs by class name where the weights say what their
outputs are (ImageNet for torchvision's 1000-class heads, the run's class names for a training
workdir): a dataset of a subset of those classes is scored against the weights' own indices,
over all of the head's outputs. Weights that carry no names are matched by position, and only
when the counts agree.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class HeadClasses:
    """What each output of a head stands for.

    Attributes:
      names: per output index, the names that identify that class (ImageNet: its WNID and
        torchvision's name, ('n01440764', 'tench')).
      source: where the names come from, for messages and the report.
    """

    names: tuple[tuple[str, ...], ...]
    source: str


def imagenet_head() -> HeadClasses:
    from jaxnets.pretrained import imagenet_classes, imagenet_wnids

    names = tuple(zip(imagenet_wnids(), imagenet_classes(), strict=True))
    return HeadClasses(names, "ImageNet: WNIDs or torchvision's names")


@dataclasses.dataclass(frozen=True)
class ClassMapping:
    """Dataset label -> head output, and how it was decided.

    Attributes:
      labels: labels[dataset_label] is the head output that class is scored against.
      how: "same names", "by name", "by position" (--by-position) or "unchecked" (no names).
      summary: one line for the report.
    """

    labels: np.ndarray
    how: str
    summary: str


def map_classes(
    dataset_names, head: HeadClasses | None, head_size: int, *, by_position: bool = False,
    data: str = "the dataset",
) -> ClassMapping:  # fmt: skip
    """Matches a dataset's class names with the weights' (`head`; None: unknown).

    Known names: classes with the weights' names in their order are scored as they are; a
    dataset whose every class is one of the weights' is scored against the weights' indices
    (a subset of ImageNet is scored over all 1000 outputs). Unknown names, or by_position: the
    counts must agree and labels are taken as output indices.

    Raises:
      ValueError: a count that differs from the head's where names cannot be matched, a class the
        weights do not have, or two classes that are one of the weights'.
    """
    n = len(dataset_names)
    if by_position or head is None:
        if n != head_size:
            why = ("; --by-position needs as many" if by_position
                   else ", and the weights carry no class names to match them by")  # fmt: skip
            raise ValueError(f"{data} has {n} classes, the weights' head {head_size}{why}")
        if by_position:
            summary = f"{n} classes matched by position (--by-position), names not checked"
            return ClassMapping(np.arange(n), "by position", summary)
        summary = (f"{n} classes matched by position; the class names could not be checked "
                   "(the weights carry none)")  # fmt: skip
        return ClassMapping(np.arange(n), "unchecked", summary)

    index: dict[str, int] = {}
    for i, names in enumerate(head.names):
        for name in names:
            index.setdefault(name, i)
    unknown = [c for c in dataset_names if c not in index]
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        hint = "; --by-position matches them by index" if n == head_size else ""
        raise ValueError(f"{data}: {len(unknown)} of its {n} classes are not among the weights' "
                         f"{head_size} classes ({head.source}): {shown}{hint}")  # fmt: skip
    labels = np.array([index[c] for c in dataset_names], np.int32)
    first: dict[int, str] = {}
    for c, i in zip(dataset_names, labels, strict=True):
        if i in first:
            raise ValueError(f"{data}: classes {first[i]!r} and {c!r} are both the weights' "
                             f"class {i} ({'/'.join(head.names[i])})")  # fmt: skip
        first[i] = c
    if n == head_size and np.array_equal(labels, np.arange(n)):
        summary = f"the {n} class names are the weights' in order ({head.source})"
        return ClassMapping(labels, "same names", summary)
    summary = (f"{n} of {head_size} classes mapped by name ({head.source}); top-1/top-5 over "
               f"all {head_size} outputs")  # fmt: skip
    return ClassMapping(labels, "by name", summary)


def directory_head(meta: dict, head_size: int, *, export: bool) -> HeadClasses | None:
    """A workdir's class names are its training run's; an export is a torchvision conversion
    (`jaxnets convert`), ImageNet's when it has 1000 outputs, unless it names its classes."""
    names = meta.get("class_names")
    if names and len(names) == head_size:
        source = "the export's class_names" if export else "the training run's class names"
        return HeadClasses(tuple((str(c),) for c in names), source)
    untrained = meta.get("weights", {}).get("num_classes", 1000) is None  # vgg16 FEATURES
    if export and head_size == 1000 and not untrained:
        return imagenet_head()
    return None
