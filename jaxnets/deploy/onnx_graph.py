"""A JAX function as an ONNX graph: its jaxpr, lowered primitive by primitive.

Written for the primitives these models trace to (convolutions, BatchNorm's arithmetic, ReLU,
pooling, Linear layers, reshapes), not for every JAX program: anything else is a one-line error
naming the primitive. Three things make the graph what a deployment runtime wants:

- Constants are folded. The variables enter as constants of the jaxpr, so BatchNorm's
  `scale * rsqrt(var + eps)` and every other weight-only expression becomes one array here.
- Per-channel affine operations after a convolution are folded into its weights and bias (in
  float64, rounded once), so inference BatchNorm leaves no node behind: `Conv -> Relu`.
- Layouts are tracked, not transposed. Each ONNX tensor records the permutation that takes the
  JAX value to it; convolutions and pooling want NCHW, so the NHWC activations of the Flax model
  live as NCHW tensors throughout, and a transpose in the jaxpr only changes that record. An
  NCHW input therefore needs no Transpose node at all; an NHWC input needs one.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np


class UnsupportedPrimitive(ValueError):
    """The function uses a JAX primitive this lowering does not know."""


@dataclasses.dataclass(frozen=True)
class _PendingConv:
    """A convolution not yet emitted, so that per-channel affine ops can still fold into it.
    weight is OIHW and bias (O,), both float64."""

    input: str
    weight: np.ndarray
    bias: np.ndarray
    attributes: dict


@dataclasses.dataclass(frozen=True)
class _Value:
    """One jaxpr value: a constant (numpy, broadcastable to the value's shape), an ONNX tensor
    `name` holding the value transposed by `axes`, or a pending convolution (NCHW)."""

    shape: tuple
    dtype: np.dtype
    const: np.ndarray | None = None
    name: str | None = None
    axes: tuple[int, ...] = ()
    conv: _PendingConv | None = None


_NCHW = (0, 3, 1, 2)  # an NHWC value's axes when its tensor is NCHW


def _compose(axes: Sequence[int], permutation: Sequence[int]) -> tuple[int, ...]:
    """The axes of transpose(value, permutation) whose input tensor has `axes`."""
    inverse = np.argsort(permutation)
    return tuple(int(inverse[a]) for a in axes)


class Lowering:
    """Builds an ONNX graph (nodes and initializers) from a closed jaxpr."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._names = itertools.count()

    # --- ONNX tensors -----------------------------------------------------------------------

    def _fresh(self, hint: str) -> str:
        return f"{hint}_{next(self._names)}"

    def node(self, op: str, inputs: Sequence[str], **attributes) -> str:
        from onnx import helper

        output = self._fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attributes))
        return output

    def constant(self, array: np.ndarray, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self._fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def tensor(self, value: _Value, axes: Sequence[int] | None = None) -> str:
        """The ONNX name of `value` laid out by `axes` (default: as it is; constants: JAX's)."""
        if value.const is not None:
            const = value.const.astype(value.dtype)
            if axes is not None and const.ndim:  # still numpy-broadcastable: never expanded
                const = np.transpose(const, axes)
            return self.constant(const)
        if value.conv is not None:
            value = self._emit_conv(value)
        if axes is None or tuple(axes) == value.axes:
            return value.name
        # tensor = transpose(value, value.axes); want transpose(value, axes).
        permutation = [value.axes.index(a) for a in axes]
        return self.node("Transpose", [value.name], perm=permutation)

    def _emit_conv(self, value: _Value) -> _Value:
        conv = value.conv
        weight = self.constant(conv.weight.astype(value.dtype), "weight")
        bias = self.constant(conv.bias.astype(value.dtype), "bias")
        name = self.node("Conv", [conv.input, weight, bias], **conv.attributes)
        return dataclasses.replace(value, name=name, conv=None)

    # --- the jaxpr --------------------------------------------------------------------------

    def run(self, jaxpr, consts: Sequence, inputs: Sequence[_Value]) -> list[_Value]:
        env: dict = {}

        def read(atom) -> _Value:
            if isinstance(atom, jex_core.Literal):
                return _constant(np.asarray(atom.val), atom.aval)
            return env[atom]

        for var, const in zip(jaxpr.constvars, consts, strict=True):
            env[var] = _constant(np.asarray(const), var.aval)
        for var, value in zip(jaxpr.invars, inputs, strict=True):
            env[var] = value
        for eqn in jaxpr.eqns:
            args = [read(a) for a in eqn.invars]
            outputs = self.equation(eqn, args)
            for var, value in zip(eqn.outvars, outputs, strict=True):
                env[var] = value
        return [read(a) for a in jaxpr.outvars]

    def equation(self, eqn, args: list[_Value]) -> list[_Value]:
        name = eqn.primitive.name
        inner = _inner_jaxpr(eqn)
        if inner is not None:  # jit, custom_jvp_call, ...: inline
            return self.run(inner.jaxpr, inner.consts, args)
        if all(a.const is not None for a in args) and name not in _LAZY_CONSTANT:
            return [_fold(eqn, args)]
        lower = _RULES.get(name)
        if lower is None:
            raise UnsupportedPrimitive(f"ONNX export: no lowering for the JAX primitive {name!r}")
        return [lower(self, eqn, args)]


def _static(shape: tuple, const: np.ndarray) -> tuple[int, ...]:
    """A value's shape with its symbolic (batch) dimensions at the constant's size there."""
    return tuple(d if isinstance(d, int) else c for d, c in zip(shape, const.shape, strict=True))


def _constant(array: np.ndarray, aval) -> _Value:
    dtype = np.dtype(aval.dtype)
    return _Value(shape=tuple(aval.shape), dtype=dtype, const=np.asarray(array, dtype))


def _inner_jaxpr(eqn):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        inner = eqn.params.get(key)
        if inner is not None:
            return inner if hasattr(inner, "consts") else jex_core.ClosedJaxpr(inner, ())
    return None


def _fold(eqn, args: list[_Value]) -> _Value:
    """Evaluates a constant-only equation with JAX itself (its rounding, its dtype)."""
    name = eqn.primitive.name
    if name in _ELEMENTWISE:  # numpy-style broadcasting keeps lazily broadcast constants small
        result = _ELEMENTWISE[name](*[a.const for a in args])
    else:
        operands = [np.broadcast_to(a.const, _static(a.shape, a.const)) for a in args]
        result = eqn.primitive.bind(*operands, **eqn.params)
    return _constant(np.asarray(result), eqn.outvars[0].aval)


_ELEMENTWISE = {
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide,
    "max": jnp.maximum, "min": jnp.minimum, "pow": jnp.power, "rsqrt": jax.lax.rsqrt,
    "sqrt": jnp.sqrt, "square": jnp.square, "tanh": jnp.tanh, "exp": jnp.exp, "neg": jnp.negative,
}  # fmt: skip
# Constants these keep lazy (unbroadcast) rather than evaluate, so no batch-sized array appears.
_LAZY_CONSTANT = {"broadcast_in_dim"}


# --- lowering rules: (lowering, eqn, args) -> _Value ----------------------------------------


def _out(eqn, name: str, axes: Sequence[int]) -> _Value:
    aval = eqn.outvars[0].aval
    return _Value(shape=tuple(aval.shape), dtype=np.dtype(aval.dtype), name=name, axes=tuple(axes))


def _broadcast_in_dim(lowering: Lowering, eqn, args):
    (operand,) = args
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    if operand.const is not None:  # keep it small: numpy broadcasting does the rest
        kept = [1] * len(shape)
        for source, target in enumerate(dims):
            kept[target] = operand.const.shape[source]
        return dataclasses.replace(operand, shape=tuple(shape), const=operand.const.reshape(kept))
    new_axes = [d for d in range(len(shape)) if d not in dims]
    identity = tuple(range(len(operand.shape)))
    if all(shape[d] == 1 for d in new_axes) and all(
        shape[t] is operand.shape[s] or shape[t] == operand.shape[s] for s, t in enumerate(dims)
    ) and list(dims) == sorted(dims):  # fmt: skip
        # Only unit axes added (a mean's keepdims): an Unsqueeze.
        axes = lowering.constant(np.asarray(new_axes, np.int64))
        result = lowering.node("Unsqueeze", [lowering.tensor(operand, identity), axes])
        return _out(eqn, result, range(len(shape)))
    raise UnsupportedPrimitive("ONNX export: broadcast_in_dim of a computed value")


_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
           "pow": "Pow"}  # fmt: skip


