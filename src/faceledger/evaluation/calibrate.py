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

from collections.abc import Sequence

from .datasets import DEFAULT_SPLIT, load_folders, load_image_roots, select_half, utkface_labels
from .duplicates import DuplicateList
from .enrolment import default_cache_dir, enrol_files, template_matrix
from ..permissions import private_dir, write_private
from ..rates import ClusteredPairs, cross_identity_distances
from ..model_versions import canonical
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
# 4: format 3 (normalised or not), each group's shift measured down to its closest impostor
# pair, and each group x threshold marked covered only where held-out people show the promise
FORMAT_HELD_OUT = 4
# The thresholds whose coverage is checked on held-out people, group by group.
COVERAGE_FMRS = (1e-2, 1e-3, 1e-4, 1e-5)
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
    name = canonical(model_version)
    return Path(__file__).resolve().parents[1] / "calibration" / "tables" / f"{name}.json"


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
    groups_root: Path | Sequence[Path] | None = None,
    normalise: bool = True,
    cover_children: bool = True,
    duplicates: DuplicateList | None = None,
    min_count: int = MIN_COUNT,
    split: str = DEFAULT_SPLIT,
) -> dict[str, Any]:
    """The calibration table (as the JSON dict) for this pipeline's model, measured on `lfw`,
    and, with `groups_root` (one or more UTKFace-named folders of distinct people), normalised
    (unless `normalise` is False) and moved so that its promise covers every measured group
    (`calibration.normalise`, `.coverage`). `duplicates`: reviewed one-face-two-names pairs of
    those folders, never counted as impostor pairs and kept in one half of the people.

    The groups' people are split in two by file name (`datasets.people_half`): the table is
    fitted on the `fit` half; the `test` half is used only to check, per group and threshold,
    whether the promise can be shown on people the fit never saw (format 4)."""
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
        roots = [Path(groups_root)] if isinstance(groups_root, (str, Path)) else [
            Path(r) for r in groups_root
        ]
        reference = _reference_groups(
            roots, settings, cache, workers, progress, duplicates, split
        )
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
            replicates=replicates, seed=seed, min_count=min_count,
        )  # fmt: skip
    fnmr = pairs.fnmr(distance)
    raw: dict[str, Any] = {
        "model_version": pipeline.model_version,
        "format": FORMAT if reference is None else FORMAT_HELD_OUT,
        "distance": [float(x) for x in distance],
        # Rounded up, so that rounding never lowers the bound.
        "log10_fmr": [math.ceil(float(x) * 1e5) / 1e5 for x in log10_fmr],
        "fnmr": [round(float(x), 6) for x in fnmr],
    }
    if normaliser is not None:
        raw["normalisation"] = normaliser.as_dict()
    table = CalibrationTable.from_dict(raw)
    if coverage is not None and reference is not None:
        coverage = coverage | held_out_coverage(
            reference, table, cover_children=cover_children, replicates=replicates, seed=seed
        ) | {"reference": reference.provenance["reference"]}
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
    """A UTKFace-named set of distinct people split in two: the `fit` half (the normalisation's
    cohort and the groups the table is moved to cover) and the held-out `test` half."""

    cohort: NDArray[np.float64]  # enrolled templates of the fit half
    groups: list[str]  # each cohort row's group (sex/race/age_group)
    person: NDArray[np.int64]  # each cohort row's person (reviewed duplicates joined)
    provenance: dict[str, Any]
    test: NDArray[np.float64] | None = None  # enrolled templates of the test half
    test_groups: list[str] | None = None
    test_person: NDArray[np.int64] | None = None


def _labelled_templates(
    images: Any, settings: Settings, cache: Path, workers: int | None, progress: bool,
    duplicates: DuplicateList | None, label: str,
) -> tuple[NDArray[np.float64], list[str], NDArray[np.int64], int, int]:
    labels = utkface_labels(images)
    enr = enrol_files(
        images.paths, settings=settings, cache_dir=cache, workers=workers, progress=progress,
        label=label,
    )  # fmt: skip
    tmpl = template_matrix(enr)
    ok = np.isfinite(tmpl).all(axis=1)
    groups = [
        "/".join(labels.by_key[k][a] for a in ("sex", "race", "age_group"))
        if k in labels.by_key else ""
        for k in images.keys
    ]  # fmt: skip
    person = (np.arange(len(images.keys), dtype=np.int64) if duplicates is None
              else duplicates.clusters(images.keys))  # fmt: skip
    keep = ok & np.array([g != "" for g in groups], dtype=bool)
    return (tmpl[keep], [g for g, k in zip(groups, keep) if k], person[keep],
            len(images), int((~ok).sum()))  # fmt: skip


