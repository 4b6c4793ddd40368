"""The fault matrix: bad input and faults as a user meets them on the command line, each run as
a real `jaxnets ...` or `python -m train ...` process, and what jaxnets must do about it.

  python scripts/fault_matrix.py [--only GROUP[,GROUP]] [--markdown]

A case passes when the exit status is the expected one, a failure is one line on stderr that
says what the case expects (no traceback, no library noise), and its own check of the files
left behind holds (nothing half-written, nothing deleted, the payload of a malicious file never
run). Prints one row per case, then `N/N cases pass`; exits 1 if any fails. Needs the [test]
extras (torch, torchvision) and takes ~10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
JAXNETS = [PYTHON, "-m", "jaxnets_cli"]
TRAIN = [PYTHON, "-m", "train"]
# Root reads and writes any file: without these two capabilities it is refused like anyone.
AS_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
LENET = ["--config", str(REPO / "configs" / "digits_lenet5.py"), "--config.progress_bar=False",
         "--config.checkpoint_every_steps=2", "--config.log_every_steps=1"]  # fmt: skip


@dataclasses.dataclass
class Case:
    group: str
    name: str
    prepare: Callable[[Path], list[str]]  # writes the case's files in a scratch dir; the argv
    code: int  # the exit status jaxnets must give
    says: str  # a regular expression the (one-line) stderr must match
    check: Callable[[Path, subprocess.CompletedProcess], str | None] = lambda d, r: None
    lines: int = 1  # stderr lines: the one-line error or report (0: silent)
    preexec: Callable[[], None] | None = None


@dataclasses.dataclass
class Outcome:
    case: Case
    passed: bool
    why: str
    said: str
    seconds: float


# ----------------------------------------------------------------------------------------------
# The files cases start from, made once per matrix run.


class Materials:
    """A random-init torchvision ResNet-18 file, its export, a LeNet-5 digits workdir with
    checkpoints 2, 4 and 6, and a 4-class folder of JPEGs cut from scikit-learn's photos."""

    def __init__(self, root: Path):
        import torch
        import torchvision

        self.root = root
        root.mkdir()
        torch.manual_seed(0)
        self.state = torchvision.models.resnet18().state_dict()
        self.pth = root / "resnet18.pth"
        torch.save(self.state, self.pth)
        self.export = root / "export"
        run(JAXNETS + ["convert", "resnet18", "--weights", str(self.pth), "--out",
                       str(self.export)], check=True)  # fmt: skip
        self.workdir = root / "workdir"
        run(TRAIN + LENET + ["--workdir", str(self.workdir), "--config.max_steps=6"], check=True)
        self.folder = image_folder(root / "photos", classes=4, train=6, val=2)

    def copy(self, what: Path, scratch: Path) -> Path:
        target = scratch / what.name
        shutil.copytree(what, target) if what.is_dir() else shutil.copy(what, target)
        return target


def image_folder(root: Path, classes: int, train: int, val: int) -> Path:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for c in range(classes):
            (root / split / f"class_{c}").mkdir(parents=True)
            for i in range(count):
                photo = photos[(c + i) % len(photos)]
                y, x = rng.integers(0, 200), rng.integers(0, 300)
                Image.fromarray(photo[y : y + 160, x : x + 200]).save(
                    root / split / f"class_{c}" / f"{i}.jpg", quality=90
                )
    return root


def run(argv, check=False, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, **kwargs)
    if check and result.returncode:
        raise SystemExit(f"fault matrix: setting up failed: {' '.join(argv)}\n{result.stderr}")
    return result


# ----------------------------------------------------------------------------------------------
# The cases.


class Payload:
    """pickle's route to os.system: a file that runs a command when unpickled naively."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def largest_file(directory: Path) -> Path:
    return max((f for f in directory.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)


def files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def unchanged(scratch: Path, result) -> str | None:
    """Nothing was written beside the case's inputs (the --out or --workdir never appeared)."""
    new = [p for p in ("out", "out.pth", "w") if (scratch / p).exists()]
    return f"left {new} behind" if new else None


