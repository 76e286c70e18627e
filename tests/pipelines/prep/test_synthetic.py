"""Tests of the synthetic motion-defined datasets (pipelines/prep/synthetic.py), on the tiny preset."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipelines.prep.synthetic import (CHARADES_HEADER, CLASSES, class_style, generate, make_background,
                                      plan_multi_action, preset, render_clip, render_multi_action, ucf_scene)

ANNOTATIONS = ("ucf101/ucfTrainTestlist/classInd.txt", "ucf101/ucfTrainTestlist/trainlist01.txt",
               "ucf101/ucfTrainTestlist/testlist01.txt", "charades/Charades_v1_classes.txt",
               "charades/Charades_v1_train.csv", "charades/Charades_v1_test.csv")


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CHARADES_HEADER
        return list(reader)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, generate(str(root), preset("tiny"), workers=1, progress=False)


def test_tree_and_ucf_lists(tiny):
    root, summary = tiny
    cfg = preset("tiny")
    lists = root / "ucf101" / "ucfTrainTestlist"
    class_ind = (lists / "classInd.txt").read_text().splitlines()
    assert class_ind == [f"{i + 1} {c.name}" for i, c in enumerate(CLASSES[:cfg.num_classes])]
    label = {name: int(i) for i, name in (line.split() for line in class_ind)}
    train = (lists / "trainlist01.txt").read_text().splitlines()
    test = (lists / "testlist01.txt").read_text().splitlines()
    seen = set()
    for line in train:
        m = re.fullmatch(r"(\w+)/v_\1_g(\d\d)_c(\d\d)\.mp4 (\d+)", line)
        assert m, line
        assert label[m[1]] == int(m[4]) and int(m[2]) not in cfg.test_groups
        seen.add(line.split()[0])
    for line in test:
        m = re.fullmatch(r"(\w+)/v_\1_g(\d\d)_c(\d\d)\.mp4", line)
        assert m, line
        assert int(m[2]) in cfg.test_groups
        seen.add(line)
    files = {p.relative_to(root / "ucf101" / "UCF-101").as_posix()
             for p in (root / "ucf101" / "UCF-101").rglob("*.mp4")}
    assert files == seen and len(files) == cfg.num_classes * cfg.groups * cfg.clips_per_group
    assert len(train) == summary["ucf_train"] > 0 and len(test) == summary["ucf_test"] > 0
    meta = json.loads((root / "synthetic_meta.json").read_text())
    assert meta["seed"] == cfg.seed and meta["preset"] == "tiny" and meta["fps"] == cfg.fps
    assert [c["name"] for c in meta["classes"]] == list(label)


def test_ucf_videos_decode(tiny):
    root, _ = tiny
    cfg = preset("tiny")
    paths = sorted((root / "ucf101" / "UCF-101").rglob("*.mp4"))
    for path in paths[:4]:  # every file is written the same way; keep the test fast
        assert _decode(path).shape == (cfg.frames, cfg.height, cfg.width, 3)
    with av.open(str(paths[-1])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == cfg.fps


def test_charades_annotations_and_videos(tiny):
    root, summary = tiny
    cfg = preset("tiny")
    classes = (root / "charades" / "Charades_v1_classes.txt").read_text().splitlines()
    assert classes == [f"c{i:03d} {c.description}" for i, c in enumerate(CLASSES[:cfg.num_classes])]
    train, test = (_read_csv(root / "charades" / f"Charades_v1_{s}.csv") for s in ("train", "test"))
    assert len(train) == summary["charades_train"] and len(test) == summary["charades_test"] >= 1
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    n_segments = 0
    for row in train + test:
        assert re.fullmatch(r"[A-Z0-9]{5}", row["id"]) and row["scene"] == "Synthetic"
        length = float(row["length"])
        assert re.fullmatch(r"\d+\.\d\d", row["length"])
        for action in row["actions"].split(";"):
            m = re.fullmatch(r"c(\d{3}) (\d+\.\d\d) (\d+\.\d\d)", action)
            assert m, action
            assert int(m[1]) < cfg.num_classes and 0 <= float(m[2]) < float(m[3]) <= length
            n_segments += 1
        frames_THW3 = _decode(root / "charades" / "Charades_v1_480" / f"{row['id']}.mp4")
        assert frames_THW3.shape == (round(length * cfg.fps), cfg.height, cfg.width, 3)
    assert n_segments == summary["charades_segments"]


def test_deterministic_and_idempotent(tiny, tmp_path):
    root, _ = tiny
    same = generate(str(tmp_path / "same"), preset("tiny"), workers=2, progress=False)
    other = generate(str(tmp_path / "other"), preset("tiny", seed=1, multi_videos=1),
                     workers=1, progress=False)
    for rel in ANNOTATIONS + ("synthetic_meta.json",):
        assert (root / rel).read_bytes() == (tmp_path / "same" / rel).read_bytes(), rel
    clip = "ucf101/UCF-101/MoveLeft/v_MoveLeft_g01_c01.mp4"
    np.testing.assert_array_equal(_decode(root / clip)[0], _decode(tmp_path / "same" / clip)[0])
    assert (root / clip).read_bytes() == (tmp_path / "same" / clip).read_bytes()
    assert not np.array_equal(_decode(root / clip)[0], _decode(tmp_path / "other" / clip)[0])
    assert (root / ANNOTATIONS[4]).read_bytes() != (tmp_path / "other" / ANNOTATIONS[4]).read_bytes()
    assert same["written"] == same["ucf_clips"] + 3 and other["written"] == other["ucf_clips"] + 1
    again = generate(str(tmp_path / "same"), preset("tiny"), workers=1, progress=False)
    assert again["written"] == 0 and again["kept"] == same["written"]
    changed = generate(str(tmp_path / "same"), preset("tiny", seed=1, multi_videos=1), workers=1,
                       progress=False)  # a different config over an existing tree re-renders
    assert changed["written"] == other["written"]
    assert (tmp_path / "same" / clip).read_bytes() == (tmp_path / "other" / clip).read_bytes()


def _mean_moving_flow(frames_THW3: np.ndarray) -> np.ndarray:
    """Mean (dx, dy) Farneback flow over pixels that move (camera shake is under 0.3 px/frame)."""
    grey_THW = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames_THW3])
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
             for a, b in zip(grey_THW[:-1], grey_THW[1:])]
    flow_N2 = np.concatenate([f.reshape(-1, 2) for f in flows])
    return flow_N2[np.linalg.norm(flow_N2, axis=1) > 0.5].mean(0)


@pytest.mark.parametrize("name,axis,sign", [("MoveLeft", 0, -1), ("MoveRight", 0, 1),
                                            ("MoveUp", 1, -1), ("MoveDown", 1, 1)])
def test_class_is_carried_by_motion(tiny, name, axis, sign):
    root, _ = tiny
    for path in sorted((root / "ucf101" / "UCF-101" / name).glob("*.mp4")):
        flow_2 = _mean_moving_flow(_decode(path))
        assert sign * flow_2[axis] > 0.3 and sign * flow_2[axis] > abs(flow_2[1 - axis]), (path.name, flow_2)


def _nearest_centroid_accuracy(x_N6: np.ndarray, y_N: np.ndarray) -> float:
    """Leave-one-out nearest class centroid on standardised colour statistics."""
    x_N6 = (x_N6 - x_N6.mean(0)) / x_N6.std(0)
    correct = 0
    for i in range(len(y_N)):
        keep = np.arange(len(y_N)) != i
        cent_C6 = np.stack([x_N6[keep & (y_N == c)].mean(0) for c in np.unique(y_N)])
        correct += np.unique(y_N)[np.argmin(np.linalg.norm(cent_C6 - x_N6[i], axis=1))] == y_N[i]
    return correct / len(y_N)


def test_appearance_does_not_predict_class():
    """Colour statistics of clips: leave-one-out nearest class centroid is near chance."""
    cfg = preset("tiny", frames=8, height=32, width=32)
    n_cls, per_cls = 4, 16
    feats, labels = [], []
    for c in range(n_cls):
        for k in range(per_cls):
            frames_THW3 = render_clip(c, np.random.default_rng([7, c, k]), cfg).astype(np.float32)
            feats.append(np.concatenate([frames_THW3.mean((0, 1, 2)), frames_THW3.std((0, 1, 2))]))
            labels.append(c)
    accuracy = _nearest_centroid_accuracy(np.array(feats), np.array(labels))
    assert accuracy < 0.5  # chance is 0.25


def test_context_ties_appearance_to_the_class_and_motion_still_defines_it():
    """With ``context=1`` every object is its class's typical one and every scene has the class's
    palette: colour statistics predict the class. The motion is the class's all the same."""
    cfg = preset("tiny", frames=8, height=32, width=32, context=1.0)
    assert class_style(cfg, 0).shape != class_style(cfg, 1).shape
    feats, labels = [], []
    for c in range(4):
        for k in range(8):
            frames_THW3 = render_clip(c, np.random.default_rng([7, c, k]), cfg, canvas_HW3=ucf_scene(cfg, c, k),
                                      style=class_style(cfg, c)).astype(np.float32)
            feats.append(np.concatenate([frames_THW3.mean((0, 1, 2)), frames_THW3.std((0, 1, 2))]))
            labels.append(c)
    accuracy = _nearest_centroid_accuracy(np.array(feats), np.array(labels))
    assert accuracy > 0.7  # chance is 0.25; context 0 stays near chance (test above)
    moving = preset("tiny", context=1.0)
    flow_2 = _mean_moving_flow(render_clip(0, np.random.default_rng(3), moving, style=class_style(moving, 0)))
    assert flow_2[0] < -0.3  # MoveLeft still moves left


