"""Building a calibration table from a folder-per-identity dataset (LFW): enrol every image
through the full pipeline, measure FMR over every cross-identity pair and FNMR over every
same-identity pair (with `faceledger.rates`), fit the tail beyond the data
(`calibration.tail`), and ship the *conservative* curve of `calibration.bound`: at every distance
the 95% upper bound of FMR that LFW's people support (identity bootstrap, and Wilson with an
effective sample size), never below the tail fit, and never below what zero observed false
matches allow (`lowest_credible_fmr`). Then check that curve, and the plain fit, on held-out
identities, and write the table JSON.

Why the bound and not the point estimate. The old table followed the exponential tail fit
below FMR 1e-4; on held-out people that fit predicted 0.3-0.4 decades too few false matches,
and at the closest impostor pair it claimed FMR 1e-8.9 where 1e-7.1 was observed. An FMR that is
too low makes a strict threshold look stricter than it is. With the bound, a Similarity
threshold S means: LFW shows, at 95% confidence, that FMR is at most 1 - S/100 (or the table
says plainly that it cannot: thresholds asked below `lowest_credible_fmr` get the distance where
the curve reaches its floor, whose FMR is that floor).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .datasets import load_folders, load_images, select_half, utkface_labels
from .enrolment import default_cache_dir, enrol_files, template_matrix
from ..permissions import private_dir, write_private
from ..rates import ClusteredPairs, cross_identity_distances
from ..settings import Settings
from ..vision import FacePipeline
from ..calibration.bound import bound_provenance, conservative_log10_fmr, empirical_upper_bound
from ..calibration.coverage import (
    MAX_FMR, MIN_COUNT, GroupShift, group_shift, inverse_curve, shifted_curve,
)  # fmt: skip
from ..calibration.normalise import ScoreNormaliser, fit_normaliser
from ..calibration.table import MIN_LOG10_FMR, CalibrationTable, similarity_for_fmr
from ..calibration.tail import TailFit, extrapolation_check, fit_tail

FORMAT = 2  # 2: the curve is the 95% upper bound with a floor (lowest_credible_fmr)
FORMAT_COVERED = 3  # 3: format 2 on normalised scores, moved to cover every measured group
SUMMARY_FMRS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
# The tail fit starts where fewer than this share of impostor pairs lie below a distance.
DEFAULT_TAIL_FMR = 1e-4
# The fit kept under the bound: the held-out check (docs/accuracy.md) showed the GPD's fitted
# end point predicting zero false matches where held-out identities show them.
DEFAULT_TAIL_MODEL = "exponential"
GRID_STEP = 0.002
VALIDATION_RANKS = (1, 3, 10, 30, 100, 300, 1000)

UNCERTAINTY_NOTE = (
    "Pairs share images and people, so the 12 million impostor pairs are far from 12 million "
    "independent trials. The table's FMR at each distance is therefore the 95% upper bound: the "
    "larger of the 97.5th percentile of a bootstrap that resamples identities (each pair moves "
    "with both of its people) and the Wilson bound with an effective sample size n / D, where "
    "the design effect D is measured from that bootstrap (and held at its value at 30 pairs "
    "where fewer pairs are seen). Below the closest impostor pair that bound is z^2/(n_eff + "
    "z^2), the table's floor (lowest_credible_fmr). The tail fit is kept under the bound "
    "and validated on held-out identities (tail_validation)."
)


def table_path(model_version: str) -> Path:
    """Where the package keeps the table for a model version."""
    return Path(__file__).resolve().parents[1] / "calibration" / "tables" / f"{model_version}.json"


def tail_grid(
    fit: TailFit, impostor_sorted: NDArray[np.float64], distance: NDArray[np.float64]
) -> NDArray[np.float64]:
    """log10 FMR of the plain fit rule (the table before format 2): empirical at and above the
    fit's cut `u`, the fit below it. Kept to validate the fit against the bound."""
    n = len(impostor_sorted)
    counts = np.searchsorted(impostor_sorted, distance, side="right")
    with np.errstate(divide="ignore"):
        empirical = np.log10(counts / n)
    tail = fit.log10_fmr(distance)
    out = np.where(distance >= fit.u, empirical, np.minimum(tail, fit.log10_fmr_u))
    out = np.maximum(np.nan_to_num(out, nan=MIN_LOG10_FMR, neginf=MIN_LOG10_FMR), MIN_LOG10_FMR)
    return np.maximum.accumulate(out)


