# `make demo` runs the whole pipeline on the embedded demo data; `make test` runs the tests.
# Both create .venv on first use (make test also .venv-colab, the Colab stand-in). torch is pinned
# here and in tests/colab-image.txt only: requirements.txt keeps ranges so that Colab's preinstalled
# torch is never reinstalled.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.11.0 torchaudio==2.11.0
DEMO_DIR := runs/demo
# The Colab stand-in: Python 3.13 and the Colab GPU image's versions (tests/colab-image.txt).
COLAB_VENV := .venv-colab
COLAB_STAMP := $(COLAB_VENV)/.installed
PYTHON_COLAB ?= python3.13

.PHONY: setup colab-venv browser test nbmake demo gpu-check mutants clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchaudio" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# Python 3.13: $(PYTHON_COLAB), else pyenv's 3.13. Reused while tests/colab-image.txt is unchanged.
colab-venv: $(COLAB_STAMP)

$(COLAB_STAMP): tests/colab-image.txt
	@py=$$(for c in $(PYTHON_COLAB) $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
		$$c -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { echo $$c; break; }; done); \
	test -n "$$py" || { echo "the Colab stand-in needs Python 3.13: set PYTHON_COLAB=/path/to/python3.13"; exit 1; }; \
	test -x $(COLAB_VENV)/bin/python || $$py -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install -q -r tests/colab-image.txt
	touch $(COLAB_STAMP)

NOTEBOOKS := notebooks/01_download.ipynb notebooks/02_preprocess_cache.ipynb \
	notebooks/03_train_gpu.ipynb notebooks/04_evaluate.ipynb

# The widget test drives Debian's Chromium; install it (as root) when it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium; }

# The tests: ruff's lint first (pyproject.toml), then units, the browser test, every notebook in real kernels
# (tests/test_pipeline.py runs them through make demo's driver on the smoke profile, every branch; test_colab.py
# and test_kaggle.py in the hosted runtimes' stand-ins), then the four notebooks under nbmake on the smoke
# profile (the design card's CI).
# Two pytest-xdist workers, one torch thread each (tests/conftest.py): most tests wait on a process or
# a kernel starting, so two at a time halve the wall time; the tests of Kaggle's fixed port take turns.
# The two environments install side by side (each pip is one busy core): a minute less on a fresh clone.
test: browser
	$(MAKE) --no-print-directory -j2 setup colab-venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --durations=15
	$(MAKE) --no-print-directory nbmake

nbmake: setup
	tmp=$$(mktemp -d) && BEETNET_PROFILE=smoke BEETNET_HOME=$$tmp MPLBACKEND=Agg \
		$(PY) -m pytest -q -p no:randomly --nbmake $(NOTEBOOKS); rc=$$?; rm -rf $$tmp; exit $$rc

demo: setup
	$(PY) -m beetnet_utils demo --profile demo --out $(DEMO_DIR)

# On a CUDA machine: both presets with AMP, a kill and a resume, bench_train's CUDA row, two GPUs when there
# are two; one table, under 8 minutes (benchmarks/gpu_check.py).
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

# Mutation testing of the functions that implement the specification (the mel and its clamp, peak
# normalisation and the silence rule, the statistics, the split, the original model, Adam, the clip, the
# batches), against the tests pyproject.toml's [tool.mutmut] names. Not part of `make test`: about 15 minutes
# on 2 cores (docs/TESTING.md has the score). `mutmut results` lists survivors, `mutmut show NAME` one of them.
MUTMUT := mutmut==3.8.1
SPEC_FUNCTIONS := 'beetnet_utils.features.x_mel_db__*' 'beetnet_utils.features.x_load_clip__*' \
	'beetnet_utils.cache_build.x_split_recordings__*' 'beetnet_utils.cache.xǁMomentsǁ*' \
	'beetnet_utils.cache.xǁMelWriterǁadd__*' 'beetnet_utils.cache.xǁMelWriterǁstats__*' \
	'beetnet_utils.data.x_silence_reason__*' 'beetnet_utils.model.xǁAutoencoderǁconfigure_optimizers__*' \
	'beetnet_utils.model.xǁGRUAutoencoderǁ*' 'beetnet_utils.batches.xǁBatchesǁ*' \
	'beetnet_utils.train.x_objective__*' 'beetnet_utils.train.x_train_epoch__*' \
	'beetnet_utils.config.xǁFeatureConfigǁclip_samples__*' 'beetnet_utils.config.xǁFeatureConfigǁn_frames__*'

mutants: setup
	$(PY) -m pip install -q $(MUTMUT)
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 $(SPEC_FUNCTIONS)

clean:
	rm -rf runs beetnet_data mutants
