"""What a run trains: the model a config names, its initial variables (fresh or converted
weights to fine-tune) and the train state that holds them with the optimizer."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

import jaxnets
from jaxnets.heads import is_head_layer
from train.config import replicas
from train.optim import make_optimizer


class TrainState(train_state.TrainState):
    """Flax's TrainState with BatchNorm statistics, the moving averages, and frozen layers.

    Attributes:
      frozen: top-level modules of `params` the optimizer never sees: they get no gradient
        (XLA prunes its computation) and no optimizer state, and stay bit for bit as they are.
    """

    batch_stats: Any
    ema_params: Any = None
    ema_batch_stats: Any = None
    frozen: tuple[str, ...] = struct.field(pytree_node=False, default=())

    def trainable(self, params=None) -> dict:
        """The parameters the optimizer updates (all but the frozen layers)."""
        params = self.params if params is None else params
        return {layer: value for layer, value in params.items() if layer not in self.frozen}

    def apply_gradients(self, *, grads, **kwargs) -> TrainState:
        """One optimizer step from the gradients of the trainable parameters."""
        trainable = self.trainable()
        updates, opt_state = self.tx.update(grads, self.opt_state, trainable)
        params = {**self.params, **optax.apply_updates(trainable, updates)}
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, **kwargs)


def model_options(config) -> dict:
    """The head spec, for building the model and reading weights."""
    return {"head": config.head} if config.head else {}


def frozen_layers(config) -> tuple[str, ...]:
    """The top-level modules config.freeze / config.freeze_until name (jaxnets.frozen_modules)."""
    if not (config.freeze or config.freeze_until):
        return ()
    until = config.freeze_until or None
    return jaxnets.frozen_modules(config.model, config.freeze, until, **model_options(config))


def create_model(config, num_classes: int, device_count: int):
    """The config's model, given only the options its family declares (jaxnets.model_info)."""
    info = jaxnets.model_info(config.model)
    kwargs = {"num_classes": num_classes, "dtype": jnp.dtype(config.dtype),
              **model_options(config)}  # fmt: skip
    if info.dropout:
        kwargs["dropout"] = config.dropout
    if info.residual_blocks:
        kwargs.update(zero_init_residual=config.zero_init_residual, remat=config.remat)
    if info.batch_norm:
        kwargs["frozen"] = frozen_layers(config)  # their BatchNorm keeps its statistics
        if not config.bn_sync:
            # Per-device BatchNorm: each device's slice of the batch is normalized on its own
            # (each replica's, where the config reproduces a torchvision run's GPUs).
            kwargs["bn_batch_groups"] = replicas(config, device_count)
    return jaxnets.create_model(config.model, **kwargs)


def initial_variables(config, model, image_shape, num_classes: int) -> dict:
    """Fresh torchvision-style initialization, or weights to fine-tune (init_from): a jaxnets
    export, a training workdir or a torchvision file. Head layers that are not of this
    model's shape (another number of classes, another head spec) start fresh."""
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(jax.random.key(config.seed), jnp.zeros((1, *image_shape), jnp.float32))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if not config.init_from:
        return variables
    loaded = _read_init_from(config, num_classes)
    head = jaxnets.head_module(config.model)
    params = {}
    for layer, fresh in variables["params"].items():
        kept = loaded["params"].get(layer)
        same = kept is not None and jax.tree.map(jnp.shape, kept) == jax.tree.map(jnp.shape, fresh)
        if not same and not is_head_layer(layer, head):
            raise ValueError(f"config.init_from does not hold {config.model} variables ({layer})")
        params[layer] = kept if same else fresh  # a new head for the new classes or spec
    merged = {"params": params, "batch_stats": loaded.get("batch_stats", {})}
    if jax.tree.structure(merged) != jax.tree.structure(variables):
        raise ValueError(f"config.init_from does not hold {config.model} variables")
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), merged)


def _read_init_from(config, num_classes: int) -> dict:
    from jaxnets.convert import from_torchvision
    from jaxnets.export import load_variables

    if Path(config.init_from).is_dir():
        loaded, meta = load_variables(config.init_from)
        if meta.get("arch") != config.model:
            raise ValueError(f"config.init_from holds {meta.get('arch')}, not {config.model}")
        return loaded
    return from_torchvision(config.model, config.init_from, num_classes=num_classes,
                            reinit_head=True, **model_options(config))  # fmt: skip


def create_train_state(config, model, variables: dict, steps_per_epoch: int) -> TrainState:
    """Parameters, BatchNorm statistics, the optimizer of train/optim.py over the trainable
    layers and, with ema_decay, the moving averages' starting copies."""
    frozen = frozen_layers(config)
    head = jaxnets.head_module(config.model)
    in_head = lambda layer: is_head_layer(layer, head)
    tx = make_optimizer(config, steps_per_epoch, in_head=in_head)
    params = variables["params"]
    trainable = {layer: value for layer, value in params.items() if layer not in frozen}
    # Copies: on GPU/TPU the state is donated to the train step (see donates_train_state), and
    # a buffer cannot be donated twice.
    copy = lambda tree: jax.tree.map(jnp.copy, tree) if config.ema_decay else None
    return TrainState(
        step=0,
        apply_fn=model.apply,
        params=params,
        tx=tx,
        opt_state=tx.init(trainable),
        batch_stats=variables["batch_stats"],
        ema_params=copy(params),
        ema_batch_stats=copy(variables["batch_stats"]),
        frozen=frozen,
    )
