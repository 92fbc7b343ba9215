"""`faceledger evaluate`: datasets, enrolment cache, per-group and 1:N logic, detection rates,
reports, and the command line on real LFW images (small subsets; the full runs are in
test_accuracy.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from faceledger.cli import main
from faceledger.errors import InvalidParameterException
from faceledger.evaluation.datasets import load_folders, load_labels, load_pairs, utkface_labels
from faceledger.evaluation.detection import detection_rates
from faceledger.evaluation.enrolment import (
    EmbeddingCache,
    Enrolment,
    cache_key,
    central_face,
    enrol_files,
)
from faceledger.evaluation.groups import compare_groups
from faceledger.evaluation.identification import identification, split_gallery
from faceledger.settings import Settings
from faceledger.vision import FacePipeline


@pytest.fixture(scope="session")
def eval_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Embedding cache kept in pytest's own cache dir (git-ignored): reruns are fast, a fresh
    clone (CI) computes everything once. Without the cache plugin: a temporary directory."""
    cache = getattr(request.config, "cache", None)
    if cache is None:
        return tmp_path_factory.mktemp("faceledger-embeddings")
    return Path(cache.mkdir("faceledger-embeddings"))


def _write_pairs(path: Path, lines: list[str], header: str) -> Path:
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- datasets ---------------------------------------------------------------------------------


def test_lfw_view1_pair_lists_parse(faces_dir: Path) -> None:
    pl = load_pairs(faces_dir / "lfw" / "pairsDevTest.txt")
    assert len(pl.same) == 1000 and sum(pl.same) == 500 and pl.n_folds == 1
    assert len(pl.images) == 1549
    a, b = pl.a[0], pl.b[0]
    assert pl.images.identity[a] == pl.images.identity[b]  # first block: same person
    assert not pl.same[-1] and pl.images.identity[pl.a[-1]] != pl.images.identity[pl.b[-1]]


def test_view2_folds_parse(faces_dir: Path, tmp_path: Path) -> None:
    lfw = faces_dir / "lfw"
    # Two folds of one matched and one mismatched pair, in View 2's layout.
    lines = [
        "Aaron_Peirsol 1 2",
        "AJ_Cook 1 AJ_Lamas 1",
        "Aaron_Peirsol 3 4",
        "AJ_Lamas 1 AJ_Cook 1",
    ]
    pl = load_pairs(_write_pairs(tmp_path / "pairs.txt", lines, "2 1"), lfw)
    assert pl.n_folds == 2 and pl.fold == [0, 0, 1, 1] and pl.same == [True, False, True, False]


@pytest.mark.parametrize(
    ("header", "lines", "message"),
    [
        ("x", ["a 1 2"], "first line"),
        ("3", ["Aaron_Peirsol 1 2"], "promises"),
        ("1", ["Aaron_Peirsol 1 2", "only three"], "expected"),
        ("1", ["Aaron_Peirsol 1 2", "Nobody_Here 1 AJ_Cook 1"], "not found"),
        ("1", ["Aaron_Peirsol 1 x", "AJ_Cook 1 AJ_Lamas 1"], "bad image number"),
    ],
)
def test_bad_pair_lists_are_refused_with_the_line(
    faces_dir: Path, tmp_path: Path, header: str, lines: list[str], message: str
) -> None:
    with pytest.raises(InvalidParameterException, match=message):
        load_pairs(_write_pairs(tmp_path / "p.txt", lines, header), faces_dir / "lfw")


