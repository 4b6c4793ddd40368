"""Hyperparameter search over the training program: `python -m train.sweep` (the [sweep] extra).

space.py    KEY=SPEC strings -> typed parameters, checked with the config's own validation
study.py    the study in its database, the worker loop, each trial a normal training run
report.py   the table of trials, best_config.py and Optuna's plots
"""