def limit_file_size(limit: int):
    """No file grows past `limit` bytes (EFBIG, as ENOSPC on a full disk)."""
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def weights_cases(m: Materials) -> list[Case]:
    def convert(weights: Callable[[Path], Path | str], *extra: str):
        def prepare(scratch: Path) -> list[str]:
            return JAXNETS + ["convert", "resnet18", "--weights", str(weights(scratch)),
                              "--out", str(scratch / "out"), *extra]  # fmt: skip

        return prepare

    def written(name, make):
        def weights(scratch: Path) -> Path:
            path = scratch / name
            make(path)
            return path

        return weights

    def torch_save(transform):
        import torch

        return lambda path: torch.save(transform(dict(m.state)), path)

    def int8(state):
        import torch

        state["fc.weight"] = state["fc.weight"].to(torch.int8)
        return state

    def half(state):

        return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}

    def pickled_module(path):
        import torch
        import torchvision

        torch.save(torchvision.models.resnet18(), path)

    def malicious(path):
        path.write_bytes(pickle.dumps({"fc.weight": Payload(path.with_name("pwned"))}, protocol=2))

    def no_permission(path):
        shutil.copy(m.pth, path)
        path.chmod(0)

    def payload_never_ran(scratch, result):
        return "the payload ran" if (scratch / "pwned").exists() else unchanged(scratch, result)

    def export_written(scratch, result):
        """(exit 0: converted, float16 widened exactly to float32)"""
        return None if (scratch / "out" / "jaxnets.json").is_file() else "no export written"

    def garbage(path):
        path.write_bytes(os.urandom(4096))

    def out_taken(scratch: Path) -> list[str]:
        taken = m.copy(m.export, scratch)
        return JAXNETS + ["convert", "resnet18", "--weights", str(m.pth), "--out", str(taken)]

    cases = [
        ("a missing weights file", convert(lambda s: s / "absent.pth"), 2,
         r"weights file not found: .*absent\.pth"),
        ("a truncated .pth", convert(written("t.pth", lambda p: (shutil.copy(m.pth, p),
                                                                  truncate(p)))), 2,
         r"t\.pth: not a readable PyTorch file"),
        ("random bytes as .pth", convert(written("r.pth", garbage)), 2,
         r"r\.pth: not a readable PyTorch file"),
        ("random bytes as .safetensors", convert(written("r.safetensors", garbage)), 2,
         r"r\.safetensors: not a readable safetensors file"),
        ("a pickle that runs os.system", convert(written("evil.pth", malicious)), 2,
         r"evil\.pth: holds pickled code \(posix\.system\) that jaxnets refuses to run",
         payload_never_ran),
        ("a pickled torch module, not a state_dict", convert(written("m.pth", pickled_module)), 2,
         r"holds a pickled torchvision\.models\.resnet\.ResNet, not a state_dict"),
        ("an int8 tensor where floats belong", convert(written("i.pth", torch_save(int8))), 2,
         r"fc\.weight holds int8 values where the model has float weights"),
        ("float16 weights (cast, as torch's .float())",
         convert(written("h.pth", torch_save(half))), 0, r"", export_written, 0),
        ("a directory given as --weights", convert(lambda s: m.copy(m.export, s)), 2,
         r"export: a directory, not a weights file"),
        ("a file without read permission", lambda s: AS_USER + convert(
            written("locked.pth", no_permission))(s), 2,
         r"locked\.pth: no permission to read this file"),
        ("weights of another architecture",
         lambda s: JAXNETS + ["convert", "resnet34", "--weights", str(m.pth), "--out",
                              str(s / "out")], 2, r"resnet34: weights do not fit"),
        ("an unknown model name",
         lambda s: JAXNETS + ["convert", "resnet19", "--weights", str(m.pth), "--out",
                              str(s / "out")], 2, r"unknown model 'resnet19'; closest: resnet18"),
        ("an --out that exists and is not empty", out_taken, 2, r"exists and is not empty"),
        ("a full disk while exporting", convert(lambda s: m.pth), 2,
         r"cannot write .*out \(File too large\)", unchanged, 1, limit_file_size(1_000_000)),
    ]  # fmt: skip
    return [Case("weights", *c) for c in cases]