def test_labels_files_and_utkface_names(faces_dir: Path, tmp_path: Path) -> None:
    labels = load_labels(faces_dir / "lfw" / "sex.tsv")
    assert labels.attributes == ["sex"]
    assert labels.for_image("AJ_Cook/AJ_Cook_0001.jpg", "AJ_Cook") == {"sex": "F"}
    (tmp_path / "l.csv").write_text("identity,band\nAJ_Cook,30-39\n", encoding="utf-8")
    by_id = load_labels(tmp_path / "l.csv")
    assert by_id.for_image("AJ_Cook/AJ_Cook_0001.jpg", "AJ_Cook") == {"band": "30-39"}
    (tmp_path / "bad.tsv").write_text("image\tsex\nA/B.jpg\tM\textra\n", encoding="utf-8")
    with pytest.raises(InvalidParameterException, match="columns"):
        load_labels(tmp_path / "bad.tsv")
    from faceledger.evaluation.datasets import load_images

    utk = load_images(faces_dir / "utkface-balanced" / "females" / "asian")
    lab = utkface_labels(utk)
    assert len(lab.by_key) == len(utk) == 200
    assert {v["sex"] for v in lab.by_key.values()} == {"female"}
    assert {v["race"] for v in lab.by_key.values()} == {"asian"}


# ---- enrolment ------------------------------------------------------------------------------


def test_central_face_is_nearest_the_image_centre() -> None:
    from faceledger.vision.types import Box, FaceAnalysis, Pose, Quality

    def face(x: float) -> FaceAnalysis:
        return FaceAnalysis(
            Box(x, 100, x + 50, 150),
            99.0,
            np.zeros((5, 2), np.float32),
            Pose(0, 0, 0),
            Quality(50, 50),
        )

    faces = [face(10), face(110), face(180)]  # largest-first order does not matter here
    assert central_face(faces, 250, 250) == 1


def test_enrolment_caches_and_counts_undecodable_files(faces_dir: Path, tmp_path: Path) -> None:
    src = faces_dir / "lfw" / "AJ_Cook" / "AJ_Cook_0001.jpg"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    cache = tmp_path / "cache"
    first = enrol_files([src, bad], cache_dir=cache, workers=1, progress=False)
    assert (
        first[0].enrolled and first[0].embedding is not None
        and first[0].embedding.shape == (FacePipeline(Settings()).embedder.dim,)
    )
    assert not first[1].enrolled and first[1].error.startswith("InvalidImageFormatException")
    store = EmbeddingCache(cache, cache_key(Settings(), FacePipeline(Settings()).model_version))
    cached = store.get(first[0].sha256, need_embedding=True)
    assert cached is not None and cached.embedding is not None
    np.testing.assert_array_equal(cached.embedding, first[0].embedding)
    # A detection-only entry is not reused when a template is needed.
    store.put(Enrolment("ab" * 32, 1, 10, 10, np.zeros(10), None))
    assert store.get("ab" * 32, need_embedding=True) is None
    assert store.get("ab" * 32, need_embedding=False) is not None
    again = enrol_files([src, bad], cache_dir=cache, workers=1, progress=False)
    assert again[1].error == first[1].error  # failures are cached (and reported) too


def test_cached_quality_from_another_formula_is_measured_again(
    faces_dir: Path, tmp_path: Path
) -> None:
    # Brightness/Sharpness are stored with each entry; when the quality formula changes (the
    # Sharpness scale did), entries written before must not keep their old values. Simulate an
    # old entry: the stamp missing and a different Sharpness, as the previous scale gave.
    files = sorted((faces_dir / "utkface-balanced" / "females" / "white").glob("*.jpg"))[:2]
    cache = tmp_path / "cache"
    fresh = enrol_files(files, cache_dir=cache, embed=False, workers=1, progress=False)
    assert all(e.enrolled and e.quality_current for e in fresh)
    assert fresh[0].face is not None and fresh[1].face is not None
    store = EmbeddingCache(cache, cache_key(Settings(), FacePipeline(Settings()).model_version))
    old_face = fresh[0].face.copy()
    old_face[9] = 100.0 * (1.0 - (1.0 - old_face[9] / 100.0) ** (60.0 / 200.0))  # scale 200
    path = store._path(fresh[0].sha256)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "quality_stamp"}
    arrays["face"] = old_face
    np.savez(path, **arrays)
    # And one entry with a current stamp but a tampered value: trusted as stored.
    tampered = fresh[1].face.copy()
    tampered[9] = 1.0
    store.put(Enrolment(fresh[1].sha256, fresh[1].n_faces, fresh[1].width, fresh[1].height,
                        tampered, None))  # fmt: skip
    stale = store.get(fresh[0].sha256, need_embedding=False)
    assert stale is not None and not stale.quality_current and stale.face is not None
    assert stale.face[9] != pytest.approx(fresh[0].face[9])
    again = enrol_files(files, cache_dir=cache, embed=False, workers=1, progress=False)
    assert again[0].quality_current and again[0].face is not None
    np.testing.assert_allclose(again[0].face, fresh[0].face)  # re-measured, box and all kept
    assert again[1].face is not None and again[1].face[9] == 1.0
    refreshed = store.get(fresh[0].sha256, need_embedding=False)
    assert refreshed is not None and refreshed.quality_current  # and written back


