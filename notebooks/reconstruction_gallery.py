# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From trained checkpoints to a reconstruction gallery and its metrics
#
# Reconstruction has two stages, as in ATM and MindEye2: a **prior** maps the encoder's brain
# embedding into the teacher's image-embedding space, and a **generator** draws an image from that
# embedding. This notebook runs them one by one with the Python API (what `neurodecode reconstruct`
# does in one command), looks at what each stage keeps, draws the gallery and scores it with
# MindEye2's metrics, beside the generator's ceiling and chance.
#
# Set `ENCODER`, `PRIOR` and `GENERATOR` (a generator spec such as `demo:DIR` or
# `sdxl-turbo-ip-adapter:SDXL_DIR+IP_ADAPTER_DIR`). Left empty, the notebook trains small ones on
# simulated EEG with `neurodecode demo --small` (about a minute on a laptop CPU; a smoke-sized model,
# so expect blurry, often wrong images: the full `neurodecode demo` trains for real).

# %%
import os
from pathlib import Path

import numpy as np

ENCODER = os.environ.get("NEURODECODE_NOTEBOOK_ENCODER", "")  # .ckpt or exported folder
PRIOR = os.environ.get("NEURODECODE_NOTEBOOK_PRIOR", "")  # .ckpt or exported folder
GENERATOR = os.environ.get("NEURODECODE_NOTEBOOK_GENERATOR", "")  # a generator spec
WORK = Path(os.environ.get("NEURODECODE_NOTEBOOK_WORK", "notebook_work"))
N_SAMPLES = 2  # images per stimulus (ATM draws 10)
WORK.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Three trained stages (made here if none are given)

# %%
if not (ENCODER and PRIOR and GENERATOR):
    from neurodecode.cli.main import main

    demo = WORK / "demo"
    assert main(["demo", "--small", "--out", str(demo)]) == 0
    ENCODER, PRIOR = str(demo / "exported"), str(demo / "prior_exported")
    GENERATOR = f"demo:{demo / 'generator_exported'}"
print("encoder:", ENCODER, "| prior:", PRIOR, "| generator:", GENERATOR)

# %% [markdown]
# ## 2. Stage 1: brain embeddings, and the prior's image embeddings
#
# `prepare_inputs` embeds one subject's test trials (repetitions averaged) with the encoder and
# samples the prior. Rows are sorted by stimulus id; the teacher's own embeddings of the seen
# images come along (the generator's ceiling).

# %%
from neurodecode.reconstruction.pipeline import prepare_inputs, stage_retrieval

inputs = prepare_inputs(ENCODER, PRIOR, seed=0, progress=False)
print(f"sub-{inputs.subject}: {len(inputs)} test stimuli | brain {inputs.brain.shape} -> image embeddings "
      f"{inputs.predicted.shape} | prior {inputs.protocol['prior_kind']}, {inputs.protocol.get('prior_steps')} steps")

# %% [markdown]
# What does each stage keep? Retrieval of the seen image among the test images, from the encoder's
# embedding (in its teacher's space) and from the prior's output (in the generator's teacher space).

# %%
encoder_ret = stage_retrieval(inputs.brain, inputs.encoder_targets)
prior_ret = stage_retrieval(inputs.predicted, inputs.targets)
for name, r in (("encoder", encoder_ret), ("prior", prior_ret)):
    print(f"{name:8s} top-1 {r['top1']:.1%}  top-5 {r['top5']:.1%}  ({r['n_candidates']}-way, "
          f"chance {1 / r['n_candidates']:.1%})")
cos = np.sum(inputs.predicted * inputs.targets, 1) / (
    np.linalg.norm(inputs.predicted, axis=1) * np.linalg.norm(inputs.targets, axis=1))
print(f"cosine(prior output, true image embedding): {cos.mean():.3f} ± {cos.std():.3f}")