def export_cases(m: Materials) -> list[Case]:
    def damaged_export(scratch: Path) -> list[str]:
        export = m.copy(m.export, scratch)
        truncate(largest_file(export / "variables"))
        return JAXNETS + ["convert", "resnet18", "--from-jax", str(export), "--out",
                          str(scratch / "out.pth")]  # fmt: skip

    def damaged_workdir_eval(scratch: Path) -> list[str]:
        workdir = m.copy(m.workdir, scratch)
        for step in (2, 4, 6):
            truncate(largest_file(workdir / "checkpoints" / str(step) / "state"))
        return JAXNETS + ["eval", "lenet5", "--weights", str(workdir), "--data",
                          f"folder:{m.folder}"]  # fmt: skip

    def not_an_export(scratch: Path) -> list[str]:
        return JAXNETS + ["convert", "resnet18", "--from-jax", str(m.folder), "--out",
                          str(scratch / "out.pth")]  # fmt: skip

    cases = [
        ("a damaged export to convert --from-jax", damaged_export, 2,
         r"export/variables: unreadable \(ValueError: OUT_OF_RANGE: Error reading", unchanged),
        ("a damaged workdir to eval", damaged_workdir_eval, 2,
         r"checkpoints/6: unreadable \(ValueError: OUT_OF_RANGE"),
        ("a folder that is no export to --from-jax", not_an_export, 2,
         r"not a jaxnets export .* nor a training workdir"),
    ]  # fmt: skip
    return [Case("exports", *c) for c in cases]


def config_cases(m: Materials) -> list[Case]:
    def train(*args: str, config: str | None = None):
        def prepare(scratch: Path) -> list[str]:
            files = {"no_getter.py": "x = 1\n", "wrong_type.py": (
                "from train.config import base_config\n\ndef get_config():\n"
                "    c = base_config()\n    c.batch_size = '64'\n    return c\n")}  # fmt: skip
            for name, text in files.items():
                (scratch / name).write_text(text)
            chosen = LENET if config is None else ["--config", config.format(scratch=scratch)]
            return TRAIN + chosen + ["--workdir", str(scratch / "w"), *args]

        return prepare

    cases = [
        ("a config file that does not exist", train(config="configs/no_such.py"), 2,
         r"--config configs/no_such\.py: no such file"),
        ("a config file that is not Python", train(config="Makefile"), 2,
         r"--config Makefile: not a Python config file"),
        ("a config file without get_config()", train(config="{scratch}/no_getter.py"), 2,
         r"no_getter\.py: defines no get_config\(\)"),
        ("a config file giving a key the wrong type", train(config="{scratch}/wrong_type.py"), 2,
         r"wrong_type\.py: get_config\(\) failed \(TypeError: Could not override field "
         r"'batch_size'"),
        ("a misspelt key", train("--config.batch_sise=3"), 2,
         r"'batch_sise' Did you mean \"batch_size\" instead of \"batch_sise\"\?"),
        ("a value of the wrong type", train("--config.batch_size=abc"), 2,
         r"flag --config\.batch_size=abc: invalid literal for int\(\)"),
        ("a boolean that is not one", train("--config.hflip=maybe"), 2,
         r"--config\.hflip=maybe: Non-boolean argument to boolean flag: maybe"),
        ("an invalid value", train("--config.learning_rate=-1"), 2,
         r"config\.learning_rate=-1\.0: expected > 0"),
        ("an unknown model", train("--config.model=resnet19"), 2,
         r"config\.model: unknown model 'resnet19'"),
    ]  # fmt: skip
    return [Case("config", *c, check=unchanged) for c in cases]


