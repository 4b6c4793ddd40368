"""XLA flags jaxnets sets for the CPU backend, before JAX starts one.

jaxlib 0.10's XLA:CPU hands convolutions to YNNPACK by default
(`xla_cpu_experimental_ynn_fusion_type` includes `individual_convolution`). On the x86 CPU we
measured (this project's 2-core machine), YNNPACK's convolutions are slower than XLA's own
(Eigen) ones on every ResNet shape, 1.3-2.6x for forward + backward: a 3x3, 64-channel
convolution at 32x32, batch 16, takes 18 ms forward and 35 ms for the weight gradient through
YNNPACK, 8 and 10 ms without, as fast as torch's oneDNN. jaxnets therefore takes convolutions
out of YNNPACK's share and leaves its matrix products where they are; ResNet train steps run
1.3-1.6x faster (docs/performance.md). It also turns off XLA:CPU's concurrency-optimized
scheduler (see CPU_FLAGS). The flags only concern the CPU backend. donates_train_state says
where a train step should donate its state.

Importing jaxnets changes nothing: the entry points (`python -m train`, `jaxnets ...`) call
`use_fast_cpu_flags()` before JAX starts, and a user's own script opts in with one line. XLA reads
XLA_FLAGS when JAX starts its first backend, so the call has no effect (and warns) in a process
that ran JAX computations before. A flag the user already set in XLA_FLAGS is left as it is;
JAXNETS_XLA_FLAGS=0 turns the defaults off. The flags are applied only with the jaxlib series
they were measured on: an unknown flag stops XLA at start-up, and a newer XLA may have renamed
them or made them moot.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import MutableMapping
from importlib import metadata

# name -> value; "-individual_convolution" removes one entry from XLA's default list. The
# concurrency-optimized scheduler runs independent operations side by side; on two cores that
# puts weight transposes beside convolutions that already use both: without it ResNet-18 trains
# 2-3% faster and needs 18% less memory, ResNet-50 about 1% faster.
CPU_FLAGS = {
    "xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
    "xla_cpu_enable_concurrency_optimized_scheduler": "false",
}
# The jaxlib (major, minor) whose XLA:CPU the flags were measured on, and know.
MEASURED_JAXLIB = (0, 10)


def _jaxlib_version() -> tuple[int, ...]:
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return ()
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def use_fast_cpu_flags() -> list[str]:
    """Turns on the XLA:CPU flags jaxnets measured as faster (see this module); call it before
    the first JAX computation. Example:

        import jaxnets
        jaxnets.use_fast_cpu_flags()  # then build, convert, train as usual

    Returns:
      The flags added to os.environ['XLA_FLAGS']: none with JAXNETS_XLA_FLAGS=0, with another
      jaxlib than MEASURED_JAXLIB, or when JAX has already started (a warning says so then).
    """
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if set_cpu_flags(dict(os.environ)):  # there were flags to add: say why they are not
            warnings.warn(
                "jaxnets.use_fast_cpu_flags(): JAX has already started, XLA_FLAGS are read "
                "once: call it before the first JAX computation",
                stacklevel=2,
            )
        return []
    return set_cpu_flags(os.environ)


def set_cpu_flags(
    environ: MutableMapping[str, str], jaxlib_version: tuple[int, ...] | None = None
) -> list[str]:
    """Appends jaxnets' CPU flags to environ['XLA_FLAGS'], except those already there; returns
    the flags added. `jaxlib_version` defaults to the installed one."""
    if jaxlib_version is None:
        jaxlib_version = _jaxlib_version()
    if environ.get("JAXNETS_XLA_FLAGS", "1") == "0" or jaxlib_version != MEASURED_JAXLIB:
        return []
    present = environ.get("XLA_FLAGS", "")
    added = [
        f"--{name}={value}" for name, value in CPU_FLAGS.items() if f"--{name}=" not in present
    ]
    if added:
        environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
    return added


def donates_train_state(platform: str) -> bool:
    """Whether a train step should donate its state (parameters, optimizer and BatchNorm state)
    to XLA on this platform ("cpu", "gpu", "tpu").

    Donation lets XLA write the new state over the old one. XLA:CPU places its copies before it
    schedules the step, so it cannot tell that a parameter's update comes after the last read
    of its old value, and copies nearly every donated parameter at the start of the step (148
    of ResNet-50's 161 arrays). On this project's 2-core CPU, at batch 16 and 128x128, that made
    the train step 3.4% slower for ResNet-50 (1,208 against 1,168 ms) and 2% for ResNet-18,
    to save 7% and 20% of its memory (841 against 901 MiB, 240 against 300). On CPU jaxnets
    takes the speed; accelerators, whose memory is the scarce resource, donate.
    """
    return platform != "cpu"
