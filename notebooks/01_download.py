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
# | `demo` | synthesises 16 recordings of Beethoven themes on a modelled piano, offline (the default elsewhere) |
#
# One thing to know about the original data: its clips were cut at *random* start times, so clips of one
# recording overlap. Any honest evaluation must therefore split **by recording**, never by clip (notebook 02).

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
#
# Change `SOURCE` to choose. Running the cell again reuses a finished folder.
# Without network or Kaggle access the `kaggle` source stops with a one-line message that says what to do.

# %%
SOURCE = session.config.data.source  # "kaggle", "musicnet", "folder" or "demo"
AUDIO_DIR = None  # for SOURCE = "folder": the folder with your recordings

clips = session.download(SOURCE, AUDIO_DIR)
print(clips.summary())

# %% [markdown]
# Look at the end of that line: `skipped inputs: none` means every file became clips. Anything else is
# counted by reason (unreadable, too short, ...) and left out, never fatal.
#
# ## How much music, from which recordings

# %%
display(Markdown(clips.markdown()))

# %% [markdown]
# ## What a clip looks like and sounds like
#
# A mel spectrogram: time runs left to right (63 frames of 32 ms), pitch bottom to top (96 mel bins),
# loudness is colour.

# %%
names, mels, waves = bn.features.preview(clips.path, session.config.features, n=4)
bn.plots.clip_gallery(mels, names);

# %% [markdown]
# Piano notes show as stacks of horizontal lines (a fundamental and its partials) that start together at
# the hammer strike and fade; a vertical stripe is an attack. Listen to two of them:

# %%
for name, wave in zip(names[:2], waves):
    display(Markdown(f"**{name}**"), Audio(wave, rate=session.config.features.sample_rate))