def test_process_pool_gives_the_same_templates(faces_dir: Path, tmp_path: Path) -> None:
    files = sorted((faces_dir / "lfw" / "Aaron_Peirsol").glob("*.jpg"))
    single = enrol_files(files, workers=1, progress=False)
    pooled = enrol_files(files, workers=2, progress=False, cache_dir=tmp_path)
    for a, b in zip(single, pooled):
        assert a.sha256 == b.sha256
        assert a.embedding is not None and b.embedding is not None
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)


# ---- groups, 1:N, detection: logic on constructed inputs with known answers ----------------


def _rates(fmr: tuple[float, float, float], fnmr: tuple[float, float, float]) -> dict[str, object]:
    def iv(t: tuple[float, float, float]) -> dict[str, float]:
        return {"value": t[0], "low": t[1], "high": t[2]}

    return {"at_thresholds": [{"fmr": iv(fmr), "fnmr": iv(fnmr)}]}


def test_group_comparison_ratio_and_flag() -> None:
    per = {
        "F": _rates((4e-4, 3e-4, 5e-4), (0.020, 0.010, 0.030)),
        "M": _rates((1e-4, 0.5e-4, 2e-4), (0.015, 0.008, 0.025)),
    }
    rows = {r["rate"]: r for r in compare_groups(per, ["S99.99"])}
    assert rows["fmr"]["highest"] == "F" and rows["fmr"]["max_over_min"] == pytest.approx(4.0)
    assert rows["fmr"]["flagged"] is True  # [3e-4, 5e-4] and [0.5e-4, 2e-4] do not overlap
    assert rows["fnmr"]["flagged"] is False


def test_identification_counts_on_constructed_templates() -> None:
    # Gallery: three people at the corners; probes: two mated (near their mate) and two
    # non-mated, one of which is near gallery person "b" (a false match at t=0.5).
    gallery = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    probes = np.array([[0.1, 0.0], [10.0, 0.2], [0.0, 10.3], [50.0, 50.0], [np.nan, np.nan]])
    res = identification(
        gallery, ["a", "b", "c"], probes, ["a", "b", "x", "y", "a"],
        {"t": 0.5}, {"t": 1e-3}, sizes=[3],
    )  # fmt: skip
    row = res["rows"][0]
    assert row["mated_probes"] == 3 and row["non_mated_probes"] == 2
    assert row["fnir"] == pytest.approx(1 / 3)  # the probe that failed to enrol is a miss
    assert row["fpir"] == pytest.approx(1 / 2)  # "x" matched "c" at distance 0.3
    assert row["false_matches_observed"] == 1
    assert row["false_matches_expected"] == pytest.approx(2 * 3 * 1e-3)


def test_split_gallery_puts_one_image_per_person_in_the_gallery() -> None:
    gallery, probes = split_gallery([0, 0, 0, 1, 2, 3, 4], [True] * 7)
    assert gallery == [0, 3, 5] and probes == [1, 2, 4, 6]
    g2, p2 = split_gallery([0, 0, 1], [False, True, True])  # failures stay out of both
    assert g2 == [1] and p2 == [2]


