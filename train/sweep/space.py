"""The search space: `KEY=SPEC` strings, parsed into typed parameters, checked against the config
before any trial starts, and sampled on an Optuna trial.

  learning_rate=log:1e-4:1e-1     log-uniform between the bounds (an int key: log-spaced integers)
  label_smoothing=0:0.2           uniform between the bounds (an int key: integers)
  batch_size=choice:32,64,128     one of the values, each read as the key's type
"""

from __future__ import annotations

import copy
import dataclasses

KINDS = ("log", "uniform", "choice")
_SCALARS = (bool, int, float, str)


class SpaceError(ValueError):
    """A search-space spec that cannot be swept; the message is one line naming the spec."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One swept config key: `kind` is 'log' or 'uniform' (between `low` and `high`) or 'choice'."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()
    text: str = dataclasses.field(default="", compare=False)  # as the user wrote it

    def spec(self) -> str:
        """The canonical `KEY=SPEC` text (what the study records and `--space` takes)."""
        if self.kind == "choice":
            return f"{self.key}=choice:{','.join(map(str, self.choices))}"
        prefix = "log:" if self.kind == "log" else ""
        return f"{self.key}={prefix}{self.low}:{self.high}"

    def extremes(self) -> tuple:
        """The values that bound what a trial can draw: checked against the config up front."""
        return self.choices if self.kind == "choice" else (self.low, self.high)

    def suggest(self, trial):
        """Draws this parameter's value for an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        suggest = trial.suggest_int if isinstance(self.low, int) else trial.suggest_float
        return suggest(self.key, self.low, self.high, log=self.kind == "log")


def parse(specs, config) -> list[Param]:
    """`KEY=SPEC` strings -> parameters typed as the config's keys are.

    Raises:
      SpaceError: no spec at all, an unknown or non-scalar key, a malformed spec, a key given
        twice, an empty `choice:`, bounds out of order, a `log:` bound <= 0, a value of the
        wrong type.
    """
    if not specs:
        raise SpaceError("no search space: give --space KEY=SPEC or set config.sweep.space")
    params = [dataclasses.replace(_parse_one(spec, config), text=spec) for spec in specs]
    keys = [p.key for p in params]
    for key in keys:
        if keys.count(key) > 1:
            raise SpaceError(f"--space: {key} is given twice")
    return params


def _parse_one(spec: str, config) -> Param:
    key, equals, body = spec.partition("=")
    key, body = key.strip(), body.strip()
    if not equals or not key or not body:
        raise SpaceError(f"--space {spec!r}: expected KEY=log:LOW:HIGH, KEY=LOW:HIGH or "
                         "KEY=choice:A,B,...")  # fmt: skip
    if key not in config:
        raise SpaceError(f"--space {spec!r}: config has no key {key!r}")
    kind = config.get_type(key)
    if kind not in _SCALARS:
        raise SpaceError(f"--space {spec!r}: config.{key} is a {kind.__name__}, not a number "
                         "or a string")  # fmt: skip
    if body.startswith("choice:"):
        values = [v.strip() for v in body.removeprefix("choice:").split(",") if v.strip()]
        if not values:
            raise SpaceError(f"--space {spec!r}: choice: needs at least one value")
        return Param(key, "choice", choices=tuple(_typed(v, kind, spec) for v in values))
    log = body.startswith("log:")
    bounds = body.removeprefix("log:").split(":")
    if len(bounds) != 2 or kind not in (int, float):
        expected = "LOW:HIGH" if kind in (int, float) else f"choice:A,B,... (a {kind.__name__})"
        raise SpaceError(f"--space {spec!r}: expected {expected}")
    low, high = (_typed(b.strip(), kind, spec) for b in bounds)
    if not low < high:
        raise SpaceError(f"--space {spec!r}: the lower bound must be below the upper one")
    if log and low <= 0:
        raise SpaceError(f"--space {spec!r}: log: needs bounds > 0")
    return Param(key, "log" if log else "uniform", low, high)


def _typed(text: str, kind: type, spec: str):
    """`text` as a value of the key's type (1e-3 for a float, 64 for an int, True for a bool)."""
    try:
        if kind is bool:
            return {"true": True, "false": False}[text.lower()]
        if kind is int:
            return int(text)
        return float(text) if kind is float else text
    except (ValueError, KeyError):
        raise SpaceError(f"--space {spec!r}: {text!r} is not a {kind.__name__}") from None


def apply(config, values: dict):
    """A copy of `config` with `values` set (the config's own type checks apply)."""
    config = copy.deepcopy(config)
    for key, value in values.items():
        config[key] = value
    return config


def check(params: list[Param], config, device_count: int) -> None:
    """Runs the config's own validation with every bound and choice of every parameter, so that
    a value no trial could train with fails here, in one line, before the first trial."""
    from train.config import validate

    for param in params:
        for value in param.extremes():
            try:
                validate(apply(config, {param.key: value}), device_count)
            except ValueError as e:
                raise SpaceError(f"--space {param.text or param.spec()!r}: {e}") from None
