"""python -m train --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jaxnets
from jaxnets import extras, stderr

jaxnets.use_fast_cpu_flags()  # the entry point's choice, made before JAX starts
try:
    extras.require("train", "the training program")
except extras.MissingExtra as e:
    print(f"train: error: {e}", file=sys.stderr)
    sys.exit(2)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and summary go")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    stderr.import_quietly("tensorflow")  # its oneDNN start-up lines ignore every log level
    from train.train import NonFiniteLoss, TrainingInterrupted, train_and_evaluate

    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except TrainingInterrupted as e:
        print(f"train: {e}", file=sys.stderr)
        return 143
    except (ValueError, OSError, NonFiniteLoss) as e:  # OSError: an unwritable workdir, a full disk
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    import jax

    if jax.process_index() != 0:
        return 0  # process 0 reports for all
    print(
        f"done: top1 {summary['top1']:.4f} top5 {summary['top5']:.4f} loss {summary['loss']:.4f} "
        f"macro-F1 {summary['macro_f1']:.4f} | {summary['steps']} steps, "
        f"{summary['images_per_sec']:.0f} img/s, {summary['wall_s']:.0f} s -> {_WORKDIR.value}"
    )
    return 0


def check_config_file(argv: list[str]) -> None:
    """Fails in one line, before flag parsing, for a --config file that is missing, is not
    Python, cannot be imported, has no get_config(), or whose get_config() fails (a value of
    the wrong type for a key)."""
    import importlib.util
    from pathlib import Path

    values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    values += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    for value in values:
        path, _, argument = value.partition(":")  # config_flags allows FILE:ARGUMENT
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--config {value}: no such file")
        try:
            compile(path.read_bytes(), str(path), "exec")
        except (SyntaxError, ValueError) as e:
            raise ValueError(f"--config {value}: not a Python config file ({e})") from None
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # an import the file cannot make, a name it misspells
            raise ValueError(f"--config {value}: {_failure(e)}") from None
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ValueError(f"--config {value}: defines no get_config()")
        try:
            get_config(argument) if argument else get_config()
        except Exception as e:  # a value of the wrong type for a key, above all
            raise ValueError(f"--config {value}: get_config() failed ({_failure(e)})") from None


def run():
    """Entry point that turns config-file and flag-parsing errors (unknown key, bad value) into
    one line."""
    try:
        check_config_file(sys.argv[1:])
        app.run(main, flags_parser=_parse_flags)
    except SystemExit:
        raise
    except (AttributeError, KeyError, ValueError, TypeError, flags.Error) as e:
        print(f"train: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's own parser, whose errors would take two lines and exit 1."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"train: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


def _failure(error: Exception) -> str:
    return f"{type(error).__name__}: {_one_line(error)}"


def _one_line(error: Exception) -> str:
    """The error's message on one line. An unknown config key arrives as the repr() of a
    two-line KeyError message ("'key'\\nDid you mean ...?"): that one is unquoted and joined."""
    import ast

    text = str(error).strip()
    # absl's boolean flags end their message with a tuple: "...: ('Non-boolean argument ...', 'x')"
    head, _, tail = text.partition(": (")
    if tail.endswith(")"):
        try:
            return f"{head}: " + ": ".join(map(str, ast.literal_eval(f"({tail}")))
        except (ValueError, SyntaxError):
            pass
    if text[:1] in ("'", '"'):
        try:
            return " ".join(str(ast.literal_eval(text)).split("\n"))
        except (ValueError, SyntaxError):
            pass
    return (text.splitlines() or [type(error).__name__])[0]


if __name__ == "__main__":
    run()
