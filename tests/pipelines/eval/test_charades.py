"""The official Charades localisation submission file: format and round trip."""

import numpy as np
import pytest
import torch

from pipelines.eval.charades import read_charades_submission, write_charades_submission


def test_round_trip_is_exact_for_float32_and_minus_inf(tmp_path):
    rng = np.random.default_rng(0)
    rows = {"46GP8": rng.random((25, 157)).astype(np.float32), "N11GT": rng.standard_normal((25, 157), np.float32)}
    rows["N11GT"][3] = -np.inf  # a missing prediction, as the official scorer fills it
    path = tmp_path / "sub.txt"
    n = write_charades_submission(path, [(k, torch.from_numpy(v)) if k == "46GP8" else (k, v) for k, v in rows.items()])
    assert n == 50
    back = read_charades_submission(path)
    assert list(back) == ["46GP8", "N11GT"]
    for k, v in rows.items():
        np.testing.assert_array_equal(back[k].astype(np.float32), v)


def test_line_format(tmp_path):
    path = tmp_path / "sub.txt"
    write_charades_submission(path, [("ABC12", np.array([[0.5, 0.25, 1e-7], [1.0, 0.0, -np.inf]]))])
    assert path.read_text().splitlines() == ["ABC12 1 0.5 0.25 1e-07", "ABC12 2 1 0 -inf"]


def test_reader_shifts_zero_based_frames_and_fills_missing_ones(tmp_path):
    path = tmp_path / "sub.txt"
    path.write_text("V1 0 0.1 0.2\nV1 2 0.3 0.4\nV2 1 0.5 0.6\n")
    back = read_charades_submission(path)
    np.testing.assert_array_equal(back["V1"], [[0.1, 0.2], [-np.inf, -np.inf], [0.3, 0.4]])
    np.testing.assert_array_equal(back["V2"], [[-np.inf, -np.inf], [0.5, 0.6]])


def test_bad_inputs_are_refused(tmp_path):
    path = tmp_path / "sub.txt"
    with pytest.raises(ValueError, match="whitespace"):
        write_charades_submission(path, [("a b", np.zeros((25, 3)))])
    with pytest.raises(ValueError, match="NaN"):
        write_charades_submission(path, [("a", np.full((25, 3), np.nan))])
    with pytest.raises(ValueError, match="expected"):
        write_charades_submission(path, [("a", np.zeros((25, 3))), ("b", np.zeros((25, 4)))])
    path.write_text("V1 1 0.1 0.2\nV1 2 0.3\n")
    with pytest.raises(ValueError, match="expected"):
        read_charades_submission(path)
    path.write_text("V1 1 0.1\nV1 1 0.3\n")
    with pytest.raises(ValueError, match="repeated"):
        read_charades_submission(path)
