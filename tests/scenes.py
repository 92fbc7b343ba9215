"""Generated scenes for detection tests and benchmarks: "family" and "street" photos composed at
run time from UTKFace faces (../shared/faces) on plausible backgrounds, with ground-truth boxes.

Nothing here is written to disk: the faces are real people's, and the project never commits
their photos. Each face is cut from its 200 x 200 UTKFace chip with a feathered oval (hair,
face, chin), given a torso, and placed with the conditions that make detection hard:

- small: face 20-40 px across;
- turned: in-plane rotation up to +-30 degrees, and out-of-plane yaw imitated by a horizontal
  squeeze (to 0.6 of the width) with a perspective taper (the far side shorter);
- backlit: a dark face (x0.3-0.5 of its light, gamma 1.3) against a bright sky or window;
- low-key: a dim scene, the face at a third of its light, on a dark background.

Faces are drawn evenly from the ten sex x race cells, so Black faces (all from
utkface-balanced, utkface-more has almost none) are a fifth of every scene set. Scenes are
seeded: the same call gives the same pixels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from faceledger.imaging import decode_image
from faceledger.vision import Box

RGB = NDArray[np.uint8]
SEXES = {"0": "male", "1": "female"}
RACES = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "other"}
CELLS = [f"{s}/{r}" for s in ("female", "male") for r in ("asian", "black", "indian", "other", "white")]
# The face in a UTKFace chip (dlib-aligned, 200 x 200): the median of YuNet's, MTCNN's and
# HOG's boxes on utkface-balanced is close to this square; the ground truth is this square
# carried through the same transform as the pixels.
CHIP_FACE = (38.0, 40.0, 162.0, 164.0)
CONDITIONS = ("plain", "small", "turned", "backlit", "low-key")
# UTKFace chips that hold no face a person would see (looked at: an eye close-up, an iris,
# fabric, a blur); every detector misses them, rightly.
NOT_FACES = frozenset({
    "1_0_0_20170109194120301.jpg.chip.jpg", "1_1_0_20170109194452834.jpg.chip.jpg",
    "1_1_4_20170109194502921.jpg.chip.jpg", "86_1_2_20170105174652949.jpg.chip.jpg",
})


@dataclass(frozen=True)
class SceneFace:
    """One pasted face: where it is (centre and size in scene pixels), who, and how placed."""

    cx: float
    cy: float
    size: float  # sqrt of the transformed face square's area
    group: str  # "female/black"
    condition: str
    source: str  # the UTKFace file it came from (never copied anywhere)
    angle: float = 0.0  # in-plane rotation, degrees
    squeeze: float = 1.0  # horizontal squeeze (yaw), 1 = frontal

    @property
    def box(self) -> Box:
        h = self.size / 2
        return Box(self.cx - h, self.cy - h, self.cx + h, self.cy + h)


@dataclass(frozen=True)
class Scene:
    name: str
    kind: str  # "family" or "street"
    pixels: RGB
    faces: list[SceneFace]


def utk_faces(faces_dir: Path) -> dict[str, list[Path]]:
    """UTKFace chips by sex x race cell, adults and children, from both UTKFace folders."""
    out: dict[str, list[Path]] = {c: [] for c in CELLS}
    for folder in ("utkface-balanced", "utkface-more"):
        for p in sorted((faces_dir / folder).rglob("*.jpg")):
            m = re.fullmatch(r"(\d+)_([01])_([0-4])_.*", p.name)
            if m and p.name not in NOT_FACES:
                out[f"{SEXES[m.group(2)]}/{RACES[m.group(3)]}"].append(p)
    return out


def backgrounds() -> dict[str, RGB]:
    """scikit-image's public-domain pictures without a person in them, and plain gradients."""
    from skimage import data

    def rgb(a: np.ndarray) -> RGB:
        a = np.asarray(a)
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=2)
        return np.ascontiguousarray(a[..., :3]).astype(np.uint8)

    out = {
        "coffee": rgb(data.coffee()),  # type: ignore[no-untyped-call]
        "rocket": rgb(data.rocket()),  # type: ignore[no-untyped-call]
        "street": rgb(data.stereo_motorcycle()[0]),  # type: ignore[no-untyped-call]
        "chelsea": rgb(data.chelsea()),  # type: ignore[no-untyped-call]  (a cat: no human face)
        "brick": rgb(data.brick()),  # type: ignore[no-untyped-call]
        "gravel": rgb(data.gravel()),  # type: ignore[no-untyped-call]
        "grass": rgb(data.grass()),  # type: ignore[no-untyped-call]
    }
    return out