def test_detection_rates_per_group() -> None:
    ok = Enrolment("a", 1, 100, 100, np.array([10, 10, 90, 90, 99, 0, 0, 0, 50, 80.0]), None)
    dark = Enrolment("b", 1, 100, 100, np.array([10, 10, 90, 90, 99, 0, 0, 0, 3, 80.0]), None)
    none = Enrolment("c", 0, 100, 100, None, None)
    res = detection_rates([ok, dark, none, ok], ["g1", "g1", "g2", "g2"])
    g1, g2 = res["groups"]["g1"], res["groups"]["g2"]
    assert g1["failure_to_detect"]["value"] == 0 and g2["failure_to_detect"]["value"] == 0.5
    assert g1["quality_filter"]["LOW"]["refused"]["value"] == 0.5
    assert g1["quality_filter"]["LOW"]["reasons"] == {"LOW_BRIGHTNESS": 1}
    assert g2["quality_filter"]["LOW"]["reasons"] == {"NO_FACE": 1}
    assert res["overall"]["images"] == 4


# ---- the command line on real images ---------------------------------------------------------


def test_evaluate_pairs_command_writes_json_and_html(
    faces_dir: Path, tmp_path: Path, eval_cache: Path
) -> None:
    lfw = faces_dir / "lfw"
    lines = (faces_dir / "lfw" / "pairsDevTest.txt").read_text().splitlines()[1:]
    small = _write_pairs(tmp_path / "pairs.txt", lines[:15] + lines[500:515], "15")
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "evaluate", "pairs", str(small), "--root", str(lfw), "--labels", str(lfw / "sex.tsv"),
        "--by", "sex", "--out", str(out), "--cache", str(eval_cache), "--replicates", "50",
        "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ver = report["verification"]
    assert ver["pairs"]["genuine"] == 15 and ver["pairs"]["impostor"] == 15
    # Pairs with an image where no face was found are counted (and scored as non-matches).
    failed = set(report["enrolment"]["failed_images"])
    listed = [ln.split() for ln in lines[:15] + lines[500:515]]
    keys = [
        (f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[0]}/{p[0]}_{int(p[2]):04d}.jpg")
        if len(p) == 3
        else (f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[2]}/{p[2]}_{int(p[3]):04d}.jpg")
        for p in listed
    ]
    assert ver["pairs"]["with_failure_to_enrol"] == sum(a in failed or b in failed for a, b in keys)
    assert ver["accuracy"]["accuracy"] >= 0.9  # 30 easy LFW pairs
    assert ver["auc"] > 0.95
    # 15 impostor pairs cannot show FMR 1e-2: said so, not invented.
    assert all(not r["estimable"] for r in ver["tar_at_fmr"])
    assert set(report["groups"]["groups"]) <= {"F", "M"}
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 4 and "Verification" in html and "Per group" in html
    import re
    import xml.etree.ElementTree as ET

    for svg in re.findall(r"<svg.*?</svg>", html, re.S):  # every plot is well-formed SVG
        assert ET.fromstring(svg).tag.endswith("svg")
    assert "accuracy" in result.output