def _reference_groups(
    roots: Sequence[Path], settings: Settings, cache: Path, workers: int | None, progress: bool,
    duplicates: DuplicateList | None = None,
    split: str = DEFAULT_SPLIT,
) -> ReferenceGroups:
    every = load_image_roots(roots)
    person_all = None if duplicates is None else duplicates.clusters(every.keys)
    fit = select_half(every, "fit", person_all, split)
    test = select_half(every, "test", person_all, split)
    cohort, groups, person, n_fit, failed_fit = _labelled_templates(
        fit, settings, cache, workers, progress, duplicates,
        "calibration: enrolling reference people",
    )  # fmt: skip
    t_tmpl, t_groups, t_person, n_test, failed_test = _labelled_templates(
        test, settings, cache, workers, progress, duplicates,
        "calibration: enrolling held-out people",
    )  # fmt: skip
    names = " + ".join(Path(r).name for r in roots)
    dup_note = None if duplicates is None else {
        "list": duplicates.source, **duplicates.counts(),
        "rule": "images joined by a same-image or same-person verdict are one person: their "
                "pairs are never impostor pairs, and the person stays in one half",
    }  # fmt: skip
    return ReferenceGroups(
        cohort=cohort, groups=groups, person=person,
        test=t_tmpl, test_groups=t_groups, test_person=t_person,
        provenance={
            "reference": {
                "name": f"{names} (UTKFace), the `fit` half of its people (split `{split}`: "
                        "SHA-256 of the file name; a person seen twice goes with the first name); "
                        "the `test` half is never used to fit, only to check the promise per group",
                "split": split,
                "path": ", ".join(str(r) for r in roots), "images": n_fit,
                "enrolled": int(len(cohort)), "failures_to_enrol": failed_fit,
                "people": int(len(np.unique(person))),
                "held_out": {"images": n_test, "enrolled": int(len(t_tmpl)),
                             "failures_to_enrol": failed_test,
                             "people": int(len(np.unique(t_person)))},
                "duplicates": dup_note,
                "licence": "UTKFace: non-commercial research. Only fitted numbers ship, "
                           "no template of any person",
            },
        },
    )  # fmt: skip


def _cell_pairs(
    templates: NDArray[np.float64], person: NDArray[np.int64],
    normaliser: ScoreNormaliser | None, max_fmr: float, min_cutoff: float = 0.0,
) -> ClusteredPairs:
    off = None if normaliser is None else normaliser.half_offsets(templates)
    return ClusteredPairs.from_embeddings(
        templates, person, max_fmr=max_fmr, min_cutoff=min_cutoff, offsets=off
    )


def _cover_groups(
    reference: ReferenceGroups,
    normaliser: ScoreNormaliser | None,
    distance: NDArray[np.float64],
    log10_fmr: NDArray[np.float64],
    *,
    cover_children: bool,
    replicates: int,
    seed: int,
    min_count: int = MIN_COUNT,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """LFW's curve moved to cover every measured group (`calibration.coverage`). Groups are
    sex x race x age group; where a cell has too few people to measure, its race x age group
    with both sexes pooled stands in for it."""
    cells = np.array(reference.groups, dtype=object)
    pooled = np.array([g.split("/", 1)[1] + " (both sexes)" for g in reference.groups], dtype=object)

    measured: dict[str, ClusteredPairs] = {}

    def shift_of(members: NDArray[np.bool_], name: str) -> GroupShift:
        cp = _cell_pairs(reference.cohort[members], reference.person[members], normaliser, 0.2)
        measured[name] = cp
        bound = empirical_upper_bound(cp, distance, replicates=replicates, seed=seed)
        return group_shift(name, cp.n_ids, bound, distance, log10_fmr, min_count=min_count)

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
                f"upper bound wherever it has >= {min_count} impostor pairs and FMR <= {MAX_FMR} "
                "(faceledger.calibration.coverage); a sex x race x age cell with too few people "
                "is covered through its race x age group with both sexes pooled",
        "min_count": min_count,
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
        "populations_not_measured": "anyone outside LFW's people and UTKFace's five race "
                                    "labels x two sexes; few people over 80",
    }  # fmt: skip


