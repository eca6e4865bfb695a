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
# This step measures the runs you trained in notebook 03 (`best` or `finetuned`, ours, and `original`,
# the specification's) and the `pretrained` BeetNet that ships with the code, on recordings none of them
# heard, beside three baselines that cost nothing to train. Before notebook 03 it works too: then it shows
# the pretrained model alone, on your clips. You will see their errors side by side, one clip as image
# and sound (the real clip, then each model's reconstruction), two views to explore clips and walk
# between them, how real new spectrograms look, and samples of the prior that looks most real. Why
# `best` is built as it is, and every benchmark behind it: [docs/RESULTS.md](../docs/RESULTS.md).

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
runs = session.load_runs()  # every run trained in notebook 03, and the pretrained model: {"original": ..., ...}
PRESET = next(n for n in ("finetuned", "best", "pretrained", "original") if n in runs)  # the one the views use
run = runs[PRESET]
print(f"models: {', '.join(runs)}; the views below use {PRESET} ({run.path})")

# %% [markdown]
# ## Every model, side by side

# %%
report = session.evaluate(runs)
display(Markdown(bn.markdown_table(report)))

# %% [markdown]
# Each model's L1 against the real clips of the validation and test recordings, standardised (the
# original's unit) and in dB; lower is better, and dB compares models that standardise differently (the
# pretrained model keeps its own statistics). `best` should beat `pca_256` (`pca_32` on the smoke
# profile), a linear autoencoder with as many numbers in its code, and `finetuned` should beat both
# `best` and `pretrained`, the model it started from; `original` usually lands between it
# and `global_mean` (the average spectrogram, whatever the clip), and `clip_mean_spectrum` knows each
# clip's own average spectrum. The report is saved as `report.json` beside the runs.

# %%
bn.plots.metrics_bars(report);

# %% [markdown]
# The same table as bars, one colour per split: the shorter the bar, the closer the reconstruction. A
# model that stands no lower than the baselines has not learned much.

# %%
bn.plots.loss_curves({name: r.history for name, r in runs.items()});

# %% [markdown]
# Train (solid) and validation (dashed) L1 per epoch (`pretrained`'s on its own corpus, in its own
# units). A validation curve still falling at the last epoch
# would gain from more training (notebook 03 resumes where it stopped); one that turned up has begun to
# memorise its training recordings.
#
# ## One clip: the real clip, then each preset's reconstruction

# %%
index = int(cache.indices("test")[len(cache.indices("test")) // 2])
bn.plots.presets_side_by_side(runs, cache, index);

# %% [markdown]
# One test clip and each preset's reconstruction of it, on one colour scale, each titled with its L1 on
# this clip. Partials that stay sharp horizontal lines and onsets that stay vertical edges are what the
# better preset keeps.

# %%
for name, wave in bn.audio.listen_runs(runs, cache, index).items():
    display(Markdown(f"**{name}**"), Audio(wave, rate=cache.features.sample_rate))

# %% [markdown]
# The same clip as sound: the real clip, **inversion only** (its own mel spectrogram turned back into
# sound, no model involved), then each preset's reconstruction. What the inversion alone loses, every
# preset loses too; the rest is the model's doing.

# %%
real = cache.mels[index].astype("float32")
bn.plots.triptych(real, run.reconstruct(real).numpy(), f"{cache.names[index]}, the {PRESET} preset");

# %% [markdown]
# The real clip, the reconstruction and their difference on one colour scale. The error gathers at the
# note onsets (vertical edges): that is where a decoder trained on L1 blurs most.
#
# ## Explore: any clip, and the way between two

# %%
compare = bn.widgets.CompareView(run, cache)
display(compare.widget)

# %% [markdown]
# Choose a split, a recording and a clip to see and hear it beside its reconstruction, with the
# inversion alone to tell its loss from the model's. The view refines and renders the next clips before the
# slider gets there; a clip it has not reached yet is drawn at once from the encoder's code, marked
# *refining…*, and drawn again a second or two later.

# %%
walk = bn.widgets.InterpolateView(run, cache)
display(walk.widget)

# %% [markdown]
# Two clips are encoded, their codes mixed (linearly, or along the sphere) and the mix decoded. At alpha
# 0 and 1 you see the two reconstructions; a mix in which one clip's notes fade out as the other's fade
# in means the latent space is smooth between them.
#
# ## How real do new spectrograms look?

# %%
display(Markdown(bn.realism_table(report.get("realism", {}))))

# %% [markdown]
# A classifier learns to tell two sets of spectrograms apart on some recordings and is scored on others:
# 0.5 means it cannot tell them apart (the Fréchet distance measures the same gap in the same features).
# No recording is on both sides of a row; `recordings` says how many each side holds, and `n/m` marks a
# side with fewer than 2. Read it from the top and against its noise: on the demo's 4 held-out
# recordings `real halves` reads 0.50 ± 0.10 over 21 seeds and `floor` ± 0.27, so smaller differences
# say nothing there. `decoder` is the blur the decoder adds; `floor` is reconstructions of train
# recordings the priors never saw, and each `prior` row that prior's samples against it. A prior whose
# nearest-train distance is far below the held-out reconstructions' is copying.
#
# ## Samples of the prior that looks most real

# %%
PRIOR = bn.best_prior(report, PRESET)  # the prior row of lowest accuracy above (gaussian if none)
samples = bn.generate.samples(runs, cache.clips("train", most=bn.generate.FIT_CLIPS).db, n=4, prior=PRIOR)
bn.plots.grid({name: list(s) for name, s in samples.items()}, [f"{PRIOR} sample {i}" for i in range(4)]);

# %% [markdown]
# Four codes drawn from the prior fitted to each preset's train codes, decoded: `gaussian` is one
# Gaussian, `mixture` clusters of codes each with its own spread, `kde` a train clip's code plus a little
# noise. Beside the real clips of notebook 01 they are smoother, with fewer sharp onsets; `temperature`
# below 1 (an argument of `samples`) makes them safer and blander, above 1 wilder.

# %%
for name, s in samples.items():
    sound = bn.mel_to_audio(s[0], cache.features)
    display(Markdown(f"**{name}**, {PRIOR} sample 0"), Audio(sound, rate=cache.features.sample_rate))

# %% [markdown]
# The first sample of each preset as sound, through the same inversion as the clip above.
#
# ## The latent space

# %%
bn.plots.latent_map(run, cache);

# %% [markdown]
# The codes of the held-out clips on their first two principal components, one colour per recording.
# Clips of one recording that cluster mean the code captures the piece (key, register, texture); clusters
# that overlap mean it describes sound more than piece.