# %% [markdown]
# ## 3. Stage 2: the generator draws the images
#
# Sample `k` of stimulus `s` gets the seed `sample_seed(seed, s, k)`: the same image whatever the
# batch or the order, so an interrupted run resumes with the images it would have drawn. The
# references are drawn the same way: the teacher's own embeddings (ceiling) and the system's
# embeddings shuffled over stimuli (chance).

# %%
from neurodecode.reconstruction.generators import load_generator
from neurodecode.reconstruction.jobs import draw_images, read_samples
from neurodecode.reconstruction.pipeline import derangement

generator = load_generator(GENERATOR, device="cpu")
print(generator.protocol())
recon = WORK / "recon"
ids = inputs.stimulus_ids
draw_images(generator, inputs.predicted, ids, recon / "images", n_samples=N_SAMPLES, show_progress=False)
draw_images(generator, inputs.targets, ids, recon / "ceiling", n_samples=1, show_progress=False)
perm = derangement(len(ids), seed=0)
draw_images(generator, inputs.predicted[perm], ids, recon / "chance", n_samples=1, show_progress=False)
samples = read_samples(recon / "images", ids, N_SAMPLES)

# %% [markdown]
# ## 4. The gallery
#
# Per stimulus: the image seen, its reconstructions, and the five stimuli the encoder retrieved first
# (the seen one outlined in green).

# %%
from IPython.display import Image, display

from neurodecode.reporting.figures.gallery import gallery_figure
from neurodecode.reporting.reconstruct import gallery_rows

from neurodecode.reconstruction.jobs import sample_seed

seeds = {sid: [sample_seed(0, sid, k) for k in range(N_SAMPLES)] for sid in ids}
rows = gallery_rows(inputs, samples, seeds, encoder_ret["top_rows"])
png = gallery_figure(rows, recon / "gallery.png", max_rows=6, title=f"sub-{inputs.subject}, {GENERATOR}")
display(Image(filename=str(png)))

# %% [markdown]
# ## 5. Metrics, MindEye2's conventions
#
# PixCorr and SSIM at 425 px, two-way identification per network (networks without local weights
# are skipped with the reason; `efficientnet-lite0` works offline). Round `k` scores sample `k` of
# every stimulus; best-of-k is an upper bound and reported apart.

# %%
from neurodecode.evaluation.recon_metrics import score_reconstructions
from neurodecode.reporting.recon_report import format_metric, write_recon_report

truths = dict(zip(ids, inputs.image_files, strict=True))
networks = ["efficientnet-lite0"]
result = score_reconstructions(samples, truths, networks, "cpu", progress_bar=False)
refs = {name: score_reconstructions(read_samples(recon / name, ids, 1), truths, networks, "cpu",
                                    progress_bar=False, per_stimulus=False) for name in ("ceiling", "chance")}
print(f"{'metric':22s}{'this system':>16s}{'ceiling':>12s}{'chance':>12s}")
for name, e in result["metrics"].items():
    cells = [format_metric(e["mean"], e["kind"], sd=e["sd"])]
    cells += [format_metric(refs[r]["metrics"][name]["mean"], e["kind"]) for r in ("ceiling", "chance")]
    print(f"{e['label']:22s}{cells[0]:>16s}{cells[1]:>12s}{cells[2]:>12s}")
for name, reason in result["skipped"].items():
    print(f"skipped {name}: {reason[:90]}")

# %% [markdown]
# The same report `neurodecode reconstruct` writes, with the references and the retrieval by stage:

# %%
result.update({name: {"metrics": r["metrics"]} for name, r in refs.items()})
result["retrieval"] = {"encoder": {k: encoder_ret[k] for k in ("top1", "top5", "n_candidates")},
                       "prior": {k: prior_ret[k] for k in ("top1", "top5", "n_candidates")}}
report = write_recon_report(result, recon, recon / "gallery.png")
print(report.read_text()[:1500])

# %% [markdown]
# In one command, with every option (several samples, low-level branch, several GPUs):
#
# ```
# neurodecode reconstruct --encoder ENCODER --prior PRIOR --generator GENERATOR --out recon
# ```
