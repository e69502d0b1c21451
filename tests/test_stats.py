"""Bootstrap CIs, permutation tests, paired comparisons, summaries and noise ceilings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurodecode.evaluation import ceiling, stats
from neurodecode.evaluation.ranking import similarity_matrix
from neurodecode.evaluation.retrieval import kway_accuracy


# --------------------------------------------------------------------------------------------------
# bootstrap
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_bootstrap_ci_covers_true_value(method):
    rng = np.random.default_rng(0)
    p, n, n_sims = 0.3, 120, 150
    covered = 0
    for s in range(n_sims):
        hits = (rng.random(n) < p).astype(float)
        ci = stats.bootstrap_ci(hits, method=method, n_resamples=999, seed=s)
        assert ci["low"] <= ci["estimate"] <= ci["high"]
        covered += ci["low"] <= p <= ci["high"]
    # nominal 95%; with 150 simulations the coverage has sd ~ 0.018
    assert 0.87 <= covered / n_sims <= 0.995


def test_bootstrap_ci_is_seeded_and_handles_degenerate_data():
    x = np.random.default_rng(1).random(50)
    a = stats.bootstrap_ci(x, n_resamples=500, seed=3)
    b = stats.bootstrap_ci(x, n_resamples=500, seed=3)
    c = stats.bootstrap_ci(x, n_resamples=500, seed=4)
    assert a == b and a["low"] != c["low"]
    assert a["estimate"] == pytest.approx(x.mean()) and not a["degenerate"]
    med = stats.bootstrap_ci(x, statistic="median", method="percentile", n_resamples=500)
    assert med["estimate"] == pytest.approx(np.median(x))
    many = stats.bootstrap_metrics({"a": x, "b": 1 - x}, n_resamples=500, seed=3)
    assert many["a"] == a and many["b"]["estimate"] == pytest.approx(1 - x.mean())
    perfect = stats.bootstrap_ci(np.ones(40))
    assert perfect["low"] == perfect["high"] == 1.0 and perfect["degenerate"]
    with pytest.raises(ValueError, match="1-D"):
        stats.bootstrap_ci(np.ones((3, 3)))


# --------------------------------------------------------------------------------------------------
# permutation tests
# --------------------------------------------------------------------------------------------------
def make_pairs(n=40, dim=16, noise=1.0, seed=0, signal=True):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, dim))
    brain = (image if signal else rng.standard_normal((n, dim))) + noise * rng.standard_normal((n, dim))
    return brain, image


def test_permutation_test_good_decoder_has_small_p():
    brain, image = make_pairs(noise=1.0)
    res = stats.retrieval_permutation_test(brain, image, k=10, n_permutations=999, seed=0)
    assert res["p_value"] == pytest.approx(1 / 1000)
    assert res["statistic"] == pytest.approx(kway_accuracy(similarity_matrix(brain, image), 10))
    assert abs(res["null_mean"] - 0.1) < 0.02  # the null sits at chance
    rank = stats.retrieval_permutation_test(brain, image, statistic="mean_rank", n_permutations=199,
                                            direction="image_to_brain")
    assert rank["p_value"] == pytest.approx(1 / 200) and rank["alternative"] == "less"
    assert abs(rank["null_mean"] - rank["chance"]) < 2


def test_permutation_null_statistics_equal_explicit_loop():
    brain, image = make_pairs(n=15, noise=3.0, seed=2)
    s = similarity_matrix(brain, image)
    res = stats.retrieval_permutation_test(brain, image, k=4, top=2, n_permutations=300, seed=5)
    # reproduce the null with an explicit loop over the same permutations
    rng = np.random.default_rng(5)
    perms = np.argsort(rng.random((300, 15)), axis=1)
    null = [kway_accuracy(s, 4, top=2, targets=p) for p in perms]
    assert res["null_mean"] == pytest.approx(np.mean(null))
    assert res["p_value"] == pytest.approx((1 + np.sum(np.array(null) >= res["statistic"] - 1e-12)) / 301)


def test_permutation_p_values_are_uniform_under_the_null():
    p_values = []
    for seed in range(150):
        brain, image = make_pairs(n=30, dim=8, seed=seed, signal=False)
        p_values.append(stats.retrieval_permutation_test(brain, image, k=2, n_permutations=199,
                                                         seed=seed)["p_value"])
    p_values = np.array(p_values)
    assert 0.01 <= np.mean(p_values <= 0.05) <= 0.12
    assert 0.38 <= np.mean(p_values <= 0.5) <= 0.62
    from scipy.stats import kstest

    assert kstest(p_values, "uniform").pvalue > 0.001


def test_classification_permutation_test():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=80)
    good = np.eye(4)[y] + 0.8 * rng.standard_normal((80, 4))
    res = stats.classification_permutation_test(y, good, n_permutations=499)
    assert res["p_value"] == pytest.approx(1 / 500) and res["statistic"] > 0.5
    bal = stats.classification_permutation_test(y, good, statistic="balanced_accuracy", n_permutations=199)
    assert bal["p_value"] == pytest.approx(1 / 200) and abs(bal["null_mean"] - 0.25) < 0.03
    null = stats.classification_permutation_test(y, rng.standard_normal((80, 4)), n_permutations=499)
    assert null["p_value"] > 0.01 and abs(null["null_mean"] - 0.25) < 0.03


# --------------------------------------------------------------------------------------------------
# paired comparisons
# --------------------------------------------------------------------------------------------------
def test_mcnemar_equals_exact_binomial_by_hand():
    rng = np.random.default_rng(4)
    a = (rng.random(60) < 0.7).astype(int)
    b = a.copy()
    flip = rng.choice(60, 12, replace=False)
    b[flip[:9]] = 0
    b[flip[9:]] = 1
    res = stats.paired_comparison(a, b)
    n01, n10 = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    n = n01 + n10
    tail = sum(math.comb(n, i) for i in range(min(n01, n10) + 1)) / 2**n
    assert res["test"].startswith("McNemar") and res["a_only"] == n01 and res["b_only"] == n10
    assert res["p_value"] == pytest.approx(min(1.0, 2 * tail))
    assert res["difference"] == pytest.approx(a.mean() - b.mean())


def test_paired_permutation_equals_enumeration():
    rng = np.random.default_rng(5)
    a, b = rng.random(10), rng.random(10)
    d = a - b
    signs = np.array(np.meshgrid(*[[1, -1]] * 10)).reshape(10, -1).T  # all 1024 sign flips
    null = (signs * d).mean(axis=1)
    expected = np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)
    res = stats.paired_comparison(a, b, method="permutation", n_resamples=5000)
    assert res["p_value"] == pytest.approx(expected)
    w = stats.paired_comparison(a, b, method="wilcoxon")
    assert 0 < w["p_value"] <= 1 and w["test"] == "Wilcoxon signed-rank"


def test_paired_comparison_detects_a_better_model_and_not_identical_ones():
    rng = np.random.default_rng(6)
    base = rng.random(200)
    better = np.clip(base + 0.1 + 0.05 * rng.standard_normal(200), 0, 1)
    res = stats.paired_comparison(better, base, n_resamples=2000)
    assert res["p_value"] < 0.001 and res["ci_low"] > 0
    same = stats.paired_comparison(base, base)
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    with pytest.raises(ValueError, match="binary"):
        stats.paired_comparison(base, better, method="mcnemar")


# --------------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------------
def test_summarize_over_seeds_and_subjects():
    rng = np.random.default_rng(7)
    records = [{"subject": f"{s:02d}", "seed": seed, "top1": float(rng.random()), "top5": float(rng.random())}
               for s in range(1, 4) for seed in range(3)]
    per_subject = stats.summarize(records, by="subject")
    assert [r["subject"] for r in per_subject] == ["01", "02", "03"]
    vals = [r["top1"] for r in records if r["subject"] == "02"]
    assert per_subject[1]["top1_mean"] == pytest.approx(np.mean(vals))
    assert per_subject[1]["top1_sd"] == pytest.approx(np.std(vals, ddof=1)) and per_subject[1]["n"] == 3
    overall = stats.summarize(records, ["top1"], average_over="seed")
    subj_means = [np.mean([r["top1"] for r in records if r["subject"] == s]) for s in ("01", "02", "03")]
    assert overall[0]["n"] == 3 and overall[0]["top1_mean"] == pytest.approx(np.mean(subj_means))
    assert overall[0]["top1_sd"] == pytest.approx(np.std(subj_means, ddof=1))
    table = stats.markdown_table(per_subject, ["top1", "top5"], keys=["subject"])
    assert table.splitlines()[0] == "| subject | n | top1 | top5 |"
    assert stats.format_mean_sd(0.3123, 0.021) == "31.2 ± 2.1"
    assert np.isnan(stats.mean_sd([0.5])["sd"])


# --------------------------------------------------------------------------------------------------
# noise ceiling
# --------------------------------------------------------------------------------------------------
def simulate_repeats(n_stim=300, n_rep=8, n_feat=(4, 5), noise_sd=2.0, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n_stim, 1) + n_feat)
    return (signal + noise_sd * rng.standard_normal((n_stim, n_rep) + n_feat)).astype(np.float32)


def test_split_half_reliability_recovers_population_value():
    x = simulate_repeats(noise_sd=2.0, n_rep=8)
    res = ceiling.split_half_reliability(x, n_splits=20, seed=0)
    truth = 1 / (1 + 2.0**2 / 8)  # correlation of two independent 8-trial averages
    assert res["per_feature"].shape == (4, 5)
    assert abs(res["overall"] - truth) < 0.03
    half_truth = 1 / (1 + 2.0**2 / 4)
    assert abs(np.nanmean(res["split_half_r"]) - half_truth) < 0.03
    assert res["spearman_brown_factor"] == 2.0
    again = ceiling.split_half_reliability(x, n_splits=20, seed=0)
    np.testing.assert_array_equal(res["per_feature"], again["per_feature"])
    odd = ceiling.split_half_reliability(x[:, :7], n_splits=20, seed=0)  # 3 + 3 used, corrected to 7
    assert odd["spearman_brown_factor"] == pytest.approx(7 / 3)
    assert abs(odd["overall"] - 1 / (1 + 4.0 / 7)) < 0.04
    noise_only = ceiling.split_half_reliability(np.random.default_rng(1).standard_normal((300, 8, 4, 5)),
                                                n_splits=10)
    assert abs(noise_only["overall"]) < 0.08


def test_spearman_brown_formula():
    assert ceiling.spearman_brown(0.5, 2) == pytest.approx(2 / 3)
    assert ceiling.spearman_brown(0.5, 1) == pytest.approx(0.5)


def test_ncsnr_noise_ceiling_matches_theory():
    x = simulate_repeats(n_stim=500, noise_sd=2.0, n_rep=8)
    res = ceiling.ncsnr_noise_ceiling(x)
    np.testing.assert_allclose(np.median(res["ncsnr"]), 0.5, atol=0.05)  # signal sd 1 / noise sd 2
    assert abs(res["overall"] - 100 / (1 + 4.0 / 8)) < 4
    single = ceiling.ncsnr_noise_ceiling(x, n_average=1)
    assert abs(single["overall"] - 100 / (1 + 4.0)) < 3


def test_group_repetitions_and_identification():
    rng = np.random.default_rng(2)
    n_stim, n_rep = 40, 6
    signal = rng.standard_normal((n_stim, 30))
    ids = np.repeat(np.arange(n_stim), n_rep + 1)[:-3]  # the last stimulus has fewer repetitions
    rng.shuffle(ids)
    trials = signal[ids] + 0.5 * rng.standard_normal((ids.size, 30))
    grouped, stimuli = ceiling.group_repetitions(trials, ids, n_repetitions=n_rep)
    assert grouped.shape == (n_stim - 1, n_rep, 30) and 39 not in stimuli
    np.testing.assert_array_equal(grouped[5, 0], trials[np.flatnonzero(ids == stimuli[5])[0]])
    ident = ceiling.split_half_identification(grouped, ks=(2, 10), n_splits=5)
    assert ident["top1_2way"] > 0.99 and ident["top1_full"] > 0.9
    noise = ceiling.split_half_identification(rng.standard_normal((40, 6, 30)), ks=(2,), n_splits=5)
    assert abs(noise["top1_2way"] - 0.5) < 0.1
    with pytest.raises(ValueError, match="n_stimuli, n_repetitions"):
        ceiling.split_half_reliability(np.zeros((10, 4)))
