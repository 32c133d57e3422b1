# The README's two commands: `make run` (set up + the main job) and `make test` (set up + tests).
VENV := .venv
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl

.PHONY: setup run test lint typecheck bench clean

setup:
	@scripts/setup

run: setup
	$(BIN)/prt sim --task push_t --episodes 10

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench.sampler
	$(BIN)/python -m bench.sim
	$(BIN)/python -m bench.ur5_ik
	$(BIN)/prt bench inference
	$(BIN)/python -m bench.execution
	$(BIN)/python -m bench.policies

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
