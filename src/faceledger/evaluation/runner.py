"""The evaluations `faceledger evaluate` runs: enrol the images (cached), score, assemble one
result dict per run (which `evaluation.report` writes as JSON and HTML)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..calibration import CalibrationTable, find_calibration, similarity_for_fmr
from ..calibration.coverage import held_out_status
from ..errors import InvalidParameterException, ResourceNotFoundException
from ..service.core import DEFAULT_COMPARE_FMR
from ..settings import Settings
from ..vision import FacePipeline
from .datasets import (
    ImageSet, Labels, load_folders, load_image_roots, load_images, load_labels, load_pairs,
    select_half, utkface_labels,
)  # fmt: skip
from .duplicates import DuplicateList, shipped_duplicates
from .detection import detection_rates
from .enrolment import Enrolment, default_cache_dir, enrol_files, template_matrix
from .groups import groups_all_pairs, groups_pair_list, image_groups
from .identification import identification, split_gallery
from .impostors import DEFAULT_DUPLICATE_DISTANCE, impostor_rates
from .verification import (
    TAR_FMRS, HalfOffsets, evaluate_all_pairs, evaluate_pair_list, pair_distances,
)  # fmt: skip

# The service's CompareFaces default (FMR 1e-4, Similarity 99.99) and the decades either side.
DEFAULT_SIMILARITIES = tuple(
    round(similarity_for_fmr(f), 10)
    for f in (10 * DEFAULT_COMPARE_FMR, DEFAULT_COMPARE_FMR, DEFAULT_COMPARE_FMR / 10)
)


class Evaluation:
    """One evaluation run's configuration: pipeline settings, cache, workers, thresholds."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        cache_dir: Path | None = None,
        workers: int | None = None,
        similarities: Sequence[float] = DEFAULT_SIMILARITIES,
        replicates: int = 200,
        seed: int = 0,
        progress: bool = True,
        command: str = "",
        ray: str | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.model_version = FacePipeline(self.settings).model_version
        self.cache_dir = cache_dir or default_cache_dir()
        self.workers = workers
        for s in similarities:
            if not 0.0 < s < 100.0:
                raise InvalidParameterException(
                    f"similarity {s} must be between 0 and 100 (exclusive)."
                )
        self.similarities = list(similarities)
        self.replicates = replicates
        self.seed = seed
        self.progress = progress
        self.command = command
        self.ray = ray  # a Ray cluster's address: images are enrolled by its actors

    # -- shared pieces
    @property
    def table(self) -> CalibrationTable:
        try:
            # shipped, or built by the operator into data_dir/calibration (slot models)
            return find_calibration(self.model_version, self.settings.data_dir)
        except LookupError as exc:
            raise ResourceNotFoundException(
                f"{exc}: build one with `faceledger calibration build --lfw PATH`"
            ) from exc

    @property
    def half_offsets(self) -> HalfOffsets | None:
        """The calibration's score normalisation, applied to every distance evaluated."""
        return self.table.half_offsets if self.table.normaliser is not None else None

    def thresholds(self) -> dict[str, float]:
        """Named operating thresholds (raw distances) from the calibration table."""
        t = self.table
        return {f"Similarity {s:.10g}": t.distance_for_similarity(s) for s in self.similarities}

    def threshold_info(self) -> dict[str, dict[str, float | bool]]:
        """Each threshold's nominal FMR, distance, and the FMR the table claims there (the
        table's floor when the nominal rate is below what the calibration can promise)."""
        t = self.table
        default = similarity_for_fmr(DEFAULT_COMPARE_FMR)
        out: dict[str, dict[str, float | bool]] = {}
        for s in self.similarities:
            d = t.distance_for_similarity(s)
            out[f"Similarity {s:.10g}"] = {
                "similarity": s,
                "nominal_fmr": t.fmr_for_similarity(s),
                "distance": d,
                "table_fmr": float(t.fmr(d)),
                "credible": t.is_credible(t.fmr_for_similarity(s)),
                "compare_faces_default": abs(s - default) < 1e-9,
            }
        return out

    def enrol(
        self, images: ImageSet, *, embed: bool = True, label: str = "enrolling"
    ) -> list[Enrolment]:
        return enrol_files(
            images.paths, settings=self.settings, cache_dir=self.cache_dir, embed=embed,
            workers=self.workers, progress=self.progress, label=label, ray=self.ray,
        )  # fmt: skip

    def header(self, kind: str, dataset: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        return {
            "kind": kind,
            "model_version": self.model_version,
            "dataset": dataset,
            "pipeline": {
                "detector": s.detector, "min_face_px": s.min_face_px,
                "detect_max_side": s.detect_max_side,
                "min_face_probability": s.min_face_probability,
                "face_choice": "the detected face nearest the image centre",
            },
            "thresholds": self.threshold_info(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": self.command,
        }  # fmt: skip

    @staticmethod
    def enrolment_summary(images: ImageSet, enrolments: Sequence[Enrolment]) -> dict[str, Any]:
        failed = [k for k, e in zip(images.keys, enrolments) if e.embedding is None]
        errors = {k: e.error for k, e in zip(images.keys, enrolments) if e.error}
        return {
            "images": len(images),
            "failures_to_enrol": len(failed),
            "failure_rate": len(failed) / max(len(images), 1),
            "failed_images": failed,
            "undecodable": errors,
            "several_faces_found": sum(1 for e in enrolments if e.n_faces > 1),
        }

    def _groups(
        self,
        images: ImageSet,
        labels_file: Path | None,
        attributes: Sequence[str],
        labels: Labels | None = None,
    ) -> list[str | None] | None:
        if labels is None and labels_file is None:
            return None
        labels = labels or load_labels(Path(str(labels_file)))
        attrs = list(attributes) or labels.attributes[:1]
        missing = [a for a in attrs if a not in labels.attributes]
        if missing:
            raise InvalidParameterException(
                f"labels have no attribute {', '.join(missing)}; they have {', '.join(labels.attributes)}."
            )
        return image_groups(images, labels, attrs)

    # -- the evaluations
    def pairs(
        self,
        pairs_file: Path,
        *,
        root: Path | None = None,
        train_file: Path | None = None,
        labels_file: Path | None = None,
        attributes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """LFW-format pair list: accuracy protocol, ROC, TAR at FMR, rates, groups."""
        pl = load_pairs(pairs_file, root)
        train = load_pairs(train_file, root) if train_file else None
        groups = self._groups(pl.images, labels_file, attributes)
        enr = self.enrol(pl.images, label="enrolling pair images")
        tmpl = template_matrix(enr)
        train_arg = None
        if train is not None:
            train_arg = (
                train,
                template_matrix(self.enrol(train.images, label="enrolling training pairs")),
            )
        th = self.thresholds()
        out = self.header(
            "pairs",
            {"pairs": str(pairs_file), "train": str(train_file or ""), "root": str(pl.images.root)},
        )
        out["enrolment"] = self.enrolment_summary(pl.images, enr)
        out["verification"] = evaluate_pair_list(
            pl, tmpl, th, train=train_arg, replicates=self.replicates, seed=self.seed,
            half_offsets=self.half_offsets,
        )  # fmt: skip
        if groups is not None:
            out["groups"] = groups_pair_list(
                pl, pair_distances(pl, tmpl, self.half_offsets), groups, th,
                replicates=self.replicates, seed=self.seed,
            )  # fmt: skip
        return out

    def folders(
        self,
        root: Path,
        *,
        labels_file: Path | None = None,
        attributes: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Folder-per-identity set: every genuine and cross-identity pair, per group too."""
        images = load_folders(root)
        groups = self._groups(images, labels_file, attributes)
        enr = self.enrol(images)
        tmpl = template_matrix(enr)
        th = self.thresholds()
        out = self.header("folders", {"root": str(root), "identities": len(images.names)})
        out["enrolment"] = self.enrolment_summary(images, enr)
        out["verification"], _ = evaluate_all_pairs(
            tmpl, images.identity, th, fmr_targets=TAR_FMRS, replicates=self.replicates,
            seed=self.seed, half_offsets=self.half_offsets,
        )  # fmt: skip
        if groups is not None:
            out["groups"] = groups_all_pairs(
                tmpl, images, groups, th, replicates=self.replicates, seed=self.seed,
                half_offsets=self.half_offsets,
            )  # fmt: skip
        return out

    def identify(self, gallery_root: Path, *, probes_root: Path | None = None) -> dict[str, Any]:
        """1:N: FPIR/FNIR against gallery size and threshold, expected vs observed false matches."""
        g_images = load_folders(gallery_root)
        g_enr = self.enrol(g_images, label="enrolling gallery")
        g_tmpl = template_matrix(g_enr)
        if probes_root is None:
            gi, pi = split_gallery(g_images.identity, [e.embedding is not None for e in g_enr])
            names = [g_images.names[i] for i in g_images.identity]
            gallery, gallery_ids = g_tmpl[gi], [names[i] for i in gi]
            probes, probe_ids = g_tmpl[pi], [names[i] for i in pi]
            design = (
                "one dataset split: each person's first image in the gallery, the rest as "
                "mated probes; people with one image alternate gallery / non-mated probe"
            )
            p_summary = None
        else:
            p_images = load_folders(probes_root)
            p_enr = self.enrol(p_images, label="enrolling probes")
            gallery, gallery_ids = g_tmpl, [g_images.names[i] for i in g_images.identity]
            probes = template_matrix(p_enr)
            probe_ids = [p_images.names[i] for i in p_images.identity]
            design = "gallery from one dataset, probes from another (mated: same folder name)"
            p_summary = self.enrolment_summary(p_images, p_enr)
        th = self.thresholds()
        fmr = {n: float(self.table.fmr(d)) for n, d in th.items()}
        out = self.header(
            "identification",
            {"gallery": str(gallery_root), "probes": str(probes_root or ""), "design": design},
        )
        out["enrolment"] = self.enrolment_summary(g_images, g_enr)
        if p_summary is not None:
            out["probe_enrolment"] = p_summary
        out["identification"] = identification(
            gallery, gallery_ids, probes, probe_ids, th, fmr, seed=self.seed,
            half_offsets=self.half_offsets,
        )  # fmt: skip
        return out

    def impostors(
        self,
        root: Path | Sequence[Path],
        *,
        labels_file: Path | None = None,
        attributes: Sequence[str] = (),
        utkface: bool = False,
        half: str | None = None,
        duplicate_distance: float = DEFAULT_DUPLICATE_DISTANCE,
        duplicates: DuplicateList | None | Literal["default"] = "default",
    ) -> dict[str, Any]:
        """False-match rates per group on images of distinct people (no identities needed):
        within and across groups, near-duplicates listed, promises checked.

        `root` may be several folders (utkface-balanced and utkface-more). `duplicates`: a
        reviewed list of one-face-two-names pairs whose pairs are not counted as impostor pairs
        (and whose people stay in one half); "default" is the shipped UTKFace list with
        `utkface`, none otherwise."""
        roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
        images = load_image_roots(roots)
        if duplicates == "default":
            duplicates = shipped_duplicates() if utkface else None
        dups = duplicates
        person = None if dups is None else dups.clusters(images.keys)
        split = None
        if half is not None:
            from .calibrate import table_split

            split = table_split(self.table)
            images = select_half(images, half, person, split)
            person = None if dups is None else dups.clusters(images.keys)
        labels = None
        if utkface:
            labels = utkface_labels(images)
            attributes = list(attributes) or ["sex", "race", "age_group"]
        if labels is None and labels_file is None:
            raise InvalidParameterException(
                "impostor rates per group need labels: --utkface, or --labels FILE --by ATTRIBUTE."
            )
        groups = self._groups(images, labels_file, attributes, labels)
        assert groups is not None
        enr = self.enrol(images)
        th = self.thresholds()
        nominal = {n: float(v["nominal_fmr"]) for n, v in self.threshold_info().items()}
        out = self.header(
            "impostors",
            {
                "root": ", ".join(str(r) for r in roots),
                "labels": "UTKFace file names" if utkface else str(labels_file or ""),
                "half": half or "all",
                "split": split,
                "assumption": "every image is a different person"
                + ("" if dups is None else f", except the pairs reviewed in {dups.source}"),
            },
        )
        out["enrolment"] = self.enrolment_summary(images, enr)
        excluded = None if dups is None else {"list": dups.source} | dups.counts()
        # groups the shipped table promises nothing for at any threshold (children, 2.0)
        status = held_out_status(self.table)
        uncovered = [g for g, by in status.items()
                     if by and all(s == "not covered" for s in by.values())]
        out["impostors"] = impostor_rates(
            template_matrix(enr), images.keys, groups, th, nominal,
            duplicate_distance=duplicate_distance, replicates=self.replicates, seed=self.seed,
            half_offsets=self.half_offsets, person=None if person is None else person.tolist(),
            duplicates=excluded, not_covered=uncovered,
        )  # fmt: skip
        out["impostors"]["children"] = (self.table.provenance.get("coverage") or {}).get(
            "children")
        out["impostors"]["group_by"] = list(attributes)
        return out

    def detection(
        self,
        root: Path,
        *,
        labels_file: Path | None = None,
        attributes: Sequence[str] = (),
        utkface: bool = False,
    ) -> dict[str, Any]:
        """Failure-to-detect and QualityFilter refusal rates overall and per group."""
        images = load_images(root)
        labels = None
        if utkface:
            labels = utkface_labels(images)
            attributes = list(attributes) or ["sex", "race"]
        groups = self._groups(images, labels_file, attributes, labels)
        enr = self.enrol(images, embed=False, label="detecting")
        out = self.header(
            "detection",
            {
                "root": str(root),
                "labels": "UTKFace file names" if utkface else str(labels_file or ""),
            },
        )
        out["detection"] = detection_rates(enr, groups)
        out["detection"]["group_by"] = list(attributes)
        out["failed_images"] = [k for k, e in zip(images.keys, enr) if not e.enrolled]
        return out
