"""jaxnets' CPU XLA flags: not set by an import, set by one explicit call (which the entry points
make), never over the user's own, only with the jaxlib they were measured on, and in effect."""

import json
import os
import subprocess
import sys

from jaxnets import xla_flags

CONVOLUTION_LIBRARY = """
import json, os
import jaxnets, jax, jax.numpy as jnp
jaxnets.use_fast_cpu_flags()
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
hlo = jax.jit(conv).lower(jnp.ones((1, 8, 8, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text()
print(json.dumps({"ynn": "ynn_fusion" in hlo, "flags": os.environ.get("XLA_FLAGS", "")}))
"""


def test_set_cpu_flags_appends_and_respects_the_users_flags():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    added = xla_flags.set_cpu_flags(environ)
    assert added == [
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
        "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    ]
    assert environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", *added]
    assert xla_flags.set_cpu_flags(environ) == []  # once only

    users = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
    assert xla_flags.set_cpu_flags(users) == [added[1]]  # only the flag the user did not set
    assert users["XLA_FLAGS"].split() == [
        "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
        added[1],
    ]

    opted_out = {"JAXNETS_XLA_FLAGS": "0"}
    assert xla_flags.set_cpu_flags(opted_out) == [] and "XLA_FLAGS" not in opted_out
    # Another jaxlib may not know the flags (XLA stops at start-up on an unknown one).
    newer = {}
    assert xla_flags.set_cpu_flags(newer, jaxlib_version=(0, 11)) == [] and not newer
    assert xla_flags.set_cpu_flags({}, jaxlib_version=xla_flags.MEASURED_JAXLIB) == added


def run_fresh(script: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXNETS_XLA_FLAGS")}
    return subprocess.run(
        [sys.executable, "-c", script], env={**env, **(extra_env or {})},
        capture_output=True, text=True, check=True,
    )  # fmt: skip


def last_json(result: subprocess.CompletedProcess):
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_jaxnets_leaves_the_environment_alone():
    result = run_fresh("import os, jaxnets; print(os.environ.get('XLA_FLAGS'))")
    assert result.stdout.strip().splitlines()[-1] == "None"


def test_the_call_takes_convolutions_away_from_ynnpack():
    """In a fresh process: after use_fast_cpu_flags() XLA:CPU compiles convolutions itself; with
    JAXNETS_XLA_FLAGS=0 it hands them to YNNPACK, jaxlib's default (so the flag is what
    changed it)."""
    ours = last_json(run_fresh(CONVOLUTION_LIBRARY))
    assert ours == {"ynn": False, "flags": " ".join(xla_flags.set_cpu_flags({}))}
    assert last_json(run_fresh(CONVOLUTION_LIBRARY, {"JAXNETS_XLA_FLAGS": "0"}))["ynn"] is True


def test_the_call_after_jax_started_changes_nothing_and_says_why():
    script = (
        "import json, os, warnings, jax, jaxnets\n"
        "jax.numpy.ones(1).block_until_ready()\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    added = jaxnets.use_fast_cpu_flags()\n"
        "print(json.dumps([added, os.environ.get('XLA_FLAGS'), [str(w.message) for w in caught]]))"
    )
    added, flags, warned = last_json(run_fresh(script))
    assert added == [] and flags is None
    assert len(warned) == 1 and "call it before the first JAX computation" in warned[0]


def test_train_state_is_donated_except_on_cpu():
    """XLA:CPU copies donated parameters that the backward pass still reads, which costs a
    pass over them and saves nothing for them: a jaxlib that stopped doing so would fail here,
    and donation on CPU would be worth measuring again (see donates_train_state)."""
    import re

    import jax
    import jax.numpy as jnp

    def sgd_step(params, x):
        def loss(p):
            hidden = jax.nn.relu(jax.nn.relu(x @ p["w1"]) @ p["w2"])
            return jnp.sum(hidden @ p["w3"])

        grads = jax.grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

    params = {name: jnp.ones((64, 64)) for name in ("w1", "w2", "w3")}
    copies = {}
    for donate in [(), 0]:
        hlo = jax.jit(sgd_step, donate_argnums=donate).lower(params, jnp.ones((32, 64)))
        entry = hlo.compile().as_text().split("ENTRY")[1]
        copies[donate] = len(re.findall(r" copy\(%", entry))
    assert copies == {(): 0, 0: 2}  # w2 and w3: their old values feed the input gradients
    assert not xla_flags.donates_train_state("cpu")
    assert xla_flags.donates_train_state("gpu") and xla_flags.donates_train_state("tpu")
