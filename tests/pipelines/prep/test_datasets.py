"""Adapters read the datasets' real annotation formats; bad rows become rejections with line numbers."""

import os
from pathlib import Path

import pytest

from pipelines.prep import datasets


def touch_video(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")  # adapters only list; probing is ingest's job


def by_kind(listing):
    out = {}
    for r in listing.rejections:
        out.setdefault(r.kind, []).append(r)
    return out


def test_folder_layout(tmp_path):
    for name in ("Jump/a.mp4", "Jump/b.avi", "Run/c.mkv", "Run/readme.txt", "top.mp4"):
        touch_video(tmp_path / name)
    os.makedirs(tmp_path / "Empty")
    listing = datasets.list_inputs("folder", str(tmp_path), split="val")
    assert listing.classes == ["Jump", "Run"]
    got = {(c.video_id, c.label, c.label_index, c.split) for c in listing.candidates}
    assert got == {("Jump/a", "Jump", 0, "val"), ("Jump/b", "Jump", 0, "val"), ("Run/c", "Run", 1, "val")}
    assert {c.group_id for c in listing.candidates} == {"Jump/a", "Jump/b", "Run/c"}  # each its own group
    kinds = by_kind(listing)
    assert [os.path.basename(r.source_uri) for r in kinds["not_a_video"]] == ["readme.txt"]
    assert [os.path.basename(r.source_uri) for r in kinds["bad_layout"]] == ["top.mp4"]
    assert listing.inputs == 5


def test_folder_with_split_folders_and_non_utf8_name(tmp_path):
    touch_video(tmp_path / "train" / "Jump" / "a.mp4")
    touch_video(tmp_path / "val" / "Run" / "b.mp4")
    with open(os.path.join(os.fsencode(str(tmp_path / "train" / "Jump")), b"\xff\xfe.mp4"), "wb") as f:
        f.write(b"x")
    listing = datasets.list_inputs("folder", str(tmp_path))
    assert {(c.video_id, c.split, c.label_index) for c in listing.candidates} == {
        ("train/Jump/a", "train", 0), ("val/Run/b", "val", 1)}
    (bad,) = listing.rejections
    assert bad.kind == "bad_name" and "\\xff" in bad.source_uri
    bad.source_uri.encode("utf-8")  # storable in Parquet


def test_ucf101(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\nthree Broken\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
        "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"   # UCF101's own case mismatch
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 7\n"       # unknown class number
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g10_c01.avi\n"         # train row without label
        "ApplyEyeMakeup/v_Missing_g01_c01.avi 1\n")             # file absent
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\nNoSuchClass/v_x.avi\n")
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g08_c01.avi",
                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.mp4"):  # re-encoded: .mp4 on disk, .avi in the list
        touch_video(tmp_path / "UCF-101" / name)
    listing = datasets.list_inputs("ucf101", str(tmp_path), split_id=1)
    assert listing.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    got = {(c.video_id, c.label_index, c.split, c.group_id) for c in listing.candidates}
    assert got == {("v_ApplyEyeMakeup_g08_c01", 0, "train", "ApplyEyeMakeup_g08"),
                   ("v_HandStandPushups_g08_c01", 1, "train", "HandStandPushups_g08"),
                   ("v_ApplyEyeMakeup_g01_c01", 0, "test", "ApplyEyeMakeup_g01")}
    kinds = by_kind(listing)
    assert sorted(r.origin.rsplit(":", 1)[1] for r in kinds["malformed_row"]) == ["3", "4"]
    assert [r.origin.endswith("trainlist01.txt:3") for r in kinds["unknown_class"]].count(True) == 1
    assert kinds["missing_file"][0].origin.endswith("trainlist01.txt:5")
    assert listing.inputs == 5 + 2 + 1  # list rows + the malformed classInd row


def test_ucf101_needs_its_annotation_files(tmp_path):
    touch_video(tmp_path / "A" / "x.avi")
    with pytest.raises(datasets.SourceError, match="classInd.txt"):
        datasets.list_inputs("ucf101", str(tmp_path))


def test_hmdb51(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \nd.avi 9 \n")
    (splits / "cartwheel_test_split1.txt").write_text("e.avi 1 \nmissing.avi 2 \n")
    (splits / "cartwheel_test_split2.txt").write_text("e.avi 2 \n")
    for name in ("brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "cartwheel/e.avi"):
        touch_video(tmp_path / "hmdb51" / name)
    listing = datasets.list_inputs("hmdb51", str(tmp_path), split_id=1)
    assert listing.classes == ["brush_hair", "cartwheel"]
    assert {(c.video_id, c.label_index, c.split) for c in listing.candidates} == {
        ("a", 0, "train"), ("b", 0, "test"), ("c", 0, "unused"), ("e", 1, "train")}
    kinds = by_kind(listing)
    assert kinds["malformed_row"][0].origin.endswith("brush_hair_test_split1.txt:4")
    assert kinds["missing_file"][0].origin.endswith("cartwheel_test_split1.txt:2")


def test_kinetics(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "abseiling,---QUuC4vJs,3,13,train,0\n"
        '"air drumming",--nQbRBEz2s,104,114,train,0\n'
        "abseiling,zzz,5,2,train,0\n"            # end before start
        "abseiling,absent,0,10,train,0\n"        # file absent
        "abseiling,short,row\n")                 # malformed
    (tmp_path / "annotations" / "test.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n,---testid0,0,10,test\n")
    for name in ("train/abseiling/---QUuC4vJs_000003_000013.mp4", "train/air drumming/--nQbRBEz2s_000104_000114.mp4",
                 "test/---testid0_000000_000010.mp4"):
        touch_video(tmp_path / name)
    listing = datasets.list_inputs("kinetics", str(tmp_path))
    assert listing.classes == ["abseiling", "air drumming"]
    assert {(c.video_id, c.label, c.label_index, c.split) for c in listing.candidates} == {
        ("---QUuC4vJs_000003_000013", "abseiling", 0, "train"),
        ("--nQbRBEz2s_000104_000114", "air drumming", 1, "train"),
        ("---testid0_000000_000010", None, None, "test")}
    kinds = by_kind(listing)
    assert sorted(r.origin.rsplit(":", 1)[1] for r in kinds["malformed_row"]) == ["4", "6"]
    assert kinds["missing_file"][0].video_id == "absent_000000_000010"


def test_charades_segments(tmp_path):
    (tmp_path / "Charades_v1_classes.txt").write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n")
    header = "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,length\n"
    (tmp_path / "Charades_v1_train.csv").write_text(
        header
        + 'AB12C,s1,Kitchen,6,7,Yes,"A person, holding clothes.",clothes,"desc","c000 0.00 4.50;c001 3.10 9.00",10.20\n'
        + "ZZZZZ,s1,Kitchen,6,7,Yes,x,,y,c009 1.00 2.00,10.00\n"     # unknown class
        + "YYYYY,s1,Kitchen,6,7,Yes,x,,y,c000 1.00,10.00\n"          # malformed action
        + "NOFIL,s1,Kitchen,6,7,Yes,x,,y,,5.00\n")                   # no file
    (tmp_path / "Charades_v1_test.csv").write_text(header + "QQQQQ,s2,Hall,5,5,Yes,x,,y,,8.00\n")
    for vid in ("AB12C", "ZZZZZ", "YYYYY", "QQQQQ"):
        touch_video(tmp_path / "Charades_v1_480" / f"{vid}.mp4")
    listing = datasets.list_inputs("charades", str(tmp_path))
    cands = {c.video_id: c for c in listing.candidates}
    assert set(cands) == {"AB12C", "QQQQQ"}
    assert cands["AB12C"].segments == [
        {"label": "Holding some clothes", "label_index": 0, "start_s": 0.0, "end_s": 4.5},
        {"label": "Putting clothes somewhere", "label_index": 1, "start_s": 3.1, "end_s": 9.0}]
    assert cands["QQQQQ"].split == "test" and cands["QQQQQ"].segments == []
    assert cands["AB12C"].label is None
    kinds = by_kind(listing)
    assert sorted(r.origin.rsplit(":", 1)[1] for r in kinds["malformed_row"]) == ["3", "4"]
    assert "c009" in kinds["malformed_row"][0].reason
    assert kinds["missing_file"][0].video_id == "NOFIL"
    assert listing.inputs == 5


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown dataset format"):
        datasets.list_inputs("imagenet", "/tmp")
