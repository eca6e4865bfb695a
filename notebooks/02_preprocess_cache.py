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
# Set-up. In Colab or Kaggle this fetches the code and installs only what the image lacks;
# in a checkout of the repository (locally, in CI) there is nothing to fetch.
import os, subprocess, sys  # noqa: E401

CODE_URL = os.environ.get("BEETNET_CODE_URL", "https://github.com/beetnet/beetnet.git")
code = next((d for d in ("..", "beetnet") if os.path.isdir(f"{d}/beetnet_utils")), None)
if code is None:
    code = "beetnet"
    subprocess.run(["git", "clone", "-q", CODE_URL, code], check=True)
    subprocess.run(["bash", f"{code}/colab_setup.sh"], check=True)
sys.path.insert(0, os.path.abspath(code))
import beetnet_utils as bn  # noqa: E402
from IPython.display import Markdown, display  # noqa: E402

session = bn.start()  # where we run (and which GPU), the profile, where files live

# %% [markdown]
# ## Build or reuse the cache
#
# In Colab the cache is read from the VM's fast local disk and a one-file copy is kept on Drive,
# so notebooks 03 and 04 can restore it after a disconnect without recomputing.

# %%
cache = session.cache()

# %% [markdown]
# ## Splits, skips and statistics

# %%
display(Markdown(cache.markdown()))

# %% [markdown]
# Every split should hold at least one recording, and no recording sits in two. On the full data the
# mean and std land near the original's 8.37 and 16.94 dB; they differ a little because they come from
# the train recordings only.
#
# ## The dB values, and the clamp

# %%
bn.plots.db_histogram(cache);

# %% [markdown]
# Quiet bins pile up at -40 dB, the floor of the clamp: that spike is the silence between and above the
# notes. A spike at +60 dB would mean clipping; there should be none.
#
# ## Clips per recording and the split each recording belongs to

# %%
bn.plots.split_sizes(cache);