def workdir_cases(m: Materials) -> list[Case]:
    def resume(damage: Callable[[Path], None] | None = None, *args: str):
        def prepare(scratch: Path) -> list[str]:
            workdir = m.copy(m.workdir, scratch)
            if damage:
                damage(workdir / "checkpoints")
            return TRAIN + LENET + ["--workdir", str(workdir), "--config.max_steps=8", *args]

        return prepare

    def each(steps, how):
        return lambda checkpoints: [how(checkpoints / str(s)) for s in steps]

    def truncated(c):
        truncate(largest_file(c / "state"))

    def deleted(c):
        largest_file(c / "state").unlink()

    def garbled_description(c):
        for f in (c / "meta").rglob("*"):
            if f.is_file():
                f.write_text("{not json")

    def resumed_at_4_and_kept(scratch, result):
        if "resumed from" not in result.stdout or "at step 4" not in result.stdout:
            return "did not resume at step 4"
        kept = list((scratch / "workdir" / "checkpoints").glob("6.corrupt-*"))
        return None if kept else "the damaged checkpoint was not kept"

    def all_kept(scratch, result):
        kept = list((scratch / "workdir" / "checkpoints").glob("*.corrupt-*"))
        return None if len(kept) == 3 else f"{len(kept)} of 3 damaged checkpoints kept"

    def untouched(scratch, result):
        steps = sorted(p.name for p in (scratch / "workdir" / "checkpoints").iterdir())
        return None if steps == ["2", "4", "6"] else f"checkpoints now {steps}"

    def previous_kept(scratch, result):
        previous = list((scratch / "workdir").glob("previous-*/checkpoints/6"))
        return None if previous else "the previous run was not kept"

    def unwritable(scratch: Path) -> list[str]:
        (scratch / "file").write_text("")
        return TRAIN + LENET + ["--workdir", str(scratch / "file" / "w")]

    def read_only(scratch: Path) -> list[str]:
        (scratch / "ro").mkdir(mode=0o555)
        return AS_USER + TRAIN + LENET + ["--workdir", str(scratch / "ro")]

    def full_disk(scratch: Path) -> list[str]:
        return TRAIN + LENET + ["--workdir", str(scratch / "w"), "--config.max_steps=2"]

    def partial_removed(scratch, result):
        left = files(scratch / "w" / "checkpoints")
        return f"left {left}" if left else None

    def nan(scratch: Path) -> list[str]:
        return TRAIN + LENET + ["--workdir", str(scratch / "w"), "--config.learning_rate=1e12",
                                "--config.max_steps=20"]  # fmt: skip

    cases = [
        ("the latest checkpoint truncated", resume(each([6], truncated)), 0,
         r"train: checkpoint 6 is damaged \(ValueError: .*\); moved to 6\.corrupt-",
         resumed_at_4_and_kept),
        ("a data file of the latest checkpoint deleted", resume(each([6], deleted)), 0,
         r"train: checkpoint 6 is damaged \(.*\); moved to 6\.corrupt-", resumed_at_4_and_kept),
        ("the latest checkpoint's description garbled",
         resume(each([6], garbled_description)), 0,
         r"train: checkpoint 6 is damaged \(.*\); moved to 6\.corrupt-", resumed_at_4_and_kept),
        ("every checkpoint damaged", resume(each([2, 4, 6], truncated)), 2,
         r"none of its 3 checkpoints reads back .*; start afresh with a new --workdir", all_kept,
         4),  # each damaged one's report, then the error
        ("a workdir of another model", resume(None, "--config.model=resnet18",
                                              "--config.image_size=32"), 2,
         r"holds a run of model='lenet5', this config has model='resnet18'; pass "
         r"--config\.resume=False", untouched),
        ("a workdir of another image size", resume(None, "--config.image_size=28"), 2,
         r"holds a run of image_size=32, this config has image_size=28", untouched),
        ("--config.resume=False in a used workdir", resume(None, "--config.resume=False"), 0,
         r"train: config\.resume=False: the previous run moved to .*previous-", previous_kept),
        ("a workdir that cannot be created", unwritable, 2, r"file/w'?: Not a directory|"
         r"\[Errno 20\]"),
        ("a read-only workdir", read_only, 2, r"Permission denied: '.*ro/checkpoints'"),
        ("a full disk while checkpointing", full_disk, 2,
         r"cannot write checkpoint 2 in .*checkpoints \(File too large\); the partial "
         r"checkpoint was removed", partial_removed, 1, limit_file_size(100_000)),
        ("a loss that becomes NaN", nan, 2, r"loss is (nan|inf) at step \d+"),
    ]  # fmt: skip
    return [Case("workdir", *c) for c in cases]


