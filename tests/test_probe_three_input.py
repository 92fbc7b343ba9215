"""Regression tests for the third security probe (issue 24, items 1-3): input that costs the
server far more than it costs the sender. Each attack is made the way the probe made it - the
request body over HTTP against a real server on 127.0.0.1 with unmodified boto3, the image bytes,
the video file written by PyAV and patched byte by byte - and each of them failed or hung on the
code before the fix (bounded here by timeouts).

- a 336 KB SNSTopicArn made botocore's pattern backtrack for 12-22 s with the GIL held;
- a progressive JPEG whose last scan is repeated costs a pass over the whole image per 75 bytes;
- an MJPEG Matroska whose timestamps jump to 9e15 ms kept its job IN_PROGRESS for ever.

The time bounds below are denial-of-service guards (the attacks took seconds to forever; the
bounds are generous multiples of what the fixed code takes), not speed measurements.
"""

from __future__ import annotations

import importlib
import io
import math
import pkgutil
import re
import secrets
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase
from fractions import Fraction
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

import faceledger
from faceledger.errors import (
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
    ValidationException,
)
from faceledger.imaging import (
    BYTES_PER_DECODED_PIXEL,
    MAX_JPEG_SCANS,
    PixelBudget,
    decode_image,
    jpeg_layout,
)
from faceledger.sdk import sign_each_call
from faceledger.server import RekognitionApp, protocol, running
from faceledger.server.keys import IssuedKey, KeyStore
from faceledger.server.storage import build_resolver
from faceledger.service import FaceService
from faceledger.settings import Settings

# What the probe sent: 336 KB that held the GIL for 12-22 s in `(^arn:aws:sns:.*:\w{12}:.+$)`.
PROBE_TOPIC = "arn:aws:sns:" + ":aaaaaaaaaaaa:" * 24000 + "\nX"
ROLE = "arn:aws:iam::111122223333:role/video"
# A bounded boto3: one attempt, and never a wait beyond the test's own bound.
BOUNDED = Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=60,
                 connect_timeout=10)


def _rekognition(url: str, key: IssuedKey) -> Any:
    # the listings repeat one request many times a second: each is signed anew
    return sign_each_call(boto3.session.Session().client(
        "rekognition", endpoint_url=url, region_name="us-east-1", config=BOUNDED,
        aws_access_key_id=key.info.access_key_id, aws_secret_access_key=key.secret_access_key))


