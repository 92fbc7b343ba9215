"""Decoding, sampling, tracking and box planning without face data (they run on a fresh clone):
synthetic videos made here, synthetic faces with chosen templates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from faceledger.errors import InvalidParameterException
from faceledger.service import FaceService
from faceledger.video.decode import probe, sample_frames
from faceledger.video.redaction import RedactionPlan, blur_boxes
from faceledger.video.shots import is_cut, signature
from faceledger.video.tracks import FaceTracker
from faceledger.vision.types import Box, FaceAnalysis, Pose, Quality

from videos import make_video


def write_video(path: Path, codec: str, *, fps: int = 10, frames: int = 30,
                size: tuple[int, int] = (160, 120), pix_fmt: str = "yuv420p") -> None:
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], pix_fmt
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 8) % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.parametrize("codec,pix_fmt", [("libx264", "yuv420p"), ("mjpeg", "yuvj420p")])
def test_sampling_times_and_metadata(tmp_path: Path, codec: str, pix_fmt: str) -> None:
    path = tmp_path / ("v.mp4" if codec == "libx264" else "v.avi")
    write_video(path, codec, pix_fmt=pix_fmt)
    info = probe(path)
    assert (info.width, info.height, info.frame_rate, info.duration_ms) == (160, 120, 10.0, 3000)
    assert info.codec == ("h264" if codec == "libx264" else "mjpeg")
    assert info.color_range == ("LIMITED" if codec == "libx264" else "FULL")
    got = [(f.number, f.timestamp_ms) for f in sample_frames(path, 2.0)]
    # one frame every 500 ms, its own number and time (intra-only MJPEG skips the others)
    assert got == [(i * 5, i * 500) for i in range(6)]
    every = list(sample_frames(path, 0))
    assert [f.number for f in every] == list(range(30))
    assert every[7].pixels.shape == (120, 160, 3)
    # the sampled frames are the very frames decoding everything gives at those times
    # (x264's default has B-frames: those between samples were skipped by the decoder)
    for f in sample_frames(path, 2.0):
        assert np.array_equal(f.pixels, every[f.number].pixels)


def test_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(InvalidParameterException, match="media file"):
        probe(tmp_path / "x.mp4")
    path = tmp_path / "x.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for p in [*stream.encode(frame), *stream.encode()]:
            out.mux(p)
    with pytest.raises(InvalidParameterException, match="no video stream"):
        probe(path)


def face(left: float, top: float, size: float, template: np.ndarray) -> FaceAnalysis:
    return FaceAnalysis(box=Box(left, top, left + size, top + size), confidence=99.0,
                        landmarks=np.zeros((5, 2), dtype=np.float32),
                        pose=Pose(0.0, 0.0, 0.0), quality=Quality(50.0, 50.0),
                        embedding=template.astype(np.float32))


def test_tracker_links_by_overlap_and_template_and_across_a_cut() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, 128), rng.normal(0, 0.1, 128)  # ~1.6 apart: different people
    jitter = lambda: rng.normal(0, 0.01, 128)  # noqa: E731 - same person, another frame
    tracker = FaceTracker()
    seen = []
    for i in range(5):  # both move right; a grows
        seen.append(tracker.update(i * 500, i * 15, [face(10 + 8 * i, 10, 60 + 4 * i, a + jitter()),
                                                      face(200 + 8 * i, 20, 50, b + jitter())]))
    # a cut: the two swap sides (no overlap with their last boxes): templates still link them
    seen.append(tracker.update(2500, 75, [face(200, 20, 60, a + jitter()),
                                          face(10, 10, 50, b + jitter())]))
    # a stranger whose box overlaps a's last box is not a
    seen.append(tracker.update(3000, 90, [face(200, 20, 60, rng.normal(0, 0.1, 128))]))
    assert seen[:6] == [[0, 1]] * 6
    assert seen[6] == [2]
    assert [len(p.sightings) for p in tracker.persons] == [6, 6, 1]
    assert all(len(p.templates()) <= 5 for p in tracker.persons)
    assert all(s.face.embedding is None for p in tracker.persons for s in p.sightings)


def test_plan_covers_frames_between_samples_and_jumps() -> None:
    tracker = FaceTracker()
    t = np.ones(128)
    tracker.update(1000, 30, [face(0, 0, 50, t)])
    tracker.update(1500, 45, [face(100, 0, 50, t)])  # moved by two widths: a jump
    plan = RedactionPlan(tracker.persons, hold_ms=250)
    assert plan.boxes_at(700) == []  # before the hold
    assert plan.boxes_at(800) == [Box(0, 0, 50, 50)]  # held before the first sighting
    mid = plan.boxes_at(1250)
    assert Box(50, 0, 100, 50) in mid  # interpolated
    assert Box(0, 0, 50, 50) in mid and Box(100, 0, 150, 50) in mid  # both ends of the jump
    assert plan.boxes_at(1700) == [Box(100, 0, 150, 50)]
    assert plan.boxes_at(1800) == []


def test_blur_removes_detail_inside_the_padded_box_only() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    before = img.copy()
    assert blur_boxes(img, [Box(40, 40, 60, 60)]) == 1
    inside, outside = img[36:64, 36:64], img[:30, :30]
    assert inside.astype(float).std() < 0.3 * before[36:64, 36:64].astype(float).std()
    assert np.array_equal(outside, before[:30, :30])


def test_two_people_crossing_keep_their_index() -> None:
    """Faces pass through each other; neither person takes the other's index."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 0.1, 128), rng.normal(0, 0.1, 128)
    tracker = FaceTracker()
    for i in range(25):  # a moves right, b moves left; they overlap in the middle samples
        faces = [face(20 + 10 * i, 40, 60, a + rng.normal(0, 0.01, 128)),
                 face(260 - 10 * i, 50, 60, b + rng.normal(0, 0.01, 128))]
        assert tracker.update(i * 250, i, faces) == [0, 1], i
    assert len(tracker.persons) == 2


