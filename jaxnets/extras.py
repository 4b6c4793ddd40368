"""The optional parts of the install: which extra of pyproject.toml provides which imported
module, and the one-line error a command gives when one is missing."""

from __future__ import annotations

import importlib.util

# By import name: what each extra's code imports directly.
MODULES = {
    "train": ("absl", "ml_collections", "optax", "tensorflow", "tensorflow_datasets", "sklearn",
              "matplotlib", "tqdm", "PIL"),
    "torch": ("torch", "torchvision"),
    "sweep": ("optuna",),
    "export": ("onnx", "onnxruntime", "tensorflow"),
}  # fmt: skip


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def missing(extra: str) -> list[str]:
    return [m for m in MODULES[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, purpose: str) -> None:
    """Raises MissingExtra, naming `purpose` and the pip command, unless `extra` is installed."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(
            f"{purpose} needs the [{extra}] extra (no module {', '.join(map(repr, absent))}): "
            f"pip install 'jaxnets[{extra}]'"
        )
