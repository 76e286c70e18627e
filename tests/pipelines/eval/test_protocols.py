"""Retrieval and linear-probe protocols on hand-made features."""

import numpy as np
import pytest
import torch

from pipelines.eval.protocols import Features, classification_scores, linear_probe, plot_confusion, retrieval_recall


def _feats(vectors, labels):
    x = np.asarray(vectors, np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return Features([str(i) for i in range(len(labels))], np.asarray(labels, np.int64), x)


def test_retrieval_recall_against_a_hand_count():
    gallery = _feats([[1, 0], [0, 1], [-1, 0.1], [0.7, 0.7]], [0, 1, 2, 1])
    query = _feats([[1, 0.05], [0.1, 1], [-1, 0]], [1, 1, 0])
    # nearest by cosine: q0 -> g0 (0), g3 (1); q1 -> g1 (1); q2 -> g2 (2), then g1/g3, g0 last
    r = retrieval_recall(query, gallery, ks=(1, 2, 4))
    assert r["R@1"] == pytest.approx(100 / 3)
    assert r["R@2"] == pytest.approx(200 / 3)
    assert r["R@4"] == pytest.approx(100.0)


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    labels = np.repeat(np.arange(3), 20)
    train = _feats(centers[labels] + 0.05 * rng.normal(size=(60, 8)), labels)
    test = _feats(centers[labels] + 0.05 * rng.normal(size=(60, 8)), labels)
    out = linear_probe(train, test, 3, epochs=200)
    assert out["top1"] == 100.0 and out["confusion"].trace() == 60


def test_scores_and_confusion_figure():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0]])
    s = classification_scores(logits, torch.tensor([0, 1, 2]), 3)
    assert s["top1"] == pytest.approx(200 / 3) and s["confusion"][2, 1] == 1
    fig = plot_confusion(s["confusion"], ["a", "b", "c"], "test")
    assert fig.axes


def test_authors_retrieval_centres_each_split_before_normalising():
    """CoCLR's test_retrieval: feature - feature.mean(0) per split, L2-normalise, then cosine top-k."""
    rng = np.random.default_rng(0)
    shift = np.full(8, 5.0, np.float32)  # a large common offset hides the class structure from cosine
    protos = rng.normal(size=(3, 8)).astype(np.float32)
    g_lab, q_lab = np.repeat(np.arange(3), 4), np.arange(3)
    gallery = Features([f"g{i}" for i in range(12)], g_lab, protos[g_lab] * 0.3 + shift
                       + 0.01 * rng.normal(size=(12, 8)).astype(np.float32))
    query = Features(["q0", "q1", "q2"], q_lab, protos[q_lab] * 0.3 + shift)
    centred = retrieval_recall(query, gallery, ks=(1,), center=True)
    g_c = gallery.feats_ND - gallery.feats_ND.mean(0)
    q_c = query.feats_ND - query.feats_ND.mean(0)
    g_c /= np.linalg.norm(g_c, axis=1, keepdims=True)
    q_c /= np.linalg.norm(q_c, axis=1, keepdims=True)
    expected = float(np.mean(g_lab[(q_c @ g_c.T).argmax(1)] == q_lab) * 100)
    assert centred["R@1"] == pytest.approx(expected)
    assert set(retrieval_recall(query, gallery, (1, 5, 10, 20, 50), center=True)) == {"R@1", "R@5", "R@10", "R@20",
                                                                                     "R@50"}