def test_overlap_never_links_a_face_by_itself() -> None:
    """A stranger standing exactly where someone stood, a face without a template, and a
    look-alike within overlap's old allowance (0.5-0.6) each start a person at once."""
    rng = np.random.default_rng(3)
    a = rng.normal(0, 0.1, 128)
    a /= np.linalg.norm(a)
    other = rng.normal(0, 0.1, 128)
    other -= other.dot(a) * a
    other /= np.linalg.norm(other)
    look_alike = a + 0.55 * other  # 0.55 from a: linked by overlap before issue 18
    tracker = FaceTracker()
    seq = [a, a, a, look_alike, look_alike]
    out = [tracker.update(i * 500, i, [face(100, 50, 60, t + rng.normal(0, 0.002, 128))])[0]
           for i, t in enumerate(seq)]
    assert out == [0, 0, 0, 1, 1]
    bare = replace(face(100, 50, 60, a), embedding=None)
    assert tracker.update(2500, 5, [bare]) == [2]
    # across a cut, a returning person links by template alone (no overlap credit)
    assert tracker.update(3000, 6, [face(300, 50, 60, a)], cut=True) == [0]
    assert tracker.cuts == [3000]


def test_redact_a_video_without_faces_or_audio_of_odd_size(service: FaceService,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "odd.mp4"
    write_video(src, "libx264", frames=10, size=(161, 121), pix_fmt="yuv444p")
    out = service.redact(src, tmp_path / "out.mp4")
    assert (out["persons"], out["frames"], out["audio_copied"]) == (0, 10, False)
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.codec) == (160, 120, "h264")  # H.264 needs even sizes
    assert not list(tmp_path.glob(".*partial*"))
    with pytest.raises(InvalidParameterException, match="must not overwrite"):
        service.redact(src, src)


def test_shot_cuts_are_found_between_samples_and_only_there(faces_dir: Path,
                                                            tmp_path: Path) -> None:
    """tests/videos.py's clip: two people moving and growing, a cut to another background at
    2 s. At 4 samples a second the cut is found at the first sample after it, and nowhere
    else (faces moving within a shot change the histogram little)."""
    truth = make_video(faces_dir, tmp_path / "cut.mp4", seconds=4.0, audio=False)
    cut_ms = truth.cut_frame * 1000 // truth.fps
    before = None
    found = []
    for frame in sample_frames(tmp_path / "cut.mp4", 4.0):
        now = signature(frame.pixels)
        if is_cut(before, now):
            found.append(frame.timestamp_ms)
        before = now
    assert found == [cut_ms]
