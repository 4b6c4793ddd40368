"""jaxnets: torchvision's classic image classifiers in JAX/Flax, numerically faithful."""

# Importing the model families registers their builders.
from jaxnets import alexnet, resnet, vgg  # noqa: F401
from jaxnets.registry import create_model, head_module, list_models

__version__ = "0.1.0"

__all__ = ["create_model", "head_module", "list_models"]
