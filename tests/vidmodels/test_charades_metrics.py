"""The Charades evaluator against a loop-by-loop transcription of ``Charades_v1_localize.m``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidmodels.metrics import (
    average_precision_official,
    charades_map,
    charades_points,
    charades_times,
    frame_map,
    frame_map_by_label_count,
    scores_at_times,
    segment_point_labels,
)

try:
    from sklearn.metrics import average_precision_score
except ImportError:  # sklearn is optional in the venv
    average_precision_score = None


def _thumos_ap(conf: list[float], labels: list[int]) -> float:
    """``THUMOSeventclspr`` line by line: ``sort(-conf)`` (stable), cumulative tp/fp, Σ prec(pos)/npos."""
    sortind = sorted(range(len(conf)), key=lambda i: -conf[i])  # Python's sort is stable, as MATLAB's
    tp = fp = 0
    prec = []
    for i in sortind:
        tp += labels[i] == 1
        fp += labels[i] != 1
        prec.append(tp / (fp + tp))
    npos = sum(1 for y in labels if y == 1)
    ap = 0.0
    for rank, i in enumerate(sortind):
        if labels[i] == 1:
            ap += prec[rank]
    return ap / npos if npos else math.nan


def _official(test: np.ndarray, gtlabel: np.ndarray) -> tuple[list[float], float, float]:
    """The scorer's tail: per-class AP, ``map = mean(ap_all)``, ``wap = Σ ap·npos / Σ gtlabel``."""
    ap_all = [_thumos_ap(test[:, k].tolist(), gtlabel[:, k].astype(int).tolist()) for k in range(test.shape[1])]
    npos = gtlabel.sum(0)
    return ap_all, float(np.mean(ap_all)), float(np.sum(np.array(ap_all) * npos) / gtlabel.sum())


def _random_case(seed: int, n: int = 120, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < 0.3).astype(np.float64)
    scores = rng.random((n, k)) + 0.5 * labels  # informative, tie-free (continuous draws)
    return scores, labels


@pytest.mark.parametrize("seed", range(5))
def test_frame_map_matches_official_scorer_without_ties(seed: int) -> None:
    scores, labels = _random_case(seed)
    ap_ref, map_ref, wap_ref = _official(scores, labels)
    out = frame_map(scores, labels)
    np.testing.assert_allclose(out["per_class"], ap_ref, rtol=1e-12)
    assert out["map"] == pytest.approx(map_ref, rel=1e-12)
    assert out["wap"] == pytest.approx(wap_ref, rel=1e-12)
    np.testing.assert_array_equal(out["npos"], labels.sum(0))
    assert out["classes_without_positives"] == 0
    if average_precision_score is not None:  # spec R4: equal to sklearn when there are no ties
        sk = [average_precision_score(labels[:, k], scores[:, k]) for k in range(labels.shape[1])]
        np.testing.assert_allclose(out["per_class"], sk, rtol=1e-12)


def test_ties_follow_the_stable_matlab_sort() -> None:
    # Spec R4: the tied rows keep their order, so the ranking is 1(+), 2(-), 3(+), 4(-):
    # AP = (1/1 + 2/3) / 2 = 5/6, where sklearn's one-threshold-per-tie rule gives 2/3.
    y, s = np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.5, 0.1])
    assert average_precision_official(s, y.astype(bool)) == pytest.approx(5 / 6)
    assert _thumos_ap(s.tolist(), y.tolist()) == pytest.approx(5 / 6)
    assert frame_map(s[:, None], y[:, None])["map"] == pytest.approx(5 / 6)
    if average_precision_score is not None:
        assert average_precision_score(y, s) == pytest.approx(2 / 3)
    # Row order decides among ties: 1(-), 2(+), 3(+) gives (1/2 + 2/3) / 2.
    assert frame_map(s[:, None], np.array([[0], [1], [1], [0]]))["map"] == pytest.approx(7 / 12)


def test_ties_on_quantised_scores_match_the_reference() -> None:
    scores, labels = _random_case(7, n=200, k=4)
    scores = np.round(scores * 4) / 4  # many ties
    ap_ref, map_ref, _ = _official(scores, labels)
    out = frame_map(scores, labels)
    np.testing.assert_allclose(out["per_class"], ap_ref, rtol=1e-12)
    assert out["map"] == pytest.approx(map_ref, rel=1e-12)


def test_class_without_positives_is_left_out_and_counted() -> None:
    scores, labels = _random_case(3, k=6)
    labels[:, [1, 4]] = 0
    ap_ref, map_ref, wap_ref = _official(scores, labels)
    assert math.isnan(map_ref) and math.isnan(wap_ref)  # the .m propagates NaN
    out = frame_map(scores, labels)
    assert out["classes_without_positives"] == 2
    assert np.isnan(out["per_class"][[1, 4]]).all()
    kept = [ap for ap in ap_ref if not math.isnan(ap)]
    assert out["map"] == pytest.approx(np.mean(kept), rel=1e-12)
    npos = labels.sum(0)
    assert out["wap"] == pytest.approx(np.nansum(np.array(ap_ref) * npos) / npos.sum(), rel=1e-12)
    empty = frame_map(scores, np.zeros_like(labels))
    assert math.isnan(empty["map"]) and empty["classes_without_positives"] == 6


