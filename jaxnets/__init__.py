"""jaxnets: torchvision's classic image classifiers in JAX/Flax, numerically faithful.

    import jaxnets

    jaxnets.list_models()                      # ['alexnet', 'resnet101', ...]
    model = jaxnets.create_model("resnet50", num_classes=10)
    variables = jaxnets.from_torchvision("resnet50", "resnet50-0676ba61.pth",
                                         num_classes=10, reinit_head=True)
    logits = model.apply(variables, images_nhwc, train=False)
    state_dict = jaxnets.to_torchvision("resnet50", variables)
    jaxnets.export_model("resnet50", variables, "onnx", "resnet50.onnx", layout="nchw")

    # Backbones: torchvision's node names, or timm-style feature stages.
    extractor = jaxnets.create_feature_extractor("resnet50", ["layer3", "layer4", "flatten"])
    features = extractor.apply(variables, images_nhwc)
    c2, c3, c4, c5 = jaxnets.create_model("resnet50", features_only=True,
                                          out_indices=(1, 2, 3, 4)).apply(variables, images_nhwc)

Importing jaxnets has no side effects on the process (environment, devices); the measured
XLA:CPU flags are one explicit call, `jaxnets.use_fast_cpu_flags()`.
"""

# Importing the model families registers their builders.
from jaxnets import alexnet, alexnet_paper, lenet, resnet, vgg  # noqa: F401
from jaxnets.convert import from_torchvision, to_torchvision
from jaxnets.deploy import export_model
from jaxnets.features import (
    FeatureInfo,
    create_feature_extractor,
    feature_info,
    frozen_modules,
    node_names,
)
from jaxnets.heads import parse_head
from jaxnets.pretrained import list_weights, load_pretrained
from jaxnets.registry import ModelInfo, create_model, head_module, list_models, model_info
from jaxnets.xla_flags import use_fast_cpu_flags

__version__ = "0.1.0"

__all__ = [
    "FeatureInfo",
    "ModelInfo",
    "create_feature_extractor",
    "create_model",
    "export_model",
    "feature_info",
    "from_torchvision",
    "frozen_modules",
    "head_module",
    "list_models",
    "list_weights",
    "load_pretrained",
    "model_info",
    "node_names",
    "parse_head",
    "to_torchvision",
    "use_fast_cpu_flags",
]
