"""Detectors side by side: YuNet (n, s), HOG, MMOD (dlib's CNN) and MTCNN, each with the ONet face check.

On dlib's labelled group photos (../shared/faces/detection: 9 photos, 43 faces, small and turned
faces) it counts, per detector, faces found (IoU >= 0.5) and false faces, without the check and
with it (`Settings.min_face_probability`), plus detections on dogs.jpg and the astronaut
portrait; and it times the pipeline's detection (scaling + detector + check) per image on those
photos and on a sample of the 200 x 200 UTKFace crops. One process, one thread per model call as
the pipeline runs them, in one run, so the ratios between detectors are fair; absolute numbers
depend on the machine's load (report it with them).

`--scenes N` adds N generated family and street scenes (tests/scenes.py: UTKFace faces pasted
small, turned, backlit and low-key on scikit-image backgrounds, composed in memory): faces
found per race and per condition, and boxes on no face, without and with the check.

Failures to detect per sex and race on all 5,835 UTKFace crops come from
`bench/detection_groups.py` or `faceledger evaluate detection` (docs/accuracy.md,
"Detector (model 2.0)"). `--per-cell K` adds them here on the first K
crops of each sex x race cell in file-name order, for detectors too slow for the whole set
(dlib's MMOD): the same images for every detector, with the check and without.

    python bench/detectors.py                      # YuNet n and s, HOG, MTCNN; 40 crops; 24 scenes
    python bench/detectors.py --detectors yunet_n,yunet_s,hog,cnn,mtcnn --utk 200
    python bench/detectors.py --per-cell 41        # + failures to detect on 410 crops per detector
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# bench/http.py would shadow the standard library's `http` (scikit-image imports it).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO / "tests"))
if TYPE_CHECKING:
    from scenes import Scene

    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline

DEFAULT_FACES = Path(os.environ.get("FACELEDGER_SHARED_FACES", REPO.parent / "shared" / "faces"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="../shared/faces")
    ap.add_argument("--detectors", default="yunet_n,yunet_s,hog,mtcnn",
                    help="yunet_n, yunet_s (or yunet: the configured variant), hog, cnn, mtcnn")
    ap.add_argument("--scenes", type=int, default=24, help="generated scenes (0: none)")
    ap.add_argument("--utk", type=int, default=40, help="UTKFace crops to time (spread evenly)")
    ap.add_argument("--per-cell", type=int, default=0,
                    help="failures to detect on the first K crops of each sex x race cell")
    args = ap.parse_args()

    from test_detection import labelled_faces, match_counts

    from faceledger.imaging import decode_image
    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline

    folder = args.faces / "detection"
    truth = labelled_faces(folder)
    scenes = {f: decode_image((folder / f).read_bytes()).pixels for f in truth}
    dogs = decode_image((folder / "dogs.jpg").read_bytes()).pixels
    from skimage import data

    astronaut = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    utk_all = sorted((args.faces / "utkface-balanced").rglob("*.jpg"))
    step = max(1, len(utk_all) // max(1, args.utk))
    utk = [decode_image(p.read_bytes(), min_side=1).pixels for p in utk_all[::step][: args.utk]]
    bar = Settings().min_face_probability

    cells: dict[str, list[Path]] = {}
    for p in utk_all:
        sex, race = p.relative_to(args.faces / "utkface-balanced").parts[:2]
        cells.setdefault(f"{sex}/{race}", []).append(p)
    per_cell = [p for files in cells.values() for p in files[: args.per_cell]]
    missed: dict[str, dict[str, list[bool]]] = {}

    scene_list = []
    if args.scenes:
        from scenes import scene_set

        scene_list = list(scene_set(args.faces, args.scenes))
    scene_rows: dict[str, dict[str, object]] = {}

    rows = []
    for name in args.detectors.split(","):
        # Bar 0: every detection comes back with its face probability; the check is then
        # applied here, so one detection pass gives both columns and the time includes ONet.
        pipe = FacePipeline(detector_settings(name, min_face_probability=0.0))
        pipe.detect(astronaut)  # load the models before timing
        counts = {"off": [0, 0], "on": [0, 0]}
        scene_ms = []
        for f, px in scenes.items():
            t = time.perf_counter()
            found = pipe.detect(px)
            scene_ms.append(1000 * (time.perf_counter() - t))
            kept = [d for d in found if (d.face_probability or 0.0) >= bar]
            for key, boxes in (("off", found), ("on", kept)):
                tp, fp, _ = match_counts(truth[f], [d.box for d in boxes])
                counts[key][0] += tp
                counts[key][1] += fp
        check_ms = []
        for px in list(scenes.values())[:3]:
            boxes = pipe.detect(px)
            t = time.perf_counter()
            pipe.check_faces(px, boxes)
            check_ms.append(1000 * (time.perf_counter() - t) / max(1, len(boxes)))
        utk_ms = []
        for px in utk:
            t = time.perf_counter()
            pipe.detect(px)
            utk_ms.append(1000 * (time.perf_counter() - t))

        for p in per_cell:
            found = pipe.detect(decode_image(p.read_bytes(), min_side=1).pixels)
            on = not any((d.face_probability or 0.0) >= bar for d in found)
            missed.setdefault(name, {}).setdefault(str(p), [not found, on])

        if scene_list:
            scene_rows[name] = measure_scenes(pipe, scene_list, bar)

        def n_on(px: np.ndarray) -> str:
            found = pipe.detect(px)
            return f"{len(found)} -> {sum(1 for d in found if (d.face_probability or 0) >= bar)}"

        rows.append((
            name, f"{counts['off'][0]}/43 -> {counts['on'][0]}/43",
            f"{counts['off'][1]} -> {counts['on'][1]}", n_on(dogs), n_on(astronaut),
            statistics.mean(scene_ms), statistics.mean(utk_ms), statistics.mean(check_ms),
        ))  # fmt: skip
        print(f"{name}: done", file=sys.stderr, flush=True)

    print(f"\nface check: min_face_probability {bar:g}; 'a -> b' = without -> with the check")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)\n")
    head = ("detector", "faces found", "false faces", "dogs.jpg", "astronaut",
            "ms/group photo", f"ms/crop ({len(utk)})", "check ms/box")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.0f} | {r[6]:.0f} "
              f"| {r[7]:.1f} |")
    if per_cell:
        print_missed(missed, per_cell, args.faces / "utkface-balanced")
    if scene_rows:
        print_scenes(scene_rows, scene_list)
    base = next((r for r in rows if r[0] == "hog"), None)
    if base is not None:
        for r in rows:
            print(f"{r[0]}: {r[5] / base[5]:.1f}x HOG's time per scene, "
                  f"{r[6] / base[6]:.1f}x per crop")


def detector_settings(name: str, **kw: float) -> "Settings":
    """Settings for a bench name: yunet_n / yunet_s pick YuNet's variant."""
    from faceledger.settings import DetectorName, Settings

    if name.startswith("yunet_"):
        return Settings(detector="yunet", yunet_variant=cast(Literal["n", "s"], name[-1]), **kw)
    return Settings(detector=cast(DetectorName, name), **kw)


