"""`python killed_while_saving.py POINT STEP TRAIN-ARGS...`: runs `python -m train TRAIN-ARGS`
and SIGKILLs it at POINT of writing checkpoint STEP, as a crash or a pre-empted host would.

POINT (in the order orbax passes them, jaxnets/checkpoints.save):
  writing        as soon as the first array file of the checkpoint appears on disk
  before-commit  all arrays written, before orbax writes commit_success.txt
  before-rename  before the temporary directory is renamed to STEP
  after-rename   just after the rename, before orbax's own bookkeeping that follows
"""

import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path

from orbax.checkpoint._src.path import async_path

POINTS = ("writing", "before-commit", "before-rename", "after-rename")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_when_data_appears(checkpoints: Path, step: int) -> None:
    def watch():
        while True:
            for tmp in checkpoints.glob(f"{step}.orbax-checkpoint-tmp*"):
                if any(f.is_file() for f in tmp.glob("state*/ocdbt.process_0/d/*")):
                    die()
            time.sleep(0.0005)

    threading.Thread(target=watch, daemon=True).start()


def kill_in_finalize(point: str, step: int) -> None:
    write_text, rename = async_path.write_text, async_path.rename

    async def write_text_then_maybe_die(path, text):
        if (
            point == "before-commit"
            and path.name == "commit_success.txt"
            and (path.parent.name.startswith(f"{step}.orbax-checkpoint-tmp"))
        ):
            die()
        return await write_text(path, text)

    async def rename_and_maybe_die(src, dst):
        if point == "before-rename" and dst.name == str(step):
            die()
        result = await rename(src, dst)
        if point == "after-rename" and dst.name == str(step):
            die()
        return result

    async_path.write_text, async_path.rename = write_text_then_maybe_die, rename_and_maybe_die


def main() -> None:
    point, step, train_args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    assert point in POINTS, point
    workdir = Path(train_args[train_args.index("--workdir") + 1]).absolute()
    if point == "writing":
        kill_when_data_appears(workdir / "checkpoints", step)
    else:
        kill_in_finalize(point, step)
    sys.argv = ["train", *train_args]
    runpy.run_module("train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