def _error(call: Any, **members: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as refused:
        call(**members)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return dict(refused.value.response["Error"])


# --- 1. regular expressions --------------------------------------------------------------------

def _patterned_members() -> dict[str, Any]:
    """Every string shape with a pattern that some operation's input reaches, by name."""
    model = protocol.service_model()
    found: dict[str, Any] = {}

    def walk(shape: Any, seen: frozenset[str]) -> None:
        if shape.name in seen:
            return
        seen = seen | {shape.name}
        kind = shape.type_name
        if kind == "structure":
            for member in shape.members.values():
                walk(member, seen)
        elif kind == "list":
            walk(shape.member, seen)
        elif kind == "map":
            walk(shape.key, seen)
            walk(shape.value, seen)
        elif kind == "string" and shape.metadata.get("pattern"):
            found[shape.name] = shape

    for name in model.operation_names:
        shape = model.operation_model(name).input_shape
        if shape is not None:
            walk(shape, frozenset())
    return found


_ESCAPED = {"d": "0", "w": "a", "S": "a", "s": " ", "p": "a"}
_META = set("\\^$.|?*+()[]{}")


def _adversarial(pattern: str, length: int) -> Iterator[str]:
    """Strings of exactly `length` characters that make a backtracking matcher work hardest on
    `pattern`: its literal prefix, then one unit of its own alphabet (or of the probe's
    attack) repeated, then a character that breaks the match at the very end."""
    alphabet: set[str] = set()
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            alphabet.add(_ESCAPED.get(pattern[i + 1], pattern[i + 1]))
            i += 2
            continue
        if c == ".":
            alphabet.add("a")
        elif c not in _META:
            alphabet.add(c)
        i += 1
    prefix = re.match(r"[\^(]*([A-Za-z0-9:]*)", pattern)
    start = prefix.group(1) if prefix else ""
    units = sorted(alphabet) + ["".join(sorted(alphabet)), ":" + "a" * 12 + ":", "a-", "0.",
                                "a/", "a:", "{a"]
    for unit in units:
        for end in ("", "\n", "\nX", "!", "\x00"):
            body = start + unit * (length // max(len(unit), 1) + 1)
            yield body[:length - len(end)] + end


def test_every_model_pattern_is_bounded_and_fast_on_adversarial_input() -> None:
    """Each of the ~38 patterns the Rekognition model applies to a request member gets a
    length bound (the model's max, or AWS's documented one), and is run on adversarial input
    at that bound: the whole sweep takes well under a second where the probe's one topic took
    12 s. Beyond the bound the value is refused by length, the pattern never runs."""
    members = _patterned_members()
    assert len(members) >= 30 and "SNSTopicArn" in members
    timings: list[tuple[float, str]] = []
    started = time.perf_counter()
    for name, shape in sorted(members.items()):
        cap = protocol.length_cap(shape)
        assert cap is not None, f"{name}: a pattern without a length bound"
        assert cap <= max(shape.metadata.get("max", 0), protocol.ARN_MAX_CHARS), name
        for text in _adversarial(shape.metadata["pattern"], cap):
            t = time.perf_counter()
            protocol.string_constraint(shape, text)
            timings.append((time.perf_counter() - t, name))
        over = protocol.string_constraint(shape, PROBE_TOPIC if cap < len(PROBE_TOPIC)
                                          else "a" * (cap + 1))
        assert over == f"Member must have length less than or equal to {cap}", (name, over)
    total = time.perf_counter() - started
    slowest = max(timings)
    print(f"\n{len(timings)} adversarial values over {len(members)} patterns: {total:.2f} s, "
          f"slowest {slowest[0] * 1000:.1f} ms ({slowest[1]})")
    assert total < 6.0 and slowest[0] < 1.0


def test_the_probes_topic_is_refused_by_its_length() -> None:
    body = (b'{"Video": {"S3Object": {"Bucket": "b", "Name": "v.mp4"}}, "NotificationChannel": '
            b'{"SNSTopicArn": "%s", "RoleArn": "%s"}}'
            % (PROBE_TOPIC.replace("\n", "\\n").encode(), ROLE.encode()))
    started = time.perf_counter()
    with pytest.raises(ValidationException, match="less than or equal to 2048") as refused:
        protocol.parse_input("StartFaceDetection", body)
    assert time.perf_counter() - started < 2.0  # it held the GIL 12-22 s
    assert "notificationChannel.sNSTopicArn" in refused.value.message
    assert len(refused.value.message) < 1000  # the value is shown clipped, not echoed whole


def _own_patterns() -> dict[str, re.Pattern[Any]]:
    """Every compiled pattern at module level anywhere in faceledger (ids, tokens, SigV4
    header fields, model versions, console links, JPEG markers), by where it lives."""
    found: dict[str, re.Pattern[Any]] = {}
    for info in pkgutil.walk_packages(faceledger.__path__, "faceledger."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                found.setdefault(f"{info.name}.{name}", value)
    return found


def test_every_pattern_of_ours_is_linear_on_long_adversarial_input() -> None:
    """Our own patterns see caller input (ids, tokens, headers, JPEG bytes): each is run with
    fullmatch, match and search on 64 KB of its own alphabet (and of the JPEG walk's worst
    case, 5 MB), longer than any value that reaches it. Key globs (fnmatch) are matched
    against values of the longest length the protocol lets through."""
    patterns = _own_patterns()
    assert {"faceledger.server.sigv4._SIGNATURE", "faceledger.imaging._MARKER_AFTER_SCAN",
            "faceledger.service.collection_members.COLLECTION_ID"} <= set(patterns)
    started = time.perf_counter()
    for where, pattern in patterns.items():
        if isinstance(pattern.pattern, bytes):
            inputs: list[Any] = [b"\xff" * (5 << 20) + b"\x00", b"\xff\x00" * (5 << 19),
                                 b"\xff\xd0" * (5 << 19) + b"\xff"]
        else:
            inputs = list(_adversarial(pattern.pattern, 1 << 16))
        for text in inputs:
            for method in (pattern.fullmatch, pattern.match, pattern.search):
                t = time.perf_counter()
                method(text)
                assert time.perf_counter() - t < 1.0, where
    for glob in ("arn:aws:sns:*:*:*:*:*:*x", "*a*a*a*a*a*a*a*b", "staff-*-*-*-*?"):
        for value in ("arn:aws:sns:" + ":aaaaaaaaaaaa:" * 146, "a" * 2048, "staff-" * 42):
            fnmatchcase(value, glob)
    total = time.perf_counter() - started
    print(f"\n{len(patterns)} patterns of ours: {total:.2f} s")
    assert total < 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, service: FaceService) -> Iterator[
        tuple[str, IssuedKey, FaceService]]:
    root = tmp_path_factory.mktemp("probe-three")
    settings = Settings(data_dir=root / "data", config_dir=root / "config", server_workers=2)
    svc = FaceService(settings, pipeline=service.pipeline)
    keys = KeyStore(svc.engine, secrets.token_bytes(32))
    key = keys.create("caller", ["*"], ["*"])
    svc.create_collection("probe")
    app = RekognitionApp(svc, keys, settings, warm_up=False)
    with running(app) as url:
        yield url, key, svc
    app.close()
    svc.close()


def test_a_long_topic_holds_no_one_up_over_http(server: tuple[str, IssuedKey, FaceService]
                                               ) -> None:
    """Three clients send the probe's topic at once while another lists its collections: the
    topics are refused (ValidationException) and every listing is answered at once - before,
    a listing waited 21 s."""
    url, key, _ = server
    answers: list[dict[str, Any]] = []

    def attack(client: Any) -> None:
        answers.append(_error(client.start_face_detection,
                              Video={"S3Object": {"Bucket": "clips", "Name": "v.mp4"}},
                              NotificationChannel={"SNSTopicArn": PROBE_TOPIC, "RoleArn": ROLE}))

    # clients made (botocore loads its models) and connected before the clock starts
    client, *theirs = (_rekognition(url, key) for _ in range(4))
    for c in (client, *theirs):
        c.list_collections()
    attackers = [threading.Thread(target=attack, args=(c,)) for c in theirs]
    for t in attackers:
        t.start()
    waits = []
    while any(t.is_alive() for t in attackers) or not waits:
        t0 = time.perf_counter()
        assert "probe" in client.list_collections()["CollectionIds"]
        waits.append(time.perf_counter() - t0)
    for t in attackers:
        t.join()
    print(f"\n{len(waits)} listings during the attack, the slowest {max(waits):.2f} s")
    assert len(answers) == 3, answers
    assert all(a["Code"] == "ValidationException" for a in answers), answers
    assert all("less than or equal to 2048" in a["Message"] for a in answers), answers
    assert max(waits) < 3.0, waits


# --- 2. progressive JPEGs ----------------------------------------------------------------------

def _progressive(size: tuple[int, int], *, subsampling: int = 2, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (120, 130, 140)).save(
        buf, "JPEG", quality=50, progressive=True, subsampling=subsampling)
    return buf.getvalue()


def _repeat_last_scan(data: bytes, extra: int, before: bytes = b"") -> bytes:
    """The probe's scan bomb: the last scan of a progressive JPEG, repeated (Pillow ends it at
    the EOI marker), each copy after the bytes `before`."""
    start, end = data.rindex(b"\xff\xda"), len(data) - 2
    assert data[end:] == b"\xff\xd9"
    return data[:end] + (before + data[start:end]) * extra + data[end:]


def test_a_scan_bomb_is_refused_before_decoding() -> None:
    """7000x7000 with its last scan repeated 100 times (7.5 KB more): the old decoder spent a
    pass over 49 megapixels per scan (~2-8 s here, 47 s for the probe's 1,000); now the scans
    are counted from the markers and the image is refused in milliseconds."""
    bomb = _repeat_last_scan(_progressive((7000, 7000)), 100)
    assert jpeg_layout(bomb, max_scans=10_000).scans == 110
    started = time.perf_counter()
    with pytest.raises(InvalidImageFormatException, match="more than 32 scans"):
        decode_image(bomb)
    assert time.perf_counter() - started < 2.0
    # libjpeg skips bytes that are not a marker and reads on: so scans behind a stray byte
    # still cost their pass, and still count
    hidden = _repeat_last_scan(_progressive((1000, 1000)), 100, before=b"\x00")
    assert jpeg_layout(hidden, max_scans=10_000).scans == 110
    with pytest.raises(InvalidImageFormatException, match="more than 32 scans"):
        decode_image(hidden)


def test_real_encoders_pass_and_the_limit_is_exact(tmp_path: Path) -> None:
    """libjpeg's standard progression (Pillow, OpenCV) writes 10 scans, 6 for greyscale; a file
    of exactly MAX_JPEG_SCANS decodes, one more is refused; an MPO counts its first picture."""
    import cv2

    rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    encoded = {"pillow": _progressive((320, 240)), "grey": _progressive((320, 240), mode="L"),
               "opencv": cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1]
               .tobytes()}
    assert {k: jpeg_layout(v).scans for k, v in encoded.items()} == {
        "pillow": 10, "grey": 6, "opencv": 10}
    for data in encoded.values():
        assert decode_image(data).width == 320
    at_limit = _repeat_last_scan(encoded["pillow"], MAX_JPEG_SCANS - 10)
    assert decode_image(at_limit).width == 320
    with pytest.raises(InvalidImageFormatException):
        decode_image(_repeat_last_scan(encoded["pillow"], MAX_JPEG_SCANS - 9))
    frames = [Image.open(io.BytesIO(encoded["pillow"])), Image.fromarray(rgb)]
    mpo = io.BytesIO()
    frames[0].save(mpo, "MPO", save_all=True, append_images=frames[1:])
    assert jpeg_layout(mpo.getvalue()).scans == 1  # MPO's writer re-encodes baseline
    assert decode_image(mpo.getvalue()).width == 320


def test_thousands_of_marker_segments_are_refused_without_walking_them() -> None:
    """5 MB of empty comment segments: Pillow walks header markers in Python (about a second
    for these); the walk stops after MAX_JPEG_SEGMENTS."""
    data = b"\xff\xd8" + b"\xff\xfe\x00\x02" * ((5 << 20) // 4 - 1)
    started = time.perf_counter()
    with pytest.raises(InvalidImageFormatException, match="marker segments"):
        decode_image(data)
    assert time.perf_counter() - started < 0.5


def test_a_mangled_jpeg_structure_is_a_rekognition_error() -> None:
    """The marker walk reads lengths, sampling factors and scan headers the caller chose:
    sampling factors of 0 (a division by zero in a naive walk) and 400 random byte changes
    give a picture or a Rekognition error, never another exception."""
    from faceledger.errors import FaceledgerError

    data = _progressive((320, 240))
    sof = data.index(b"\xff\xc2")
    zero = bytearray(data)
    for i in range(data[sof + 9]):
        zero[sof + 11 + 3 * i] = 0x00
    with pytest.raises(InvalidImageFormatException):
        decode_image(bytes(zero))
    rng = np.random.default_rng(24)
    for _ in range(400):
        mangled = bytearray(data)
        for at in rng.integers(2, len(data), size=int(rng.integers(1, 4))):
            mangled[at] = int(rng.integers(0, 256))
        try:
            decode_image(bytes(mangled))
        except FaceledgerError:
            pass


class _Recording(PixelBudget):
    """A PixelBudget that remembers what each decode reserved."""

    def __init__(self, total: int) -> None:
        super().__init__(total, wait_seconds=0.1)
        self.charged: list[int] = []

    def reserve(self, pixels: int) -> Any:
        self.charged.append(pixels)
        return super().reserve(pixels)


def test_progressive_jpegs_are_charged_their_coefficients() -> None:
    """A progressive 4:4:4 JPEG holds 6 bytes of coefficients per pixel of the whole image
    while it decodes (at any scale): charged as that many decoded pixels more. Baseline is
    charged its pixels, as before; a budget that fits the baseline image refuses the
    progressive one alone."""
    size = (2000, 1500)
    baseline = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(baseline, "JPEG", subsampling=0)
    progressive = _progressive(size, subsampling=0)
    budget = _Recording(10_000_000)
    decode_image(baseline.getvalue(), budget=budget)
    decode_image(progressive, budget=budget)
    coefficients = 3 * math.ceil(2000 / 8) * math.ceil(1500 / 8) * 64 * 2  # 18 MB
    assert budget.charged == [3_000_000,
                              3_000_000 + math.ceil(coefficients / BYTES_PER_DECODED_PIXEL)]
    tight = PixelBudget(4_000_000)
    assert decode_image(baseline.getvalue(), budget=tight).width == 2000
    with pytest.raises(ImageTooLargeException, match="memory of"):
        decode_image(progressive, budget=tight)


def test_a_scan_bomb_over_http_is_a_rekognition_error(
        server: tuple[str, IssuedKey, FaceService], astronaut_jpeg: bytes) -> None:
    url, key, _ = server
    client = _rekognition(url, key)
    bomb = _repeat_last_scan(_progressive((2000, 2000)), 5000)  # 375 KB
    error = _error(client.detect_faces, Image={"Bytes": bomb})
    assert error["Code"] == "InvalidImageFormatException"
    assert "scans" in error["Message"]
    assert len(client.detect_faces(Image={"Bytes": astronaut_jpeg})["FaceDetails"]) == 1


# --- 3. video jobs that end --------------------------------------------------------------------

def _mjpeg_mkv(out: Path, times_ms: list[int], *, size: tuple[int, int] = (160, 120),
               frame: bytes | None = None) -> None:
    """A Matroska file of MJPEG frames at `times_ms` (grey, or the JPEG `frame` each time)."""
    import av

    w, h = size
    grey = np.full((h, w, 3), 128, np.uint8)
    with av.open(str(out), "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuvj420p"
        for t in times_ms:
            packets = ([av.Packet(frame)] if frame is not None else
                       list(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24"))))
            for packet in packets:
                packet.pts = packet.dts = t
                packet.time_base = Fraction(1, 1000)
                packet.stream = stream
                container.mux(packet)


def _patch_duration(path: Path, milliseconds: float) -> None:
    """Overwrite the Segment's Duration (EBML id 0x4489, a float in TimestampScale units)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89")
    width = data[at + 2] & 0x7F  # a one-byte EBML size: 0x84 or 0x88
    assert width in (4, 8)
    data[at + 3:at + 3 + width] = struct.pack(">d" if width == 8 else ">f", milliseconds)
    path.write_bytes(bytes(data))


def jump_video(out: Path, jump: int = 9_000_000_000_000_000) -> Path:
    """The probe's file: two frames 40 ms apart, then two at 9e15 ms; Duration says 2 s."""
    _mjpeg_mkv(out, [0, 40, jump, jump + 40])
    _patch_duration(out, 2000.0)
    return out


SAMPLE = """
import sys
from pathlib import Path
from faceledger.video.decode import FrameLimits, probe, sample_frames
for name in sys.argv[1:]:
    path = Path(name)
    print([f.timestamp_ms for f in sample_frames(path, 2.0)])
    print([f.timestamp_ms for f in sample_frames(path, 2.0,
                                                 limits=FrameLimits.for_video(probe(path)))])
"""


def test_sampling_jumps_to_the_next_sample_time(tmp_path: Path) -> None:
    """The old loop stepped 0.5 s at a time towards 9e15 ms (1.8e13 steps: it never came
    back; hence a child process and a timeout). Now the next sample time is computed - also
    at 2**62 ms, where half a second is below a float's resolution - and with the probed
    duration as the end, the frames past it are not read at all."""
    from faceledger.video.decode import probe

    paths = [jump_video(tmp_path / "jump.mkv"), jump_video(tmp_path / "far.mkv", 2 ** 62)]
    assert [probe(p).duration_ms for p in paths] == [2000, 2000]
    out = subprocess.run([sys.executable, "-c", SAMPLE, *map(str, paths)],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split("\n")[:4] == [
        "[0, 9000000000000000]", "[0]", f"[0, {2 ** 62}]", "[0]"]  # +40 ms: the same float


@pytest.fixture
def video_world(tmp_path: Path, service: FaceService) -> Iterator[tuple[Path, Settings]]:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    settings = Settings(data_dir=tmp_path / "data", local_buckets={"clips": bucket},
                        video_workers=1)
    yield bucket, settings


def _video_service(settings: Settings, service: FaceService) -> FaceService:
    return FaceService(settings, pipeline=service.pipeline, resolver=build_resolver(settings))


def _ended(svc: FaceService, job_id: str, seconds: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while (out := svc.get_face_detection(job_id))["JobStatus"] == "IN_PROGRESS":
        assert time.monotonic() < deadline, f"job {job_id} still IN_PROGRESS after {seconds} s"
        time.sleep(0.2)
    return dict(out)


def _clip(name: str) -> dict[str, Any]:
    return {"S3Object": {"Bucket": "clips", "Name": name}}


def test_a_timestamp_jump_ends_its_job_and_frees_the_queue(
        video_world: tuple[Path, Settings], service: FaceService) -> None:
    """With one video worker, the probe's file used to hold it for ever (IN_PROGRESS, fresh
    heartbeat) and every later job waited. Now its job ends with what the 2 s hold, and the
    job queued behind it runs."""
    bucket, settings = video_world
    jump_video(bucket / "jump.mkv")
    _mjpeg_mkv(bucket / "plain.mkv", list(range(0, 2000, 40)))
    svc = _video_service(settings, service)
    try:
        stuck = svc.start_face_detection(_clip("jump.mkv"))["JobId"]
        behind = svc.start_face_detection(_clip("plain.mkv"))["JobId"]
        done = _ended(svc, stuck)
        assert done["JobStatus"] == "SUCCEEDED", done
        assert done["VideoMetadata"]["DurationMillis"] == 2000
        assert _ended(svc, behind)["JobStatus"] == "SUCCEEDED"
    finally:
        svc.close()


@pytest.mark.parametrize("limit, reason", [
    ({"video_max_frame_rate": 5.0}, "frames a second"),
    ({"video_max_job_seconds": 1e-6}, "ran longer"),
    ({"max_jpeg_scans": 12}, "scans"),
])
def test_a_job_beyond_its_limits_fails_and_stays_failed(
        video_world: tuple[Path, Settings], service: FaceService, limit: dict[str, Any],
        reason: str) -> None:
    """25 frames a second for 2 s, each a progressive JPEG of 16 scans: over 5 frames a second,
    over a wall time of a microsecond, over 12 scans a frame, the job ends FAILED with the
    reason as its StatusMessage - and a restarted server does not start it again."""
    bucket, settings = video_world
    frame = _repeat_last_scan(_progressive((160, 120)), 6)
    _mjpeg_mkv(bucket / "clip.mkv", list(range(0, 2000, 40)), frame=frame)
    settings = settings.model_copy(update=limit)
    svc = _video_service(settings, service)
    try:
        job = svc.start_face_detection(_clip("clip.mkv"))["JobId"]
        failed = _ended(svc, job)
    finally:
        svc.close()
    assert failed["JobStatus"] == "FAILED"
    assert reason in failed["StatusMessage"], failed["StatusMessage"]
    again = _video_service(settings, service)
    try:
        again.start_video_jobs()
        assert again.video_runner.sweep() == []
        assert again.get_face_detection(job)["JobStatus"] == "FAILED"
    finally:
        again.close()


def test_the_same_clip_within_its_limits_succeeds(video_world: tuple[Path, Settings],
                                                  service: FaceService) -> None:
    bucket, settings = video_world
    frame = _repeat_last_scan(_progressive((160, 120)), 6)
    _mjpeg_mkv(bucket / "clip.mkv", list(range(0, 2000, 40)), frame=frame)
    svc = _video_service(settings, service)
    try:
        job = svc.start_face_detection(_clip("clip.mkv"))["JobId"]
        assert _ended(svc, job)["JobStatus"] == "SUCCEEDED"
    finally:
        svc.close()


def test_frame_limits_refuse_a_scan_bomb_frame_in_a_video(tmp_path: Path) -> None:
    from faceledger.video.decode import FrameLimits, probe, sample_frames

    path = tmp_path / "bomb.mkv"
    _mjpeg_mkv(path, [0, 40, 80], frame=_repeat_last_scan(_progressive((160, 120)), 500))
    limits = FrameLimits.for_video(probe(path), max_jpeg_scans=MAX_JPEG_SCANS)
    with pytest.raises(InvalidParameterException, match="more than 32 scans"):
        list(sample_frames(path, 2.0, limits=limits))
