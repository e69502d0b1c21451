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
# # From a checkpoint to retrieval numbers and figures
#
# This notebook walks from a trained decoder (a `neurodecode fit` checkpoint or an exported folder)
# to the numbers a paper reports: zero-shot retrieval with confidence intervals, a permutation test
# against chance, k-way curves, the noise ceiling and time-resolved decoding, with the figures.
#
# Set `CKPT` to your checkpoint. Left empty, the notebook makes its own: it simulates a small EEG
# data set and trains a small model for a few epochs (about a minute on a laptop CPU).

# %%
import os
from pathlib import Path

import numpy as np

CKPT = os.environ.get("NEURODECODE_NOTEBOOK_CKPT", "")  # a .ckpt file or an exported folder
WORK = Path(os.environ.get("NEURODECODE_NOTEBOOK_WORK", "notebook_work"))
WORK.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A checkpoint (made here if none is given)

# %%
if not CKPT:
    from neurodecode.cli.lightning import run_lightning_cli
    from neurodecode.simulate.dataset import simulate

    data = WORK / "sim_eeg"
    if not (data / "ceiling.json").is_file():
        res = simulate(data, modality="eeg", n_subjects=1, n_train_concepts=60, n_test_concepts=20, n_exemplars=3,
                       sfreq=100.0, progress_bar=False)
        print(res.summary())
    run_dir = WORK / "run"
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        run_lightning_cli("fit", [
            "--model", "neurodecode.training.lit.AlignmentModule", "--model.encoder", "neurodecode.encoders.MLP",
            "--model.encoder.hidden_sizes", "[256]", "--model.lr", "1e-3",
            "--data.root", str(data), "--data.teacher", "sim:features", "--data.average_train_reps", "true",
            "--trainer.max_epochs", "8", "--trainer.default_root_dir", str(run_dir), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
        ])
    CKPT = str(sorted((run_dir / "checkpoints").glob("best-*.ckpt"))[-1])
print("checkpoint:", CKPT)

# %% [markdown]
# ## 2. The model and its data
#
# The checkpoint knows its prepared folder, teacher and protocol; `root=` and `teacher=` override them.

# %%
from neurodecode.reporting.evaluate import embed_set, load_for_evaluation

model, dm, info = load_for_evaluation(CKPT)
dm.setup("test")
test = dm.sets["test"]
print(dm.describe()["protocol"], "| test samples:", len(test), "| teacher:", dm.hparams.teacher)

brain = embed_set(model, test.data, test.subjects)
images = np.asarray(dm.image_embeddings)
candidates, targets = np.unique(test.stim_rows, return_inverse=True)
print("brain embeddings", brain.shape, "| candidate images", len(candidates))

# %% [markdown]
# ## 3. Zero-shot retrieval, with its protocol
#
# k-way accuracies are exact expectations over all draws of k-1 distractors; the field's seeded
# Monte-Carlo protocol is available with `method="monte_carlo"`.

# %%
from neurodecode.evaluation.retrieval import zero_shot_retrieval

res = zero_shot_retrieval(brain, images[candidates], targets=targets, ks=(2, 4, 10), tops=(1, 5), per_item=True)
m = res["inductive"]["brain_to_image"]
print({k: round(v, 3) for k, v in m.items() if k.startswith("top") or k.endswith("rank")})
mc = zero_shot_retrieval(brain, images[candidates], targets=targets, ks=(2, 4, 10), tops=(1,), full=False,
                         method="monte_carlo", n_draws=100, seed=0)
print("Monte-Carlo (100 draws, seed 0):", {k: round(v, 3) for k, v in mc["inductive"]["brain_to_image"].items()
                                          if k.startswith("top")})

# %% [markdown]
# ## 4. Is it better than chance, and how sure are we?

# %%
from neurodecode.evaluation.stats import bootstrap_ci, retrieval_permutation_test

hits = res["per_item"]["inductive"]["brain_to_image"]["top1_full"]
ci = bootstrap_ci(np.asarray(hits, float), n_resamples=2000, seed=0)
perm = retrieval_permutation_test(brain, images[candidates], targets=targets, n_permutations=500, seed=0)
print(f"top-1 {ci['estimate']:.1%} (95% CI {ci['low']:.1%} to {ci['high']:.1%}), chance {1 / len(candidates):.1%}, "
      f"permutation p = {perm['p_value']:.3g}")

# %% [markdown]
# ## 5. Figures

# %%
from neurodecode.evaluation.retrieval import similarity_matrix
from neurodecode.reporting import figures as viz

sim = similarity_matrix(brain, images[candidates]).numpy()
fig = viz.plot_similarity_matrix(sim[np.argsort(targets)], title="brain x image similarity (test set)")
viz.save_figure(fig, WORK / "similarity_matrix.png")
ks = [2, 4, 10, len(candidates)]
# top-n exists only where n <= k: missing points are left as gaps (NaN)
acc = {f"top-{n}": [m.get(f"top{n}_{k}way" if k < len(candidates) else f"top{n}_full", np.nan) for k in ks]
       for n in (1, 5)}
fig = viz.plot_accuracy_vs_k(ks, acc, title="zero-shot retrieval accuracy vs k")
viz.save_figure(fig, WORK / "accuracy_vs_k.png")

# %% [markdown]
# ## 6. Everything at once: `neurodecode evaluate`
#
# The same numbers and more (CSLS kept apart as transductive, noise ceiling, time-resolved decoding,
# region ablation, per-subject tables) go to `metrics.json`, `report.md` and PNG figures.

# %%
from neurodecode.reporting.evaluate import evaluate

metrics = evaluate(CKPT, WORK / "evaluation", n_boot=500, n_permutations=200, progress_bar=False)
print((WORK / "evaluation" / "report.md").read_text()[:1500])
