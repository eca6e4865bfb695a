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
# # 03 · Train the autoencoder
#
# This step trains a model on the mel cache of notebook 02 and writes a checkpoint after every epoch
# (to Google Drive in Colab). If the runtime disconnects, run this notebook again: training continues
# where it stopped, on the same learning rates, as if it had never stopped.
#
# Two presets: **`best`** (ours, the default) and **`original`** (the specification's model, exactly).
# `best` starts from the pretrained BeetNet that ships with the code and fine-tunes it on your clips;
# `original` trains from scratch, as the specification did. You will see one line per epoch, the loss
# curves, and where the checkpoints are.

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

session = bn.start()  # where we run (and which GPU), the profile, where files live

# %% [markdown]
# ## Settings

# %%
PRESET = session.preset  # "best" (ours) or "original" (the specification's)
INIT = session.init if PRESET == bn.DEFAULT_PRESET else "scratch"  # "pretrained" (fine-tune) or "scratch"
EPOCHS = session.config.train.epochs  # the profile's: full 50, demo 12, smoke 2
MINUTES = session.minutes  # None, or e.g. 60: stop after the epoch that crosses an hour; run again to go on
GPUS = "all"  # every GPU there is (Kaggle's T4 x2: one model on both, through torchrun); none: one CPU process

# %% [markdown]
# `original` reads the 63 frames of a clip with a GRU and keeps its last state as the 256-number code;
# `best` reads the same 256 numbers as the clip's spectral envelope and 8 steps along it, decoded by
# weights shared along time and a GRU, and is trained to keep onsets sharp. Why, and what each part
# buys: [docs/RESULTS.md](../docs/RESULTS.md).
#
# `INIT = "pretrained"` fine-tunes the pretrained `best` (a decoder twice as wide, trained on 2,354
# rendered piano recordings, [docs/MODEL_CARD.md](../docs/MODEL_CARD.md)). It is the default because
# it beats `best` trained from scratch at every length measured: after 12 epochs it ends about 25% below
# it (test L1 in dB, on the rendered piano set and on the demo data), and after 5 it is below `best`
# after 30 ([docs/RESULTS.md](../docs/RESULTS.md)).

# %% [markdown]
# ## Train (or resume)

# %%
history = session.train(PRESET, init=INIT, epochs=EPOCHS, minutes=MINUTES, gpus=GPUS)

# %% [markdown]
# One line per epoch: train and validation L1 (standardised units; the dB figure beside it), and
# `*best*` when validation improved, which is when `best.pt` is written too.

# %% [markdown]
# ## Loss curves

# %%
bn.plots.loss_curves({PRESET: history});

# %% [markdown]
# Train (solid) and validation (dashed) L1 per epoch. Both should fall; a validation curve that rises
# while the train curve falls means the model memorises its training recordings (`best.pt` keeps the
# epoch with the lowest validation loss either way).
#
# ## Where the results are

# %%
print(bn.run_summary(session.run_dir(PRESET, INIT)))

# %% [markdown]
# `last.pt` and `best.pt` are complete checkpoints (weights, optimiser, random states, history, every
# setting): either one resumes training. Notebook 04 compares the runs you trained (a fine-tuned `best`
# is named `finetuned`) with the pretrained model.
