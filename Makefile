# Two entry points for a fresh machine with Python >= 3.10:
#   make lab   — create .venv and open JupyterLab on the tutorial notebooks (the main job)
#   make test  — create .venv and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: lab test env clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

env: $(BIN)/python
	$(BIN)/python -m pip install --quiet --pre -e '.[test,lab]'

# JupyterLab refuses to run as root unless told to (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: env
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

test: env
	$(BIN)/ruff check daglite_nb tests benchmarks
	$(BIN)/python -m pytest tests --nbval notebooks/ --nbval-sanitize-with tests/nbval_sanitize.cfg

clean:
	rm -rf $(VENV)
