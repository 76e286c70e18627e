"""Two-stream late fusion: videos aligned across streams, similarities and probabilities averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.eval.fusion import align, fused_probe, fused_retrieval, fusion_table, run_fused
from pipelines.eval.protocols import Features, retrieval_recall


def _features(ids, labels, feats) -> Features:
    f = F.normalize(torch.as_tensor(np.asarray(feats, np.float32)), dim=1).numpy()
    return Features(list(ids), np.asarray(labels, np.int64), f)


def test_align_keeps_the_videos_every_stream_has_in_one_order():
    rgb = (_features("abc", [0, 1, 0], np.eye(3)), _features("xy", [0, 1], np.eye(2, 3)))
    flow = (_features("cb", [0, 1], np.eye(2, 3)), _features("yx", [1, 0], np.eye(2, 3)))
    (rgb_a, flow_a), dropped = align([rgb, flow])
    assert dropped == 1  # "a" has no flow features
    assert rgb_a[0].video_id == flow_a[0].video_id == ["b", "c"]
    assert rgb_a[1].video_id == flow_a[1].video_id == ["x", "y"]
    assert flow_a[1].label_index.tolist() == [0, 1]


def test_fused_retrieval_reads_the_mean_similarity():
    gallery_ids, gallery_labels = "gh", [0, 1]
    # Stream 1 ranks g first for the query, stream 2 ranks h first by a larger margin: the mean picks h.
    s1 = (_features(gallery_ids, gallery_labels, [[1, 0], [0.8, 0.6]]), _features("q", [1], [[1, 0]]))
    s2 = (_features(gallery_ids, gallery_labels, [[0, 1], [1, 0]]), _features("q", [1], [[1, 0]]))
    assert retrieval_recall(s1[1], s1[0], (1,))["R@1"] == 0.0
    assert fused_retrieval([s1, s2], (1,))["R@1"] == 100.0
    assert fused_retrieval([s1, s1], (1,)) == retrieval_recall(s1[1], s1[0], (1,))  # one stream twice = itself


def test_fused_probe_averages_probabilities_and_beats_a_blind_stream():
    rng = np.random.default_rng(0)
    labels_tr, labels_te = rng.integers(0, 3, 60), rng.integers(0, 3, 30)
    informative = (_features(map(str, range(60)), labels_tr, np.eye(3)[labels_tr] + 0.1 * rng.normal(size=(60, 3))),
                   _features(map(str, range(30)), labels_te, np.eye(3)[labels_te] + 0.1 * rng.normal(size=(30, 3))))
    blind = (_features(map(str, range(60)), labels_tr, rng.normal(size=(60, 3))),
             _features(map(str, range(30)), labels_te, rng.normal(size=(30, 3))))
    fused = fused_probe([informative, blind], 3, "linear", epochs=100, seed=0)
    assert fused["top1"] > 80.0 and fused["confusion"].sum() == 30
    with pytest.raises(ValueError, match="'linear' or 'mlp'"):
        fused_probe([informative], 3, "svm", epochs=1, seed=0)


def test_run_fused_refuses_protocols_it_cannot_fuse_and_the_table_names_the_streams():
    with pytest.raises(ValueError, match="finetune"):
        run_fused([], ["retrieval", "finetune"], 3)
    table = fusion_table({"rgb m1": {"retrieval": {"R@1": 10.0, "R@5": 20.0}},
                          "flow m2": {"retrieval": {"R@1": 30.0, "R@5": 40.0}}},
                         {"fused_retrieval": {"R@1": 35.0, "R@5": 45.0}, "fused_videos": {"videos": 8.0, "dropped": 1.0}})
    assert "fused (mean)" in table and "35.00" in table and "dropped (not in every stream): 1" in table
