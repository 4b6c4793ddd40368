# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast test-cpu-variants lint bench-convert bench-input clean

# Python keeps the bytecode it compiles (in .venv and the repo's __pycache__) even where the
# environment says not to: with PYTHONDONTWRITEBYTECODE=1 and the --no-compile install below,
# every process compiled jax, TensorFlow and torch from source again, 5 to 6 s of each start
# (a 6-step training run: 17 s -> 10 s; TensorFlow's import: 10.6 s -> 4.4 s).
unexport PYTHONDONTWRITEBYTECODE

# .base: the library and the training program (the [train] extra); .test: all extras.
# Stamps record what is installed, so a second run skips pip; editing pyproject.toml reinstalls.
# --no-compile: Python compiles the modules it imports on first use (and keeps them) instead of
# all of torch's and TensorFlow's at install (79 s -> 56 s for .[test] here).
$(VENV)/.base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile -e '.[train]'
	touch $@

$(VENV)/.test: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile -e '.[test]'
	touch $@ $(VENV)/.base

demo: $(VENV)/.base
	$(BIN)/python -m train --config configs/digits.py --workdir workdir/demo

test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=15

# Every module, one model a family, no subprocess training runs: the loop while editing.
test-fast: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not slow" --durations=10

# The float32 tolerances on other CPU code paths (docs/tolerances.md).
test-cpu-variants: $(VENV)/.test
	bash scripts/cpu_variants.sh

bench-convert: $(VENV)/.test
	$(BIN)/python scripts/bench_convert.py

bench-input: $(VENV)/.base
	$(BIN)/python scripts/bench_input.py

clean:
	rm -rf $(VENV) workdir
