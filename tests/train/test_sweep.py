"""python -m train.sweep: the space spec and its one-line errors, a sweep on the digits with its
report, a pruner that prunes, kill-and-resume, and two workers sharing one SQLite study.

The trials are LeNet-5 on the digits at batch 128 (11 steps an epoch), seconds each."""

import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import REPO, load_config
from optuna.trial import TrialState

from train.config import base_config, validate
from train.sweep import space
from train.sweep.space import SpaceError

LENET = REPO / "configs" / "digits_lenet5.py"
SMALL = ["--config.batch_size=128", "--config.progress_bar=False", "--config.warmup_epochs=0"]


def sweep_command(workdir, *args, config=LENET):
    return [sys.executable, "-m", "train.sweep", "--config", str(config), "--workdir",
            str(workdir), *SMALL, *args]  # fmt: skip


def run_sweep(workdir, *args):
    return subprocess.run(sweep_command(workdir, *args), capture_output=True, text=True, cwd=REPO)


def load(workdir, name="sweep"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'study.db'}")


def test_space_specs_are_typed_as_their_keys():
    params = space.parse(
        ["learning_rate=log:1e-4:1e-1", "label_smoothing=0:0.2", "batch_size=choice:32,64,128",
         "schedule=choice:cosine,step", "hflip=choice:true,false", "num_epochs=log:1:8"],
        base_config(),
    )  # fmt: skip
    lr, smoothing, batch, schedule, hflip, epochs = params
    assert (lr.kind, lr.low, lr.high) == ("log", 1e-4, 1e-1)
    assert (smoothing.kind, smoothing.low, smoothing.high) == ("uniform", 0.0, 0.2)
    assert batch.choices == (32, 64, 128) and schedule.choices == ("cosine", "step")
    assert hflip.choices == (True, False)
    assert (epochs.kind, type(epochs.low)) == ("log", int)  # an int key: log-spaced integers
    assert [space.parse([p.spec()], base_config())[0] for p in params] == params  # round trip
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = {p.key: p.suggest(trial) for p in params}
        assert 1e-4 <= values["learning_rate"] <= 0.1 and values["batch_size"] in (32, 64, 128)
        assert isinstance(values["num_epochs"], int) and 1 <= values["num_epochs"] <= 8
        config = space.apply(base_config(), values)
        assert config.batch_size == values["batch_size"] and base_config().batch_size == 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("learnig_rate=log:1e-4:1e-1", "config has no key 'learnig_rate'"),
        ("learning_rate=log:0:1e-1", "log: needs bounds > 0"),
        ("learning_rate=log:-1:1e-1", "log: needs bounds > 0"),
        ("batch_size=choice:", "choice: needs at least one value"),
        ("batch_size=choice:32,6.5", "'6.5' is not a int"),
        ("learning_rate=0.1:0.01", "the lower bound must be below the upper one"),
        ("learning_rate", "expected KEY=log:LOW:HIGH"),
        ("schedule=0:1", "expected choice:A,B,... (a str)"),
        ("color_jitter=choice:0.1", "config.color_jitter is a tuple"),
        ("sweep=choice:1", "config.sweep is a ConfigDict"),
        ("schedule=choice:cosine,linear", "config.schedule='linear': expected one of"),
        ("label_smoothing=0:1.5", "config.label_smoothing=1.5: expected in [0, 1)"),
        ("batch_size=choice:64,100", "config.batch_size=100 is not divisible by the 8 devices"),
    ],
)
def test_bad_specs_are_one_line(spec, message):
    config = base_config()
    with pytest.raises(SpaceError, match=re.escape(message)) as e:
        space.check(space.parse([spec], config), config, device_count=8)
    assert "\n" not in str(e.value) and spec in str(e.value)
    with pytest.raises(SpaceError, match="given twice"):
        space.parse(["learning_rate=0.1:1", "learning_rate=log:0.1:1"], config)
    with pytest.raises(SpaceError, match="no search space: give --space KEY=SPEC or set config"):
        space.parse((), config)


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path):
    from train.sweep.study import open_storage

    for url, message in [
        ("nonsense", "--storage nonsense: Could not parse SQLAlchemy URL"),
        (f"sqlite:///{tmp_path}/absent/study.db", "unable to open database file"),
        ("mysql+pymysql://me:secret@127.0.0.1:1/db", "mysql+pymysql://me:***@127.0.0.1:1/db: its "
         "database driver is not installed"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)) as e:
            open_storage(url)
        assert "\n" not in str(e.value) and "secret" not in str(e.value)


