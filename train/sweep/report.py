"""What a sweep leaves behind: the table of trials, the best trial, DIR/best_config.py (a config
file `python -m train --config` runs as is) and Optuna's matplotlib plots as PNG."""

from __future__ import annotations

import os
import pprint
import tempfile
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from train.sweep.study import finished, retried_numbers

PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "slice": "plot_slice",
    "intermediate_values": "plot_intermediate_values",
}


def table(study: optuna.Study) -> str:
    """One row a trial: number, state, the metric, epochs, steps, wall time and the values."""
    metric = study.user_attrs["identity"]["metric"]
    retried = retried_numbers(study.trials)
    rows = [("trial", "state", metric, "epochs", "steps", "wall_s", "values")]
    for t in study.trials:
        state = t.state.name.lower()
        if t.state == TrialState.FAIL and t.number in retried:
            state = "retried"
        elif t.user_attrs.get("baseline"):
            state += " (baseline)"
        attrs = t.user_attrs
        rows.append((
            str(t.number), state, "" if t.value is None else f"{t.value:.4f}",
            _fmt(attrs.get("epochs")), _fmt(attrs.get("steps")), _fmt(attrs.get("wall_s"), ".0f"),
            " ".join(f"{k}={_fmt(v, '.4g')}" for k, v in t.params.items()),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    )


def _fmt(value, spec: str = "g") -> str:
    return "" if value is None else format(value, spec)


def summary(study: optuna.Study) -> str:
    """The counts, what pruning saved, and the best trial (against the baseline when the study
    ran one)."""
    trials, metric = study.trials, study.user_attrs["identity"]["metric"]
    counts = {s: sum(t.state == s for t in finished(trials)) for s in TrialState}
    wall = sum(t.user_attrs.get("wall_s", 0) for t in trials)
    lines = [f"{len(finished(trials))} finished trials: {counts[TrialState.COMPLETE]} complete, "
             f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed; "
             f"{wall:.0f} s of training"]  # fmt: skip
    lines += _pruning_saved(trials, study.user_attrs["identity"]["config"]["num_epochs"])
    best = best_trial(study)
    if best is None:
        return "\n".join([*lines, "no trial has completed yet"])
    lines.append(f"best: trial {best.number}, {metric} {best.value:.4f}, "
                 + " ".join(f"{k}={_fmt(v, '.4g')}" for k, v in best.params.items()))  # fmt: skip
    baseline = [t for t in trials if t.user_attrs.get("baseline")]
    if baseline and baseline[0].state == TrialState.COMPLETE:
        lines.append(f"baseline (the config's own values): trial {baseline[0].number}, {metric} "
                     f"{baseline[0].value:.4f}")  # fmt: skip
    return "\n".join(lines)


def _pruning_saved(trials, num_epochs: int) -> list[str]:
    """The epochs pruned trials did not run, in seconds at the complete trials' median time
    an epoch (set-up and compilation included, so an upper bound on a long run's figure)."""
    pruned = [t for t in trials if t.state == TrialState.PRUNED and "epochs" in t.user_attrs]
    complete = [t.user_attrs["wall_s"] / t.user_attrs["epochs"] for t in trials
                if t.state == TrialState.COMPLETE and t.user_attrs.get("epochs")]  # fmt: skip
    if not pruned or not complete:
        return []
    skipped = sum(num_epochs - t.user_attrs["epochs"] for t in pruned)
    per_epoch = float(np.median(complete))
    return [f"pruning skipped {skipped:g} of {len(pruned) * num_epochs} epochs in the pruned "
            f"trials, about {skipped * per_epoch:.0f} s at {per_epoch:.1f} s an epoch"]  # fmt: skip


def best_trial(study: optuna.Study):
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return study.best_trial if complete else None


def write_best_config(study: optuna.Study, path: Path) -> Path | None:
    """DIR/best_config.py: the study's config with the best trial's values, as a config file
    that `python -m train --config` runs as is (only the keys that differ from base_config)."""
    from train.config import base_config

    best = best_trial(study)
    if best is None:
        return None
    values = _flatten(study.user_attrs["identity"]["config"])
    values.update(best.params)
    defaults = base_config()
    lines = []
    for key, value in values.items():
        if key.startswith("sweep."):
            continue  # how the trials were drawn, not how one trains
        kind = defaults.get_type(key) if "." not in key else None
        value = tuple(value) if kind is tuple else value
        if _get(defaults, key) != value:
            lines.append(f"    config.{key} = {pprint.pformat(value)}")
    metric = study.user_attrs["identity"]["metric"]
    text = (
        f'"""The best trial of sweep {study.study_name!r}: trial {best.number}, {metric} '
        f"{best.value:.4f}.\n\nWritten by python -m train.sweep; run it as\n\n"
        f"  python -m train --config {path} --workdir DIR\n\n"
        + "Swept: " + ", ".join(f"{k}={v!r}" for k, v in best.params.items()) + '\n"""\n\n'
        "from train.config import base_config\n\n\ndef get_config():\n"
        "    config = base_config()\n" + "".join(f"{line}\n" for line in lines)
        + "    return config\n"
    )  # fmt: skip
    _write_atomically(path, text.encode())
    return path


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def write_plots(study: optuna.Study, directory: Path) -> tuple[list[Path], dict[str, str]]:
    """Optuna's matplotlib plots as DIR/plots/NAME.png; a plot the study cannot draw yet (too
    few finished trials, one parameter) is skipped with the reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    directory.mkdir(parents=True, exist_ok=True)
    written, skipped = [], {}
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning on every matplotlib plot
                axes = getattr(plots, function)(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            skipped[name] = str(e).splitlines()[0] if str(e) else type(e).__name__
            continue
        figure = _figure_of(axes)
        if figure is None or not figure.axes or not any(a.has_data() for a in figure.axes):
            skipped[name] = "nothing to draw yet"
            plt.close("all")
            continue
        figure.set_size_inches(8, 5)
        path = directory / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written, skipped


def _figure_of(axes):
    if hasattr(axes, "figure"):
        return axes.figure
    flat = getattr(axes, "flat", None)
    first = next(iter(flat), None) if flat is not None else None
    return None if first is None else first.figure


def _write_atomically(path: Path, data: bytes) -> None:
    """Beside its destination, then renamed: a reader never sees half a file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def report(study: optuna.Study, workdir: Path) -> str:
    """The whole report: writes best_config.py and the plots into `workdir`, returns the text."""
    best_config = write_best_config(study, workdir / "best_config.py")
    written, skipped = write_plots(study, workdir / "plots")
    lines = [table(study), "", summary(study)]
    if best_config is not None:
        lines.append(f"best config: {best_config}")
    lines.append(f"plots: {', '.join(str(p) for p in written) or 'none'}")
    lines += [f"  {name} not drawn: {why}" for name, why in skipped.items()]
    return "\n".join(lines)
