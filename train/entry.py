"""What the training program's entry points share (`python -m train`, `python -m train.sweep`):
the start-up every one makes before JAX starts, and config-file and flag errors in one line."""

from __future__ import annotations

import os
import sys

RECOVERABLE = (AttributeError, KeyError, ValueError, TypeError)

# The persistent compilation cache's bound: JAX evicts the least recently used programs beyond
# it (a ResNet-50 train step is about 20 MB). A bound also turns on the cache's file lock, so
# the workers of a sweep never read each other's half-written entries.
COMPILATION_CACHE_BYTES = 4 << 30


def start(prog: str, extras_needed: dict[str, str]) -> None:
    """The entry point's global choices, made before JAX starts: quiet TensorFlow, the measured
    CPU flags, and a one-line exit 2 when an extra (name -> purpose) is not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import jaxnets
    from jaxnets import extras

    jaxnets.use_fast_cpu_flags()
    use_compilation_cache(os.environ)
    try:
        for extra, purpose in extras_needed.items():
            extras.require(extra, purpose)
    except extras.MissingExtra as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)


def use_compilation_cache(environ) -> str | None:
    """Turns on JAX's persistent compilation cache for this process and the ones it starts,
    in $XDG_CACHE_HOME/jaxnets/xla (~/.cache/jaxnets/xla); returns that directory.

    A run compiles the same programs as the run before it whenever its config is the same (a
    second run of a config, a resumed run; a sweep's trials share their initialization):
    ResNet-18's initialization, train step and eval step take 10 s of XLA compilation at
    32x32 on this project's 2-core CPU, and a cached program loads in a fraction of a second.
    Compiled programs are the same ones either way: the cache is keyed by the program, the
    XLA flags and the jaxlib version. Left alone where JAX_COMPILATION_CACHE_DIR is set
    (the user's own cache, or the test suite's); JAXNETS_COMPILATION_CACHE=0 turns it off,
    and a directory that cannot be created or written (a read-only home) leaves it off rather
    than have JAX warn at every compilation.
    """
    if "JAX_COMPILATION_CACHE_DIR" in environ or environ.get("JAXNETS_COMPILATION_CACHE") == "0":
        return None
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "jaxnets", "xla")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK):
        return None
    environ["JAX_COMPILATION_CACHE_DIR"] = directory
    environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(COMPILATION_CACHE_BYTES))
    return directory


def import_tensorflow():
    """TensorFlow (for tf.data), imported with its start-up lines off the terminal
    (jaxnets.stderr) and without Keras.

    TensorFlow 2.16+ imports keras.src.optimizers as it starts, to register Keras's optimizers
    for loading SavedModels; that import brings Keras 3 and scikit-learn and took 3.9 of
    TensorFlow's 11.8 s of import on this project's 2-core CPU. TensorFlow goes on without it
    when it cannot be imported, so it is blocked during TensorFlow's import only: `tf.keras`
    still loads on first use, and a later `import keras` registers the optimizers itself.
    """
    from jaxnets import stderr

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    blocked = "keras.src.optimizers" not in sys.modules
    if blocked:
        sys.modules["keras.src.optimizers"] = None  # importing it raises ImportError
    try:
        return stderr.import_quietly("tensorflow")
    finally:
        if blocked and sys.modules.get("keras.src.optimizers", 0) is None:
            del sys.modules["keras.src.optimizers"]


def run_app(prog: str, main) -> None:
    """absl's app.run(main), with config-file and flag-parsing errors (an unknown key, a bad
    value) in one line and exit status 2."""
    from absl import app, flags

    def parse_flags(argv: list[str]) -> list[str]:
        try:  # absl's own errors take two lines and exit 1
            return flags.FLAGS(argv)
        except flags.Error as e:
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
            sys.exit(2)

    try:
        check_config_file(sys.argv[1:])
        app.run(main, flags_parser=parse_flags)
    except SystemExit:
        raise
    except (*RECOVERABLE, flags.Error) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def expand_torchvision_args(argv: list[str], prog: str) -> list[str]:
    """--torchvision-args "FLAGS" (a command line of torchvision's reference trainer) becomes
    --config=train/torchvision_args.py:FLAGS; the flags that have no effect here are listed,
    and one with no equivalent stops the program in one line (train/torchvision_args.py)."""
    from train import torchvision_args

    given = [i for i, a in enumerate(argv) if a.split("=", 1)[0] == "--torchvision-args"]
    if not given:
        return argv
    i = given[0]
    if "=" in argv[i]:
        command, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1 :]
    elif i + 1 < len(argv):
        command, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        command, rest = None, argv
    problem = None
    if command is None:
        problem = "--torchvision-args needs the flags as one argument"
    elif any(a.split("=", 1)[0] == "--config" for a in rest):
        problem = "--torchvision-args and --config: give one of them"
    else:
        try:
            torchvision_args.config_from_command(command)
            ignored = torchvision_args.ignored_flags(command)
        except ValueError as e:
            problem = f"--torchvision-args: {e}"
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        sys.exit(2)
    if ignored:
        print(f"{prog}: --torchvision-args: no effect here: {'; '.join(ignored)}")
    return [f"--config={torchvision_args.__file__}:{command}", *rest]


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
            raise ValueError(f"--config {value}: {failure(e)}") from None
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ValueError(f"--config {value}: defines no get_config()")
        try:
            get_config(argument) if argument else get_config()
        except Exception as e:  # a value of the wrong type for a key, above all
            raise ValueError(f"--config {value}: get_config() failed ({failure(e)})") from None


def failure(error: Exception) -> str:
    return f"{type(error).__name__}: {one_line(error)}"


def one_line(error: Exception) -> str:
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
