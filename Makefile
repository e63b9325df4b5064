# The lab's single entry point. `make lab` and `make test` are the two commands
# a newcomer needs; both set up everything they use first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup lab test down clean

$(BIN)/labkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## setup: Python environment plus every service, built into the per-user cache
setup: $(BIN)/labkit
	$(BIN)/labkit install

## lab: the main job: stand the stack up and show its status
lab: setup
	$(BIN)/labkit up
	$(BIN)/labkit status

## test: the whole test suite; it starts and stops the services it uses
test: setup
	$(BIN)/pytest

## down: stop the lab's services (data is kept)
down:
	$(BIN)/labkit down
