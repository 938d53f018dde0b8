# Two entry points for a fresh machine with Python >= 3.10:
#   make lab   — create .venv and open JupyterLab on the tutorial notebooks (the main job)
#   make test  — create .venv, set up what the tests need, and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8888

.PHONY: lab test env chromium notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed once, and again only when the project's requirements change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

env: $(VENV)/.installed

# The browser test drives Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# JupyterLab refuses to run as root unless told to (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: env
	$(BIN)/jupyter lab $(ROOT_FLAG) --port $(PORT) notebooks/

test: env chromium
	$(BIN)/ruff check daglite_nb tests benchmarks conftest.py
	$(BIN)/ruff format --check daglite_nb tests benchmarks conftest.py
	$(BIN)/python -m pytest tests --nbval notebooks/ --nbval-sanitize-with tests/nbval_sanitize.cfg

# Re-run the tutorial notebooks in place, so their saved outputs are the current package's.
notebooks: env
	cd notebooks && ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=300 *.ipynb

clean:
	rm -rf $(VENV)
