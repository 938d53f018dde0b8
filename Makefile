# Two entry points for a fresh machine with Python >= 3.11:
#   make lab   — create .venv and open JupyterLab on the tutorial notebooks (the main job)
#   make test  — create .venv, set up what the tests need, and run the whole test suite (also on
#                the oldest Python with the lowest dependencies and on the newest Python)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8888

# The oldest and newest supported Pythons: pyenv's, where it has them, else the ones on PATH.
OLDEST ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python3.11) python3.11)
NEWEST ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) python3.13)

.PHONY: lab test compat env chromium notebooks docs clean

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
	$(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/mypy
	$(BIN)/python -m pytest tests --nbval notebooks/ --nbval-sanitize-with tests/nbval_sanitize.cfg
	$(MAKE) compat

# The same tests (but the browser's and the docs' blocks) on the oldest supported Python with the
# lowest supported version of every dependency (.ci/lowest.txt), and on the newest Python.
COMPAT_TESTS := tests --ignore=tests/test_browser.py --ignore=tests/test_docs.py

.venv-lowest/.installed: pyproject.toml .ci/lowest.txt
	$(OLDEST) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --upgrade pip
	.venv-lowest/bin/python -m pip install --quiet -c .ci/lowest.txt -e '.[test]'
	touch $@

.venv-newest/.installed: pyproject.toml
	$(NEWEST) -m venv .venv-newest
	.venv-newest/bin/python -m pip install --quiet --upgrade pip
	.venv-newest/bin/python -m pip install --quiet -e '.[test]'
	touch $@

compat: .venv-lowest/.installed .venv-newest/.installed
	.venv-lowest/bin/python -m pytest $(COMPAT_TESTS)
	.venv-newest/bin/python -m pytest $(COMPAT_TESTS)

# Re-run the tutorial notebooks in place, so their saved outputs are the current package's.
notebooks: env
	cd notebooks && ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	  --ExecutePreprocessor.timeout=300 *.ipynb

# The documentation site (docs/, the API from docstrings, the notebooks with their saved outputs).
docs: env
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .venv-lowest .venv-newest site