def shipped_curve(
    pairs: ClusteredPairs,
    distance: NDArray[np.float64],
    fit: TailFit,
    *,
    replicates: int,
    seed: int,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """The conservative log10 FMR on `distance` (see `calibration.bound`) and its provenance."""
    bound = empirical_upper_bound(pairs, distance, replicates=replicates, seed=seed)
    lowest = bound.lowest_credible_fmr
    log10_fmr, fit_binds = conservative_log10_fmr(bound, fit, math.log10(lowest))
    return log10_fmr, bound_provenance(bound, fit_binds) | {
        "lowest_credible_fmr": lowest,
        "fit_binds": fit_binds,
    }


def _log_ratio(expected: float, observed: float) -> float:
    # A bounded tail can predict zero pairs: count that as 1e-6 expected (a huge error).
    return math.log10(max(expected, 1e-6) / observed)


def validate_tail(
    embeddings: NDArray[np.float64],
    identity: NDArray[np.float64],
    *,
    tail_fmr: float,
    tail_model: str = DEFAULT_TAIL_MODEL,
    distance: NDArray[np.float64] | None = None,
    fit_share: float = 0.3,
    splits: int = 5,
    replicates: int = 200,
    seed: int = 0,
    ranks: tuple[int, ...] = VALIDATION_RANKS,
    offsets: NDArray[np.float64] | None = None,
) -> dict[str, Any]:
    """Build each curve from the impostor pairs among a random `fit_share` of the identities and
    compare the counts it predicts with those observed among the other identities (disjoint
    people, so the check is out of sample and reaches ~1 decade further down than the fit).

    Curves: the plain GPD and exponential fit rules (empirical above u, fit below: the table
    before format 2) and the shipped conservative curve built the same way as the table."""
    rng = np.random.default_rng(seed)
    ids = np.unique(identity)
    grid = distance if distance is not None else np.round(np.arange(0.0, 2.0, GRID_STEP), 6)
    names = ("gpd fit", "exponential fit", "shipped bound")
    per_curve: dict[str, dict[int, list[float]]] = {c: {} for c in names}
    floors: list[float] = []
    for _ in range(splits):
        chosen = rng.permutation(ids)[: round(fit_share * len(ids))]
        in_a = np.isin(identity, chosen)
        off_a = None if offsets is None else offsets[in_a]
        off_b = None if offsets is None else offsets[~in_a]
        pairs_a = ClusteredPairs.from_embeddings(
            embeddings[in_a], identity[in_a], max_fmr=1e-3, offsets=off_a
        )
        imp_a = np.asarray(pairs_a.impostor, dtype=np.float64)
        imp_b = cross_identity_distances(embeddings[~in_a], identity[~in_a], offsets=off_b)
        k = max(10, round(tail_fmr * len(imp_a)))
        curves = {f"{m} fit": tail_grid(fit_tail(imp_a, k, m), imp_a, grid)
                  for m in ("gpd", "exponential")}  # fmt: skip
        shipped, info = shipped_curve(
            pairs_a, grid, fit_tail(imp_a, k, tail_model), replicates=replicates, seed=seed
        )
        curves["shipped bound"] = shipped
        floors.append(float(info["lowest_credible_fmr"]))
        n_b = len(imp_b)
        for r in ranks:
            if r > n_b:
                continue
            d = float(imp_b[r - 1])
            for name, curve in curves.items():
                expected = n_b * 10.0 ** float(np.interp(d, grid, curve))
                per_curve[name].setdefault(r, []).append(_log_ratio(expected, r))
    summary: dict[str, Any] = {}
    for name, by_rank in per_curve.items():
        every = [v for vals in by_rank.values() for v in vals]
        summary[name] = {
            "by_rank": {
                str(rank): {
                    "mean_log10_expected_over_observed": float(np.mean(v)),
                    "min_log10_expected_over_observed": float(np.min(v)),
                    "max_abs_log10_error": float(np.max(np.abs(v))),
                    "splits_under_predicting": int(sum(x < 0 for x in v)),
                    "splits": len(v),
                }
                for rank, v in sorted(by_rank.items())
            },
            "mean_log10_expected_over_observed": float(np.mean(every)) if every else None,
            "share_under_predicting": (float(np.mean([x < 0 for x in every])) if every else None),
        }
    return {
        "method": f"build each curve from the impostor pairs among {fit_share:.0%} of the "
        f"identities, predict the impostor pairs at or below the distance of the held-out "
        f"identities' r-th closest pair (r observed); {splits} random splits",
        "ranks": list(ranks),
        "lowest_credible_fmr_of_fit_share": floors,
        "by_curve": summary,
    }


def _source(
    table: CalibrationTable, distance: float, fmr: float, fit_binds: NDArray[np.bool_]
) -> str:
    """What sets the table's FMR at a summary row's distance."""
    if not table.is_credible(fmr):
        return f"floor (FMR {table.lowest_credible_fmr:.1e})"
    i = min(int(np.searchsorted(table.distance, distance, side="left")), len(table.distance) - 1)
    return "tail fit" if bool(fit_binds[i]) else "95% bound"


def build_calibration(
    lfw: Path,
    *,
    settings: Settings | None = None,
    cache_dir: Path | None = None,
    workers: int | None = None,
    tail_model: str = DEFAULT_TAIL_MODEL,
    tail_fmr: float = DEFAULT_TAIL_FMR,
    replicates: int = 200,
    validation_splits: int = 5,
    seed: int = 0,
    progress: bool = True,
    command: str = "",
    groups_root: Path | None = None,
    normalise: bool = True,
    cover_children: bool = True,
) -> dict[str, Any]:
    """The calibration table (as the JSON dict) for this pipeline's model, measured on `lfw`,
    and, with `groups_root` (a UTKFace-named set of distinct people), normalised and moved so
    that its promise covers every measured group (`calibration.normalise`, `.coverage`)."""
    settings = settings or Settings()
    pipeline = FacePipeline(settings)
    cache = cache_dir or default_cache_dir()
    images = load_folders(Path(lfw))
    enrolments = enrol_files(
        images.paths, settings=settings, cache_dir=cache,
        workers=workers, progress=progress, label="calibration: enrolling",
    )  # fmt: skip
    failed = [k for k, e in zip(images.keys, enrolments) if e.embedding is None]
    ok = np.array([e.embedding is not None for e in enrolments])
    emb = template_matrix(enrolments)[ok]
    ident = np.asarray(images.identity)[ok]
    reference = None
    normaliser: ScoreNormaliser | None = None
    if groups_root is not None:
        reference = _reference_groups(Path(groups_root), settings, cache, workers, progress)
        if normalise:
            normaliser = fit_normaliser(reference.cohort, provenance=reference.provenance)
    offsets = None if normaliser is None else normaliser.half_offsets(emb)
    pairs = ClusteredPairs.from_embeddings(emb, ident, max_fmr=0.1, offsets=offsets)
    imp = pairs.impostor
    k = max(10, round(tail_fmr * len(imp)))
    fit = fit_tail(imp, k, tail_model)
    gpd_reference = fit_tail(imp, k, "gpd")
    top = float(max(imp[-1], pairs.genuine[np.isfinite(pairs.genuine)].max()))
    distance = np.round(np.arange(0.0, top + 2 * GRID_STEP, GRID_STEP), 6)
    log10_fmr, bound_info = shipped_curve(pairs, distance, fit, replicates=replicates, seed=seed)
    fit_binds = bound_info.pop("fit_binds")
    lowest = float(bound_info.pop("lowest_credible_fmr"))
    coverage: dict[str, Any] | None = None
    if reference is not None:
        log10_fmr, coverage = _cover_groups(
            reference, normaliser, distance, log10_fmr, cover_children=cover_children,
            replicates=replicates, seed=seed,
        )  # fmt: skip
    fnmr = pairs.fnmr(distance)
    raw: dict[str, Any] = {
        "model_version": pipeline.model_version,
        "format": FORMAT if reference is None else FORMAT_COVERED,
        "distance": [float(x) for x in distance],
        # Rounded up, so that rounding never lowers the bound.
        "log10_fmr": [math.ceil(float(x) * 1e5) / 1e5 for x in log10_fmr],
        "fnmr": [round(float(x), 6) for x in fnmr],
    }
    if normaliser is not None:
        raw["normalisation"] = normaliser.as_dict()
    if coverage is not None:
        raw["coverage"] = coverage
    table = CalibrationTable.from_dict(raw)
    targets = [f for f in SUMMARY_FMRS]
    thresholds = [table.distance_for_fmr(f) for f in targets]
    rates = pairs.verification_rates(
        thresholds=thresholds, fmr_targets=targets, replicates=replicates, seed=seed
    )
    summary = []
    for f, t, at_t, at_f in zip(targets, thresholds, rates["at_thresholds"], rates["at_fmr"]):
        summary.append({
            "fmr": f,
            "similarity": round(similarity_for_fmr(f), 7),
            "distance": round(t, 5),
            "table_fmr": float(table.fmr(t)),
            "credible": table.is_credible(f),
            "fnmr": at_t["fnmr"],
            "empirical_fmr_at_distance": at_t["fmr"],
            "impostor_pairs_at_or_below": at_t["impostor_matches"],
            "empirical_threshold": at_f["threshold"],
            "source": _source(table, t, f, fit_binds),
        })  # fmt: skip
    in_sample = extrapolation_check(fit, np.asarray(imp), ranks=VALIDATION_RANKS)
    for row in in_sample:
        row["table_log10_fmr"] = float(np.log10(table.fmr(row["distance"])))
    validation: dict[str, Any] = {}
    if validation_splits > 0:
        validation = validate_tail(
            emb, ident, tail_fmr=tail_fmr, tail_model=tail_model, distance=distance,
            splits=validation_splits, replicates=replicates, seed=seed, offsets=offsets,
        )  # fmt: skip
    raw.update({
        "dataset": {
            "name": "LFW (all images of the View 1 image set)",
            "path": str(Path(lfw)),
            "images": len(images),
            "identities": len(images.names),
            "enrolled": int(ok.sum()),
            "failures_to_enrol": len(failed),
            "failed_images": failed,
        },
        "pipeline": {
            "detector": settings.detector,
            "min_face_px": settings.min_face_px,
            "detect_max_side": settings.detect_max_side,
            "min_face_probability": settings.min_face_probability,
            "face_choice": "the detected face nearest the image centre (LFW's labelling convention)",
            "failures": "images where no face was found are left out of the pairs (counted above)",
        },
        "pairs": {
            "impostor": pairs.n_impostor,
            "genuine": pairs.n_genuine,
            "impostor_min_distance": float(imp[0]),
            "lowest_measurable_fmr": 1.0 / pairs.n_impostor,
        },
        "lowest_credible_fmr": table.lowest_credible_fmr,
        "floor_distance": table.floor_distance,
        "bound": bound_info | {
            "lowest_credible_fmr_exact": lowest,
            "replicates": replicates,
            "seed": seed,
            "note": "the table never claims an FMR below lowest_credible_fmr: thresholds "
                    "asked below it get floor_distance, where the curve reaches its floor",
        },
        "tail": fit.as_dict() | {
            "fmr_at_u": fit.k / fit.n,
            "formula": "FMR(d) = k/n * (1 + xi*(u-d)/sigma)^(-1/xi) for d < u "
                       "(exp(-(u-d)/sigma) when xi = 0); the table takes the larger of this "
                       "and the 95% bound (see bound)",
            "in_sample_check": in_sample,
            "gpd_reference": gpd_reference.as_dict(),
        },
        "tail_validation": validation,
        "uncertainty": UNCERTAINTY_NOTE,
        "summary": summary,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
    })  # fmt: skip
    return raw


@dataclass(frozen=True)
class ReferenceGroups:
    """The fit half of a balanced set of distinct people: the normalisation's cohort and the
    groups the table must cover."""

    cohort: NDArray[np.float64]  # enrolled templates
    groups: list[str]  # each cohort row's group (sex/race/age_group)
    provenance: dict[str, Any]


def _reference_groups(
    root: Path, settings: Settings, cache: Path, workers: int | None, progress: bool
) -> ReferenceGroups:
    images = select_half(load_images(root), "fit")
    labels = utkface_labels(images)
    enr = enrol_files(
        images.paths, settings=settings, cache_dir=cache, workers=workers, progress=progress,
        label="calibration: enrolling reference people",
    )  # fmt: skip
    tmpl = template_matrix(enr)
    ok = np.isfinite(tmpl).all(axis=1)
    groups = [
        "/".join(labels.by_key[k][a] for a in ("sex", "race", "age_group"))
        if k in labels.by_key else ""
        for k in images.keys
    ]  # fmt: skip
    keep = ok & np.array([g != "" for g in groups])
    return ReferenceGroups(
        cohort=tmpl[keep],
        groups=[g for g, k in zip(groups, keep) if k],
        provenance={
            "reference": {
                "name": "utkface-balanced (UTKFace, 200 per sex x race), the `fit` half of its "
                        "people (split by SHA-256 of the file name); the `test` half is never used",
                "path": str(root), "images": len(images), "enrolled": int(keep.sum()),
                "failures_to_enrol": int((~ok).sum()),
                "licence": "UTKFace: non-commercial research. Only 129 fitted numbers ship, "
                           "no template of any person",
            },
        },
    )  # fmt: skip


def _cover_groups(
    reference: ReferenceGroups,
    normaliser: ScoreNormaliser | None,
    distance: NDArray[np.float64],
    log10_fmr: NDArray[np.float64],
    *,
    cover_children: bool,
    replicates: int,
    seed: int,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """LFW's curve moved to cover every measured group (`calibration.coverage`). Groups are
    sex x race x age group; where a cell has too few people to measure, its race x age group
    with both sexes pooled stands in for it."""
    cells = np.array(reference.groups, dtype=object)
    pooled = np.array([g.split("/", 1)[1] + " (both sexes)" for g in reference.groups], dtype=object)

    measured: dict[str, ClusteredPairs] = {}

    def shift_of(members: NDArray[np.bool_], name: str) -> GroupShift:
        t = reference.cohort[members]
        off = None if normaliser is None else normaliser.half_offsets(t)
        cp = ClusteredPairs.from_embeddings(t, np.arange(len(t)), max_fmr=0.2, offsets=off)
        measured[name] = cp
        bound = empirical_upper_bound(cp, distance, replicates=replicates, seed=seed)
        return group_shift(name, len(t), bound, distance, log10_fmr)

    def wanted(group: str) -> bool:
        return cover_children or not group.endswith("/child")

    shifts = [shift_of(cells == g, g) for g in sorted(set(reference.groups))]
    by_pool = {p: shift_of(pooled == p, p) for p in sorted(set(pooled.tolist()))}
    covered: list[str] = []
    stand_ins: dict[str, str] = {}
    binding: list[GroupShift] = []
    for s in shifts:
        if not wanted(s.group):
            continue
        pool = by_pool[s.group.split("/", 1)[1] + " (both sexes)"]
        if s.usable_points > 0:
            covered.append(s.group)
            binding.append(s)
        elif pool.usable_points > 0:
            covered.append(s.group)
            stand_ins[s.group] = pool.group
            binding.append(pool)
    worst = max(binding, key=lambda s: s.shift) if binding else None
    shift = 0.0 if worst is None else worst.shift
    curve = shifted_curve(distance, log10_fmr, shift)
    # Each group's own FMR at the shipped thresholds (these reference people, point estimates
    # and counts): the per-group error rates the table publishes.
    fmrs = (1e-3, 1e-4, 1e-5)
    at = inverse_curve(distance, curve, np.log10(np.asarray(fmrs)))
    rates = {
        g: [{"similarity": round(similarity_for_fmr(f), 6), "promised_fmr": f,
             "distance": round(float(d), 5), "fmr": float(r),
             "impostor_matches": int(round(float(r) * cp.n_impostor))}
            for f, d, r in zip(fmrs, at, cp.fmr(at))]
        for g, cp in measured.items()
    }  # fmt: skip
    return curve, {
        "rule": "FMR_table(d) = FMR_LFW(d + max_g Delta_g): LFW's 95% bound moved by the "
                "largest shift any covered group needs for the bound to sit above its own 95% "
                f"upper bound wherever it has >= {MIN_COUNT} impostor pairs and FMR <= {MAX_FMR} "
                "(faceledger.calibration.coverage); a sex x race x age cell with too few people "
                "is covered through its race x age group with both sexes pooled",
        "shift": round(shift, 5),
        "set_by": None if worst is None else worst.group,
        "groups": [s.as_dict() | {"covered": s.group in covered,
                                  "covered_through": stand_ins.get(s.group),
                                  "at_thresholds": rates[s.group]} for s in shifts],
        "pooled_groups": [s.as_dict() | {"at_thresholds": rates[s.group]}
                          for s in by_pool.values()],
        "covered": covered,
        "not_covered": [s.group for s in shifts if s.group not in covered],
        "children": "covered (measured with their own rows; the model separates children's faces "
                    "far worse than adults', see docs/accuracy.md)" if cover_children else
                    "not covered: measured and reported (docs/accuracy.md), but the shipped "
                    "thresholds are not set for them; do not use faceledger on children's faces",
        "populations_not_measured": "anyone outside LFW's people and utkface-balanced's five "
                                    "UTKFace race labels x two sexes; few people over 80",
    }  # fmt: skip


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as null (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_table(raw: dict[str, Any], path: Path) -> None:
    """Write a table JSON atomically."""
    private_dir(path.parent)
    tmp = path.with_suffix(".json.tmp")
    write_private(tmp, json.dumps(json_safe(raw), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
