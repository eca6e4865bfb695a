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
# # 01 · Download: two-second clips of piano music
#
# This step makes the folder every later step reads: **2.0 s clips of mono audio at 16 kHz**, one WAV per
# clip, named `{recording}_{k}.wav`. It fetches the original project's clips of Beethoven's piano music
# from Kaggle (in Colab and Kaggle), synthesises a small demo set (everywhere else), or cuts your own
# recordings. You will see how many clips came from how many recordings, four of them as mel
# spectrograms, and two to listen to.

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
from IPython.display import Audio, Markdown, display  # noqa: E402

session = bn.start()  # where we run (and which GPU), the profile, where files live

# %% [markdown]
# ## Fetch or build the clips

# %%
AUDIO_DIR = None  # or a folder of your own recordings (wav, flac, ogg, mp3): see below
SOURCE = "folder" if AUDIO_DIR else session.config.data.source  # else "kaggle", "musicnet" or "demo"

clips = session.download(SOURCE, AUDIO_DIR)
print(clips.summary())

# %% [markdown]
# The end of that line counts what was left out: `skipped inputs: none` means every file became clips;
# anything else is counted by reason (unreadable, too short, ...), never fatal. Running the cell again
# reuses a finished folder.
#
# **Your own recordings** are read where they are, at any sample rate, mono or stereo:
#
# | where you run | put them | then set |
# |---|---|---|
# | Colab | in a folder on your Google Drive (`bn.start()` mounts it) | `AUDIO_DIR = "/content/drive/MyDrive/piano"` |
# | Kaggle | in a dataset, attached with *Add Input* | `AUDIO_DIR = "/kaggle/input/my-piano"` (the Input panel's path) |
# | your machine | in any folder | `AUDIO_DIR = "/home/you/Music/piano"` (a relative path starts at this notebook) |
#
# Each file is a recording, cut into consecutive 2 s clips. The other sources: `kaggle` is the original's
# 18,941 clips ([`alexzyukov/beethoven`](https://www.kaggle.com/datasets/alexzyukov/beethoven), about
# 1 GB), `musicnet` rebuilds them from MusicNet's recordings (10.8 GB), `demo` is 16 recordings of
# Beethoven themes on a modelled piano, made offline.

# %%
display(Markdown(clips.markdown()))

# %% [markdown]
# Clips per recording. The Kaggle clips were cut at random start times, so clips of one recording
# overlap: every later step splits and measures **by recording**, never by clip.

# %%
names, mels, waves = bn.features.preview(clips.path, session.config.features, n=4)
bn.plots.clip_gallery(mels, names);

# %% [markdown]
# Four clips as mel spectrograms: time left to right (63 frames of 32 ms), pitch bottom to top (96 mel
# bins), loudness as colour. A piano note is a stack of horizontal lines (a fundamental and its partials)
# that start together at the hammer strike and fade; a vertical stripe is an attack.

# %%
for name, wave in zip(names[:2], waves):
    display(Markdown(f"**{name}**"), Audio(wave, rate=session.config.features.sample_rate))

# %% [markdown]
# The first two clips as they sound. Notebook 02 turns every clip into the spectrograms you just saw.