def _gradient(h: int, w: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> RGB:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    g = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(g, (h, w, 3)).astype(np.uint8).copy()


def _background(rng: np.random.Generator, bgs: dict[str, RGB], kind: str, light: str,
                h: int, w: int) -> RGB:
    if light == "backlit":
        # a bright sky or window: near-white gradient, a little texture
        sky = _gradient(h, w, (250, 252, 255), (205, 215, 230))
        tex = cv2.resize(bgs["gravel"], (w, h)).astype(np.float32)
        return np.clip(sky.astype(np.float32) + 0.06 * (tex - tex.mean()), 0, 255).astype(np.uint8)
    names = ["street", "rocket", "brick", "gravel"] if kind == "street" else \
        ["coffee", "chelsea", "grass", "brick", "street"]
    name = names[int(rng.integers(len(names)))]
    bg = cv2.resize(bgs[name], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if rng.random() < 0.35:  # a coloured wall instead, with the picture faint behind it
        wall = _gradient(h, w, tuple(int(v) for v in rng.integers(90, 220, 3)),  # type: ignore[arg-type]
                         tuple(int(v) for v in rng.integers(60, 200, 3)))  # type: ignore[arg-type]
        bg = 0.75 * wall + 0.25 * bg
    if light == "low-key":
        bg = bg * 0.25
    return np.clip(bg, 0, 255).astype(np.uint8)


def _face_layer(chip: RGB, condition: str, rng: np.random.Generator) -> RGB:
    """The chip's light changed for the condition (backlit: dark face; low-key: dim), never
    below a mean of 40 (backlit) or 30 (low-key) of 255, where a person still sees the face's
    features: dark skin stays darker than light skin, but not a silhouette."""
    f = chip.astype(np.float32) / 255.0
    if condition in ("backlit", "low-key"):
        if condition == "backlit":
            f = np.power(f, 1.3)
        factor = rng.uniform(0.3, 0.5) if condition == "backlit" else rng.uniform(0.28, 0.4)
        floor = (40.0 if condition == "backlit" else 30.0) / 255.0
        centre = f[50:150, 50:150].mean()
        f = f * max(factor, min(1.0, floor / max(float(centre), 1e-3)))
    return np.clip(f * 255.0, 0, 255).astype(np.uint8)


def _homography(cx: float, cy: float, size: float, angle: float, squeeze: float,
                taper: float) -> NDArray[np.float64]:
    """Chip -> scene: the chip's face square onto a face of `size` px at (cx, cy), squeezed
    horizontally (yaw), tapered (the far side shorter) and rotated by `angle` degrees."""
    x0, y0, x1, y1 = CHIP_FACE
    fx, fy, side = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    s = size / side
    # chip points relative to the face centre, scaled
    src = np.float32([[0, 0], [200, 0], [200, 200], [0, 200]])
    rel = (src - [fx, fy]) * s
    rel[:, 0] *= squeeze
    # perspective taper: the right side (x > 0) shrinks vertically by `taper`
    half_w = 100 * s * squeeze
    k = 1 - taper * (rel[:, 0] / half_w + 1) / 2
    rel[:, 1] *= k
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    dst = (rel @ rot.T + [cx, cy]).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst).astype(np.float64)


def _paste(canvas: NDArray[np.float32], layer: RGB, alpha: NDArray[np.float32],
           H: NDArray[np.float64]) -> None:
    h, w = canvas.shape[:2]
    warped = cv2.warpPerspective(layer, H, (w, h), flags=cv2.INTER_AREA, borderValue=(0, 0, 0))
    a = cv2.warpPerspective(alpha, H, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
    canvas[:] = canvas * (1 - a) + warped.astype(np.float32) * a


_OVAL: NDArray[np.float32] | None = None


def _oval() -> NDArray[np.float32]:
    """A feathered oval over the chip: hair, face and chin, without the chip's square edges."""
    global _OVAL  # noqa: PLW0603 - a constant computed once
    if _OVAL is None:
        m = np.zeros((200, 200), np.float32)
        cv2.ellipse(m, (100, 98), (78, 96), 0, 0, 360, 1.0, -1)
        _OVAL = cv2.GaussianBlur(m, (0, 0), 6)
    return _OVAL


def _torso(canvas: NDArray[np.float32], cx: float, cy: float, size: float,
           rng: np.random.Generator, dim: float) -> None:
    """Shoulders and a body in one colour under the head: faces are not floating ovals."""
    colour = rng.integers(20, 230, 3).astype(np.float32) * dim
    top = cy + 0.75 * size
    centre = (int(cx), int(top + 0.9 * size))
    axes = (int(1.2 * size), int(0.9 * size))
    mask = np.zeros(canvas.shape[:2], np.float32)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
    cv2.rectangle(mask, (centre[0] - axes[0], centre[1]), (centre[0] + axes[0], int(top + 2.2 * size)), 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.5)[..., None]
    canvas[:] = canvas * (1 - mask) + colour * mask


def make_scene(name: str, kind: str, light: str, chips: list[tuple[str, Path]],
               bgs: dict[str, RGB], rng: np.random.Generator,
               height: int = 640, width: int = 960) -> Scene:
    """One scene: `chips` (group, path) laid out as a family (one or two rows, faces 30-70 px,
    some turned) or a street (faces 20-40 px scattered, many turned), lit by `light`
    ("normal", "backlit" or "low-key")."""
    canvas = _background(rng, bgs, kind, light, height, width).astype(np.float32)
    faces: list[SceneFace] = []
    n = len(chips)
    if kind == "family":
        rows = 1 if n <= 5 else 2
        per_row = math.ceil(n / rows)
        slots = []
        for r in range(rows):
            cnt = min(per_row, n - r * per_row)
            y = height * (0.35 + 0.3 * r)
            for c in range(cnt):
                x = width * (c + 0.5 + rng.uniform(-0.15, 0.15)) / cnt
                slots.append((x, y + rng.uniform(-20, 20), rng.uniform(32, 72)))
    else:
        cols = math.ceil(math.sqrt(n * 1.5))
        rows = math.ceil(n / cols)
        cells = rng.permutation(rows * cols)[:n]
        slots = []
        for cell in cells:
            r, c = divmod(int(cell), cols)
            x = width * (c + 0.5 + rng.uniform(-0.25, 0.25)) / cols
            y = height * (0.12 + 0.76 * (r + 0.5 + rng.uniform(-0.2, 0.2)) / rows)
            slots.append((x, y, rng.uniform(20, 40)))
    dim = {"low-key": 0.3, "backlit": 0.35}.get(light, 1.0)
    placed = []
    for (group, path), (x, y, size) in zip(chips, slots):
        condition = "plain"
        angle, squeeze, taper = 0.0, 1.0, 0.0
        turned = rng.random() < (0.6 if kind == "street" else 0.4)
        if turned:
            angle = float(rng.uniform(-30, 30))
            if rng.random() < 0.6:
                squeeze = float(rng.uniform(0.6, 0.9))
                taper = float(rng.uniform(0.0, 0.25)) * (1 if rng.random() < 0.5 else -1)
            condition = "turned"
        if light != "normal":
            condition = light
        elif not turned and size <= 40:
            condition = "small"
        placed.append((group, path, x, y, size, angle, squeeze, taper, condition))
    # Bodies first, then every head: no face is hidden behind someone's shoulders.
    for _, _, x, y, size, *_ in placed:
        _torso(canvas, x, y, size, rng, dim)
    for group, path, x, y, size, angle, squeeze, taper, condition in placed:
        chip = decode_image(path.read_bytes(), min_side=1).pixels
        if rng.random() < 0.5:  # mirror half the faces: left- and right-turned people
            chip = np.ascontiguousarray(chip[:, ::-1])
        H = _homography(x, y, size, angle, squeeze, taper)
        _paste(canvas, _face_layer(chip, light if light != "normal" else "plain", rng), _oval(), H)
        x0, y0, x1, y1 = CHIP_FACE
        quad = cv2.perspectiveTransform(np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]]), H)[0]
        area = 0.5 * abs(float(np.dot(quad[:, 0], np.roll(quad[:, 1], 1)) - np.dot(quad[:, 1], np.roll(quad[:, 0], 1))))
        c = quad.mean(axis=0)
        faces.append(SceneFace(float(c[0]), float(c[1]), math.sqrt(area), group, condition,
                                path.name, angle, squeeze))
    noise = rng.normal(0.0, 2.0, canvas.shape).astype(np.float32)
    pixels = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    assert ok
    return Scene(name, kind, decode_image(jpeg.tobytes()).pixels, faces)