def _binary(lowering: Lowering, eqn, args):
    x, y = args
    name = eqn.primitive.name
    if x.const is not None and name in ("add", "mul", "max", "min"):
        x, y = y, x  # commutative: the activation first
    if y.const is not None:
        folded = _fold_into_conv(x, name, y)
        if folded is not None:
            return folded
        if name == "max" and not np.any(y.const):
            return _out(eqn, lowering.node("Relu", [lowering.tensor(x)]), _axes(x))
    axes = _axes(x) if x.const is None else _axes(y)
    result = lowering.node(_BINARY[name], [lowering.tensor(x, axes), lowering.tensor(y, axes)])
    return _out(eqn, result, axes)


def _axes(value: _Value) -> tuple[int, ...]:
    if value.conv is not None or value.name is not None:
        return value.axes
    return tuple(range(len(value.shape)))


def _fold_into_conv(x: _Value, name: str, y: _Value) -> _Value | None:
    """conv(x) op c, with c one number per output channel, as a convolution with new weights."""
    if x.conv is None or name not in ("add", "sub", "mul", "div"):
        return None
    channel = x.axes[1]  # the JAX axis that is the tensor's C
    per_channel = y.const
    squeezed = [s for i, s in enumerate(per_channel.shape) if i != channel]
    if per_channel.ndim != len(x.shape) or any(s != 1 for s in squeezed):
        return None
    c = np.broadcast_to(per_channel.reshape(-1).astype(np.float64), x.conv.bias.shape)
    weight, bias = x.conv.weight, x.conv.bias
    if name == "add":
        bias = bias + c
    elif name == "sub":
        bias = bias - c
    elif name == "mul":
        weight, bias = weight * c[:, None, None, None], bias * c
    else:
        weight, bias = weight / c[:, None, None, None], bias / c
    return dataclasses.replace(x, conv=dataclasses.replace(x.conv, weight=weight, bias=bias))


