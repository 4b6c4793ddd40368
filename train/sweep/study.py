"""The study and the trials a worker runs in it.

The study lives in a database (SQLite in DIR/study.db unless --storage names another), so a
killed sweep continues where it stopped and several workers can share it. Each trial is a normal
training run in DIR/trials/NNNN/ reporting its per-epoch evaluation to the pruner. A trial that
did not finish (SIGTERM, an error, or a worker killed outright, noticed when its heartbeat goes
silent) is asked again with the same values and resumes from its own checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from train.sweep import space as space_lib

METRICS = {"top1": "maximize", "loss": "minimize"}
PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_S = 5  # a running trial's worker writes a heartbeat this often
GRACE_S = 15  # after this long without one, its trial is failed and asked again
RETRIES = 3  # times one trial is asked again before it counts as failed for good
CREATE_ATTEMPTS = 5  # tries at opening a new database whose tables another worker creates
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyMismatch(ValueError):
    """The study in the storage was started with another config, space or metric."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What one `python -m train.sweep` invocation asks for."""

    config: object  # the training config every trial starts from
    workdir: Path
    params: list[space_lib.Param]
    trials: int  # finished trials the study should hold in all, over every worker
    storage: str
    study_name: str
    pruner: str
    metric: str
    sampler_seed: int | None = None

    def trial_dir(self, number: int) -> Path:
        return self.workdir / "trials" / f"{number:04d}"