def signal_cases(m: Materials) -> list[Case]:
    """kill -9 and SIGTERM during training: the same command resumes and finishes."""

    def interrupted(sig: int):
        def prepare(scratch: Path) -> list[str]:
            argv = TRAIN + LENET + ["--workdir", str(scratch / "w"), "--config.max_steps=400"]
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
            process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)  # fmt: skip
            deadline = time.monotonic() + 300
            while not (scratch / "w" / "checkpoints" / "4").is_dir():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"fault matrix: the run to interrupt ended: {process.stderr}")
                time.sleep(0.05)
            process.send_signal(sig)
            _, err = process.communicate(timeout=120)
            (scratch / "interrupted.txt").write_text(f"{process.returncode}\n{err}")
            return argv[:-1] + ["--config.max_steps=12"]

        return prepare

    def finished(scratch, result):
        """(exit 0: resumed from its newest checkpoint and finished)"""
        code, _, err = (scratch / "interrupted.txt").read_text().partition("\n")
        if "resumed from" not in result.stdout:
            return "did not resume"
        if code == "143" and "SIGTERM at step" not in err:
            return f"SIGTERM said: {err.strip()}"
        return None

    cases = [
        ("kill -9 during training, then the same command", interrupted(signal.SIGKILL), 0, "",
         finished, 0),
        ("SIGTERM during training, then the same command", interrupted(signal.SIGTERM), 0, "",
         finished, 0),
    ]  # fmt: skip
    return [Case("signals", *c) for c in cases]


def data_cases(m: Materials) -> list[Case]:
    def folder_run(change: Callable[[Path], None], *args: str):
        def prepare(scratch: Path) -> list[str]:
            folder = m.copy(m.folder, scratch)
            change(folder)
            return TRAIN + LENET + ["--workdir", str(scratch / "w"), "--config.max_steps=1",
                                    f"--config.dataset=folder:{folder}", "--config.batch_size=8",
                                    *args]  # fmt: skip

        return prepare

    def corrupt_jpeg(folder):
        (folder / "train" / "class_1" / "bad.jpg").write_bytes(b"\xff\xd8 no JPEG at all")

    def truncated_jpeg(folder):
        truncate(folder / "train" / "class_1" / "0.jpg", 0.3)

    def no_train(folder):
        shutil.rmtree(folder / "train")

    def every_file_unreadable(folder):
        for f in (folder / "train" / "class_2").iterdir():
            f.write_bytes(b"\xff\xd8 no JPEG at all")

    def listed(scratch, result):
        """(exit 0: trained; the file listed in skipped_files.0.txt)"""
        listing = list((scratch / "w").glob("skipped_files.*.txt"))
        return None if listing and "bad.jpg" in listing[0].read_text() else "not listed"

    def no_libjpeg_noise(scratch, result):
        return "libjpeg's noise on stderr" if "JPEG library" in result.stderr else None

    cases = [
        ("an undecodable JPEG (skipped, listed)", folder_run(corrupt_jpeg), 0, r"", listed, 0),
        ("a truncated JPEG with bad_images='error'",
         folder_run(truncated_jpeg, "--config.bad_images=error"), 2,
         r"unreadable image .*class_1/0\.jpg", no_libjpeg_noise),
        ("a folder without train/", folder_run(no_train), 2, r"no train/ subfolder"),
        ("a class whose every file is unreadable", folder_run(every_file_unreadable), 2,
         r"class_2.* no readable images"),
    ]  # fmt: skip
    return [Case("data", *c) for c in cases]


