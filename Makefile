# Two entry points (see README.md): `make demo` and `make test`. Both create or update .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SETUP_STAMP := $(VENV)/.aapt-ros-setup
TORCH := torch==2.13.0

.PHONY: setup interfaces demo test lint clean

# Re-runs only when the dependencies change; pip itself is idempotent as well.
$(SETUP_STAMP): setup.py Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH) -e '.[ros,colcon,test]'
	touch $@

setup: $(SETUP_STAMP)

# The ROS interfaces in msg/ (aapt_ros/Control, aapt_ros/GeneratorStatus) need colcon.
interfaces: setup
	VENV=$(VENV) QUIET=1 tools/build_interfaces.sh

demo: setup
	$(BIN)/aapt-demo --device auto

lint: setup
	$(BIN)/ruff check aapt_ros tests launch
	$(BIN)/mypy

test: interfaces lint
	AAPT_ROS_REQUIRE_INTERFACES=1 VENV=$(VENV) tools/colcon_env.sh --source-first $(BIN)/python -m pytest tests

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
