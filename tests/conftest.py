"""Shared fixtures. torchvision is imported before anything can import tensorflow: the other
order segfaults with the pinned versions (shared/PORTING.md)."""

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _share_compilation_cache() -> None:
    """One XLA compilation cache for this test run: the pytest-xdist workers and every training
    subprocess inherit it through the environment, so a program compiled once (the same train
    step in a resumed run, in each of two processes, in a second worker) is loaded, not compiled
    again. It lives in a fresh directory removed at exit: no test reads another run's cache."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # a worker: the controller made it
        return
    cache = tempfile.mkdtemp(prefix="jaxnets-test-xla-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    # A size limit turns on the cache's file lock, so two processes never read a half-written
    # entry.
    os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(8 << 30)


_share_compilation_cache()  # before jax is imported: JAX reads these when it starts

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import jaxnets  # noqa: E402
from jaxnets_cli.feature_parity import randomize_batchnorm, without_inplace_relu  # noqa: E402, F401

# The suite runs with the flags the entry points set (JAXNETS_XLA_FLAGS=0 to test without).
jaxnets.use_fast_cpu_flags()

# pytest-xdist runs one worker per core; scripts/cpu_variants.sh changes it to vary torch's
# reduction order.
torch.set_num_threads(int(os.environ.get("JAXNETS_TEST_TORCH_THREADS", "1")))

# torchvision's parameter counts (shared/PORTING.md), the spec the models are held to.
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "resnext101_64x4d": 83_455_272,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
}


def torchvision_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(torchvision.models.get_model(name, **kwargs), seed)


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.numpy().transpose(0, 2, 3, 1)


def relative_error(actual, expected) -> float:
    """max |actual - expected| relative to the largest |expected| (the logit scale)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def assert_matches_reference_module(name, variables, grads, reference, fresh, tolerance):
    """jaxnets' gradients (a params tree, converted with the parameters' keys) against the .grad
    of each parameter of the torch module `reference`; then `variables` converted back into
    the untrained module `fresh` with load_state_dict(strict=True), bit for bit."""
    ours = jaxnets.to_torchvision(name, {"params": grads})
    for key, parameter in reference.named_parameters():
        assert relative_error(ours[key], parameter.grad.numpy()) < tolerance, key
    state = jaxnets.to_torchvision(name, variables)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value.numpy())


def run_cli(capsys, *args):
    """`jaxnets ARGS` in this process: (exit status, stdout, stderr)."""
    from jaxnets_cli import main as cli

    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def highest_precision():
    import jax

    with jax.default_matmul_precision("highest"):
        yield


# `make test-fast` runs per-model sweeps on one model of each family; `make test`, on all.
FAST_MODELS = ("alexnet_paper", "lenet5", "resnet18", "vgg11_bn")


def sweep(names, fast=FAST_MODELS) -> list:
    """pytest parameters over model names, the ones outside `fast` marked slow."""
    return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


ALL_MODELS = jaxnets.list_models()
TORCHVISION_MODELS = sorted(TORCHVISION_PARAMS)  # those with a torchvision original
# Families from the papers, each checked against a torch module written in its test file.
HISTORIC_MODELS = ["alexnet_paper", "lenet5"]
# One depth of each kind of layer stack: the deeper VGGs and the 101/152-layer ResNets,
# ResNeXts and Wide ResNets repeat these stacks' blocks in greater numbers (their logits and
# every feature node are still checked against torchvision, all 19, in test_parity.py). The
# per-layer training checks, which compile a backward pass per model, run on these.
ONE_DEPTH_A_KIND = [
    n for n in ALL_MODELS
    if n not in ("vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "resnet101",
                 "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2")
]  # fmt: skip


# Data for the input-pipeline and training tests.

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_digits_folder import make_digits_folder  # noqa: E402
from make_image_folder import make_image_folder  # noqa: E402

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]  # fmt: skip


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """4 classes x (8 train + 3 val) real JPEG photographs of ImageNet-like sizes."""
    return make_image_folder(tmp_path_factory.mktemp("photos"), 4, 8, 3)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
    """The demo's digits as an ImageFolder of 32x32 PNGs (1,437 train / 360 val): enough images
    for repeated augmentation, whose epoch keeps len // 256 * 256 of them."""
    return make_digits_folder(tmp_path_factory.mktemp("digits"), 32, check=False)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory):
    """A 'cifar10' in TFDS's own on-disk format (TFRecords + dataset_info.json), written with
    CIFAR-10's real features and read back through TFDS's registered Cifar10 builder: 40 train
    and 10 test random images, as no download is possible here."""
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    features = tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(32, 32, 3)),
        "label": tfds.features.ClassLabel(names=CIFAR_CLASSES),
    })  # fmt: skip

    def split(n):
        return [(i, {"id": f"{i}", "image": rng.integers(0, 256, (32, 32, 3), np.uint8),
                     "label": i % 10}) for i in range(n)]  # fmt: skip

    version = str(tfds.builder("cifar10").version)
    tfds.dataset_builders.store_as_tfds_dataset(
        "cifar10", version, features, {"train": split(40), "test": split(10)}, data_dir=data_dir
    )
    return data_dir


@pytest.fixture
def broken_folder(image_folder, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(image_folder, root)
    (root / "train" / "class_01" / "zz_corrupt.jpg").write_bytes(b"\xff\xd8 this is no JPEG")
    (root / "train" / "class_02" / "notes.txt").write_text("not an image")
    truncated = (root / "val" / "class_00" / "0000.jpg").read_bytes()
    (root / "val" / "class_00" / "zz_truncated.jpg").write_bytes(truncated[: len(truncated) // 3])
    return root


@pytest.fixture
def cut_jpeg_folder(image_folder, tmp_path):
    """image_folder plus JPEGs cut short inside their header, where TensorFlow's libjpeg prints
    "Improper call to JPEG library in state 201" for each (two in train/, one in val/)."""
    root = tmp_path / "cut"
    shutil.copytree(image_folder, root)
    for split, name, size in [("train", "class_01", 300), ("train", "class_02", 30),
                              ("val", "class_00", 100)]:  # fmt: skip
        whole = (root / split / name / "0000.jpg").read_bytes()
        (root / split / name / "zz_cut_header.jpg").write_bytes(whole[:size])
    return root


# ----------------------------------------------------------------------------------------------
# The training program's configs, as the tests use them.

REPO = Path(__file__).resolve().parents[1]


def load_config(path, argument=None):
    """A config file's get_config(), given FILE:ARGUMENT's argument where it takes one."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if argument is None else module.get_config(argument)


def tiny_config(**overrides):
    config = load_config(REPO / "configs" / "digits.py")
    config.update(
        {"image_size": 16, "batch_size": 16, "eval_batch_size": 64, "num_epochs": 1,
         "max_steps": 6, "checkpoint_every_steps": 3, "log_every_steps": 1,
         "progress_bar": False, "augment": "none", "warmup_epochs": 0.0, **overrides}
    )  # fmt: skip
    return config


def with_file_size_limit(limit: int, argv: list[str]) -> list[str]:
    """argv run so that no file grows past `limit` bytes: writes beyond it fail with EFBIG, as
    they fail with ENOSPC on a full disk (which needs a mount to stage). A launcher execs argv
    with the limit set (a preexec_fn would fork this multithreaded process)."""
    launcher = (
        "import os, resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    return [sys.executable, "-c", launcher, *argv]


def largest_file(directory: Path) -> Path:
    return max((f for f in directory.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
