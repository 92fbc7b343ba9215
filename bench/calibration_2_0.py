"""Models 2.0's and 3.0's calibration measurements (docs/accuracy.md section 0). Templates come
from the evaluation cache (~/.cache/faceledger/embeddings; ~40 minutes per model cold here).

    python bench/calibration_2_0.py lfw [MODEL]       # 10-fold accuracy over View 1's 3,200 pairs,
                                                      # FNMR at the table's thresholds, by sex
    python bench/calibration_2_0.py adopt [MODEL]     # raw vs normalised (the adoption rule)
    python bench/calibration_2_0.py identify [MODEL]  # ACLU-style 1:N on LFW + UTKFace

MODEL: 2.0 (default), 3.0 (reid-0095 + SFace, fused) or 1.0 (dlib + its table); every model on
the same images, pairs, gallery, probes and same-person exclusions. Needs ../shared/faces (or
FACELEDGER_SHARED_FACES).
LFW has no View 2 pairs.txt here: "10 folds" are pairsDevTrain + pairsDevTest split into 10
stratified folds, each scored with the threshold of best accuracy on the other nine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from faceledger.calibration import CalibrationTable, load_calibration
from faceledger.calibration.normalise import fit_normaliser
from faceledger.evaluation.datasets import (
    ImageSet, load_folders, load_image_roots, load_labels, load_pairs, select_half, utkface_labels,
)  # fmt: skip
from faceledger.evaluation.calibrate import default_split
from faceledger.evaluation.duplicates import shipped_duplicates
from faceledger.evaluation.enrolment import default_cache_dir, enrol_files, template_matrix
from faceledger.evaluation.identification import split_gallery
from faceledger.evaluation.verification import scored_distances
from faceledger.rates import ClusteredPairs, cross_identity_distances, threshold_for_fmr
from faceledger.settings import Settings

_DEFAULT_FACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "faces"
F = Path(os.environ.get("FACELEDGER_SHARED_FACES", _DEFAULT_FACES))
MODELS: dict[str, tuple[Callable[[], Settings], str]] = {
    "2.0": (lambda: Settings(embedder="reid-0095"), "2.0"),
    "3.0": (lambda: Settings(embedder="reid-0095+sface"), "3.0"),
    "1.0": (lambda: Settings(embedder="dlib", detector="hog"), "dlib-resnet-v1"),
}
# Non-mated LFW probes whose nearest gallery face was looked at and is the same person
# (celebrities also in UTKFace; one LFW person under two names): not non-mated.
SAME_PERSON_PROBES = {
    "Sung_Hong_Choi/Sung_Hong_Choi_0001.jpg", "Sharon_Stone/Sharon_Stone_0005.jpg",
    "Joaquin_Phoenix/Joaquin_Phoenix_0001.jpg", "Jason_Statham/Jason_Statham_0001.jpg",
    "Johnny_Depp/Johnny_Depp_0002.jpg", "Ralph_Fiennes/Ralph_Fiennes_0001.jpg",
    "Luis_Guzman/Luis_Guzman_0001.jpg", "Max_von_Sydow/Max_von_Sydow_0001.jpg",
    "David_Bowie/David_Bowie_0001.jpg", "John_Leguizamo/John_Leguizamo_0001.jpg",
    "Aishwarya_Rai/Aishwarya_Rai_0001.jpg", "Natalie_Cole/Natalie_Cole_0003.jpg",
    "Jimmy_Smits/Jimmy_Smits_0001.jpg", "Don_King/Don_King_0001.jpg",
    "Bruce_Willis/Bruce_Willis_0001.jpg",
}


def templates(images: ImageSet, model: str) -> np.ndarray:
    s = MODELS[model][0]()
    return template_matrix(enrol_files(images.paths, settings=s, cache_dir=default_cache_dir()))


Score = Callable[[np.ndarray, np.ndarray], np.ndarray]


def view1(lfw: ImageSet, t: np.ndarray, score: Score) -> tuple[np.ndarray, np.ndarray]:
    index = {k: i for i, k in enumerate(lfw.keys)}
    d, same = [], []
    for f in ("pairsDevTrain.txt", "pairsDevTest.txt"):
        pl = load_pairs(F / "lfw" / f)
        for a, b, s in zip(pl.a, pl.b, pl.same):
            x, y = t[index[pl.images.keys[a]]], t[index[pl.images.keys[b]]]
            ok = np.isfinite(x).all() and np.isfinite(y).all()
            d.append(float(score(x[None], y[None])[0, 0]) if ok else np.inf)  # failure: no match
            same.append(s)
    return np.array(d), np.array(same)


def ten_fold(d: np.ndarray, same: np.ndarray, folds: int = 10) -> tuple[float, float]:
    fold = np.zeros(len(d), int)
    for cls in (True, False):
        idx = np.flatnonzero(same == cls)
        fold[idx] = np.arange(len(idx)) * folds // len(idx)
    accs = []
    for k in range(folds):
        tr = fold != k
        cands = np.unique(d[tr & np.isfinite(d)])
        best = max(cands, key=lambda t: float(np.mean((d[tr] <= t) == same[tr])))
        accs.append(float(np.mean((d[fold == k] <= best) == same[fold == k])))
    return float(np.mean(accs)), float(np.std(accs, ddof=1) / np.sqrt(folds))


def lfw(model: str) -> dict[str, Any]:
    table = load_calibration(MODELS[model][1])
    im = load_folders(F / "lfw")
    t = templates(im, model)
    ho = table.half_offsets if table.normaliser is not None else None
    acc, se = ten_fold(*view1(im, t, lambda a, b: scored_distances(a, b, ho)))
    ok = np.isfinite(t).all(1)
    ident = np.asarray(im.identity)
    fmrs = (1e-2, 1e-3, 1e-4, 1e-5)
    th = [table.distance_for_fmr(f) for f in fmrs]
    labels = load_labels(F / "lfw" / "sex.tsv")
    sex = np.array([labels.for_image(k, im.names[i]).get(labels.attributes[0], "")
                    for k, i in zip(im.keys, im.identity)])  # fmt: skip
    out: dict[str, Any] = {"model": model, "ten_fold_accuracy": acc, "standard_error": se}
    for name, m in (("all", ok), ("F", ok & (sex == "F")), ("M", ok & (sex == "M"))):
        off = None if ho is None else table.half_offsets(t[m])
        cp = ClusteredPairs.from_embeddings(t[m], ident[m], max_fmr=1e-2, offsets=off)
        rows = cp.verification_rates(thresholds=th, replicates=200)["at_thresholds"]
        out[name] = {f"{100 * (1 - f):g}": {"fnmr": r["fnmr"], "fmr": r["fmr"],
                                           "impostor_matches": r["impostor_matches"]}
                     for f, r in zip(fmrs, rows)} | {"genuine_pairs": cp.n_genuine}  # fmt: skip
    return out


def adopt(model: str) -> dict[str, Any]:
    im = load_folders(F / "lfw")
    t = templates(im, model)
    ui = load_image_roots([F / "utkface-balanced", F / "utkface-more"])
    ut = templates(ui, model)
    person = shipped_duplicates().clusters(ui.keys)
    idx = {k: i for i, k in enumerate(ui.keys)}
    split = default_split(model)
    fit = [idx[k] for k in select_half(ui, "fit", person, split).keys]
    test = np.array([idx[k] for k in select_half(ui, "test", person, split).keys])
    cohort = ut[fit][np.isfinite(ut[fit]).all(1)]
    norm = fit_normaliser(cohort)
    ok = np.isfinite(t).all(1)
    ident = np.asarray(im.identity)
    labels = load_labels(F / "lfw" / "sex.tsv")
    sex = np.array([labels.for_image(k, im.names[i]).get(labels.attributes[0], "")
                    for k, i in zip(im.keys, im.identity)])  # fmt: skip
    lab = utkface_labels(ui)
    grp = np.array(["/".join(lab.by_key[k][a] for a in ("sex", "race", "age_group"))
                    for k in ui.keys], dtype=object)  # fmt: skip
    res: dict[str, Any] = {"cohort": len(cohort), "r2": norm.provenance["r2_in_sample"]}
    for name, ho in (("raw", None), ("normalised", norm.half_offsets)):
        r: dict[str, Any] = {"ten_fold": ten_fold(*view1(im, t, lambda a, b: scored_distances(a, b, ho)))}
        imp = cross_identity_distances(t[ok], ident[ok], offsets=None if ho is None else ho(t[ok]))
        ths = {f: threshold_for_fmr(imp, f) for f in (1e-2, 1e-3, 1e-4)}
        for s in ("F", "M"):
            m = ok & (sex == s)
            cp = ClusteredPairs.from_embeddings(t[m], ident[m], max_fmr=1e-2,
                                                offsets=None if ho is None else ho(t[m]))  # fmt: skip
            rows = cp.verification_rates(thresholds=list(ths.values()), replicates=200)["at_thresholds"]
            r[f"fnmr_{s}"] = {f"{f:g}": x["fnmr"] for f, x in zip(ths, rows)}
        groups = {}
        for g in sorted(set(grp[test])):
            m = test[grp[test] == g]
            tt, pp = ut[m], person[m]
            keep = np.isfinite(tt).all(1)
            cp = ClusteredPairs.from_embeddings(tt[keep], pp[keep], max_fmr=1e-2, min_cutoff=max(ths.values()),
                                                offsets=None if ho is None else ho(tt[keep]))  # fmt: skip
            groups[g] = {"pairs": cp.n_impostor, **{f"{f:g}": float(cp.fmr([d])[0]) for f, d in ths.items()}}
        r["held_out_groups_at_lfw_fmr"] = groups
        res[name] = r
    return res


def identify(model: str) -> dict[str, Any]:
    table = load_calibration(MODELS[model][1])
    li = load_folders(F / "lfw")
    lt = templates(li, model)
    ui = load_image_roots([F / "utkface-balanced", F / "utkface-more"])
    ut = templates(ui, model)
    ho = table.half_offsets if table.normaliser is not None else None
    ok = np.isfinite(lt).all(1)
    gi, pi = split_gallery(li.identity, ok.tolist())
    names = np.array([li.names[i] for i in li.identity], dtype=object)
    uok = np.isfinite(ut).all(1)
    gallery = np.vstack([lt[gi], ut[uok]])
    gid = np.concatenate([names[gi], np.array([f"utk{i}" for i in np.flatnonzero(uok)], dtype=object)])
    probes = [i for i in list(pi) + list(np.flatnonzero(~ok)) if li.keys[i] not in SAME_PERSON_PROBES]
    pid = names[probes]
    p = lt[probes]
    d = scored_distances(np.nan_to_num(p, nan=0.0), gallery, ho)
    d[~np.isfinite(p).all(1)] = np.inf
    mated = np.isin(pid, gid)
    nearest = d.argmin(1)
    best = d[np.arange(len(pid)), nearest]
    hit = gid[nearest] == pid
    nm = np.sort(best[~mated])

    def fnir(t: float) -> float:
        return float(np.mean(~((best[mated] <= t) & hit[mated])))

    out: dict[str, Any] = {"model": model, "gallery": len(gallery), "mated": int(mated.sum()),
                           "non_mated": int((~mated).sum())}  # fmt: skip
    for fpir in (0.003, 0.0):
        k = int(np.floor(fpir * len(nm)))
        t = float(np.nextafter(nm[k], -np.inf)) if k < len(nm) else float("inf")
        out[f"at_fpir_{fpir:g}"] = {"fnir": fnir(t), "distance": t, "fpir": float(np.mean(nm <= t))}
    for s in (99.0, 99.9, 99.99):
        t = table.distance_for_similarity(s)
        out[f"at_similarity_{s:g}"] = {"fpir": float(np.mean(best[~mated] <= t)), "fnir": fnir(t)}
    return out


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "lfw"
    model = sys.argv[2] if len(sys.argv) > 2 else "2.0"
    result = {"lfw": lambda: lfw(model), "adopt": lambda: adopt(model),
              "identify": lambda: identify(model)}[what]()
    print(json.dumps(result, indent=1))
