"""python -m train.sweep --config configs/NAME.py --workdir DIR --space KEY=SPEC ... --trials N

  [--storage URL] [--study NAME] [--pruner median|hyperband|none] [--metric top1|loss]
  [--sampler-seed S] [--config.KEY=VALUE ...]
python -m train.sweep --report DIR [--storage URL] [--study NAME]
"""

import shutil
import sys
import warnings
from pathlib import Path

from train import entry

entry.start("sweep", {"train": "the training program", "sweep": "python -m train.sweep"})

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from train.sweep.study import METRICS, PRUNERS  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "the sweep's directory: study.db, trials/, plots/")
_SPACE = flags.DEFINE_multi_string(
    "space", None, "KEY=log:LOW:HIGH, KEY=LOW:HIGH or KEY=choice:A,B (repeat for each key; "
    "replaces config.sweep.space)"
)  # fmt: skip
_TRIALS = flags.DEFINE_integer("trials", None, "finished trials the study should hold in all")
_STORAGE = flags.DEFINE_string("storage", "", "SQLAlchemy URL ('' : sqlite in DIR/study.db)")
_STUDY = flags.DEFINE_string("study", "sweep", "the study's name in the storage")
_PRUNER = flags.DEFINE_enum("pruner", "median", PRUNERS, "stops hopeless trials between epochs")
_METRIC = flags.DEFINE_enum("metric", "top1", list(METRICS), "the evaluation metric optimized")
_SAMPLER_SEED = flags.DEFINE_integer("sampler_seed", None, "TPE's seed (default: random)")
_REPORT = flags.DEFINE_string("report", None, "print the report of the sweep in this DIR")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial instead
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    from train.sweep import report
    from train.sweep import study as study_lib

    if _REPORT.value:
        workdir = Path(_REPORT.value)
        study = _load_for_report(optuna, study_lib, study_lib.storage_url(workdir, _STORAGE.value))
        print(report.report(study, workdir))
        return 0
    sweep = _sweep_from_flags()
    entry.import_tensorflow()
    from train.train import TrainingInterrupted

    created = not sweep.workdir.exists()
    try:
        sweep.workdir.mkdir(parents=True, exist_ok=True)
        study = study_lib.open_study(sweep)
    except BaseException:
        if created:  # a study that could not be opened leaves nothing behind
            shutil.rmtree(sweep.workdir, ignore_errors=True)
        raise
    try:
        study_lib.Worker(sweep, study, say=study_lib.say).run()
    except TrainingInterrupted as e:
        print(f"sweep: {e}; the same command continues the study", file=sys.stderr)
        return 143
    except KeyboardInterrupt:  # between trials: no trial of this worker's is left running
        print("sweep: interrupted; the same command continues the study", file=sys.stderr)
        return 130
    except (OSError, ImportError, optuna.exceptions.OptunaError, _database_error()) as e:
        print(f"sweep: error: {entry.one_line(e)}", file=sys.stderr)
        return 2
    print(report.report(study, sweep.workdir))
    return 0


def _sweep_from_flags():
    import jax

    from train.sweep import space, study

    if _CONFIG.value is None or not _WORKDIR.value:
        raise ValueError("--config and --workdir are required (or --report DIR)")
    config = _CONFIG.value
    params = space.parse(_SPACE.value or config.sweep.space, config)
    if _TRIALS.value is None or _TRIALS.value < 1:
        raise ValueError("--trials N: expected N >= 1, the finished trials the study should hold")
    from train.config import validate

    validate(config, jax.device_count())
    space.check(params, config, jax.device_count())
    workdir = Path(_WORKDIR.value).absolute()
    return study.Sweep(
        config=config, workdir=workdir, params=params, trials=_TRIALS.value,
        storage=study.storage_url(workdir, _STORAGE.value), study_name=_STUDY.value,
        pruner=_PRUNER.value, metric=_METRIC.value, sampler_seed=_SAMPLER_SEED.value,
    )  # fmt: skip


def _load_for_report(optuna, study_lib, url: str):
    """The study named by --study, or the storage's only study."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ValueError(f"--report: no study database {url.removeprefix('sqlite:///')}")
    storage = study_lib.open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    name = _STUDY.value if _STUDY.value in names or len(names) != 1 else names[0]
    if name not in names:
        shown = study_lib.without_password(url)
        raise ValueError(f"--report: {shown} has no study {name!r} (it has {names or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)


def _database_error():
    from sqlalchemy.exc import SQLAlchemyError

    return SQLAlchemyError


def run():
    entry.run_app("sweep", main)


if __name__ == "__main__":
    run()