def measure_scenes(pipe: "FacePipeline", scene_list: list["Scene"], bar: float) -> dict[str, object]:
    """Per face: found without / with the check; false boxes; ms per scene."""
    from scenes import match_faces

    hits: dict[str, list[tuple[bool, bool]]] = {}
    false = [0, 0]
    ms = []
    for sc in scene_list:
        t = time.perf_counter()
        found = pipe.detect(sc.pixels)
        ms.append(1000 * (time.perf_counter() - t))
        kept = [d for d in found if (d.face_probability or 0.0) >= bar]
        off, f_off = match_faces(sc.faces, [d.box for d in found])
        on, f_on = match_faces(sc.faces, [d.box for d in kept])
        false[0] += f_off
        false[1] += f_on
        for face, a, b in zip(sc.faces, off, on):
            hits.setdefault(f"{sc.name}:{face.source}", []).append((a, b))
    return {"hits": hits, "false": false, "ms": statistics.mean(ms)}


def print_scenes(rows: dict[str, dict[str, object]], scene_list: list["Scene"]) -> None:
    """Faces found in the generated scenes per race, sex, condition and size, without -> with
    the check."""
    faces = [(f"{sc.name}:{f.source}", f) for sc in scene_list for f in sc.faces]
    groups: dict[str, list[str]] = {"all": [k for k, _ in faces]}
    for k, f in faces:
        sex, race = f.group.split("/")
        size = "20-30 px" if f.size < 30 else "30-40 px" if f.size < 40 else "40+ px"
        for g in (race, sex, f.condition, size):
            groups.setdefault(g, []).append(k)
    names = list(rows)
    print(f"\ngenerated scenes ({len(scene_list)}, {len(faces)} faces): faces found, "
          "without -> with the check\n")
    print("| faces | n | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for g, keys in groups.items():
        cells = []
        for n in names:
            hits = cast(dict[str, list[tuple[bool, bool]]], rows[n]["hits"])
            off = sum(1 for k in keys if hits[k][0][0])
            on = sum(1 for k in keys if hits[k][0][1])
            cells.append(f"{off} -> {on}")
        print(f"| {g} | {len(keys)} | " + " | ".join(cells) + " |")
    print("| boxes on no face | | " + " | ".join(
        "{} -> {}".format(*cast(list[int], rows[n]["false"])) for n in names) + " |")
    print("| ms per scene (960 x 640) | | " + " | ".join(
        f"{cast(float, rows[n]['ms']):.0f}" for n in names) + " |")


def print_missed(
    missed: dict[str, dict[str, list[bool]]], paths: list[Path], root: Path
) -> None:
    """Failure to detect per sex and race, without -> with the check, Wilson 95% intervals."""
    from faceledger.rates import wilson_interval

    groups: dict[str, list[str]] = {"all": [str(p) for p in paths]}
    for p in paths:
        sex, race = p.relative_to(root).parts[:2]
        groups.setdefault(sex, []).append(str(p))
        groups.setdefault(race, []).append(str(p))
    names = list(missed)
    print(f"\nno face on the first crops of each cell ({len(paths)}): without -> with the check\n")
    print("| group | crops | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for g, keys in groups.items():
        cells = []
        for name in names:
            off = sum(1 for k in keys if missed[name][k][0])
            on = sum(1 for k in keys if missed[name][k][1])
            lo, hi = wilson_interval(on, len(keys))
            cells.append(f"{off} -> {on} ({100 * on / len(keys):.1f}% "
                         f"[{100 * float(lo):.1f}, {100 * float(hi):.1f}])")
        print(f"| {g} | {len(keys)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