def eval_cases(m: Materials) -> list[Case]:
    def evaluate(weights: Callable[[Path], Path], data: Callable[[Path], str]):
        def prepare(scratch: Path) -> list[str]:
            return JAXNETS + ["eval", "resnet18", "--weights", str(weights(scratch)), "--data",
                              data(scratch), "--crop", "64", "--resize", "72"]  # fmt: skip

        return prepare

    def four_classes(scratch: Path) -> Path:
        import torch
        import torchvision

        torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), scratch / "r4.pth")
        return scratch / "r4.pth"

    def two_class_folder(scratch: Path) -> str:
        folder = m.copy(m.folder, scratch)
        for name in ("class_2", "class_3"):
            shutil.rmtree(folder / "val" / name)
        return f"folder:{folder / 'val'}"

    def imagenet_subset(scratch: Path) -> str:
        folder = m.copy(m.folder, scratch)
        for old, wnid in (("class_0", "n01440764"), ("class_1", "n01443537")):
            (folder / "val" / old).rename(folder / "val" / wnid)
        for name in ("class_2", "class_3"):
            shutil.rmtree(folder / "val" / name)
        return f"folder:{folder / 'val'}"

    def mapped(scratch, result):
        """(exit 0: "2 of 1000 classes mapped by name")"""
        return None if "2 of 1000 classes mapped by name" in result.stdout else result.stdout

    cases = [
        ("a 4-class head on a 2-class folder", evaluate(four_classes, two_class_folder), 2,
         r"has 2 classes, the weights' head 4"),
        ("an ImageNet-subset folder (mapped by WNID)",
         evaluate(lambda s: m.pth, imagenet_subset), 0, r"", mapped, 0),
        ("an unknown --data", evaluate(lambda s: m.pth, lambda s: "imagenet"), 2,
         r"--data 'imagenet': expected folder:PATH, tfds:NAME\[:VERSION\] or digits"),
    ]  # fmt: skip
    return [Case("eval", *c) for c in cases]


def backbone_cases(m: Materials) -> list[Case]:
    def tuned(scratch: Path) -> Path:
        """The tutorial's fine-tuned ResNet-18: fc = Sequential(Dropout, Linear(512, 64),
        ReLU, Dropout, Linear(64, 4))."""
        import torch

        state = {k: v for k, v in m.state.items() if not k.startswith("fc.")}
        state.update({"fc.1.weight": torch.zeros(64, 512), "fc.1.bias": torch.zeros(64),
                      "fc.4.weight": torch.zeros(4, 64), "fc.4.bias": torch.zeros(4)})  # fmt: skip
        torch.save(state, scratch / "tuned.pth")
        return scratch / "tuned.pth"

    def convert(*extra: str):
        return lambda scratch: JAXNETS + ["convert", "resnet18", "--weights", str(tuned(scratch)),
                                          "--out", str(scratch / "out"), *extra]  # fmt: skip

    def features(*extra: str):
        return lambda scratch: JAXNETS + ["features", "resnet50", *extra]

    def train(*extra: str):
        return lambda scratch: TRAIN + LENET + ["--workdir", str(scratch / "w"), *extra]

    cases = [
        ("an unknown node", features("--return-nodes", "layer2,layer5"), 2,
         r"resnet50: unknown node 'layer5'; closest: layer3\.5, layer4, layer3, layer2"),
        ("out_indices out of range", features("--out-indices", "1,5"), 2,
         r"index 5 is out of range; resnet50 has 5 feature stages, 0\.\.4"),
        ("a head spec that does not parse", convert("--head", "dropout:0.5,gelu,linear:N"), 2,
         r"head spec 'dropout:0\.5,gelu,linear:N': unknown layer 'gelu'"),
        ("a torch head of other shapes than the spec", convert("--head", "linear:32,relu,linear:N"),
         2, r"the weights' head \(fc\.1\.weight \(64, 512\), fc\.4\.weight \(4, 64\)\) does "
         r"not fit head=linear:32,relu,linear:N"),
        ("a custom torch head without its spec", convert(), 2,
         r"does not fit torchvision's head \(fc\.weight \(4, 512\)\); pass the head spec"),
        ("freezing a layer the model lacks", train("--config.freeze=layer1"), 2,
         r"config\.freeze: lenet5: no layer 'layer1' to freeze"),
        ("freezing every layer", train("--config.freeze=features,classifier"), 2,
         r"lenet5: freezing features,classifier leaves nothing to train"),
        ("a config head spec that does not parse", train("--config.head=linear:N,relu"), 2,
         r"config\.head: head spec 'linear:N,relu': the last layer must be linear:N"),
    ]  # fmt: skip
    return [Case("backbones", *c, check=unchanged) for c in cases]