_UNARY = {"tanh": "Tanh", "exp": "Exp", "sqrt": "Sqrt", "neg": "Neg", "floor": "Floor",
          "round": "Round", "abs": "Abs", "log": "Log"}  # fmt: skip


def _unary(lowering: Lowering, eqn, args):
    (x,) = args
    name = eqn.primitive.name
    source = lowering.tensor(x)
    if name == "rsqrt":
        result = lowering.node("Reciprocal", [lowering.node("Sqrt", [source])])
    elif name == "square":
        result = lowering.node("Mul", [source, source])
    elif name == "integer_pow":
        exponent = lowering.constant(np.asarray(eqn.params["y"], x.dtype))
        result = lowering.node("Pow", [source, exponent])
    elif name == "round" and eqn.params.get("rounding_method") not in (None, 1):
        # ONNX Round is half-to-even, lax.round's rounding_method 1 (TO_NEAREST_EVEN).
        raise UnsupportedPrimitive("ONNX export: round away from zero has no ONNX operator")
    else:
        result = lowering.node(_UNARY[name], [source])
    return _out(eqn, result, _axes(x))


def _convert(lowering: Lowering, eqn, args):
    from onnx import helper

    (x,) = args
    target = helper.np_dtype_to_tensor_dtype(np.dtype(eqn.params["new_dtype"]))
    return _out(eqn, lowering.node("Cast", [lowering.tensor(x)], to=target), _axes(x))


def _conv(lowering: Lowering, eqn, args):
    x, kernel = args
    params = eqn.params
    lhs, rhs, out = params["dimension_numbers"]
    if kernel.const is None or any(d != 1 for d in params["lhs_dilation"]):
        raise UnsupportedPrimitive(
            "ONNX export: a convolution needs constant weights and no input dilation"
        )
    if params["batch_group_count"] != 1:
        raise UnsupportedPrimitive("ONNX export: batch-grouped convolution")
    weight = np.transpose(kernel.const, rhs).astype(np.float64)  # OIHW
    pads = [p for p, _ in params["padding"]] + [p for _, p in params["padding"]]
    attributes = dict(
        kernel_shape=list(weight.shape[2:]), strides=list(params["window_strides"]),
        pads=[int(p) for p in pads], dilations=list(params["rhs_dilation"]),
        group=int(params["feature_group_count"]),
    )  # fmt: skip
    conv = _PendingConv(lowering.tensor(x, lhs), weight, np.zeros(weight.shape[0]), attributes)
    aval = eqn.outvars[0].aval
    return _Value(shape=tuple(aval.shape), dtype=np.dtype(aval.dtype), axes=tuple(out), conv=conv)


