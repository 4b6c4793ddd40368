#!/usr/bin/env bash
# The core install on its own: a fresh venv with `pip install .` (no extras), what it holds and
# weighs, and the library working in it (import, conversion of a .safetensors file, export).
#   bash scripts/core_venv.sh [VENV_DIR]     (default: a temporary directory, removed after)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$(mktemp -d)/core-venv}
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "$repo"
echo "venv: $venv"
echo "size: $(du -sh "$venv" | cut -f1)"
for package in tensorflow tensorflow-cpu tensorflow-datasets torch torchvision optax \
    matplotlib scikit-learn tensorboard ml-collections; do
  if "$venv/bin/pip" show -q "$package" 2>/dev/null; then echo "installed: $package"; fi
done
cd "$(mktemp -d)"  # away from the checkout, so only the installed package can be imported
"$venv/bin/python" - <<'PY'
import os, sys, tempfile
import numpy as np
import jaxnets
from safetensors.numpy import save_file

print("XLA_FLAGS after import:", os.environ.get("XLA_FLAGS"))
model = jaxnets.create_model("resnet18", num_classes=10)
import jax
variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False)
state_dict = {k: np.asarray(v) for k, v in jaxnets.to_torchvision("resnet18", variables).items()}
path = os.path.join(tempfile.mkdtemp(), "weights.safetensors")
save_file(state_dict, path)
converted = jaxnets.from_torchvision("resnet18", path)
same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(converted)))
heavy = sorted(m for m in ("tensorflow", "torch", "optax", "sklearn", "matplotlib") if m in sys.modules)
print(f"from_torchvision round trip bit-exact: {same}; extras' modules imported: {heavy or 'none'}")
PY
"$venv/bin/jaxnets" eval resnet18 --weights x --data folder:x || true
