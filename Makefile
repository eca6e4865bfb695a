# `make demo` runs the whole pipeline on the embedded demo data; `make test` runs the tests.
# Both create .venv on first use. torch is pinned here only: requirements.txt keeps ranges
# so that Colab's preinstalled torch is never reinstalled.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.11.0 torchaudio==2.11.0
DEMO_DIR := runs/demo

.PHONY: setup browser test demo clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchaudio" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

NOTEBOOKS := notebooks/01_download.ipynb notebooks/02_preprocess_cache.ipynb \
	notebooks/03_train_gpu.ipynb notebooks/04_evaluate.ipynb

# The widget test drives Debian's Chromium; install it (as root) when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

# Unit tests (the browser test included), then the four notebooks in order under nbmake on the
# smoke profile, in a temporary home so nothing is written into the checkout.
test: setup browser
	$(PY) -m pytest -q
	tmp=$$(mktemp -d) && BEETNET_PROFILE=smoke BEETNET_HOME=$$tmp MPLBACKEND=Agg \
		$(PY) -m pytest -q -p no:randomly --nbmake $(NOTEBOOKS); rc=$$?; rm -rf $$tmp; exit $$rc

demo: setup
	$(PY) -m beetnet_utils demo --profile demo --out $(DEMO_DIR)

clean:
	rm -rf runs beetnet_data