def test_context_zero_and_shake_keep_the_default_dataset():
    """``context=0`` and the default shake draw exactly what the generator drew before them."""
    cfg = preset("tiny", frames=8, height=32, width=32)
    np.testing.assert_array_equal(ucf_scene(cfg, 2, 1), make_background(np.random.default_rng([cfg.seed, 1, 1]), cfg))
    def moved(shake: float) -> float:  # share of pixels that change between two frames (no noise)
        clip = render_clip(0, np.random.default_rng(5), preset("tiny", frames=8, height=64, width=64, shake=shake,
                                                               noise_std=0.0, max_objects=1)).astype(np.int16)
        return float((np.abs(clip[4] - clip[0]).max(-1) > 2).mean())

    assert moved(0.0) < 0.2 < moved(3.0)  # without shake only the object moves
    with pytest.raises(ValueError, match="context"):
        preset("tiny", context=1.5)


def test_render_shapes_and_rest_between_segments():
    cfg = preset("tiny", height=64, width=64, multi_seconds=(6.0, 8.0))
    frames_THW3 = render_clip(len(CLASSES) - 1, np.random.default_rng(0), cfg)
    assert frames_THW3.shape == (cfg.frames, 64, 64, 3) and frames_THW3.dtype == np.uint8
    plan = plan_multi_action(np.random.default_rng(3), cfg)
    frames_THW3, segments = render_multi_action(np.random.default_rng(3), cfg)
    assert segments == plan.segments and len(frames_THW3) == plan.n_frames and segments
    for actor, track in enumerate(plan.tracks):
        pose_5T = np.stack([track.x_T, track.y_T, track.angle_T, track.scale_T, track.alpha_T])
        acting_T = np.zeros(plan.n_frames, bool)
        for s in segments:
            assert 0 <= s.start < s.end <= plan.n_frames
            if s.actor == actor:
                acting_T[s.start:s.end] = True
        moved_T = np.r_[False, np.abs(np.diff(pose_5T, axis=1)).max(0) > 0]
        assert not (moved_T & ~acting_T).any()  # an object moves only inside its segments


def test_preset_validation():
    with pytest.raises(ValueError):
        preset("huge")
    with pytest.raises(ValueError):
        preset("tiny", width=65)
    with pytest.raises(ValueError):
        preset("tiny", num_classes=len(CLASSES) + 1)


def test_clutter_controls_the_static_background_shapes():
    """Same draws for the field and stripes, then clutter shapes: the share of pixels a shape
    covers (differs by > 40 from the clutter-free canvas; the grain stays below) grows with it."""
    def canvas(clutter: float) -> np.ndarray:
        return make_background(np.random.default_rng(7), preset("tiny", clutter=clutter))

    smooth = canvas(0.0)
    covered = [float((np.abs(canvas(c) - smooth).max(-1) > 40).mean()) for c in (1.0, 3.0)]
    assert 0.05 < covered[0] < covered[1]
    with pytest.raises(ValueError, match="clutter"):
        preset("tiny", clutter=-1.0)
