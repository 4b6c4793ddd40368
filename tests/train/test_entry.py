"""The training program's start-up (train/entry.py): JAX's persistent compilation cache in the
user's cache directory unless told otherwise, and TensorFlow imported without Keras."""

import json
import os
import subprocess
import sys
from pathlib import Path

from train import entry

REPO = Path(__file__).resolve().parents[2]

START_UP = """
import json, os, sys
from train import entry
cache = entry.use_compilation_cache(os.environ)
tf = entry.import_tensorflow()
keras_imported = "keras" in sys.modules
import jax, jax.numpy as jnp
product = jax.jit(lambda x: jnp.sin(x) @ x)(jnp.ones((64, 64)))
total = tf.data.Dataset.range(4).reduce(tf.constant(0, tf.int64), lambda a, b: a + b)
from keras.src import optimizers  # Keras still imports, whole, when asked for
print(json.dumps({"cache": cache, "keras_imported": keras_imported, "sum": int(total),
                  "optimizers": hasattr(optimizers, "SGD")}))
"""


def test_the_compilation_cache_defaults_to_the_users_cache_directory(tmp_path):
    environ = {"XDG_CACHE_HOME": str(tmp_path)}
    directory = str(tmp_path / "jaxnets" / "xla")
    assert entry.use_compilation_cache(environ) == directory
    assert environ == {
        "XDG_CACHE_HOME": str(tmp_path),
        "JAX_COMPILATION_CACHE_DIR": directory,
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(entry.COMPILATION_CACHE_BYTES),
    }
    users = {"JAX_COMPILATION_CACHE_DIR": "/mine", "JAX_COMPILATION_CACHE_MAX_SIZE": "-1"}
    assert entry.use_compilation_cache(users) is None
    assert users == {"JAX_COMPILATION_CACHE_DIR": "/mine", "JAX_COMPILATION_CACHE_MAX_SIZE": "-1"}
    off = {"JAXNETS_COMPILATION_CACHE": "0", "XDG_CACHE_HOME": str(tmp_path)}
    assert entry.use_compilation_cache(off) is None and "JAX_COMPILATION_CACHE_DIR" not in off
    # A cache directory that cannot be made (here a file is in the way): no cache, no error.
    (tmp_path / "file").write_text("")
    blocked = {"XDG_CACHE_HOME": str(tmp_path / "file")}
    assert entry.use_compilation_cache(blocked) is None
    assert "JAX_COMPILATION_CACHE_DIR" not in blocked


def test_start_up_caches_compiled_programs_and_imports_tensorflow_without_keras(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(XDG_CACHE_HOME=str(tmp_path), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    result = subprocess.run([sys.executable, "-c", START_UP], capture_output=True, text=True,
                            cwd=REPO, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"cache": str(tmp_path / "jaxnets" / "xla"), "keras_imported": False,
                      "sum": 6, "optimizers": True}  # fmt: skip
    assert any((tmp_path / "jaxnets" / "xla").iterdir())  # the program JAX compiled, stored