GROUPS = {"weights": weights_cases, "exports": export_cases, "config": config_cases,
          "workdir": workdir_cases, "signals": signal_cases, "data": data_cases,
          "eval": eval_cases, "backbones": backbone_cases}  # fmt: skip


# ----------------------------------------------------------------------------------------------


def judge(case: Case, scratch: Path) -> Outcome:
    start = time.perf_counter()
    result = run(case.prepare(scratch), preexec_fn=case.preexec)
    seconds = time.perf_counter() - start
    lines = result.stderr.splitlines()
    said = lines[-1] if lines else ""
    why = None
    if result.returncode != case.code:
        why = f"exit {result.returncode}, expected {case.code}: {said[:200]}"
    elif len(lines) != case.lines:
        why = f"{len(lines)} stderr lines, expected {case.lines}: {result.stderr[-600:]}"
    elif case.says and not re.search(case.says, said):
        why = f"said {said[:300]!r}"
    else:
        why = case.check(scratch, result)
    return Outcome(case, why is None, why or "", said, seconds)


def report(outcomes: list[Outcome], markdown: bool) -> str:
    out = io.StringIO()
    if markdown:
        out.write("| group | case | exit | what jaxnets says | |\n|---|---|---:|---|---|\n")
        for o in outcomes:
            said = o.said.replace("|", "\\|").replace("`", "'") or o.case.check.__doc__
            said = re.sub(r"/tmp/fault-matrix-\w+/(\d+|materials)/", "", said)
            mark = "pass" if o.passed else f"FAIL: {o.why}"
            out.write(f"| {o.case.group} | {o.case.name} | {o.case.code} | `{said[:160]}` | "
                      f"{mark} |\n")  # fmt: skip
    else:
        for o in outcomes:
            mark = "pass" if o.passed else "FAIL"
            out.write(f"{mark:4}  {o.case.group:8} {o.case.name:50} {o.seconds:5.1f}s\n")
            if not o.passed:
                out.write(f"      {o.why}\n")
    passed = sum(o.passed for o in outcomes)
    out.write(f"\n{passed}/{len(outcomes)} cases pass\n")
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"groups, comma-separated: {', '.join(GROUPS)}")
    parser.add_argument("--markdown", action="store_true", help="print the README's table")
    args = parser.parse_args()
    groups = [g for g in args.only.split(",") if g] or list(GROUPS)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s) {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    root = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    try:
        materials = Materials(root / "materials")
        outcomes = []
        for group in groups:
            for case in GROUPS[group](materials):
                scratch = root / str(len(outcomes))
                scratch.mkdir()
                outcome = judge(case, scratch)
                outcomes.append(outcome)
                print(f"{'pass' if outcome.passed else 'FAIL'}  {group}: {case.name}",
                      file=sys.stderr, flush=True)  # fmt: skip
        print(report(outcomes, args.markdown), end="")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
