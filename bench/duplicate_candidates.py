"""Candidates for the UTKFace near-duplicate review (evaluation/data/utkface-duplicates.tsv):
the closest pairs of utkface-balanced + utkface-more that the shipped list does not decide yet,
under one model (or one network of model 3.0), with montages for a person to look at.

Templates come from the evaluation cache (~/.cache/faceledger/embeddings; `faceledger
calibration build` fills it). Model 3.0's template is [reid, sface] / sqrt(2): `--part reid` and
`--part sface` look at each network alone (the halves, scaled back to unit length).

    python bench/duplicate_candidates.py list --model 3.0 --part sface --adults --top 60 > c.tsv
    python bench/duplicate_candidates.py list --model 3.0 --max-distance 0.7 >> c.tsv
    python bench/duplicate_candidates.py montage c.tsv /tmp/dup     # PNGs: never commit them

`list` prints TSV rows `a  b  distance  correlation  part` (no header), closest first, skipping
pairs the shipped list decides and pairs already joined through it. `correlation` is the pixel
correlation of the two 64x64 grey crops (the larger of plain and mirrored): above 0.9 the two
are one photograph (the list's same-image rule). Decisions go into the list by hand.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
_DEFAULT_FACES = REPO.parent / "shared" / "faces"
FACES = Path(os.environ.get("FACELEDGER_SHARED_FACES", _DEFAULT_FACES))
# the networks of each fused model and their slices of its template
PARTS = {"3.0": {"reid": slice(0, 256), "sface": slice(256, 384)}}


def _templates(model: str, part: str) -> tuple[list[str], np.ndarray]:
    from faceledger.evaluation.datasets import load_image_roots
    from faceledger.evaluation.enrolment import default_cache_dir, enrol_files, template_matrix
    from faceledger.model_versions import BUILT_IN
    from faceledger.settings import Settings

    card = BUILT_IN[model]
    images = load_image_roots([FACES / "utkface-balanced", FACES / "utkface-more"])
    settings = Settings(embedder=card.embedder, embedder_tta=card.tta)  # type: ignore[arg-type]
    t = template_matrix(enrol_files(images.paths, settings=settings, cache_dir=default_cache_dir()))
    if part != "fused":
        t = t[:, PARTS[model][part]] * math.sqrt(len(PARTS[model]))
    return [Path(k).name for k in images.keys], t


def _grey64(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float64)


def correlation(a: Path, b: Path) -> float:
    """Pixel correlation of two images' 64x64 grey versions, the larger of plain and mirrored."""
    x, y = _grey64(a), _grey64(b)
    return max(float(np.corrcoef(x.ravel(), z.ravel())[0, 1]) for z in (y, y[:, ::-1]))


def _paths() -> dict[str, Path]:
    return {p.name: p for root in ("utkface-balanced", "utkface-more")
            for p in (FACES / root).rglob("*.jpg")}  # fmt: skip


def list_candidates(args: argparse.Namespace) -> None:
    from faceledger.evaluation.duplicates import shipped_duplicates

    names, t = _templates(args.model, args.part)
    ok = np.isfinite(t).all(1)
    adult = np.array([int(n.split("_")[0]) >= 18 for n in names])
    keep = ok & (adult if args.adults else True)
    idx = np.flatnonzero(keep)
    listed = shipped_duplicates()
    decided = {frozenset((p.a, p.b)) for p in listed.pairs}
    person = listed.clusters(names)
    x = t[idx]
    sq = np.maximum(2.0 - 2.0 * (x @ x.T), 0.0)
    iu = np.triu_indices(len(idx), 1)
    d = np.sqrt(sq[iu])
    order = np.argsort(d)
    paths = _paths()
    shown = 0
    for k in order:
        if d[k] > args.max_distance or (args.top and shown >= args.top):
            break
        i, j = idx[iu[0][k]], idx[iu[1][k]]
        if person[i] == person[j] or frozenset((names[i], names[j])) in decided:
            continue
        corr = correlation(paths[names[i]], paths[names[j]])
        print(f"{names[i]}\t{names[j]}\t{d[k]:.3f}\t{corr:.3f}\t{args.part}")
        shown += 1


def montage(args: argparse.Namespace) -> None:
    import cv2

    rows = [ln.split("\t") for ln in Path(args.candidates).read_text().splitlines() if ln.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = _paths()
    size, per_row, per_page = 160, 3, 15
    for page in range(0, len(rows), per_page):
        tiles = []
        for n, r in enumerate(rows[page:page + per_page], start=page):
            pair = [cv2.resize(cv2.imread(str(paths[name])), (size, size)) for name in r[:2]]
            tile = cv2.copyMakeBorder(np.hstack(pair), 22, 6, 6, 6, cv2.BORDER_CONSTANT,
                                      value=(255, 255, 255))
            label = f"#{n} d={r[2]} c={r[3]} {r[0].split('_20')[0]} | {r[1].split('_20')[0]}"
            cv2.putText(tile, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1)
            tiles.append(tile)
        while len(tiles) % per_row:
            tiles.append(np.full_like(tiles[0], 255))
        grid = np.vstack([np.hstack(tiles[i:i + per_row]) for i in range(0, len(tiles), per_row)])
        cv2.imwrite(str(out / f"pairs-{page // per_page:03d}.png"), grid)
    print(f"{len(rows)} pairs in {math.ceil(len(rows) / per_page)} montages under {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    ls = sub.add_parser("list")
    ls.add_argument("--model", default="3.0")
    ls.add_argument("--part", default="fused", choices=("fused", "reid", "sface"))
    ls.add_argument("--adults", action="store_true", help="both images 18 or older")
    ls.add_argument("--max-distance", type=float, default=2.0)
    ls.add_argument("--top", type=int, default=0, help="at most this many pairs (0: no limit)")
    mo = sub.add_parser("montage")
    mo.add_argument("candidates")
    mo.add_argument("out")
    args = ap.parse_args()
    {"list": list_candidates, "montage": montage}[args.what](args)


if __name__ == "__main__":
    main()
