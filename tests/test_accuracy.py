"""Accuracy of the default model (2.0: YuNet + reid-0095) on real LFW and UTKFace through the full
pipeline (detection included): View 1 accuracy with the threshold chosen on pairsDevTrain, TAR
at FMR 1e-3 and 1e-4 over every cross-identity pair, per-sex rates, agreement with the shipped
calibration table, its rebuild, and the promise on held-out UTKFace people of every group.

Slow (marked, not skipped; CI runs it): a fresh clone embeds LFW's 4,992 images and UTKFace's
5,835 once (a few minutes per model on two free cores); the templates are cached in pytest's
cache directory and every test shares one `Evaluation` (one cache), so no image is embedded twice
in a run. Measured numbers are printed (`pytest -s`) and documented in docs/accuracy.md §0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faceledger.calibration import CalibrationTable, load_calibration
from faceledger.evaluation.runner import Evaluation
from faceledger.service.core import DEFAULT_COMPARE_FMR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Evaluation:
    # Templates in pytest's cache dir (git-ignored), shared with test_evaluation.py.
    store = getattr(request.config, "cache", None)
    cache = (
        Path(store.mkdir("faceledger-embeddings"))
        if store is not None
        else tmp_path_factory.mktemp("faceledger-embeddings")
    )
    return Evaluation(cache_dir=cache, progress=False, replicates=100)


@pytest.fixture(scope="module")
def view1(faces_dir: Path, evaluation: Evaluation) -> dict[str, Any]:
    lfw = faces_dir / "lfw"
    return evaluation.pairs(
        lfw / "pairsDevTest.txt", train_file=lfw / "pairsDevTrain.txt",
        labels_file=lfw / "sex.tsv", attributes=["sex"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def all_pairs(faces_dir: Path, evaluation: Evaluation) -> dict[str, Any]:
    lfw = faces_dir / "lfw"
    return evaluation.folders(lfw, labels_file=lfw / "sex.tsv", attributes=["sex"])


def test_pairs_dev_test_accuracy_with_threshold_from_dev_train(view1: dict[str, Any]) -> None:
    acc = view1["verification"]["accuracy"]
    print(
        f"\npairsDevTest accuracy {acc['accuracy']:.4f} +/- {acc['standard_error']:.4f} at "
        f"distance {acc['threshold']:.4f} (train accuracy {acc['train_accuracy']:.4f}); "
        f"failures to enrol {view1['enrolment']['failures_to_enrol']}"
    )
    assert "training list" in acc["protocol"]
    # Model 2.0 on these deep-funneled View 1 images: 99.41% over 10 folds of all 3,200 pairs
    # (docs/accuracy.md §0); model 1.0 (dlib) measured 98.2% on pairsDevTest.
    assert acc["accuracy"] >= 0.985
    assert 0.8 < acc["threshold"] < 1.3  # unit-length 256-d templates: distances in [0, 2]
    assert view1["verification"]["auc"] > 0.995
    # Failures to enrol are counted, and their pairs scored as non-matches.
    assert view1["verification"]["pairs"]["with_failure_to_enrol"] >= 0
    assert view1["enrolment"]["failures_to_enrol"] == len(view1["enrolment"]["failed_images"])


def test_tar_at_low_fmr_over_all_lfw_pairs(all_pairs: dict[str, Any]) -> None:
    tar = {r["fmr"]: r for r in all_pairs["verification"]["tar_at_fmr"]}
    for f in (1e-3, 1e-4):
        t = tar[f]["tar"]
        print(
            f"\nTAR at FMR {f:g}: {t['value']:.4f} [{t['low']:.4f}, {t['high']:.4f}] at distance "
            f"{tar[f]['threshold']['value']:.4f}"
        )
        assert t["low"] <= t["value"] <= t["high"]
    assert tar[1e-3]["tar"]["value"] > 0.97
    assert tar[1e-4]["tar"]["value"] > 0.93
    assert tar[1e-3]["tar"]["value"] > tar[1e-4]["tar"]["value"] > tar[1e-5]["tar"]["value"]
    enr = all_pairs["enrolment"]
    print(f"failures to enrol: {enr['failures_to_enrol']} of {enr['images']}")
    assert enr["failure_rate"] < 0.01


def test_calibrated_default_threshold_means_its_false_match_rate(all_pairs: dict[str, Any]) -> None:
    # The CompareFaces default (Similarity 99.99) promises FMR at most 1e-4. The table is the
    # 95% upper bound, so on the data it was calibrated on the measured FMR at that distance is
    # below the nominal one, and the upper end of its 95% interval close to it (a bound, not a
    # needlessly strict threshold).
    assert DEFAULT_COMPARE_FMR == pytest.approx(1e-4)
    row = next(
        r for r in all_pairs["verification"]["at_thresholds"] if r["name"] == "Similarity 99.99"
    )
    print(
        f"\nSimilarity 99.99 (d={row['threshold']:.4f}): FMR {row['fmr']['value']:.3g} "
        f"[{row['fmr']['low']:.3g}, {row['fmr']['high']:.3g}]"
    )
    # The table covers the worst measured adult group, so on LFW (mostly white men) the default
    # keeps its promise with room to spare: even the upper end of the interval is below it.
    assert row["fmr"]["value"] <= DEFAULT_COMPARE_FMR
    assert row["fmr"]["high"] <= DEFAULT_COMPARE_FMR
    table = load_calibration("2.0")
    assert row["threshold"] == pytest.approx(table.distance_for_fmr(DEFAULT_COMPARE_FMR))


def test_shipped_table_is_reproduced_by_the_build(faces_dir: Path, evaluation: Evaluation) -> None:
    # Rebuilding from the same images gives the shipped curve: same floor, same thresholds.
    from faceledger.evaluation.calibrate import build_calibration
    from faceledger.evaluation.duplicates import shipped_duplicates

    raw = build_calibration(
        faces_dir / "lfw", settings=evaluation.settings, cache_dir=evaluation.cache_dir,
        progress=False, validation_splits=0,
        groups_root=[faces_dir / "utkface-balanced", faces_dir / "utkface-more"],
        # the review 2.0's table was built with (later reviews, e.g. 3.0's, move people between
        # halves and so the fit: they are measured against 2.0 in docs/accuracy.md, not fitted)
        duplicates=shipped_duplicates(("utkface-duplicates.tsv",)), normalise=False,
        cover_children=False,
        split="salted-sha256",
    )  # fmt: skip
    rebuilt = CalibrationTable.from_dict(raw)
    shipped = load_calibration("2.0")
    print(f"\nlowest credible FMR: rebuilt {rebuilt.lowest_credible_fmr:.4g}, shipped "
          f"{shipped.lowest_credible_fmr:.4g}; shift rebuilt {raw['coverage']['shift']:.4f}, "
          f"shipped {shipped.provenance['coverage']['shift']:.4f}")  # fmt: skip
    # Same replicates and seed as the shipped build: the same bound, floor and shift.
    assert rebuilt.lowest_credible_fmr == pytest.approx(shipped.lowest_credible_fmr, rel=0.05)
    assert raw["coverage"]["shift"] == pytest.approx(shipped.provenance["coverage"]["shift"], abs=2e-3)
    for f in (1e-2, 1e-3, 1e-4):
        assert rebuilt.distance_for_fmr(f) == pytest.approx(shipped.distance_for_fmr(f), abs=3e-3)


def test_per_sex_rates_use_within_sex_impostors(all_pairs: dict[str, Any]) -> None:
    groups = all_pairs["groups"]["groups"]
    assert set(groups) == {"F", "M"}
    for g, r in groups.items():
        at = {t["name"]: t for t in r["at_thresholds"]}["Similarity 99.9"]
        print(
            f"\n{g}: FMR {at['fmr']['value']:.3g} [{at['fmr']['low']:.3g}, {at['fmr']['high']:.3g}]"
            f" FNMR {at['fnmr']['value']:.3g} [{at['fnmr']['low']:.3g}, {at['fnmr']['high']:.3g}]"
        )
        assert r["pairs"]["impostor"] > 500_000 and r["pairs"]["genuine"] > 500
    comps = all_pairs["groups"]["comparisons"]
    assert {c["rate"] for c in comps} == {"fmr", "fnmr"}
    assert all(c["max_over_min"] is None or c["max_over_min"] >= 1.0 for c in comps)


def test_held_out_people_of_every_group_get_the_promised_rate(
    faces_dir: Path, evaluation: Evaluation
) -> None:
    # The people of utkface-balanced + utkface-more the calibration never saw (`test` half of the
    # table's salted split, reviewed duplicates joined): within every adult sex x race cell, no
    # threshold's promise is broken (the low end of the 95% interval is never above 1 - S/100).
    # Children are measured but not covered by the 2.0 table: their cells are reported, and
    # they are the only ones allowed to break it (docs/accuracy.md §0).
    result = evaluation.impostors(
        [faces_dir / "utkface-balanced", faces_dir / "utkface-more"], utkface=True, half="test"
    )
    imp = result["impostors"]
    assert result["dataset"]["split"] == "salted-sha256"
    assert imp["near_duplicates"]["joined_images"] > 0  # the reviewed list is applied
    assert len(imp["groups"]) == 20
    for g, cell in sorted(imp["groups"].items()):
        rates = {r["name"]: r for r in cell["at_thresholds"]}
        print(f"\n{g} ({cell['people']} people, {cell['pairs']['impostor']:,} pairs): "
              + ", ".join(f"{n} {r['fmr']['value']:.2g} [{r['fmr']['low']:.2g}, "
                          f"{r['fmr']['high']:.2g}] ({r['impostor_matches']})"
                          for n, r in rates.items()))  # fmt: skip
        assert cell["pairs"]["impostor"] > 300
    broken_adults = [b for b in imp["promises_broken"] if b["group"].endswith("/adult")]
    assert broken_adults == []
    # At 99.9 (FMR <= 1e-3) the adult cells together see the promised rate or less.
    adults = [c for g, c in imp["groups"].items() if g.endswith("adult")]
    matches = sum(c["at_thresholds"][0]["impostor_matches"] for c in adults)
    pairs = sum(c["pairs"]["impostor"] for c in adults)
    assert matches / pairs <= 1e-3
