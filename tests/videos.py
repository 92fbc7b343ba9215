"""Videos made in the tests from real face photos, with ground truth.

Two people (two LFW identities) move and change size across a textured background; halfway
there is a cut (new background, the people swap sides and sizes). Every frame's true face boxes
are known, so tests can check that each person is found, keeps one Person.Index within a shot,
and that search and redaction hit the right frames. A sine tone is muxed as audio so redaction
can show the audio is carried over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

# Identities with several LFW photos: one photo goes into the video, another is enrolled.
PEOPLE = ("Colin_Powell", "Donald_Rumsfeld")


@dataclass
class Truth:
    """Ground truth of a generated video: boxes (left, top, right, bottom) per frame."""

    fps: int
    frames: int
    width: int
    height: int
    cut_frame: int
    boxes: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)

    def visible(self, person: str, t_ms: int) -> tuple[int, int, int, int]:
        return self.boxes[person][min(int(round(t_ms * self.fps / 1000)), self.frames - 1)]


def face_crop(path: Path, size: int) -> np.ndarray:
    """The central face region of an LFW photo (deep-funneled: the face is centred)."""
    img = Image.open(path).convert("RGB")
    crop = img.crop((55, 45, 195, 205))  # 140 x 160: face, hair and chin
    return np.asarray(crop.resize((size, int(size * 160 / 140)), Image.Resampling.LANCZOS))


def _background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 / width), (y * 255 / height), np.full_like(x, 90 + 60 * seed)],
                    axis=-1) * 0.6
    noise = rng.normal(0, 6, size=(height, width, 3))
    return np.clip(base + noise + 30, 0, 255).astype(np.uint8)


def make_video(faces_dir: Path, out: Path, *, width: int = 480, height: int = 270,
               fps: int = 10, seconds: float = 4.0, audio: bool = True) -> Truth:
    """Write an H.264 MP4 of two moving people with a cut at half time; return the truth."""
    import av

    photos = {p: sorted((faces_dir / "lfw" / p).glob("*.jpg"))[0] for p in PEOPLE}
    frames = int(seconds * fps)
    cut = frames // 2
    truth = Truth(fps, frames, width, height, cut, {p: [] for p in PEOPLE})
    backgrounds = [_background(width, height, 0), _background(width, height, 1)]
    with av.open(str(out), "w") as container:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast", "g": str(fps * 2)}
        astream = container.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            shot = 0 if i < cut else 1
            u = (i - (0 if shot == 0 else cut)) / max(cut - 1, 1)  # 0..1 within the shot
            canvas = backgrounds[shot].copy()
            for k, person in enumerate(PEOPLE):
                side = k if shot == 0 else 1 - k
                size = int(96 + 40 * u) if k == 0 else int(130 - 30 * u)
                crop = face_crop(photos[person], size)
                h, w = crop.shape[:2]
                left = int(20 + side * width / 2 + 60 * u)
                top = int(10 + 30 * u) if k == 0 else int(40 - 20 * u)
                left = min(max(left, 0), width - w)
                top = min(max(top, 0), height - h)
                canvas[top:top + h, left:left + w] = crop
                truth.boxes[person].append((left, top, left + w, top + h))
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            for packet in vs.encode(frame):
                container.mux(packet)
        for packet in vs.encode():
            container.mux(packet)
        if astream is not None:
            rate = 16000
            n = int(seconds * rate)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
            pts = 0
            for start in range(0, n, 1024):
                chunk = tone[start:start + 1024]
                if len(chunk) < 1024:
                    chunk = np.pad(chunk, (0, 1024 - len(chunk)))
                af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                af.sample_rate = rate
                af.pts = pts
                af.time_base = Fraction(1, rate)
                pts += 1024
                for packet in astream.encode(af):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return truth
