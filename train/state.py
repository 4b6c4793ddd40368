"""What a run trains: the model a config names, its initial variables (fresh or converted
weights to fine-tune) and the train state that holds them with the optimizer."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state

import jaxnets
from train.optim import make_optimizer


class TrainState(train_state.TrainState):
    batch_stats: Any
    ema_params: Any = None
    ema_batch_stats: Any = None


def create_model(config, num_classes: int, device_count: int):
    """The config's model, given only the options its family declares (jaxnets.model_info)."""
    info = jaxnets.model_info(config.model)
    kwargs = {"num_classes": num_classes, "dtype": jnp.dtype(config.dtype)}
    if info.dropout:
        kwargs["dropout"] = config.dropout
    if info.residual_blocks:
        kwargs.update(zero_init_residual=config.zero_init_residual, remat=config.remat)
    if not config.bn_sync and info.batch_norm:
        # Per-device BatchNorm: each device's slice of the batch is normalized on its own.
        kwargs["bn_batch_groups"] = device_count
    return jaxnets.create_model(config.model, **kwargs)


def initial_variables(config, model, image_shape, num_classes: int) -> dict:
    """Fresh torchvision-style initialization, or converted weights to fine-tune (init_from)."""
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(jax.random.key(config.seed), jnp.zeros((1, *image_shape), jnp.float32))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if not config.init_from:
        return variables

    from jaxnets.convert import from_torchvision
    from jaxnets.export import is_export, load_export

    head = jaxnets.head_module(config.model)
    if is_export(config.init_from):
        loaded, meta = load_export(config.init_from)
        if meta.get("arch") != config.model:
            raise ValueError(f"config.init_from holds {meta.get('arch')}, not {config.model}")
    else:
        loaded = from_torchvision(
            config.model, config.init_from, num_classes=num_classes, reinit_head=True
        )
    merged = {"params": dict(loaded["params"]), "batch_stats": loaded.get("batch_stats", {})}
    if loaded["params"][head]["kernel"].shape != variables["params"][head]["kernel"].shape:
        merged["params"][head] = variables["params"][head]  # a new head for the new classes
    if jax.tree.structure(merged) != jax.tree.structure(variables):
        raise ValueError(f"config.init_from does not hold {config.model} variables")
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), merged)


def trainable_head_only(model_name: str):
    head = jaxnets.head_module(model_name)

    def trainable(params):
        return {name: jax.tree.map(lambda _, n=name: n == head, v) for name, v in params.items()}

    return trainable


def create_train_state(config, model, variables: dict, steps_per_epoch: int) -> TrainState:
    """Parameters, BatchNorm statistics, the optimizer of train/optim.py and, with ema_decay,
    the moving averages' starting copies."""
    trainable = trainable_head_only(config.model) if config.freeze_backbone else None
    # Copies: on GPU/TPU the state is donated to the train step (see donates_train_state), and
    # a buffer cannot be donated twice.
    copy = lambda tree: jax.tree.map(jnp.copy, tree) if config.ema_decay else None
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=make_optimizer(config, steps_per_epoch, trainable),
        ema_params=copy(variables["params"]),
        ema_batch_stats=copy(variables["batch_stats"]),
    )
