"""Zero-shot and supervised classification metrics against sklearn and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score, top_k_accuracy_score

from neurodecode.evaluation import classification as cls


def make_classes(n_classes=8, n_prompts=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    prompts = centres[:, None, :] + 0.3 * rng.standard_normal((n_classes, n_prompts, dim))
    return centres, prompts


def test_prompt_ensembling_is_normalised_mean():
    _, prompts = make_classes()
    unit = prompts / np.linalg.norm(prompts, axis=-1, keepdims=True)
    expected = unit.mean(axis=1)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(cls.class_embeddings(prompts).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(torch.linalg.norm(cls.class_embeddings(prompts[:, 0]), dim=1), 1, atol=1e-6)


def test_zero_shot_matches_brute_force_and_sklearn():
    rng = np.random.default_rng(1)
    _, prompts = make_classes(n_classes=8)
    labels = rng.integers(0, 8, size=120)
    classes = cls.class_embeddings(prompts).numpy()
    brain = classes[labels] + 0.35 * rng.standard_normal((120, 16))
    res = cls.zero_shot_classification(brain, prompts, labels, tops=(1, 3, 5))
    logits = (brain / np.linalg.norm(brain, axis=1, keepdims=True)) @ classes.T
    pred = logits.argmax(axis=1)
    assert res["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert res["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert res["top3_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=3, labels=np.arange(8)))
    assert res["top5_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5, labels=np.arange(8)))
    assert 0.2 < res["accuracy"] < 1.0  # a real, imperfect decoder
    assert res["chance"] == 1 / 8 and res["n_classes"] == 8
    assert res["protocol"]["inference"] == "inductive"


def test_perfect_and_random_zero_shot():
    rng = np.random.default_rng(2)
    _, prompts = make_classes(n_classes=10)
    labels = np.arange(200) % 10
    perfect = cls.zero_shot_classification(cls.class_embeddings(prompts)[labels] * 5, prompts, labels)
    assert perfect["accuracy"] == 1.0 and perfect["balanced_accuracy"] == 1.0 and perfect["top5_accuracy"] == 1.0
    rand = cls.zero_shot_classification(rng.standard_normal((200, 16)), prompts, labels)
    se = np.sqrt(0.1 * 0.9 / 200)
    assert abs(rand["accuracy"] - 0.1) < 4 * se


def test_ties_in_classification():
    scores = np.zeros((6, 3))  # every class scores the same
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert cls.classification_metrics(labels, scores, ties="pessimistic")["accuracy"] == 0.0
    assert cls.classification_metrics(labels, scores, ties="optimistic")["accuracy"] == 1.0
    avg = cls.classification_metrics(labels, scores, ties="average", tops=(1, 2))
    assert avg["accuracy"] == pytest.approx(1 / 3) and avg["top2_accuracy"] == pytest.approx(2 / 3)
    assert avg["balanced_accuracy"] == pytest.approx(1 / 3)


def test_supervised_two_classes_roc_auc():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=300)
    logit = 1.2 * (y - 0.5) + rng.standard_normal(300)
    res = cls.classification_metrics(y, logit)  # 1-D decision scores
    assert res["roc_auc"] == pytest.approx(roc_auc_score(y, logit))
    assert res["accuracy"] == pytest.approx(accuracy_score(y, logit > 0))
    assert res["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, logit > 0))
    two = np.stack([-logit / 2, logit / 2], axis=1)
    assert cls.classification_metrics(y, two)["roc_auc"] == pytest.approx(roc_auc_score(y, logit))
    assert "top5_accuracy" not in res


def test_balanced_accuracy_with_imbalanced_classes():
    # 90 items of class 0, always right; 10 of class 1, always wrong
    y = np.array([0] * 90 + [1] * 10)
    scores = np.zeros((100, 2))
    scores[:, 0] = 1.0
    res = cls.classification_metrics(y, scores)
    assert res["accuracy"] == pytest.approx(0.9)
    assert res["balanced_accuracy"] == pytest.approx(0.5)
    assert res["roc_auc"] == pytest.approx(0.5)


def test_metric_classes_equal_functional():
    rng = np.random.default_rng(4)
    _, prompts = make_classes(n_classes=6)
    labels = torch.from_numpy(rng.integers(0, 6, size=50))
    brain = torch.from_numpy(cls.class_embeddings(prompts).numpy()[labels.numpy()]
                             + 0.5 * rng.standard_normal((50, 16))).float()
    m = cls.ZeroShotClassification(prompts, tops=(1, 3))
    for sl in (slice(0, 17), slice(17, 30), slice(30, 50)):
        m.update(brain[sl], labels[sl])
    out = m.compute()
    ref = cls.zero_shot_classification(brain, prompts, labels, tops=(1, 3))
    assert float(out["accuracy"]) == pytest.approx(ref["accuracy"])
    assert float(out["top3_accuracy"]) == pytest.approx(ref["top3_accuracy"])
    assert float(out["balanced_accuracy"]) == pytest.approx(ref["balanced_accuracy"])
    s = cls.ClassificationMetrics(tops=(1, 3))
    logits = cls.zero_shot_logits(brain, prompts)
    s.update(logits[:20], labels[:20])
    s.update(logits[20:], labels[20:])
    assert float(s.compute()["accuracy"]) == pytest.approx(ref["accuracy"])
    assert s.last_result["n_items"] == 50


def test_classification_errors():
    with pytest.raises(ValueError, match="labels must be < n_classes=3"):
        cls.classification_metrics(np.array([0, 3]), np.zeros((2, 3)))
    with pytest.raises(TypeError, match="integer class indices"):
        cls.classification_metrics(np.array([0.0, 1.0]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same embedding size"):
        cls.zero_shot_logits(np.zeros((2, 5)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="n_prompts"):
        cls.class_embeddings(np.ones(4))
