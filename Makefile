# `make demo` runs the whole pipeline on the embedded demo data; `make test` runs the tests.
# Both create .venv on first use. torch is pinned here only: requirements.txt keeps ranges
# so that Colab's preinstalled torch is never reinstalled.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.11.0 torchaudio==2.11.0
DEMO_DIR := runs/demo

.PHONY: setup test demo clean sync-notebooks

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchaudio" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	BEETNET_PROFILE=demo $(PY) -m beetnet_utils download --source demo --out $(DEMO_DIR)/clips
	BEETNET_PROFILE=demo $(PY) -m beetnet_utils cache --clips $(DEMO_DIR)/clips --out $(DEMO_DIR)/cache

clean:
	rm -rf runs beetnet_data
