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

# %%
cache = session.load_cache()
runs = session.load_runs()  # every preset trained in notebook 03: {"original": ..., "best": ..., "sharp": ...}
run = runs.get(bn.DEFAULT_PRESET, next(iter(runs.values())))  # the one the widgets below use
print(f"trained presets: {', '.join(runs)}; widgets use {run.path}")

# %% [markdown]
# ## The models against the baselines

# %%
report = session.evaluate(runs)
display(Markdown(bn.markdown_table(report)))

# %% [markdown]
# Lower is better. `best` should sit below `pca_256` on both splits; if it does not, train longer
# (notebook 03 resumes where it stopped). `sharp` pays a little L1 for onsets that stay sharp: the
# realism table further down shows what it buys. The specification's `original` model usually lands between
# `global_mean` and `pca_256`: that gap is why `best` exists. The report is saved as `report.json`
# beside the runs.

# %%
bn.plots.metrics_bars(report);

# %% [markdown]
# The same table as bars, one group per split: the shorter the bar, the closer the reconstruction. Next,
# how each preset got there: training and validation loss per epoch (standardised L1; lower is better).

# %%
bn.plots.loss_curves({name: r.history for name, r in runs.items()});

# %% [markdown]
# A preset whose dashed validation curve is still falling at the last epoch would gain from more
# training; one whose validation curve turned up has begun to memorise its training recordings.
#
# ## One test clip, every preset

# %%
index = int(cache.indices("test")[len(cache.indices("test")) // 2])
bn.plots.presets_side_by_side(runs, cache, index);

# %% [markdown]
# Each panel's title gives its L1 on this clip. Partials that stay sharp horizontal lines, and onsets
# that stay vertical edges, are what the better preset keeps. Below, the chosen run's reconstruction and
# its error, on one colour scale.

# %%
original = cache.mels[index].astype("float32")
bn.plots.triptych(original, run.reconstruct(original).numpy(), f"{cache.names[index]}, {run.config.model.preset} preset");

# %% [markdown]
# Same colour scale in all three panels. Look at the note onsets (vertical edges) in the error panel:
# that is where an L1-trained decoder blurs most.

# %%
for name, wave in bn.audio.listen_runs(runs, cache, index).items():
    display(Markdown(f"**{name}**"), Audio(wave, rate=cache.features.sample_rate))

# %% [markdown]
# ## Compare: original, reconstruction and error
#
# Choose a split, a recording and a clip. The three players: the clip itself, its own mel spectrogram
# turned back into sound (the **oracle**: what Griffin-Lim phase reconstruction alone does to it), and
# the model's reconstruction. The difference between the last two is the model's doing. A background
# thread fits the codes of the next clips and renders their sound before the slider gets there, so a
# move only draws (tens of milliseconds). A clip it has not reached yet (a new recording, a jump far
# ahead) is drawn at once from the encoder's code, marked *refining…*, and drawn again a second or two
# later with its refined code and its sound.

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
# At alpha 0 and 1 you see the two clips' own reconstructions; in between, a decoder that only ever saw
# real clips' codes. A mix that fades one clip's notes out while the other's fade in means the latent
# space is smooth.
#
# ## New spectrograms from the latent space
#
# A prior is fitted to the latent vectors of the training clips, sampled, and decoded. Three priors:
# `gaussian` (one full-covariance Gaussian), `mixture` (a mixture of Gaussians: clusters of codes, each
# with its own spread) and `kde` (a train clip's code plus a little noise). `TEMPERATURE` scales the
# spread: below 1 the samples are safer and blander, above 1 wilder.

# %%
PRIOR, TEMPERATURE = "mixture", 1.0
samples = bn.generate.samples(runs, cache.db("train"), n=4, prior=PRIOR, temperature=TEMPERATURE)
bn.plots.grid({name: list(s) for name, s in samples.items()}, [f"{PRIOR} sample {i}" for i in range(4)]);

# %% [markdown]
# Compare them with the real clips of notebook 01: samples are smoother, with fewer sharp onsets and
# clear partials. How much of that is the decoder and how much the prior is measured next.

# %%
for name, s in samples.items():
    display(Markdown(f"**{name}**, sample 0"), Audio(bn.mel_to_audio(s[0], cache.features), rate=cache.features.sample_rate))

# %% [markdown]
# ## How real do they look?
#
# A classifier is trained to tell two sets of spectrograms apart; its accuracy on recordings it did
# not train on is the gap between them (0.5: it cannot tell). The Fréchet distance measures the same
# gap in the same features (PCA of the mel plus the sharpness of each band). Clips of one recording
# look alike, so every set is split by recording: no recording is on both sides of a row, nor in both
# the classifier's training and scoring halves. `recordings` says how many each side holds; `n/m`
# (not measurable) marks a side with fewer than 2.

# %%
display(Markdown(bn.generate.realism_table(report.get("realism", {}))))

# %% [markdown]
# Read it from the top, and against its noise. With the demo's 4 held-out recordings (validation and
# test), 2 a side, `real halves` reads 0.50 ± 0.10 over 21 seeds (0.34 to 0.63), and `floor`, two
# recordings against two others, ± 0.27: a smaller difference says nothing here (the full profile
# holds out many more recordings). `decoder` (reconstructions of one half against real clips of the
# other) is the blur an L1 decoder adds, and where `sharp` should read lower than `best` (its
# reconstructions keep their onsets); `floor` compares reconstructions of train recordings the priors
# never saw; each `prior` row is that prior's samples against the floor's second half, with the same
# decoder on both sides. If a prior's nearest-train distance is much below that of the held-out
# reconstructions, it is copying.

# %% [markdown]
# ## The latent space
#
# The latent vectors of the held-out clips (validation and test recordings), projected on their first
# two principal components, coloured by recording.

# %%
bn.plots.latent_map(run, cache);

# %% [markdown]
# Clips of one recording that cluster together mean the latent vector captures something about the
# piece (key, register, texture); clusters that overlap mean the code describes sound more than piece.