def test_evaluate_detection_command_on_utkface_cell(
    faces_dir: Path, tmp_path: Path, eval_cache: Path
) -> None:
    # One cell per sex, 12 images each: enough to exercise grouping; the full run is in
    # docs/accuracy.md.
    root = tmp_path / "utk"
    for sex in ("males", "females"):
        files = sorted((faces_dir / "utkface-balanced" / sex / "black").glob("*.jpg"))[:12]
        (root / sex).mkdir(parents=True)
        for f in files:
            (root / sex / f.name).symlink_to(f)
    out = tmp_path / "det"
    result = CliRunner().invoke(main, [
        "evaluate", "detection", str(root), "--utkface", "--by", "sex", "--out", str(out),
        "--cache", str(eval_cache), "--quiet", "--workers", "1",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    det = json.loads((out / "report.json").read_text())["detection"]
    assert det["overall"]["images"] == 24
    assert set(det["groups"]) == {"male", "female"}
    assert all(g["images"] == 12 for g in det["groups"].values())


def test_evaluate_refuses_bad_input_with_rekognition_codes(faces_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", "folders", str(tmp_path), "--quiet"])
    assert r.exit_code == 2 and "InvalidParameterException" in r.output
    lfw = faces_dir / "lfw"
    r = runner.invoke(
        main, ["evaluate", "pairs", str(lfw / "pairsDevTest.txt"), "--quiet", "--similarity", "100"]
    )
    assert r.exit_code == 2 and "InvalidParameterException" in r.output and "100" in r.output
    # The labels are checked before any image is enrolled.
    r = runner.invoke(
        main,
        [
            "evaluate",
            "pairs",
            str(lfw / "pairsDevTest.txt"),
            "--labels",
            str(lfw / "sex.tsv"),
            "--by",
            "race",
            "--quiet",
        ],
    )
    assert r.exit_code == 2 and "no attribute race" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(main, ["evaluate", "pairs", str(lfw / "sex.tsv"), "--quiet"])
    assert r.exit_code == 2 and "first line" in r.output


def test_thresholds_below_the_calibration_floor_say_so(tmp_path: Path) -> None:
    from faceledger.calibration import load_calibration
    from faceledger.evaluation.runner import Evaluation

    ev = Evaluation(cache_dir=tmp_path, progress=False, similarities=[99.99, 99.99999])
    info = ev.threshold_info()
    table = load_calibration(ev.model_version)
    ok, strict = info["Similarity 99.99"], info["Similarity 99.99999"]
    assert ok["credible"] and ok["table_fmr"] == pytest.approx(1e-4, rel=1e-6)
    # FMR 1e-7 is below what LFW can show: the evaluation uses the floor and says its real FMR.
    assert not strict["credible"]
    assert strict["distance"] == pytest.approx(table.floor_distance)
    assert strict["table_fmr"] == pytest.approx(table.lowest_credible_fmr)


def test_folder_and_pair_evaluations_share_one_metric_implementation() -> None:
    # The calibration build, its bound and `evaluate` all take their rates from faceledger.rates.
    from faceledger import rates
    from faceledger.calibration import bound
    from faceledger.evaluation import calibrate, verification

    assert calibrate.ClusteredPairs is rates.ClusteredPairs is verification.ClusteredPairs
    assert bound.ClusteredPairs is rates.ClusteredPairs


def test_the_calibration_package_does_not_import_evaluation() -> None:
    # Layering: rates is a leaf; calibration (the core's scoring) sits on it; evaluation (reports,
    # table building) sits on both. Nothing in calibration may import evaluation.
    import ast

    root = Path(__file__).resolve().parents[1] / "src" / "faceledger"
    for module in sorted((root / "calibration").glob("*.py")) + [root / "rates.py"]:
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert "evaluation" not in node.module, f"{module.name} imports {node.module}"


def test_folder_dataset_loader_requires_identity_folders(tmp_path: Path) -> None:
    (tmp_path / "loose.jpg").write_bytes(b"x")
    with pytest.raises(InvalidParameterException, match="folder-per-identity"):
        load_folders(tmp_path)


def test_ten_fold_protocol_chooses_each_threshold_on_the_other_folds() -> None:
    from faceledger.evaluation.datasets import ImageSet, PairList
    from faceledger.evaluation.verification import lfw_protocol

    # 10 folds x (5 genuine + 5 impostor) pairs; genuine at 0.3, impostor at 0.8, except one
    # genuine pair per fold at 0.9: every fold then scores 9/10 whatever the threshold.
    n_folds, per = 10, 5
    same, fold, d = [], [], []
    for f in range(n_folds):
        for i in range(2 * per):
            is_same = i < per
            same.append(is_same)
            fold.append(f)
            d.append(0.9 if (is_same and i == 0) else (0.3 if is_same else 0.8))
    images = ImageSet(Path("."), ["x"], [0], ["x"])
    pl = PairList(images, [0] * len(d), [0] * len(d), same, fold, n_folds)
    res = lfw_protocol(pl, np.array(d), None)
    assert "10-fold" in res["protocol"]
    assert res["fold_accuracy"] == [pytest.approx(0.9)] * 10
    assert res["accuracy"] == pytest.approx(0.9) and res["standard_error"] == pytest.approx(0.0)
    assert all(0.3 < t < 0.8 for t in res["fold_threshold"])


# ---- impostor-only evaluation (sets of distinct people) ----------------------------------------


def test_evaluate_impostors_on_utkface_cells(
    faces_dir: Path, tmp_path: Path, eval_cache: Path
) -> None:
    # Three small cells (20 distinct people each, adults and children mixed): within-group and
    # cross-group rates, the near-duplicate check and the ratio, end to end through the CLI.
    root = tmp_path / "utk"
    for sex, race in (("males", "asian"), ("females", "asian"), ("males", "white")):
        files = sorted((faces_dir / "utkface-balanced" / sex / race).glob("*.jpg"))[:20]
        (root / sex / race).mkdir(parents=True)
        for f in files:
            (root / sex / race / f.name).symlink_to(f)
    out = tmp_path / "imp"
    result = CliRunner().invoke(main, [
        "evaluate", "impostors", str(root), "--utkface", "--by", "sex", "--by", "race",
        "--out", str(out), "--cache", str(eval_cache), "--quiet", "--replicates", "20",
        "--similarity", "99", "--similarity", "99.9", "--duplicate-distance", "0.45",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    imp = json.loads((out / "report.json").read_text())["impostors"]
    assert set(imp["groups"]) == {"male/asian", "female/asian", "male/white"}
    for g in imp["groups"].values():
        n = g["images"]
        assert g["pairs"]["impostor"] == n * (n - 1) // 2  # every pair: distinct people
        for row in g["at_thresholds"]:
            f = row["fmr"]
            assert f["low"] <= f["value"] <= f["high"]
            assert row["promise_broken"] == (f["low"] > row["nominal_fmr"])
    assert len(imp["cross_groups"]) == 3
    assert all(c["pairs"] > 0 for c in imp["cross_groups"])
    assert {c["rate"] for c in imp["comparisons"]} == {"fmr"}
    dup = imp["near_duplicates"]
    assert dup["count"] == len(dup["pairs"]) or len(dup["pairs"]) == 200
    assert all(p["distance"] <= 0.45 for p in dup["pairs"])
    html = (out / "report.html").read_text()
    assert "False-match rates per group" in html and "Possible duplicates" in html
    assert "possible duplicates" in result.output


def test_evaluate_impostors_needs_labels(faces_dir: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["evaluate", "impostors", str(faces_dir / "detection"), "--quiet"])
    assert r.exit_code == 2 and "InvalidParameterException" in r.output and "labels" in r.output


def test_a_group_without_impostor_pairs_is_reported_not_a_traceback() -> None:
    # The defect: `evaluate pairs --labels race.tsv --by race` ended in "ValueError: cannot convert
    # float NaN to integer" when a group had genuine pairs but no impostor pair.
    from faceledger.rates import ClusteredPairs

    cp = ClusteredPairs.from_pairs([0.3, 0.4], [True, True], [0, 1], [0, 1], 2)
    rates = cp.verification_rates(thresholds=[0.5], replicates=10)["at_thresholds"][0]
    assert rates["fmr"] == {"value": None, "low": None, "high": None}
    assert rates["impostor_matches"] == 0
    assert rates["fnmr"]["value"] == 0.0


def test_people_halves_are_disjoint_stable_and_balanced(faces_dir: Path) -> None:
    from faceledger.evaluation.datasets import load_images, people_half, select_half

    images = load_images(faces_dir / "utkface-balanced")
    fit, test = select_half(images, "fit"), select_half(images, "test")
    assert not set(fit.keys) & set(test.keys)
    assert len(fit) + len(test) == len(images)
    assert 0.45 < len(fit) / len(images) < 0.55
    assert people_half("a/1_0_0_x.jpg") == people_half("b/1_0_0_x.jpg")  # by file name only
