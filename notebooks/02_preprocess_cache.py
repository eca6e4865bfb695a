# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Preprocess: clips to a mel-spectrogram cache
#
# Exactly the original's features: each clip is peak-normalised, turned into a mel spectrogram
# (`n_fft` 2048, hop 512, 96 mel bins, magnitude), converted to dB and clamped to **[-40, 60] dB**.
# A 2 s clip gives a 96 × 63 image. Clips that are silent (mean |wav| below 1e-3 after
# normalisation, as in the original) are dropped.
#
# What we do differently, and why:
#
# * **Bad files are skipped and counted, never fatal**: unreadable or corrupt files, silence, clips
#   too short to use. Stereo is averaged to mono, another sample rate is resampled, a short clip is
#   padded. Every skip and repair is listed below.
# * **The cache is three files** (`mels.npy`, `index.csv`, `meta.json`) instead of one file per clip:
#   Google Drive is slow with thousands of small files. It is rebuilt only when the clips or the
#   feature settings change, and written atomically, so an interrupted build never leaves half a cache.
# * **Split by recording** into train, validation and test (about 80/10/10): clips of one recording
#   never sit in two splits, so the test score is on music the model never heard.
# * **Standardisation statistics from the train split only**, so nothing leaks from the test set.

# %%
# Set-up. In Colab: fetch the code, install only what Colab lacks, mount Google Drive.
# Locally (and in CI) the repository's .venv already has everything: nothing happens here.
import os
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("/content/beetnet_code"):
        # !git clone -q https://github.com/beetnet/beetnet.git /content/beetnet_code
    # %cd /content/beetnet_code
    # !bash colab_setup.sh
sys.path.insert(0, os.path.abspath("..") if os.path.isdir("../beetnet_utils") else os.getcwd())

import beetnet_utils as bn
from IPython.display import Audio, Markdown, display

session = bn.runtime.start()  # where we run (warns when the GPU is not a T4), the profile, where files live

# %% [markdown]
# ## Build or reuse the cache
#
# In Colab the cache is read from the VM's fast local disk and a one-file copy is kept on Drive,
# so notebooks 03 and 04 can restore it after a disconnect without recomputing.

# %%
cache = session.cache(session.paths.clips)

# %% [markdown]
# ## Splits, skips and statistics

# %%
display(Markdown(cache.markdown()))

# %% [markdown]
# ## The dB values, and the clamp
#
# Quiet bins pile up at -40 dB (the floor of the clamp); very loud ones would pile up at +60 dB.

# %%
bn.plots.db_histogram(cache);

# %% [markdown]
# ## Clips per recording and the split each recording belongs to

# %%
bn.plots.split_sizes(cache);
