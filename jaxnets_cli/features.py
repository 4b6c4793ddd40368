"""`jaxnets features`: what an architecture's backbone returns, by torchvision's names.

Without options, the feature stages of `create_model(name, features_only=True)`; with
--out-indices, some of them; with --return-nodes, what each requested node or module stands for
(torchvision's rule: a module is the last node computed inside it); with --nodes, every node
create_feature_extractor takes. Shapes are per image, NHWC, at --size (default: the
architecture's own input size), traced without computing.
"""

from __future__ import annotations


def describe(
    name: str, *, nodes: bool = False, return_nodes: str = "", out_indices: str = "",
    size: str = "", head: str | None = None,
) -> list[dict]:  # fmt: skip
    """One row per stage or node.

    Raises:
      ValueError: an unknown node, an index out of range, a size that does not parse.
    """
    import jax
    import jax.numpy as jnp

    import jaxnets
    from jaxnets.nodes import resolve
    from jaxnets.registry import sample_shape

    options = {"head": head} if head else {}
    graph = jaxnets.features.graph(name, **options)
    height, width = _size(size) if size else sample_shape(name)[1:3]
    if nodes:
        queries = [node.name for node in graph]
    elif return_nodes:
        queries = [q.strip() for q in return_nodes.split(",") if q.strip()]
    else:
        indices = _integers(out_indices) if out_indices else None
        stages = {s.module: s for s in jaxnets.feature_info(name, **options)}
        queries = [list(stages)[i] for i in jaxnets.registry.stage_indices(name, indices)]
    extractor = jaxnets.create_feature_extractor(name, queries, **options)
    model = jaxnets.create_model(name, **options)
    x = jnp.zeros((1, height, width, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    shapes = jax.eval_shape(extractor.apply, variables, x)
    rows = []
    for query in queries:
        row = {"module": query, "node": resolve(query, graph, name).name,
               "shape": list(shapes[query].shape[1:])}  # fmt: skip
        if not (nodes or return_nodes):
            row.update(index=stages[query].index, reduction=stages[query].reduction)
        rows.append(row)
    return rows


def _integers(text: str) -> list[int]:
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise ValueError(f"--out-indices {text!r}: expected integers, e.g. 2,3,4") from None


def _size(text: str) -> tuple[int, int]:
    parts = text.replace("x", ",").split(",")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--size {text!r}: expected H,W or S, positive integers")
    return int(parts[0]), int(parts[1])


def format_rows(rows: list[dict]) -> str:
    if rows and "index" in rows[0]:
        lines = [f"{'index':<6}{'module':<14}{'node':<20}{'stride':>7}  shape"]
        lines += [f"{r['index']:<6}{r['module']:<14}{r['node']:<20}{r['reduction']:>7}  "
                  f"{r['shape']}" for r in rows]  # fmt: skip
        return "\n".join(lines)
    width = max(len(r["module"]) for r in rows) + 2
    return "\n".join(
        f"{r['module']:<{width}}{r['shape']}"
        + (f"  ({r['node']})" if r["node"] != r["module"] else "")
        for r in rows
    )
