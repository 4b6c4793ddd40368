"""The three layers and the core install: every import points down (jaxnets <- train <-
jaxnets_cli), and the library works with the extras' modules absent."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

from jaxnets import extras

LAYERS = {"jaxnets": 0, "train": 1, "jaxnets_cli": 2}  # a layer imports only lower numbers
# The core install has absl (orbax needs it) and optax (flax declares it), so those two stay.
IN_CORE = ("absl", "optax")
OPTIONAL = extras.MODULES["train"] + extras.MODULES["torch"] + extras.MODULES["export"]
BLOCKED = tuple(dict.fromkeys(m for m in OPTIONAL if m not in IN_CORE))


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every import in a file, module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_import_points_down(layer):
    files = sorted((REPO / layer).rglob("*.py"))
    assert files
    for path in files:
        above = {name for name in imported_packages(path) if LAYERS.get(name, -1) > LAYERS[layer]}
        assert not above, f"{path.relative_to(REPO)} imports {above}, a layer above {layer}"


def test_the_library_imports_no_extra_at_module_level():
    """Optional modules are imported inside the functions that need them, after
    extras.require (or a fallback), so that `import jaxnets` works on the core install."""
    for path in sorted((REPO / "jaxnets").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import)
               for alias in node.names}  # fmt: skip
        top |= {node.module.split(".")[0] for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module}  # fmt: skip
        optional = set(OPTIONAL)
        assert not top & optional, f"{path.name} imports {top & optional} at module level"


def run_without_extras(code: str, *args: str) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter in which every module of the extras fails to import,
    as on a core install, and the environment has no XLA_FLAGS (the test run's own are set)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    prelude = f"import sys\nfor m in {BLOCKED!r}:\n    sys.modules[m] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.slow  # a subprocess
def test_the_library_works_without_the_extras(tmp_path):
    done = run_without_extras(
        """
        import os, numpy as np, jax, jaxnets
        from safetensors.numpy import save_file
        from jaxnets.export import load_export, save_export
        assert os.environ.get("XLA_FLAGS") is None
        model = jaxnets.create_model("resnet18", num_classes=10)
        variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
        state = {k: np.asarray(v) for k, v in jaxnets.to_torchvision("resnet18", variables).items()}
        save_file(state, sys.argv[1] + "/w.safetensors")
        back = jaxnets.from_torchvision("resnet18", sys.argv[1] + "/w.safetensors")
        assert all(np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(variables), jax.tree.leaves(back)))
        loaded, meta = load_export(save_export(sys.argv[1] + "/export", back, {"arch": "resnet18"}))
        assert meta["arch"] == "resnet18" and jax.tree.structure(loaded) == jax.tree.structure(back)
        os.link(sys.argv[1] + "/w.safetensors", sys.argv[1] + "/w.pth")  # any file named .pth
        try:
            jaxnets.from_torchvision("resnet18", sys.argv[1] + "/w.pth")
        except Exception as e:
            print(type(e).__name__, e)
        # StableHLO needs JAX alone; ONNX names its extra.
        jaxnets.export_model("resnet18", back, "stablehlo", sys.argv[1] + "/m.stablehlo",
                             input_size=(32, 32))
        try:
            jaxnets.export_model("resnet18", back, "onnx", sys.argv[1] + "/m.onnx")
        except Exception as e:
            print(type(e).__name__, e)
        assert sorted(os.listdir(sys.argv[1])).count("m.onnx") == 0
        from jaxnets_cli.main import main
        assert main(["convert", "resnet18", "--weights", sys.argv[1] + "/w.safetensors",
                     "--out", sys.argv[1] + "/cli-export"]) == 0
        assert main(["models"]) == 0
        assert "optax" not in sys.modules  # installed with flax, but the library needs none of it
        print("ok")
        """,
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "ok"
    assert "needs the [torch] extra" in done.stdout
    assert "needs the [export] extra" in done.stdout
    assert (tmp_path / "m.stablehlo").is_file()


@pytest.mark.slow  # subprocesses
@pytest.mark.parametrize(
    "command, extra",
    [
        (["eval", "resnet18", "--weights", "w.pth", "--data", "folder:x"], "train"),
        (["parity", "train", "resnet18", "--steps", "1"], "train"),
        (["bench", "--models", "resnet18"], "train"),
    ],
)
def test_a_command_whose_extra_is_missing_says_which_to_install(command, extra):
    done = run_without_extras(
        "from jaxnets_cli.main import main\nsys.exit(main(sys.argv[1:]))", *command
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert f"needs the [{extra}] extra" in done.stderr
    assert f"pip install 'jaxnets[{extra}]'" in done.stderr


@pytest.mark.slow  # a subprocess
def test_the_training_program_without_its_extra_says_which_to_install():
    done = run_without_extras(
        "import runpy\nsys.argv[0] = 'train'\nrunpy.run_module('train', run_name='__main__')",
        "--config", "configs/digits.py", "--workdir", "/nonexistent",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "train: error: the training program needs the [train] extra" in done.stderr
