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
run = bn.load_run(session.run_dir())
print(f"{run.path}: epoch {run.epoch} of {len(run.history)} trained (best validation L1)")

# %% [markdown]
# ## The model against the baselines

# %%
report = bn.evaluate(run, cache)
bn.save_report(report, run.path / "report.json")
display(Markdown(bn.markdown_table(report)))

# %%
bn.plots.metrics_bars(report);

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
# ## Listen to one test clip

# %%
index = int(cache.indices("test")[0])
for name, wave in bn.audio.listen(run, cache, index).items():
    display(Markdown(f"**{name}** ({cache.names[index]})"), Audio(wave, rate=cache.features.sample_rate))

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
# A Gaussian fitted to the latent vectors of the training clips, sampled and decoded.

# %%
gaussian = bn.LatentGaussian(run, cache.db("train"))
samples = gaussian.sample(4, seed=0).numpy()
bn.plots.clip_gallery(list(samples), [f"sample {i}" for i in range(4)]);

# %%
display(Audio(bn.mel_to_audio(samples[0], cache.features), rate=cache.features.sample_rate))

# %% [markdown]
# ## The latent space
#
# The latent vectors of the held-out clips (validation and test recordings), projected on their first
# two principal components, coloured by recording. Clips of one recording that cluster together mean the
# latent vector captures something about the piece (key, register, texture).

# %%
bn.plots.latent_map(run, cache);
