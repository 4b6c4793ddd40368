"""jaxnets: torchvision's classic image classifiers in JAX/Flax, numerically faithful."""

from jaxnets.xla_flags import set_cpu_flags

set_cpu_flags()  # before JAX starts a backend: see jaxnets/xla_flags.py

# Importing the model families registers their builders.
from jaxnets import alexnet, resnet, vgg  # noqa: E402, F401
from jaxnets.registry import create_model, head_module, list_models  # noqa: E402

__version__ = "0.1.0"

__all__ = ["create_model", "head_module", "list_models"]
