"""A hyperparameter search around the demo: ResNet-18 on the digits at 32x32, 12 trials of
learning rate x weight decay x label smoothing drawn by TPE, hopeless trials stopped by the
median pruner. The first trial is the demo's own values (configs/digits.py), the baseline.

  python -m train.sweep --config configs/digits_sweep.py --workdir workdir/sweep --trials 12

Expected: the best trial at or above the baseline's top-1 (99.44% in the demo), some trials
pruned after epoch 3; about 10 minutes on a 2-core CPU (the README has the measured numbers).
The best trial's config is then workdir/sweep/best_config.py:

  python -m train --config workdir/sweep/best_config.py --workdir workdir/best
"""

import runpy
from pathlib import Path

DEMO = Path(__file__).with_name("digits.py")


def get_config():
    config = runpy.run_path(str(DEMO))["get_config"]()  # the demo's recipe, as is
    config.progress_bar = False  # one line an epoch, one a trial
    config.sweep.space = (
        "learning_rate=log:0.005:0.5",
        "weight_decay=log:1e-5:5e-3",
        "label_smoothing=0:0.2",
    )
    config.sweep.sampler_startup_trials = 5
    config.sweep.pruner_startup_trials = 3
    # Epochs 1-2 are warm-up and BatchNorm settling (the demo's epoch 1 scores 10%): no pruning.
    config.sweep.pruner_first_epoch = 3
    return config
