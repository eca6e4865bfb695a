#!/usr/bin/env bash
# Colab and Kaggle set-up: installs only what the image lacks (pip leaves the preinstalled torch,
# torchaudio, numpy and ipywidgets alone, since requirements.txt asks for ranges they satisfy; the
# Colab journey in tests/test_colab.py checks that pip's list is unchanged). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q -r requirements.txt
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
  echo "GPU: $gpu"
  case "$gpu" in *T4*) ;; *) echo "note: not a T4; timings in the notebooks assume one" ;; esac
else
  echo "GPU: none (for training, Colab: Runtime > Change runtime type > T4 GPU; Kaggle: Settings > Accelerator > GPU T4 x2)"
fi
python - <<'PY'
import importlib
for name in ("torch", "torchaudio", "numpy", "soundfile", "kagglehub", "ipywidgets", "matplotlib", "tqdm"):
    m = importlib.import_module(name)
    print(f"{name:<11} {getattr(m, '__version__', '?')}")
PY