def held_out_coverage(
    reference: ReferenceGroups,
    table: CalibrationTable,
    *,
    cover_children: bool,
    replicates: int,
    seed: int,
    fmrs: Sequence[float] = COVERAGE_FMRS,
) -> dict[str, Any]:
    """Whether each group's held-out people show the promise at each threshold: `covered`
    where the upper end of the 95% interval of the group's FMR at the table's distance is at
    or below 1 - S/100; `broken` where even its lower end is above; otherwise `not shown`
    (too few pairs to show it, or a rate between): not covered at that threshold."""
    if reference.test is None or reference.test_groups is None or reference.test_person is None:
        return {}
    cells = np.array(reference.test_groups, dtype=object)
    thresholds = [table.distance_for_fmr(f) for f in fmrs]
    out: list[dict[str, Any]] = []
    for g in sorted(set(reference.test_groups)):
        members = cells == g
        t, p = reference.test[members], reference.test_person[members]
        row: dict[str, Any] = {"group": g, "images": int(members.sum()),
                               "people": int(len(np.unique(p)))}  # fmt: skip
        if len(np.unique(p)) < 2:
            row |= {"impostor_pairs": 0, "thresholds": [
                {"similarity": round(similarity_for_fmr(f), 6), "promised_fmr": f,
                 "status": "not shown", "why": "fewer than two held-out people"} for f in fmrs]}
            out.append(row)
            continue
        cp = _cell_pairs(t, p, table.normaliser, 1e-2, max(thresholds))
        rates = cp.verification_rates(thresholds=thresholds, replicates=replicates, seed=seed)
        rows = []
        for f, d, r in zip(fmrs, thresholds, rates["at_thresholds"]):
            fmr = r["fmr"]
            assert isinstance(fmr, dict)
            low, high = fmr.get("low"), fmr.get("high")
            if high is not None and float(high) <= f:
                status, why = "covered", "shown on held-out people"
            elif low is not None and float(low) > f:
                status, why = "broken", "held-out people show a higher rate"
            elif int(str(r["impostor_matches"])) == 0:
                status, why = "not shown", (f"0 false matches in {cp.n_impostor:,} pairs: too "
                                            f"few to show {f:g}")
            else:
                status, why = "not shown", "the held-out interval straddles the promise"
            if not cover_children and g.endswith("/child"):
                status, why = "not covered", "children are not covered by this table"
            rows.append({"similarity": round(similarity_for_fmr(f), 6), "promised_fmr": f,
                         "distance": round(d, 5), "fmr": fmr,
                         "impostor_matches": r["impostor_matches"], "status": status,
                         "why": why})  # fmt: skip
        out.append(row | {"impostor_pairs": cp.n_impostor, "thresholds": rows})
    at = {
        f"{similarity_for_fmr(f):.6g}": {
            "covered": [r["group"] for r in out if r["thresholds"][i]["status"] == "covered"],
            "not_shown": [r["group"] for r in out if r["thresholds"][i]["status"] == "not shown"],
            "broken": [r["group"] for r in out if r["thresholds"][i]["status"] == "broken"],
        }
        for i, f in enumerate(fmrs)
    }
    return {
        "held_out": {
            "rule": "a group is covered at a threshold only where its held-out people (never used "
                    "to fit) show the promise: the upper end of the 95% interval of their "
                    "within-group FMR (people-resampling bootstrap widened to Wilson) is at or "
                    "below 1 - S/100; otherwise it is NOT covered at that threshold (not shown: "
                    "too few pairs, or broken)",
            "groups": out,
            "by_threshold": at,
        }
    }


def table_split(table: CalibrationTable) -> str:
    """The people split a table was fitted with (`evaluate impostors --half` uses it)."""
    for where in ((table.provenance.get("coverage") or {}).get("reference"),
                  (table.normaliser.provenance.get("reference") if table.normaliser else None)):
        if isinstance(where, dict) and where.get("split"):
            return str(where["split"])
    return DEFAULT_SPLIT


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


# Whether `calibration build --groups` normalises scores by default, per model version: the
# adoption rule (docs/accuracy.md §6 and §9) decided it for each model by measurement.
NORMALISE_BY_MODEL = {"2.0": False, "3.0": False}
# The people split each model's table was built with (datasets.SPLITS): 1.0's predates
# utkface-more, whose names all fall into the first split's `fit` half.
SPLIT_BY_MODEL = {"2.0": "salted-sha256", "3.0": "salted-sha256"}
# Children: whether a model's table is moved to cover them (1.0: yes; 2.0 and 3.0 pack
# children's faces so tightly that covering them would refuse nearly every genuine pair:
# docs/accuracy.md §0).
COVER_CHILDREN_BY_MODEL = {"2.0": False, "3.0": False}


def default_normalise(model_version: str) -> bool:
    """The adopted score normalisation choice for a model (on unless measured otherwise)."""
    return NORMALISE_BY_MODEL.get(model_version, True)


def default_split(model_version: str) -> str:
    """The people split a model's table is built with."""
    return SPLIT_BY_MODEL.get(model_version, DEFAULT_SPLIT)


def default_cover_children(model_version: str) -> bool:
    """Whether a model's table covers children by default."""
    return COVER_CHILDREN_BY_MODEL.get(model_version, True)
