"""python -m train --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]
python -m train --torchvision-args "TRAIN.PY FLAGS" --workdir DIR [--config.KEY=VALUE ...]"""

import sys

from train import entry

entry.start("train", {"train": "the training program"})

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "a configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and summary go")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    from train.data import needs_tensorflow

    if needs_tensorflow(_CONFIG.value):
        entry.import_tensorflow()  # quietly, before anything else imports it
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


def run():
    sys.argv[1:] = entry.expand_torchvision_args(sys.argv[1:], "train")
    entry.run_app("train", main)


if __name__ == "__main__":
    run()
