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
# This step turns every clip of notebook 01 into what the model learns from: a mel spectrogram of
# 96 × 63 dB values, computed exactly as the original project did, all kept in one cache. It also splits
# the recordings into train, validation and test. You will see the splits and what was left out, where
# the dB values fall, and how many clips each recording gave.

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

# %%
cache = session.cache()

# %% [markdown]
# The cache is built once and reused until the clips or the feature settings change; it is written
# atomically, so an interrupted build never leaves half a cache. It is three files (`mels.npy`,
# `index.csv`, `meta.json`), not one per clip, because Google Drive is slow with thousands of small
# files; in Colab a one-file copy on Drive lets notebooks 03 and 04 restore it after a disconnect.

# %%
display(Markdown(cache.markdown()))

# %% [markdown]
# The split is **by recording** (about 80/10/10): no recording sits in two splits, so the test score is
# on music the model never heard. The mean and std that standardise the model's input come from the train
# recordings alone (on the full data they land near the original's 8.37 and 16.94 dB). Silent clips
# (mean |wav| below 1e-3, as in the original) and unreadable files are counted and left out; stereo is
# averaged, another sample rate resampled, a short clip padded.

# %%
bn.plots.db_histogram(cache);

# %% [markdown]
# Each clip is peak-normalised, turned into a mel spectrogram (`n_fft` 2048, hop 512, 96 mel bins,
# magnitude), converted to dB and clamped to **[-40, 60] dB** (the dashed lines), as in the original.
# The spike at -40 dB is silence between and above the notes; a spike at +60 dB would mean clipping.

# %%
bn.plots.split_sizes(cache);

# %% [markdown]
# One bar per recording, coloured by its split: every recording is in exactly one. Notebook 03 trains on
# the blue ones and checks itself on the orange ones after every epoch.
