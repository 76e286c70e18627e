import pytest

from pipelines.io import manifest


def _row(i, split="train", label="A"):
    return {"video_id": f"v{i}", "uri": f"/d/v{i}.mp4", "label": label, "label_index": 0, "split": split,
            "num_frames": 10, "fps": 25.0, "width": 64, "height": 48, "duration_s": 0.4, "codec": "h264",
            "content_hash": f"{i:064x}", "source_uri": f"/s/v{i}.avi", "size_bytes": 100,
            "segments": [{"label": "x", "label_index": 1, "start_s": 0.0, "end_s": 0.2}] if i % 2 else []}


def test_roundtrip_and_schema(tmp_path):
    table = manifest.to_table([_row(i) for i in range(3)], manifest.MANIFEST_SCHEMA)
    manifest.write_table(table, str(tmp_path / "manifest.parquet"))
    back = manifest.read_manifest(str(tmp_path))
    assert back.schema == manifest.MANIFEST_SCHEMA
    assert back.to_pylist() == table.to_pylist()
    assert manifest.read_quarantine(str(tmp_path)).num_rows == 0  # absent reads as empty


def test_unknown_column_is_an_error():
    with pytest.raises(ValueError, match="unknown manifest columns"):
        manifest.to_table([{**_row(0), "oops": 1}], manifest.MANIFEST_SCHEMA)


def test_fingerprint_ignores_order_and_location_but_not_content():
    rows = [_row(i) for i in range(4)]
    a = manifest.to_table(rows, manifest.MANIFEST_SCHEMA)
    b = manifest.to_table([{**r, "uri": "s3://elsewhere/" + r["video_id"]} for r in reversed(rows)],
                          manifest.MANIFEST_SCHEMA)
    assert manifest.fingerprint(a) == manifest.fingerprint(b)
    c = manifest.to_table(rows[:3] + [_row(3, split="test")], manifest.MANIFEST_SCHEMA)
    assert manifest.fingerprint(a) != manifest.fingerprint(c)


def test_summary_counts():
    m = manifest.to_table([_row(0), _row(1, "test", "B")], manifest.MANIFEST_SCHEMA)
    q = manifest.to_table([{"source_uri": "x", "stage": "probe", "kind": "empty", "reason": "r"}],
                          manifest.QUARANTINE_SCHEMA)
    s = manifest.summarize(m, q)
    assert s["accepted"] == 2 and s["quarantined"] == 1 and s["classes"] == 2
    assert s["splits"] == {"test": 1, "train": 1} and s["quarantine_kinds"] == {"empty": 1}
    assert s["videos_with_segments"] == 1