def test_nan_scores_shapes_and_labels_are_refused() -> None:
    scores, labels = _random_case(0)
    scores[3, 1] = scores[7, 2] = np.nan
    with pytest.raises(ValueError, match="2 NaN"):
        frame_map(scores, labels)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        frame_map(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="0/1"):
        frame_map(np.zeros((2, 2)), np.full((2, 2), 0.5))


def test_minus_inf_is_a_missing_row_and_torch_is_accepted() -> None:
    scores, labels = _random_case(1)
    scores[:10] = -np.inf  # missing rows, as the official scorer fills them
    ap_ref, map_ref, _ = _official(scores, labels)
    out = frame_map(torch.from_numpy(scores), torch.from_numpy(labels).bool())
    np.testing.assert_allclose(out["per_class"], ap_ref, rtol=1e-12)
    assert out["map"] == pytest.approx(map_ref, rel=1e-12)


@pytest.mark.parametrize("include_background", [False, True])
def test_frame_map_by_label_count_splits_rows(include_background: bool) -> None:
    scores, labels = _random_case(5, n=300, k=4)
    count = labels.sum(1)
    out = frame_map_by_label_count(scores, labels, include_background=include_background)
    for name, keep in (("single", count == 1), ("multi", count > 1)):
        keep = keep | ((count == 0) & include_background)
        _, map_ref, wap_ref = _official(scores[keep], labels[keep])
        assert out[name]["map"] == pytest.approx(map_ref, rel=1e-12)
        assert out[name]["wap"] == pytest.approx(wap_ref, rel=1e-12)
    assert out["single"]["npos"].sum() == (count == 1).sum()


def test_charades_times_formula() -> None:
    duration = 31.7
    t = charades_times(duration)
    assert t.shape == (25,)
    official = [(j - 1) / 25 * duration for j in range(1, 26)]  # the .m's `timepoint`, bit for bit
    assert t.tolist() == official
    np.testing.assert_allclose(t, [(j - 1) * duration / 25 for j in range(1, 26)])
    assert t[0] == 0.0 and t[-1] < duration
    with pytest.raises(ValueError):
        charades_times(-1.0)


def test_point_labels_are_inclusive_at_both_ends() -> None:
    t = charades_times(8.0, n=4)  # 0, 2, 4, 6 (exact)
    segments = [{"label_index": 1, "start_s": 2.0, "end_s": 4.0}, {"label_index": 0, "start_s": 4.5, "end_s": 9.0},
                {"label_index": 1, "start_s": 0.1, "end_s": 1.9}]
    labels = segment_point_labels(segments, t, num_classes=3)
    np.testing.assert_array_equal(labels, [[0, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="label_index"):
        segment_point_labels([{"label_index": 3, "start_s": 0, "end_s": 1}], t, num_classes=3)


def test_scores_at_times_interpolates_and_clamps() -> None:
    frames = np.stack([np.arange(10.0), -np.arange(10.0)], axis=1)  # linear in the frame index
    fps = 5.0
    got = scores_at_times(torch.from_numpy(frames), fps, [0.0, 0.4, 0.5, 1.1, 5.0])
    np.testing.assert_allclose(got[:, 0], [0.0, 2.0, 2.5, 5.5, 9.0])  # 5 s is past frame 9: clamped
    np.testing.assert_allclose(got[:, 1], -got[:, 0])
    one = scores_at_times(np.ones((1, 3)), 30.0, [0.0, 2.0])
    np.testing.assert_array_equal(one, np.ones((2, 3)))
    with pytest.raises(ValueError):
        scores_at_times(np.array([[0.0], [np.inf]]), fps, [0.1])


def test_charades_map_pools_the_25_points_of_each_video() -> None:
    rng = np.random.default_rng(0)
    videos = [(rng.random((90, 3)), 30.0, 3.0, [{"label_index": 0, "start_s": 0.0, "end_s": 1.5}]),
              (rng.random((50, 3)), 25.0, 2.0, [{"label_index": 2, "start_s": 0.5, "end_s": 2.0},
                                                 {"label_index": 0, "start_s": 1.0, "end_s": 1.2}])]
    rows = [charades_points(s, f, d, g, 3) for s, f, d, g in videos]
    assert rows[0][0].shape == (25, 3) and rows[0][1].shape == (25, 3)
    out = charades_map([v[0] for v in videos], [v[3] for v in videos], [v[2] for v in videos],
                       [v[1] for v in videos], num_classes=3)
    ref = frame_map(np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]))
    assert out["map"] == ref["map"] and out["wap"] == ref["wap"]
    assert out["classes_without_positives"] == 1  # class 1 never occurs
    with pytest.raises(ValueError, match="one entry per video"):
        charades_map([videos[0][0]], [], [3.0], 30.0, num_classes=3)
