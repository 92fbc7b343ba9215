"""Failure to detect per sex x race on UTKFace for every detector setting, from one pass each.

Each detector runs once per image with its lowest score bar and the face check off, and every
detection is kept with its score and ONet's face probability. A higher YuNet score bar, or the
check at `min_face_probability`, is then a filter on those records: greedy non-maximum
suppression keeps the same boxes among those above a higher bar (a box is only ever suppressed
by a higher-scoring kept one), so the filtered records are what a run at that bar gives.
For YuNet it also records ONet's five landmarks on YuNet's box, for the landmark agreement
(`--landmarks`).

    python bench/detection_groups.py run --detector yunet_n --set utkface-balanced --set utkface-more
    python bench/detection_groups.py table                # every setting, per group, worst group
    python bench/detection_groups.py landmarks            # YuNet's five points against ONet's
    python bench/detection_groups.py photos               # YuNet n/s bars on the group photos and extras

Records go to --work (default /tmp/faceledger-detection-groups), one JSON per detector and set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
DEFAULT_FACES = Path(os.environ.get("FACELEDGER_SHARED_FACES", REPO.parent / "shared" / "faces"))
WORK = Path("/tmp/faceledger-detection-groups")
SEX = {"0": "male", "1": "female"}
RACE = {"0": "white", "1": "black", "2": "asian", "3": "indian", "4": "other"}
# Lowest bar each detector runs at; higher bars are filters on the records.
YUNET_FLOOR = 0.3


def run(detector: str, sets: list[str], faces: Path, work: Path) -> None:
    from faceledger.imaging import decode_image
    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline

    if detector.startswith("yunet_"):
        settings = Settings(detector="yunet", yunet_variant=detector[-1],  # type: ignore[arg-type]
                            yunet_score_threshold=YUNET_FLOOR, min_face_probability=0.0)
    else:
        settings = Settings(detector=detector, min_face_probability=0.0)  # type: ignore[arg-type]
    pipe = FacePipeline(settings)
    work.mkdir(parents=True, exist_ok=True)
    for name in sets:
        root = faces / name
        paths = sorted(root.rglob("*.jpg"))
        records: dict[str, Any] = {}
        t0 = time.perf_counter()
        for i, p in enumerate(paths):
            px = decode_image(p.read_bytes(), min_side=1).pixels
            found = pipe.detect(px)
            dets = []
            onet = pipe.landmarker.landmarks(px, [d.box for d in found]) if found else []
            for d, lm in zip(found, onet):
                dets.append({
                    "box": [d.box.left, d.box.top, d.box.right, d.box.bottom],
                    "score": d.confidence / 100.0,
                    "p": d.face_probability,
                    "lm": None if d.landmarks is None else np.asarray(d.landmarks).round(2).tolist(),
                    "onet": np.asarray(lm).round(2).tolist(),
                })  # fmt: skip
            records[p.relative_to(root).as_posix()] = dets
            if i % 500 == 0:
                print(f"{detector} {name} {i}/{len(paths)}", file=sys.stderr, flush=True)
        ms = 1000 * (time.perf_counter() - t0) / max(1, len(paths))
        out = {"detector": detector, "set": name, "ms_per_image": ms, "images": records}
        (work / f"{detector}.{name}.json").write_text(json.dumps(out))
        print(f"{detector} {name}: {len(paths)} images, {ms:.1f} ms each", file=sys.stderr)


def utk_groups(key: str) -> dict[str, str] | None:
    m = re.fullmatch(r"(\d+)_([01])_([0-4])_.*", Path(key).name)
    if not m:
        return None
    sex, race = SEX[m.group(2)], RACE[m.group(3)]
    return {"sex": sex, "race": race, "cell": f"{sex}/{race}",
            "age": "child" if int(m.group(1)) < 18 else "adult"}  # fmt: skip


def load(work: Path, detector: str, sets: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for s in sets:
        f = work / f"{detector}.{s}.json"
        if f.exists():
            out.update({f"{s}/{k}": v for k, v in json.loads(f.read_text())["images"].items()})
    return out


def settings_for(detector: str) -> list[tuple[str, float, float]]:
    """(label, score bar, check bar) rows to tabulate for one detector."""
    rows = []
    bars = [0.5, 0.6, 0.7, 0.8] if detector.startswith("yunet") else [0.0]
    for b in bars:
        for c in (0.0, 0.5):
            label = detector + (f" th {b:g}" if b else "") + (" + check" if c else "")
            rows.append((label, b, c))
    return rows


def table(work: Path, detectors: list[str], sets: list[str]) -> None:
    from faceledger.rates import wilson_interval

    print(f"sets: {', '.join(sets)}; failure to detect = no detection passing the bars; "
          "Wilson 95% intervals\n")
    for det in detectors:
        recs = load(work, det, sets)
        if not recs:
            continue
        labels = {k: utk_groups(k) for k in recs}
        for label, bar, check in settings_for(det):
            missed = {k: not any(d["score"] >= bar and (d["p"] or 0) >= check for d in v)
                      for k, v in recs.items()}  # fmt: skip
            groups: dict[str, list[bool]] = {"all": list(missed.values())}
            for k, m in missed.items():
                g = labels[k]
                if g is None:
                    continue
                for a in ("sex", "race", "cell", "age"):
                    groups.setdefault(g[a], []).append(m)
            def rate(g: str) -> tuple[float, float, float, int, int]:
                v = groups[g]
                lo, hi = wilson_interval(sum(v), len(v))
                return sum(v) / len(v), float(lo), float(hi), sum(v), len(v)
            cells = [g for g in groups if "/" in g]
            worst = max(cells, key=lambda g: (rate(g)[0], rate(g)[2]))
            worst_race = max(RACE.values(), key=lambda g: rate(g)[0])
            best_race = min(RACE.values(), key=lambda g: rate(g)[0])
            a, w, r = rate("all"), rate(worst), rate(worst_race)
            b = rate(best_race)
            print(f"| {label} | {100*a[0]:.2f}% ({a[3]}/{a[4]}) | {worst} {100*w[0]:.2f}% "
                  f"[{100*w[1]:.2f}, {100*w[2]:.2f}] ({w[3]}/{w[4]}) | {worst_race} {100*r[0]:.2f}% "
                  f"[{100*r[1]:.2f}, {100*r[2]:.2f}] | {best_race} {100*b[0]:.2f}% | "
                  + " | ".join(f"{g} {100*rate(g)[0]:.2f}%" for g in ("child", "adult")) + " |")
        print()


def per_group(work: Path, configs: list[str], sets: list[str]) -> None:
    """One column per 'detector@bar@check', one row per group: rate [interval] (k/n)."""
    from faceledger.rates import wilson_interval

    cols = []
    for c in configs:
        det, bar, check = c.split("@")
        recs = load(work, det, sets)
        cols.append({k: not any(d["score"] >= float(bar) and (d["p"] or 0) >= float(check)
                                for d in v) for k, v in recs.items()})  # fmt: skip
    order = ["all", "female", "male", *RACE.values(), "child", "adult",
             *[f"{s}/{r}" for s in ("female", "male") for r in RACE.values()]]
    print("| group | " + " | ".join(configs) + " |")
    print("|---|" + "---:|" * len(configs))
    for g in order:
        cells = []
        for col in cols:
            v = [m for k, m in col.items()
                 if g == "all" or (lab := utk_groups(k)) is not None and g in lab.values()]
            if not v:
                cells.append("")
                continue
            lo, hi = wilson_interval(sum(v), len(v))
            cells.append(f"{100*sum(v)/len(v):.2f}% [{100*float(lo):.2f}, {100*float(hi):.2f}] "
                         f"({sum(v)}/{len(v)})")
        print(f"| {g} | " + " | ".join(cells) + " |")


def landmarks(work: Path, detector: str, sets: list[str], check: float) -> None:
    """YuNet's five points against ONet's on the same (top-scoring) box, in units of the
    inter-ocular distance (ONet's eye centres)."""
    names = ("eye (image left)", "eye (image right)", "nose", "mouth left", "mouth right")
    for s in sets:
        recs = load(work, detector, [s])
        errs, per_group_err = [], {}
        for k, v in recs.items():
            v = [d for d in v if d["score"] >= 0.6 and (d["p"] or 0) >= check]
            if not v:
                continue
            d = max(v, key=lambda d: d["score"])
            y, o = np.asarray(d["lm"]), np.asarray(d["onet"])
            iod = float(np.linalg.norm(o[1] - o[0]))
            if iod < 1:
                continue
            e = np.linalg.norm(y - o, axis=1) / iod
            errs.append(e)
            g = utk_groups(k)
            if g is not None:
                per_group_err.setdefault(g["race"], []).append(float(e.mean()))
        if not errs:
            continue
        E = np.asarray(errs)
        m = E.mean(axis=1)
        print(f"{detector} on {s}: {len(E)} faces; mean NME {m.mean():.4f}, median {np.median(m):.4f}, "
              f"p90 {np.percentile(m, 90):.4f}, > 0.10: {100 * (m > 0.1).mean():.1f}%, "
              f"> 0.20: {100 * (m > 0.2).mean():.1f}%")
        print("  per point (mean): " + ", ".join(f"{n} {x:.3f}" for n, x in zip(names, E.mean(axis=0))))
        if per_group_err:
            print("  per race (mean / median): " + ", ".join(
                f"{g} {np.mean(v):.3f}/{np.median(v):.3f}" for g, v in sorted(per_group_err.items())))


def photos(faces: Path, variants: str) -> None:
    """YuNet at bars 0.4-0.7, without and with the check, on the 9 labelled group photos (found
    of 43 at IoU >= 0.5, false faces), dogs.jpg, bald_guys.jpg, Tom Cruise and the astronaut."""
    sys.path.insert(0, str(REPO / "tests"))
    from skimage import data
    from test_detection import labelled_faces, match_counts

    from faceledger.imaging import decode_image
    from faceledger.settings import Settings
    from faceledger.vision import FacePipeline

    folder = faces / "detection"
    truth = labelled_faces(folder)
    imgs = {f: decode_image((folder / f).read_bytes()).pixels for f in truth}
    extra = {n: decode_image((folder / n).read_bytes()).pixels
             for n in ("dogs.jpg", "bald_guys.jpg", "Tom_Cruise_avp_2014_4.jpg")}  # fmt: skip
    extra["astronaut"] = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    for v in variants:
        p = FacePipeline(Settings(yunet_variant=v, yunet_score_threshold=YUNET_FLOOR,  # type: ignore[arg-type]
                                  min_face_probability=0.0))
        recs = {f: p.detect(px) for f, px in {**imgs, **extra}.items()}
        for th in (0.4, 0.5, 0.6, 0.7):
            for chk in (0.0, 0.5):
                keep = {f: [d for d in r if d.confidence / 100 >= th and (d.face_probability or 0) >= chk]
                        for f, r in recs.items()}  # fmt: skip
                tp = fp = 0
                for f in truth:
                    a, b, _ = match_counts(truth[f], [d.box for d in keep[f]])
                    tp, fp = tp + a, fp + b
                print(f"yunet_{v} bar {th} check {chk}: {tp}/43 found, {fp} false; "
                      + ", ".join(f"{k} {len(keep[k])}" for k in extra), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["run", "table", "groups", "landmarks", "photos"])
    ap.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--detector", action="append", default=[])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--config", action="append", default=[],
                    help="groups: detector@score_bar@check_bar, e.g. yunet_n@0.6@0.5")
    args = ap.parse_args()
    sets = args.set or ["utkface-balanced", "utkface-more"]
    dets = args.detector or ["hog", "mtcnn", "yunet_n", "yunet_s"]
    if args.command == "run":
        for d in dets:
            run(d, sets, args.faces, args.work)
    elif args.command == "table":
        print("| setting | all | worst sex x race cell [95%] | worst race [95%] | best race | child | adult |")
        print("|---|---:|---|---|---|---|---|")
        table(args.work, dets, sets)
    elif args.command == "photos":
        photos(args.faces, "ns")
    elif args.command == "groups":
        per_group(args.work, args.config, sets)
    else:
        for d in [d for d in dets if d.startswith("yunet")]:
            landmarks(args.work, d, sets + ["lfw"] if not args.set else sets, 0.5)


if __name__ == "__main__":
    main()