def scene_set(faces_dir: Path, n_scenes: int = 24, seed: int = 17) -> Iterator[Scene]:
    """`n_scenes` scenes cycling family/street x normal/backlit/low-key light, faces drawn
    round-robin from the ten sex x race cells (a fifth of them Black), no chip used twice."""
    rng = np.random.default_rng(seed)
    by_cell = utk_faces(faces_dir)
    pools = {c: list(rng.permutation(len(p))) for c, p in by_cell.items()}
    bgs = backgrounds()
    plan = [(k, light) for light in ("normal", "backlit", "low-key") for k in ("family", "street")]
    turn = 0
    for i in range(n_scenes):
        kind, light = plan[i % len(plan)]
        n = int(rng.integers(4, 9)) if kind == "family" else int(rng.integers(8, 15))
        chips = []
        for _ in range(n):
            cell = CELLS[turn % len(CELLS)]
            turn += 1
            chips.append((cell, by_cell[cell][int(pools[cell].pop())]))
        yield make_scene(f"{i:02d}-{kind}-{light}", kind, light, chips, bgs, rng)


def match_faces(truth: list[SceneFace], found: list[Box]) -> tuple[list[bool], int]:
    """Which faces were found, and how many boxes are on no face. A box finds a face when its
    centre is within 40% of the face's size of the face's centre and its size is within half
    to twice the face's: detectors draw boxes differently (YuNet takes in the forehead, HOG
    crops tight), so IoU would score the convention rather than the finding."""
    used: set[int] = set()
    hits = []
    for f in truth:
        best, best_d = -1, 1e9
        for i, b in enumerate(found):
            if i in used:
                continue
            bx, by = (b.left + b.right) / 2, (b.top + b.bottom) / 2
            side = math.sqrt(b.area)
            d = math.hypot(bx - f.cx, by - f.cy)
            if d <= 0.4 * f.size and 0.5 <= side / f.size <= 2.0 and d < best_d:
                best, best_d = i, d
        if best >= 0:
            used.add(best)
        hits.append(best >= 0)
    return hits, len(found) - len(used)
