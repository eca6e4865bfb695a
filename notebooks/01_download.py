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
# # 01 · Download: two-second clips of Beethoven's piano music
#
# BeetNet learns from short clips: **2.0 s of mono audio at 16 kHz**, one file per clip, named
# `{recording}_{k}.wav` (clip *k* of MusicNet recording *recording*). The original project used the
# Kaggle data set [`alexzyukov/beethoven`](https://www.kaggle.com/datasets/alexzyukov/beethoven):
# 18,941 clips cut from the Beethoven solo-piano recordings of MusicNet.
#
# Four sources make the same folder:
#
# | source | what it does |
# |---|---|
# | `kaggle` | downloads the original's clips (about 1 GB; the default in Colab) |
# | `musicnet` | rebuilds them from MusicNet (10.8 GB) with consecutive, non-overlapping clips |
# | `folder` | cuts your own recordings (wav, flac, ogg, mp3; any rate, any channels) |
# | `demo` | synthesises 12 recordings of Beethoven themes on a modelled piano, offline (the default elsewhere) |
#
# One thing to know about the original data: its clips were cut at *random* start times, so clips of one
# recording overlap. Any honest evaluation must therefore split **by recording**, never by clip (notebook 02).

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
# ## Fetch or build the clips
#
# Change `SOURCE` to choose. Running the cell again reuses a finished folder.
# Without network or Kaggle access the `kaggle` source stops with a one-line message that says what to do.

# %%
SOURCE = session.config.data.source  # "kaggle", "musicnet", "folder" or "demo"
AUDIO_DIR = None  # for SOURCE = "folder": the folder with your recordings

clips = bn.download(SOURCE, session.paths.clips, session.config, audio_dir=AUDIO_DIR)
print(clips.summary())

# %% [markdown]
# ## How much music, from which recordings

# %%
display(Markdown(clips.markdown()))

# %% [markdown]
# ## What a clip looks like and sounds like
#
# A mel spectrogram: time runs left to right (63 frames of 32 ms), pitch bottom to top (96 mel bins),
# loudness is colour. Piano notes show as stacks of horizontal lines (a fundamental and its partials)
# that start together at the hammer strike and fade.

# %%
names, mels, waves = bn.features.preview(clips.path, session.config.features, n=4)
bn.plots.clip_gallery(mels, names);

# %%
for name, wave in zip(names[:2], waves):
    display(Markdown(f"**{name}**"), Audio(wave, rate=session.config.features.sample_rate))
