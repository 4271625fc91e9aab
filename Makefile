# One command sets everything up and runs the lab's main job: `make demo`.
# One command runs the test suite: `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast bench clean

$(BIN)/ranklab: pyproject.toml constraints.txt
	bash .ci/setup.sh

setup: $(BIN)/ranklab

demo: setup
	$(BIN)/ranklab main

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/scoring.py

clean:
	rm -rf $(VENV) .pytest_cache