def storage_url(workdir: Path, storage: str) -> str:
    return storage or f"sqlite:///{(workdir / 'study.db').absolute()}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's database with heartbeats on: a trial whose worker dies is failed after
    GRACE_S and asked again (a new WAITING trial with the same values).

    Raises:
      ValueError: in one line naming the URL (its password hidden), for a URL SQLAlchemy cannot
        parse, a database it cannot open, or a driver that is not installed.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _storage_creating_tables_once(url)
    except ImportError as e:  # optuna's own message does not name the module
        missing = f" ({e.__cause__})" if e.__cause__ else ""
        raise ValueError(
            f"--storage {without_password(url)}: its database driver is not installed{missing}; "
            "e.g. pip install 'psycopg[binary]' for postgresql://, PyMySQL for mysql+pymysql://"
        ) from None
    except (SQLAlchemyError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--storage {without_password(url)}: {reason}") from None


def _storage_creating_tables_once(url: str) -> optuna.storages.RDBStorage:
    """RDBStorage, asked again when another worker created the tables of a new database
    while this one was creating them too (SQLite reports "table ... already exists"; the
    second attempt finds them and creates nothing)."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    # SQLite: workers wait for each other's writes instead of failing with "database is locked".
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with _experimental_api():  # heartbeat_interval
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S, heartbeat_stale_trial_callback=_retry,
                )  # fmt: skip
        except (OperationalError, ProgrammingError, IntegrityError) as e:
            concurrent = "already exists" in str(e) or isinstance(e, IntegrityError)
            if not concurrent or attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def without_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _retry(study: optuna.Study, trial) -> None:
    """Asks `trial` again: a WAITING trial with its values, its epochs reported so far and its
    retry history, run before any new one (at most RETRIES times)."""
    with _experimental_api():
        retry = RetryHeartbeatStaleTrialCallback(
            max_retry=RETRIES, inherit_intermediate_values=True
        )
        retry(study, trial)


def make_pruner(name: str, config) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.sweep.pruner_startup_trials,
            n_warmup_steps=config.sweep.pruner_first_epoch,  # epochs are reported from 1
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.num_epochs)
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep) -> optuna.Study:
    """Creates the study, or loads it when the storage has it: then it must have been started
    with the same config, space and metric (a mismatch is one line naming the difference)."""
    identity = {
        "config": json.loads(sweep.config.to_json_best_effort()),
        "space": [p.spec() for p in sweep.params],
        "metric": sweep.metric,
    }
    study = optuna.create_study(
        storage=open_storage(sweep.storage), study_name=sweep.study_name, load_if_exists=True,
        direction=METRICS[sweep.metric], pruner=make_pruner(sweep.pruner, sweep.config),
        sampler=optuna.samplers.TPESampler(
            seed=sweep.sampler_seed, n_startup_trials=sweep.config.sweep.sampler_startup_trials
        ),
    )  # fmt: skip
    saved = study.user_attrs.get("identity")
    if saved is None:
        study.set_user_attr("identity", identity)
        _enqueue_baseline(study, sweep)
    elif saved != identity:
        raise StudyMismatch(
            f"study {sweep.study_name!r} in {sweep.storage} was started with another "
            f"{_first_difference(saved, identity)}; use another --study or --workdir"
        )
    return study


def _first_difference(saved: dict, now: dict) -> str:
    for key in ("metric", "space"):
        if saved[key] != now[key]:
            return f"{key}: {saved[key]} (this run: {now[key]})"
    old, new = saved["config"], now["config"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"config: {key}={old.get(key)!r} (this run: {new.get(key)!r})"
    return "config"


def _enqueue_baseline(study: optuna.Study, sweep: Sweep) -> None:
    """A new study's first trial runs the config's own values, when the space contains them:
    the sweep's result is then read against the config it started from."""
    if not sweep.config.sweep.baseline:
        return
    values = {p.key: sweep.config[p.key] for p in sweep.params}
    inside = all(
        values[p.key] in p.choices if p.kind == "choice" else p.low <= values[p.key] <= p.high
        for p in sweep.params
    )
    if inside:
        study.enqueue_trial(values, user_attrs={"baseline": True})


@contextlib.contextmanager
def _experimental_api():
    """Optuna's heartbeat and retry functions are marked experimental (since 2.8-3.0) and warn
    on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def retry_history(trial) -> list[int]:
    """The trials this one retries, the first one first ([] for an original trial)."""
    with _experimental_api():
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


def retried_numbers(trials) -> set[int]:
    """Trials that were asked again (their retries carry their numbers)."""
    return {n for t in trials for n in retry_history(t)}


def finished(trials) -> list:
    """The trials that count towards --trials: complete, pruned, or failed for good (a diverged
    loss, or out of retries); a trial that was asked again counts through its retry."""
    retried = retried_numbers(trials)
    return [
        t for t in trials
        if t.state in FINISHED or (t.state == TrialState.FAIL and t.number not in retried)
    ]  # fmt: skip


def root_number(trial) -> int:
    """The first trial of a retry chain: its directory is where every retry resumes."""
    history = retry_history(trial)
    return history[0] if history else trial.number


class Worker:
    """Runs trials until the study holds `sweep.trials` finished ones, with other workers
    sharing the study (each its own process and devices)."""

    def __init__(self, sweep: Sweep, study: optuna.Study, say=print):
        self.sweep, self.study, self.say = sweep, study, say
        self.current: int | None = None  # the trial this worker is running

    def run(self, poll_s: float = 2.0) -> None:
        waiting_said = False
        while True:
            with _experimental_api():
                fail_stale_trials(self.study)  # a dead worker's trial, retried
            trials = self.study.get_trials(deepcopy=False)
            done = len(finished(trials))
            if done >= self.sweep.trials:
                return
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            queued = any(t.state == TrialState.WAITING for t in trials)
            if done + len(running) >= self.sweep.trials and not queued:
                if not waiting_said:  # another worker's trials, or a dead one's going stale
                    self.say(f"waiting for trials {running} (running elsewhere, or retried "
                             f"after {GRACE_S} s without a heartbeat)")  # fmt: skip
                    waiting_said = True
                time.sleep(poll_s)
                continue
            waiting_said = False
            self.run_one()

    def run_one(self) -> None:
        from train.train import NonFiniteLoss

        try:
            self.study.optimize(self.objective, n_trials=1, catch=(NonFiniteLoss,))
        except BaseException:  # SIGTERM, a full disk: the trial is asked again next time
            self._ask_again()
            raise
        finally:
            self.current = None

    def _ask_again(self) -> None:
        if self.current is None:
            return
        trial = self.study.get_trials(deepcopy=False)[self.current]
        if trial.state == TrialState.FAIL:
            _retry(self.study, trial)

    def objective(self, trial: optuna.Trial) -> float:
        from train.train import NonFiniteLoss, train_and_evaluate

        self.current = trial.number
        values = {p.key: p.suggest(trial) for p in self.sweep.params}
        # Every trial resumes its own directory: a retried trial continues from its checkpoint.
        config = space_lib.apply(self.sweep.config, {**values, "resume": True})
        frozen = self.study.get_trials(deepcopy=False)[trial.number]  # its retry history
        workdir = self.sweep.trial_dir(root_number(frozen))
        trial.set_user_attr("workdir", str(workdir))
        shown = " ".join(f"{k}={_short(v)}" for k, v in values.items())
        self.say(f"trial {trial.number}: {shown} -> {workdir}")

        def after_epoch(epoch: int, metrics: dict) -> bool:
            trial.report(metrics[self.sweep.metric], epoch)
            # Between epochs only: after the last one there is nothing left to save.
            return epoch < config.num_epochs and trial.should_prune()

        try:
            summary = train_and_evaluate(config, workdir, after_epoch=after_epoch)
        except NonFiniteLoss as e:
            trial.set_user_attr("error", str(e))
            self.say(f"trial {trial.number}: failed: {e}")
            raise
        for key in ("top1", "loss", "steps", "epochs", "wall_s"):
            trial.set_user_attr(key, summary[key])
        value = summary[self.sweep.metric]
        outcome = "pruned" if summary["stopped_early"] else "complete"
        self.say(f"trial {trial.number}: {outcome} after {summary['epochs']:g} epochs, "
                 f"{self.sweep.metric} {value:.4f}, {summary['wall_s']:.0f} s")  # fmt: skip
        if summary["stopped_early"]:
            raise optuna.TrialPruned(f"pruned after epoch {summary['epochs']:g}")
        return value


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def say(line: str) -> None:
    print(f"sweep: {line}", file=sys.stderr, flush=True)