def test_bad_command_lines_fail_in_one_line_before_training(tmp_path):
    # The spec errors themselves: test_bad_specs_are_one_line; here the command's exit and
    # stderr, for a spec and for a storage (its password hidden).
    for args, message in [
        (["--space", "learning_rate=log:0:1", "--trials", "4"], "log: needs bounds > 0"),
        (["--space", "learning_rate=0.01:0.1", "--trials", "4", "--storage",
          "mysql+pymysql://me:secret@127.0.0.1:1/db"],
         "--storage mysql+pymysql://me:***@127.0.0.1:1/db: its database driver is not installed"),
    ]:  # fmt: skip
        result = run_sweep(tmp_path / "w", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert lines[0].startswith("sweep: error: ") and message in lines[0]
        assert not (tmp_path / "w").exists()  # nothing written, no study started


def run_in_process(workdir, trials, space_specs, enqueue=(), **config_overrides):
    """A sweep through the same objects the command builds, in this process; `enqueue`: values
    of trials to run right after the baseline."""
    from train.sweep import study as study_lib

    config = load_config(LENET)
    config.update_from_flattened_dict({"batch_size": 128, "progress_bar": False,
                                       "warmup_epochs": 0.0, **config_overrides})  # fmt: skip
    params = space.parse(space_specs, config)
    sweep = study_lib.Sweep(
        config=config, workdir=workdir, params=params, trials=trials,
        storage=study_lib.storage_url(workdir, ""), study_name="sweep", pruner="median",
        metric="top1", sampler_seed=0,
    )  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    study = study_lib.open_study(sweep)
    for values in enqueue:
        study.enqueue_trial(values)
    lines = []
    study_lib.Worker(sweep, study, say=lines.append).run()
    return study, lines


@pytest.mark.slow  # four short training runs
def test_a_sweep_prunes_a_hopeless_trial_and_reports(tmp_path):
    from train.sweep import report

    # The baseline (the config's own values) finishes first; then a trial with a useless
    # learning rate falls below the median of epoch 1 and is stopped there, its workdir kept.
    study, lines = run_in_process(
        tmp_path, 4, ["learning_rate=log:1e-7:1e-1", "weight_decay=log:1e-6:1e-3"],
        enqueue=[{"learning_rate": 1e-7, "weight_decay": 5e-4}], num_epochs=2,
        **{"sweep.pruner_startup_trials": 1},
    )  # fmt: skip
    trials = study.trials
    assert len(trials) == 4 and len({tuple(t.params.values()) for t in trials}) == 4
    baseline, hopeless = trials[:2]
    assert baseline.user_attrs["baseline"] and baseline.state == TrialState.COMPLETE
    assert baseline.params == {"learning_rate": 0.05, "weight_decay": 5e-4}
    assert hopeless.state == TrialState.PRUNED and list(hopeless.intermediate_values) == [1]
    assert hopeless.user_attrs["steps"] == 11  # one epoch of two
    assert "trial 1: pruned after 1 epochs" in "\n".join(lines)
    for t in trials:  # each a normal training run in DIR/trials/NNNN
        workdir = tmp_path / "trials" / f"{t.number:04d}"
        assert t.user_attrs["workdir"] == str(workdir) and (workdir / "summary.json").is_file()
        assert t.state == TrialState.PRUNED or t.user_attrs["steps"] == 22

    text = report.report(study, tmp_path)
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"best: trial {best.number}, top1 {best.value:.4f}" in text
    assert "baseline (the config's own values): trial 0" in text
    assert "pruning skipped" in text
    best_config = load_config(tmp_path / "best_config.py")  # runs as is with python -m train
    validate(best_config, device_count=1)
    assert best_config.learning_rate == best.params["learning_rate"]
    assert best_config.weight_decay == best.params["weight_decay"]
    assert (best_config.model, best_config.batch_size) == ("lenet5", 128)
    for name in report.PLOTS:
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same study with another space is refused: it is kept for what it was.
    with pytest.raises(ValueError, match="was started with another space"):
        run_in_process(tmp_path, 4, ["learning_rate=log:1e-4:1e-1"], num_epochs=2)


@pytest.mark.slow  # three sweep processes, two of them killed
def test_a_killed_sweep_continues_its_study_and_resumes_the_interrupted_trials(tmp_path):
    args = ["--space", "learning_rate=log:1e-2:1e-1", "--trials", "3", "--sampler_seed", "0",
            "--config.num_epochs=2", "--config.sweep.pruner_startup_trials=9"]  # fmt: skip

    def killed_after_epoch_1(trial: int, signum: int):
        """Starts the sweep and sends `signum` once trial `trial` has its epoch-1 checkpoint."""
        process = subprocess.Popen(sweep_command(tmp_path, *args), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        checkpoint = tmp_path / "trials" / f"{trial:04d}" / "checkpoints" / "11"
        deadline = time.monotonic() + 300
        while not checkpoint.is_dir() and process.poll() is None:
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.1)
        process.send_signal(signum)
        return process.wait(timeout=120), process.stderr.read()

    # SIGTERM during trial 1 (trial 0 the baseline): a checkpoint is written, the trial asked
    # again. The next run resumes it as trial 2 and is SIGKILLed during trial 3.
    status, stderr = killed_after_epoch_1(1, signal.SIGTERM)
    assert status == 143 and "the same command continues the study" in stderr, stderr[-2000:]
    status, _ = killed_after_epoch_1(3, signal.SIGKILL)
    assert status == -signal.SIGKILL
    # Trial 3 is still RUNNING: this run waits for its heartbeat to go silent, then resumes it.
    result = run_sweep(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.COMPLETE]  # fmt: skip
    for retry, original in [(2, 1), (4, 3)]:
        assert trials[retry].system_attrs["failed_trial"] == original
        assert trials[retry].params == trials[original].params
        assert trials[retry].user_attrs["workdir"] == str(tmp_path / "trials" / f"{original:04d}")
        assert trials[retry].user_attrs["steps"] == 22  # two epochs in all, the first resumed
    # Epoch 1's report, inherited from the trial SIGTERM stopped (SIGKILL may land between the
    # checkpoint and the report).
    assert 1 in trials[2].intermediate_values
    assert "resumed from" in result.stdout and "at step 11" in result.stdout
    table = result.stdout[result.stdout.index("trial  state") :].splitlines()
    assert [line.split()[1] for line in table[1:6]] == ["complete", "retried", "complete",
                                                        "retried", "complete"]  # fmt: skip
    assert "3 finished trials: 3 complete, 0 pruned, 0 failed" in result.stdout


@pytest.mark.slow  # two sweep processes side by side
def test_two_workers_share_one_study_and_run_disjoint_trials(tmp_path):
    args = ["--space", "learning_rate=log:1e-3:1e-1", "--trials", "4", "--config.num_epochs=1"]
    workers = [
        subprocess.Popen(sweep_command(tmp_path, *args, f"--sampler_seed={seed}"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]  # fmt: skip
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    ran = [
        {int(line.split()[2].rstrip(":")) for line in err.splitlines() if "-> " in line}
        for _, err in outputs
    ]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # each ran trials, never the same one
    trials = load(tmp_path).trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert ran[0] | ran[1] == {0, 1, 2, 3}
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == [f"000{i}" for i in range(4)]


def test_the_sweep_without_its_extra_says_which_to_install():
    blocked = "import runpy, sys\nsys.modules['optuna'] = None\nsys.argv[0] = 'sweep'\n"
    done = subprocess.run(
        [sys.executable, "-c", blocked + "runpy.run_module('train.sweep', run_name='__main__')",
         "--config", str(LENET), "--workdir", "/nonexistent", "--trials", "1"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "sweep: error: python -m train.sweep needs the [sweep] extra (no module 'optuna')" in (
        done.stderr
    )
    assert "pip install 'jaxnets[sweep]'" in done.stderr


OPEN_WHEN_TOLD = """
import pathlib, sys, time
from train.sweep.study import open_storage
go = pathlib.Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
open_storage(sys.argv[1])
"""


def test_workers_opening_a_new_database_at_once_both_get_it(tmp_path):
    """Two workers starting together on a new SQLite study race to create its tables: without
    the second attempt one of them failed with "table ... already exists" nearly every time
    (29 of 30 tries with plain RDBStorage)."""
    for attempt in range(3):
        url, go = f"sqlite:///{tmp_path}/study{attempt}.db", tmp_path / f"go{attempt}"
        workers = [
            subprocess.Popen([sys.executable, "-c", OPEN_WHEN_TOLD, url, str(go)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]  # fmt: skip
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        go.touch()
        results = [worker.communicate(timeout=120) for worker in workers]
        assert [w.returncode for w in workers] == [0, 0], results