def _pool(lowering: Lowering, eqn, args):
    """reduce_window max or sum over the spatial axes of an NCHW tensor."""
    (x,) = args
    params = eqn.params
    axes = _axes(x)
    if x.const is None and len(axes) == 4 and axes != tuple(range(4)):
        order = axes  # the tensor's axis i is JAX axis axes[i]
    else:
        order = _NCHW if len(x.shape) == 4 else tuple(range(len(x.shape)))
    window = [params["window_dimensions"][a] for a in order]
    strides = [params["window_strides"][a] for a in order]
    padding = [params["padding"][a] for a in order]
    dilation = [params.get("base_dilation", (1,) * 4)[a] for a in order]
    dilation += [params.get("window_dilation", (1,) * 4)[a] for a in order]
    if len(order) != 4 or window[:2] != [1, 1] or strides[:2] != [1, 1] or any(
        d != 1 for d in dilation
    ) or any(p != (0, 0) for p in padding[:2]):  # fmt: skip
        raise UnsupportedPrimitive(
            f"ONNX export: {eqn.primitive.name} beyond 2-D pooling of an image batch"
        )
    attributes = dict(
        kernel_shape=window[2:], strides=strides[2:],
        pads=[int(p) for p, _ in padding[2:]] + [int(p) for _, p in padding[2:]],
    )  # fmt: skip
    source = lowering.tensor(x, order)
    if eqn.primitive.name == "reduce_window_max":
        return _out(eqn, lowering.node("MaxPool", [source], **attributes), order)
    # A sum is the average that counts padding, times the window's area.
    average = lowering.node("AveragePool", [source], count_include_pad=1, **attributes)
    area = lowering.constant(np.asarray(np.prod(window), x.dtype))
    return _out(eqn, lowering.node("Mul", [average, area]), order)


def _transpose(lowering: Lowering, eqn, args):
    (x,) = args
    if x.conv is not None:
        x = dataclasses.replace(x, name=lowering.tensor(x), conv=None)
    return dataclasses.replace(
        x, shape=tuple(eqn.outvars[0].aval.shape),
        axes=_compose(_axes(x), eqn.params["permutation"]),
    )  # fmt: skip


def _reshape(lowering: Lowering, eqn, args):
    (x,) = args
    if tuple(eqn.params["new_sizes"]) == tuple(x.shape):
        return x
    identity = tuple(range(len(x.shape)))
    sizes = [d if isinstance(d, int) else -1 for d in eqn.params["new_sizes"]]
    shape = lowering.constant(np.asarray(sizes, np.int64))
    result = lowering.node("Reshape", [lowering.tensor(x, identity), shape])
    return _out(eqn, result, range(len(sizes)))


def _reduce(lowering: Lowering, eqn, args):
    (x,) = args
    axes = _axes(x)
    reduced = set(eqn.params["axes"])
    tensor_axes = [i for i, a in enumerate(axes) if a in reduced]
    op = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax"}[eqn.primitive.name]
    inputs = [lowering.tensor(x)]
    attributes = {"keepdims": 0}
    if op == "ReduceSum" or lowering.opset >= 18:
        inputs.append(lowering.constant(np.asarray(tensor_axes, np.int64)))
    else:
        attributes["axes"] = tensor_axes
    kept = [a for a in axes if a not in reduced]
    renumber = {a: i for i, a in enumerate(sorted(kept))}
    return _out(eqn, lowering.node(op, inputs, **attributes), [renumber[a] for a in kept])


def _dot_general(lowering: Lowering, eqn, args):
    """As ONNX Einsum, or MatMul for a Linear layer (what quantizers and runtimes fuse)."""
    x, y = args
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if len(x.shape) == 2 and len(y.shape) == 2 and tuple(lc) == (1,) and tuple(rc) == (0,):
        result = lowering.node("MatMul", [lowering.tensor(x, (0, 1)), lowering.tensor(y, (0, 1))])
        return _out(eqn, result, (0, 1))
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    left = [next(letters) for _ in x.shape]
    right = [next(letters) for _ in y.shape]
    for i, j in zip(list(lc) + list(lb), list(rc) + list(rb), strict=True):
        right[j] = left[i]
    batch = [left[i] for i in lb]
    free_left = [left[i] for i in range(len(left)) if i not in lc and i not in lb]
    free_right = [right[j] for j in range(len(right)) if j not in rc and j not in rb]
    equation = f"{''.join(left)},{''.join(right)}->{''.join(batch + free_left + free_right)}"
    identity = lambda v: tuple(range(len(v.shape)))
    result = lowering.node(
        "Einsum", [lowering.tensor(x, identity(x)), lowering.tensor(y, identity(y))],
        equation=equation,
    )  # fmt: skip
    return _out(eqn, result, range(len(eqn.outvars[0].aval.shape)))


