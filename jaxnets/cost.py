"""What one forward pass of an architecture costs: parameters and multiply-accumulates.

Two counts of the work, both taken from the traced inference function at one image:
- `gmacs`: the multiply-accumulates of its convolutions and matrix products, every kernel tap
  counted, zero padding included. This is the convention of torchvision's published "GFLOPS"
  (`_ops` in its weight enums, which are multiply-adds) and equals them to all three published
  decimals for the 19 architectures.
- `xla_gflops`: XLA's cost analysis of the lowered function: floating-point operations (a
  multiply-accumulate is two) of every op, elementwise ones included, but without the taps that
  read only zero padding (a 3x3 convolution on a 13x13 map does 10% fewer products than
  13 * 13 * 9 per channel pair). What the machine actually computes, roughly.
The convolutions are traced in XLA's own form (layers.forms("xla")): the matrix-product forms
chosen for small maps on CPU skip padded taps, which would change the first count.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from jaxnets.layers import forms
from jaxnets.registry import create_model, model_info


@dataclasses.dataclass(frozen=True)
class ModelCost:
    params: int
    image_size: int
    gmacs: float
    xla_gflops: float


@functools.cache
def model_cost(name: str, image_size: int | None = None) -> ModelCost:
    """Parameters and the work of one image_size x image_size forward pass in eval mode
    (default: the architecture's own input size, 224 but for LeNet-5), from shapes alone."""
    size = image_size or model_info(name).input_size
    model = create_model(name)
    image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    with forms("xla"):
        variables = jax.eval_shape(model.init, jax.random.key(0), image)
        forward = lambda variables, x: model.apply(variables, x, train=False)
        jaxpr = jax.make_jaxpr(forward)(variables, image)
        analysis = jax.jit(forward).lower(variables, image).cost_analysis()
    return ModelCost(
        params=sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"])),
        image_size=size,
        gmacs=_macs(jaxpr.jaxpr) / 1e9,
        xla_gflops=float(analysis["flops"]) / 1e9,
    )


def _macs(jaxpr) -> int:
    """Multiply-accumulates of the convolutions and dot products in a jaxpr and the jaxprs
    nested in it (jit, custom_vjp, remat)."""
    total = 0
    for eqn in jaxpr.eqns:
        out = eqn.outvars[0].aval.shape if eqn.outvars else ()
        if eqn.primitive.name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) axes
            reads = math.prod(kernel[axis] for axis in rhs_spec[1:])  # kh * kw * in / groups
            total += math.prod(out) * reads
        elif eqn.primitive.name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(out) * math.prod(lhs[i] for i in contracting)
        for value in eqn.params.values():
            nested = getattr(value, "jaxpr", value)  # a ClosedJaxpr holds a Jaxpr
            if hasattr(nested, "eqns"):
                total += _macs(nested)
    return total
