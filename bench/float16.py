"""Templates at half precision: does storing them as float16 (pgvector `halfvec`, or a float16
catalog/embedded index) change any decision at the operating thresholds?

Reads templates from the evaluation embedding cache (`faceledger evaluate` fills it; nothing is
re-embedded), rounds them to float16, and compares distances and decisions with float32:

- LFW: every genuine pair (same person) and every impostor pair of the folder set;
- UTKFace (balanced + more): every pair within each group (sex x race), all impostors (one
  photo per person), the per-group false-match rates.

Thresholds: the distances where the LFW impostor pairs reach FMR 1e-3, 1e-4 and 1e-5 (the
false-match rates of Similarity 99.9 / 99.99 / 99.999) in float32, unless given with
--thresholds. Each rate is printed with its 95% Wilson interval: float16 changes nothing that
matters if every difference is far inside it.

    python bench/float16.py --model 2.0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACELEDGER_SHARED_FACES", REPO.parent / "shared" / "faces"))


def cached_templates(paths: list[Path], cache_dir: Path) -> NDArray[np.float32]:
    """Each path's template from the cache (any pipeline configuration of the model), NaN
    rows where there is none."""
    out = np.full((len(paths), 0), np.nan, dtype=np.float32)
    rows: list[NDArray[np.float32] | None] = []
    for p in paths:
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        hit = next(cache_dir.glob(f"*/{sha[:2]}/{sha}.npz"), None)
        emb = None
        if hit is not None:
            with np.load(hit, allow_pickle=False) as z:
                if z["embedding"].size:
                    emb = z["embedding"].astype(np.float32)
        rows.append(emb)
    dim = next((len(r) for r in rows if r is not None), 0)
    out = np.full((len(paths), dim), np.nan, dtype=np.float32)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r
    return out


def pdist(x: NDArray[np.float32]) -> NDArray[np.float64]:
    """Upper-triangle pairwise L2 distances, computed in float32 as the engines do."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    iu = np.triu_indices(len(x), 1)
    return np.sqrt(np.maximum(d2[iu], 0.0)).astype(np.float64)


def half(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """What halfvec stores, read back as float32 for the distance (as pgvector computes it)."""
    return x.astype(np.float16).astype(np.float32)


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    z = 1.959964
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, c - h), min(1.0, c + h)


def exact_pairs(x: NDArray[np.float32], same: NDArray[np.bool_]
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    ok = np.isfinite(x).all(axis=1)
    x = x[ok]
    s = same[np.ix_(ok, ok)][np.triu_indices(int(ok.sum()), 1)]
    return pdist(x), pdist(half(x)), s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="2.0", help="model version (cache directory)")
    ap.add_argument("--cache", type=Path,
                    default=Path.home() / ".cache" / "faceledger" / "embeddings")
    ap.add_argument("--thresholds", type=float, nargs="*", default=None,
                    help="distances to decide at (default: LFW impostor FMR 1e-3/1e-4/1e-5)")
    args = ap.parse_args()
    cache = args.cache / args.model
    if not cache.is_dir():
        print(f"no cached templates of model {args.model} at {cache}: run faceledger evaluate",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO / "src"))
    from faceledger.evaluation.datasets import ImageSet, load_folders, load_images, utkface_labels

    lfw = load_folders(FACES / "lfw")
    t_lfw = cached_templates(lfw.paths, cache)
    ident = np.asarray(lfw.identity)
    d32, d16, same = exact_pairs(t_lfw, ident[:, None] == ident[None, :])
    diff = np.abs(d16 - d32)
    norms = np.linalg.norm(t_lfw[np.isfinite(t_lfw).all(axis=1)], axis=1)
    out: dict[str, object] = {
        "model": args.model, "dim": int(t_lfw.shape[1]),
        "lfw_images": len(lfw), "lfw_templates": int(np.isfinite(t_lfw).all(axis=1).sum()),
        "template_norm": [float(norms.min()), float(norms.max())],
        "pairs": int(len(d32)), "genuine_pairs": int(same.sum()),
        "max_abs_distance_change": float(diff.max()),
        "p99_abs_distance_change": float(np.percentile(diff, 99)),
        "bound_2^-11(|x|+|y|)": float(2**-11 * 2 * norms.max()),
    }
    imp = np.sort(d32[~same])
    if args.thresholds:
        thresholds = {f"d={t:g}": t for t in args.thresholds}
    else:
        thresholds = {f"FMR {f:g}": float(imp[max(int(f * len(imp)) - 1, 0)])
                      for f in (1e-3, 1e-4, 1e-5)}
    rows = []
    for name, t in thresholds.items():
        row: dict[str, object] = {"threshold": name, "distance": t}
        for label, mask in (("genuine", same), ("impostor", ~same)):
            a, b = d32[mask] <= t, d16[mask] <= t
            n = int(mask.sum())
            row[label] = {"n": n, "accept32": int(a.sum()), "accept16": int(b.sum()),
                          "flips": int((a != b).sum()),
                          "rate32_interval": wilson(int(a.sum()), n)}
        rows.append(row)
    out["lfw"] = rows

    # UTKFace: per group (sex x race) impostor rates, every pair within the group
    sets = [load_images(FACES / d) for d in ("utkface-balanced", "utkface-more")]
    utk = ImageSet(FACES, [str(p.relative_to(FACES)) for s in sets for p in s.paths],
                   [], [])
    labels = utkface_labels(utk)
    t_utk = cached_templates(utk.paths, cache)
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(utk.keys):
        lab = labels.by_key.get(key)
        if lab is not None and lab["age_group"] == "adult":
            groups.setdefault(f"{lab['sex']}/{lab['race']}", []).append(i)
    per_group = []
    for g, idx in sorted(groups.items()):
        x = t_utk[idx]
        x = x[np.isfinite(x).all(axis=1)]
        g32, g16 = pdist(x), pdist(half(x))
        cells = []
        for name, t in thresholds.items():
            a, b = int((g32 <= t).sum()), int((g16 <= t).sum())
            cells.append({"threshold": name, "fm32": a, "fm16": b,
                          "flips": int(((g32 <= t) != (g16 <= t)).sum()),
                          "fmr32": a / len(g32), "fmr16": b / len(g32),
                          "interval32": wilson(a, len(g32))})
        per_group.append({"group": g, "templates": len(x), "pairs": int(len(g32)),
                          "max_abs_distance_change": float(np.abs(g16 - g32).max()),
                          "at": cells})
    out["utkface_adults_by_sex_race"] = per_group
    print(json.dumps(out, indent=1))
    flips = sum(r[k]["flips"] for r in rows for k in ("genuine", "impostor"))  # type: ignore[index]
    gflips = sum(c["flips"] for g in per_group for c in g["at"])  # type: ignore[attr-defined]
    print(f"\nLFW: {out['pairs']:,} pairs, max |d16-d32| {out['max_abs_distance_change']:.2e}; "
          f"decision flips at the thresholds: {flips}; UTKFace group pairs flips: {gflips}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
