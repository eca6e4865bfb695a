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
# # 04 · Evaluate, listen and generate
#
# The original reported only its training loss (about 0.17). Here every number is measured on
# **recordings the model never heard**, beside three baselines that cost nothing to train:
#
# | baseline | what it predicts for a clip |
# |---|---|
# | `global_mean` | the average training spectrogram, whatever the clip |
# | `clip_mean_spectrum` | the clip's own average spectrum, repeated over time (it knows the clip!) |
# | `pca_256` | a linear autoencoder: PCA with as many components as the model has latent numbers |
#
# A model that does not beat them has not learned much. L1 is shown standardised (the original's unit)
# and in dB.

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

# %%
cache = session.load_cache()
runs = session.load_runs()  # every preset trained in notebook 03: {"seed": ..., "best": ...}
run = runs["best"] if "best" in runs else runs["seed"]  # the one the widgets below use
print(f"trained presets: {', '.join(runs)}; widgets use {run.path}")

# %% [markdown]
# ## The models against the baselines

# %%
report = bn.evaluate(runs, cache)
bn.save_report(report, session.paths.runs / "report.json")
display(Markdown(bn.markdown_table(report)))

# %%
bn.plots.metrics_bars(report);

# %% [markdown]
# Training and validation loss of every preset, per epoch (standardised L1; lower is better).

# %%
bn.plots.loss_curves({name: r.history for name, r in runs.items()});

# %% [markdown]
# ## One test clip, every preset

# %%
index = int(cache.indices("test")[len(cache.indices("test")) // 2])
bn.plots.presets_side_by_side(runs, cache, index);

# %%
original = cache.mels[index].astype("float32")
bn.plots.triptych(original, run.reconstruct(original).numpy(), f"{cache.names[index]}, {run.config.model.preset} preset");

# %%
for name, wave in bn.audio.listen_runs(runs, cache, index).items():
    display(Markdown(f"**{name}**"), Audio(wave, rate=cache.features.sample_rate))

# %% [markdown]
# ## Compare: original, reconstruction and error
#
# Choose a split, a recording and a clip. The three players: the clip itself, its own mel spectrogram
# turned back into sound (the **oracle**: what Griffin-Lim phase reconstruction alone does to it), and
# the model's reconstruction. The difference between the last two is the model's doing.

# %%
compare = bn.widgets.CompareView(run, cache)
display(compare.widget)

# %% [markdown]
# ## Walk between two clips
#
# Encode two clips, mix their latent vectors (linearly, or along the sphere), decode the mix.

# %%
walk = bn.widgets.InterpolateView(run, cache)
display(walk.widget)

# %% [markdown]
# ## New spectrograms from the latent space
#
# A Gaussian fitted to the latent vectors of the training clips, sampled and decoded, for each preset.

# %%
samples = bn.generate.samples(runs, cache.db("train"), n=4, seed=0)
bn.plots.grid({name: list(s) for name, s in samples.items()}, [f"sample {i}" for i in range(4)]);

# %%
for name, s in samples.items():
    display(Markdown(f"**{name}**, sample 0"), Audio(bn.mel_to_audio(s[0], cache.features), rate=cache.features.sample_rate))

# %% [markdown]
# ## The latent space
#
# The latent vectors of the held-out clips (validation and test recordings), projected on their first
# two principal components, coloured by recording. Clips of one recording that cluster together mean the
# latent vector captures something about the piece (key, register, texture).

# %%
bn.plots.latent_map(run, cache);
