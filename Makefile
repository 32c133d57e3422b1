# The README's two commands: `make run` (set up + the main job) and `make test` (set up + tests).
VENV := .venv
BIN := $(VENV)/bin
export MUJOCO_GL ?= egl

.PHONY: setup run test lint typecheck bench clean

setup:
	@scripts/setup

# The main job: the simulated UR5 cell driven by the bundled push_t policy through ROS 2, in real
# time, 10 episodes, the front camera at 640x480 and 30 Hz; prints the figures and writes
# runs/sim/episodes.json and an mp4 of the first episode.
run: setup
	$(BIN)/prt launch launch/sim_episodes.launch.yaml episodes:=10 realtime:=true \
		cameras:=[front] depth:=false out:=runs/sim

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
	$(BIN)/python -m bench.ros_transport
	$(BIN)/python -m bench.ros_episodes
	$(BIN)/python -m bench.camera_latency
	$(BIN)/python -m bench.command_gaps

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
