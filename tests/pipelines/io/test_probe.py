import os

import av
import pytest

from pipelines.io.probe import MediaError, inspect
from tests.media import make_bad_files, make_video, run_without_file_privileges, unreadable_copy


def _pyav_reference(path):
    """Independent probe: open by path (not a file object) and decode everything."""
    with av.open(path) as c:
        s = c.streams.video[0]
        frames = [f for f in c.decode(s)]
        return len(frames), float(s.average_rate), frames[0].width, frames[0].height


@pytest.mark.parametrize("codec,ext,size,fps", [
    ("libx264", "mp4", (176, 144), 25.0),
    ("mpeg4", "avi", (320, 240), 29.97),
    ("libvpx-vp9", "webm", (128, 72), 30.0),
])
def test_probe_matches_an_independent_decode(tmp_path, codec, ext, size, fps):
    path = make_video(tmp_path / f"v.{ext}", 45, w=size[0], h=size[1], fps=fps, codec=codec)
    info = inspect(path)
    n, ref_fps, w, h = _pyav_reference(path)
    assert (info.num_frames, info.width, info.height) == (n, w, h) == (45, size[0], size[1])
    assert info.fps == pytest.approx(ref_fps, rel=1e-6)
    assert info.duration_s == pytest.approx(45 / fps, rel=0.05)


def test_transcode_short_side_and_gop(tmp_path):
    src = make_video(tmp_path / "src.avi", 50, w=320, h=240, codec="mpeg4", gop=250)
    out = str(tmp_path / "out" / "t.mp4")
    info = inspect(src, transcode_to=out, short_side=96, gop=8)
    assert (info.num_frames, info.width, info.height, info.codec) == (50, 128, 96, "h264")
    assert _pyav_reference(out)[0] == 50
    with av.open(out) as c:
        keys = [i for i, p in enumerate(p for p in c.demux(c.streams.video[0]) if p.size) if p.is_keyframe]
    assert keys[:4] == [0, 8, 16, 24]
    with open(out, "rb") as f:  # +faststart: the index comes before the media data
        head = f.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))


def test_no_upscaling(tmp_path):
    src = make_video(tmp_path / "s.mp4", 10, w=64, h=48)
    info = inspect(src, transcode_to=str(tmp_path / "o.mp4"), short_side=128, gop=4)
    assert (info.width, info.height) == (64, 48)


@pytest.mark.parametrize("which,kind,words", [
    ("truncated", "truncated", "cut off"),
    ("empty", "empty", "0 bytes"),
    ("random", "not_a_video", "not a video"),
    ("text", "not_a_video", "text"),
    ("audio", "no_video_stream", "audio"),
    ("no_frames", "no_frames", "shorter than one frame"),
])
def test_bad_files_get_a_kind_and_a_readable_reason(tmp_path, which, kind, words):
    bad = make_bad_files(tmp_path)
    out = str(tmp_path / "never.mp4")
    with pytest.raises(MediaError) as err:
        inspect(bad[which], transcode_to=out, gop=4)
    assert err.value.kind == kind and words in err.value.reason
    assert not os.path.exists(out)  # nothing half-written reaches storage


def test_missing_file(tmp_path):
    with pytest.raises(MediaError) as err:
        inspect(str(tmp_path / "gone.mp4"))
    assert err.value.kind == "not_found"


def test_corrupt_middle_of_stream(tmp_path):
    path = make_video(tmp_path / "c.mp4", 60, gop=10)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 3: len(data) // 3 + 4000] = os.urandom(4000)
    open(path, "wb").write(bytes(data))
    try:
        info = inspect(path)
    except MediaError as err:
        assert err.kind in ("corrupt", "truncated")
    else:  # FFmpeg may conceal the damage; then the frame count must still be exact
        assert info.num_frames == _pyav_reference(path)[0]


def test_permission_denied_is_reported(tmp_path):
    path = unreadable_copy(make_video(tmp_path / "locked.mp4", 10))
    code = ("from pipelines.io.probe import inspect, MediaError\n"
            f"try:\n    inspect({path!r}); print('accepted')\n"
            "except MediaError as e:\n    print(e.kind)\n")
    assert run_without_file_privileges(code) == "permission"
