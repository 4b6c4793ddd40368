"""The training program: `python -m train --config configs/NAME.py --workdir DIR`.

  train.py    the loop: set-up functions, then a flat loop over steps
  steps.py    the train and eval steps (also run by `jaxnets bench` and `jaxnets parity`)
  state.py    the model, its initial variables and the train state
  optim.py    optimizer and learning-rate schedules with torch.optim.SGD's semantics
  config.py   every config key, its default and its checks
  metrics.py  metric files, the on-device metric buffer, throughput, the final report
  data/       datasets: one protocol, in-memory arrays and tf.data pipelines

It imports the library (jaxnets/), never the commands above it (jaxnets_cli/).
"""
