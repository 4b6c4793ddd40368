"""The `jaxnets` command line: the top of three layers that only point down.

  jaxnets_cli/  commands: models, convert (library only); eval, parity, bench (library and program)
  train/        the training program, `python -m train` (the [train] extra)
  jaxnets/      the library: models, registry, converter, pretrained weights, checkpoints, export

Nothing below imports from above: jaxnets/ imports neither train nor jaxnets_cli, and train/
does not import jaxnets_cli (tests/test_layers.py checks every import).
"""