def _pad(lowering: Lowering, eqn, args):
    x, value = args
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config) or any(lo < 0 or hi < 0 for lo, hi, _ in config):
        raise UnsupportedPrimitive("ONNX export: pad with interior or negative padding")
    axes = _axes(x)
    pads = [config[a][0] for a in axes] + [config[a][1] for a in axes]
    inputs = [lowering.tensor(x), lowering.constant(np.asarray(pads, np.int64)),
              lowering.tensor(value)]  # fmt: skip
    return _out(eqn, lowering.node("Pad", inputs, mode="constant"), axes)


def _slice(lowering: Lowering, eqn, args):
    """Slice along the axes that change (a symbolic batch axis never does)."""
    (x,) = args
    axes = _axes(x)
    params = eqn.params
    steps = params["strides"] or (1,) * len(axes)
    changed = [
        i for i, a in enumerate(axes)
        if params["start_indices"][a] != 0 or steps[a] != 1
        or not _same_dim(params["limit_indices"][a], x.shape[a])
    ]  # fmt: skip
    columns = [
        [params["start_indices"][axes[i]] for i in changed],
        [params["limit_indices"][axes[i]] for i in changed],
        changed,
        [steps[axes[i]] for i in changed],
    ]
    inputs = [lowering.tensor(x)] + [lowering.constant(np.asarray(c, np.int64)) for c in columns]
    return _out(eqn, lowering.node("Slice", inputs), axes)


def _same_dim(a, b) -> bool:
    return a is b or (isinstance(a, int) and isinstance(b, int) and a == b)


def _squeeze(lowering: Lowering, eqn, args):
    (x,) = args
    identity = tuple(range(len(x.shape)))
    dims = lowering.constant(np.asarray(eqn.params["dimensions"], np.int64))
    result = lowering.node("Squeeze", [lowering.tensor(x, identity), dims])
    return _out(eqn, result, range(len(eqn.outvars[0].aval.shape)))


def _concatenate(lowering: Lowering, eqn, args):
    axes = _axes(next(a for a in args if a.const is None))
    inputs = [lowering.tensor(a, axes) for a in args]
    axis = axes.index(eqn.params["dimension"])
    return _out(eqn, lowering.node("Concat", inputs, axis=axis), axes)


def _clamp(lowering: Lowering, eqn, args):
    low, x, high = args
    axes = _axes(x)
    inputs = [lowering.tensor(x), lowering.tensor(low), lowering.tensor(high)]
    if low.const is None or high.const is None or low.const.ndim or high.const.ndim:
        raise UnsupportedPrimitive("ONNX export: clamp to non-scalar bounds")
    return _out(eqn, lowering.node("Clip", inputs), axes)


_RULES = {
    "broadcast_in_dim": _broadcast_in_dim,
    "conv_general_dilated": _conv,
    "reduce_window_max": _pool,
    "reduce_window_sum": _pool,
    "transpose": _transpose,
    "reshape": _reshape,
    "reduce_sum": _reduce,
    "reduce_max": _reduce,
    "dot_general": _dot_general,
    "convert_element_type": _convert,
    "pad": _pad,
    "slice": _slice,
    "squeeze": _squeeze,
    "concatenate": _concatenate,
    "clamp": _clamp,
    "integer_pow": _unary,
    "rsqrt": _unary,
    "square": _unary,
    **{name: _unary for name in _UNARY},
    **{name: _binary for name in _BINARY},
}


def to_onnx(closed_jaxpr, spec, *, opset: int, metadata: dict[str, str]):
    """An onnx.ModelProto of a one-input, one-output closed jaxpr; the input is "input", the
    output "logits", and a dynamic batch dimension is named "batch"."""
    import onnx
    from onnx import helper

    lowering = Lowering(opset)
    rank = len(spec.shape)
    image = _Value(shape=tuple(spec.shape), dtype=np.dtype(spec.dtype), name="input",
                   axes=tuple(range(rank)))  # fmt: skip
    (result,) = lowering.run(closed_jaxpr.jaxpr, closed_jaxpr.consts, [image])
    logits = lowering.tensor(result, range(len(result.shape)))
    lowering.nodes.append(helper.make_node("Identity", [logits], ["logits"]))

    def info(name: str, shape, dtype):
        dims = [d if isinstance(d, int) else "batch" for d in shape]
        return helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), dims
        )

    graph = helper.make_graph(
        lowering.nodes, "jaxnets", [info("input", spec.shape, spec.dtype)],
        [info("logits", result.shape, result.dtype)], lowering.initializers,
    )  # fmt: skip
    model = helper.make_model(
        graph, producer_name="jaxnets", opset_imports=[helper.make_opsetid("", opset)]
    )
    model.ir_version = min(model.ir_version, 10)  # what current onnxruntime releases read
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    return model
