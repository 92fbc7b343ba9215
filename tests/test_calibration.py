"""Calibration: the pure scoring functions on synthetic data with known answers, the tail fit on
distributions whose tail is known exactly, the conservative bound (coverage on a population
whose FMR is known, the floor from zero observed pairs), the table's inverse at and below its
floor, and the shipped table (built from real LFW)."""

from __future__ import annotations

import json
import math
from itertools import combinations

import numpy as np
import pytest
from click.testing import CliRunner

from faceledger.calibration import CalibrationTable, load_calibration
from faceledger.calibration.bound import (
    IDENTITY_BOOTSTRAP_FLOOR,
    Z,
    conservative_log10_fmr,
    empirical_upper_bound,
    upper_bound_from_replicates,
)
from faceledger.evaluation.calibrate import json_safe, tail_grid, validate_tail
from faceledger.calibration.tail import (
    TailFit,
    extrapolation_check,
    fit_exponential,
    fit_gpd,
    fit_tail,
)
from faceledger.cli import main
from faceledger import rates as m

# ---- metrics: small cases worked by hand ----------------------------------------------------


def test_fmr_and_fnmr_count_at_or_below_threshold() -> None:
    imp = np.array([0.2, 0.4, 0.4, 0.8])
    gen = np.array([0.1, 0.3, 0.5, np.inf])  # inf: a pair with a failure to enrol
    assert m.fmr_at(imp, [0.1, 0.2, 0.4, 0.9]).tolist() == [0.0, 0.25, 0.75, 1.0]
    assert m.fnmr_at(gen, [0.05, 0.3, 0.6, 10.0]).tolist() == [1.0, 0.5, 0.25, 0.25]


def test_threshold_for_fmr_is_the_kth_smallest_impostor() -> None:
    imp = np.arange(1, 1001, dtype=np.float64) / 1000.0  # 1000 impostor distances
    assert m.threshold_for_fmr(imp, 0.01) == pytest.approx(0.010)
    assert m.fmr_at(imp, [m.threshold_for_fmr(imp, 0.01)])[0] == pytest.approx(0.01)
    assert math.isnan(m.threshold_for_fmr(imp, 1e-4))  # fewer than 1/FMR pairs: not measurable


def test_wilson_interval_known_values() -> None:
    lo, hi = m.wilson_interval(0, 10)
    assert lo[()] == 0.0 and hi[()] == pytest.approx(0.2775, abs=1e-4)
    lo, hi = m.wilson_interval(50, 100)
    assert lo[()] == pytest.approx(0.4038, abs=1e-4) and hi[()] == pytest.approx(0.5962, abs=1e-4)


def test_auc_counts_ordered_pairs_and_half_ties() -> None:
    assert m.auc([0.1, 0.2], [0.15, 0.3]) == pytest.approx(0.75)
    assert m.auc([0.5], [0.5]) == pytest.approx(0.5)
    assert m.auc([0.1, 0.2], [0.3, 0.4]) == 1.0


def test_best_accuracy_threshold_separates_separable_scores() -> None:
    gen, imp = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6, 0.7])
    t = m.best_accuracy_threshold(gen, imp)
    assert 0.3 < t < 0.5
    assert m.accuracy(gen, imp, t) == 1.0
    assert m.accuracy(gen, imp, 0.55) == pytest.approx(5 / 6)


def _brute_force(emb: np.ndarray, ident: np.ndarray) -> tuple[list[float], list[float]]:
    imp, gen = [], []
    for i, j in combinations(range(len(emb)), 2):
        d = float(np.linalg.norm(emb[i] - emb[j]))
        (gen if ident[i] == ident[j] else imp).append(d)
    return sorted(gen), sorted(imp)


def test_all_pairs_match_brute_force_across_chunks() -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(70, 8))
    ident = rng.integers(0, 12, size=70)
    gen, imp = _brute_force(emb, ident)
    got = m.cross_identity_distances(emb, ident, chunk_pairs=150)  # many small blocks
    assert m.count_cross_pairs(ident) == len(imp) == len(got)
    np.testing.assert_allclose(got, imp, atol=1e-5)
    a, b = m.same_identity_pairs(ident)
    np.testing.assert_allclose(np.sort(m.distances_of_pairs(emb, a, b)), gen, atol=1e-9)
    i, j, d = m.cross_identity_pairs_below(emb, ident, 3.0, chunk_pairs=150)
    assert len(d) == sum(x <= 3.0 for x in imp) and np.all(ident[i] != ident[j]) and np.all(i < j)


def test_failed_enrolment_rows_never_match() -> None:
    emb = np.array([[0.0, 0.0], [0.0, 0.1], [np.nan, np.nan], [1.0, 1.0]])
    ident = np.array([0, 0, 0, 1])
    pairs = m.ClusteredPairs.from_embeddings(emb, ident, max_fmr=1.0)
    assert pairs.n_genuine == 3 and pairs.n_impostor == 3
    assert np.isinf(pairs.genuine).sum() == 2  # both genuine pairs with the failed image
    assert pairs.fnmr([0.5])[0] == pytest.approx(2 / 3)
    assert pairs.fmr([100.0])[0] == pytest.approx(2 / 3)  # the failed image never matches


def test_clustered_intervals_contain_estimate_and_exceed_naive_when_people_differ() -> None:
    # People differ in how alike their photos are: the clustered interval must be wider than
    # the binomial one that pretends every genuine pair is independent.
    rng = np.random.default_rng(7)
    ids = np.repeat(np.arange(60), 6)
    spread = rng.uniform(0.05, 0.6, size=60)[ids]
    centres = rng.normal(size=(60, 16))[ids]
    emb = centres + rng.normal(size=(len(ids), 16)) * spread[:, None]
    pairs = m.ClusteredPairs.from_embeddings(emb, ids, max_fmr=0.2)
    t = float(np.median(pairs.genuine))
    rates = pairs.verification_rates(thresholds=[t], fmr_targets=[0.01], replicates=300)
    row = rates["at_thresholds"][0]
    fnmr = row["fnmr"]
    assert isinstance(fnmr, dict)
    assert fnmr["low"] <= fnmr["value"] <= fnmr["high"]
    naive_lo, naive_hi = m.wilson_interval(row["genuine_misses"], pairs.n_genuine)
    assert fnmr["high"] - fnmr["low"] > 1.5 * float(naive_hi - naive_lo)
    tar = rates["at_fmr"][0]["tar"]
    assert isinstance(tar, dict) and tar["low"] <= tar["value"] <= tar["high"]


def test_pair_list_bootstrap_matches_point_estimates() -> None:
    d = np.array([0.1, 0.2, 0.7, 0.3, 0.8, 0.9])
    same = np.array([True, True, True, False, False, False])
    pairs = m.ClusteredPairs.from_pairs(d, same, [0, 1, 2, 0, 1, 2], [0, 1, 2, 1, 2, 0], 3)
    rates = pairs.verification_rates(thresholds=[0.5], replicates=50)
    row = rates["at_thresholds"][0]
    assert row["fmr"] == {
        "value": pytest.approx(1 / 3),
        "low": pytest.approx(row["fmr"]["low"]),
        "high": pytest.approx(row["fmr"]["high"]),
    }  # type: ignore[index]
    assert row["impostor_matches"] == 1 and row["genuine_misses"] == 1


# ---- tail fit: distributions whose lower tail is known -----------------------------------


def test_gpd_recovers_a_power_law_tail() -> None:
    # D = sqrt(U): P(D <= d) = d^2 exactly, a bounded tail with xi = -1/2.
    rng = np.random.default_rng(11)
    d = np.sort(np.sqrt(rng.random(1_000_000)))
    fit = fit_gpd(d, 1000)
    assert -0.65 < fit.xi < -0.35 and fit.xi_low <= fit.xi <= fit.xi_high
    for x in (0.01, 0.003):  # FMR 1e-4 and 9e-6: beyond most of the 1,000 excesses
        assert float(fit.log10_fmr([x])[0]) == pytest.approx(math.log10(x * x), abs=0.3)


def test_gpd_and_exponential_agree_on_a_log_linear_tail() -> None:
    # D = 3 + ln(U)/20: P(D <= d) = exp(20 (d - 3)), exactly log-linear (xi = 0, sigma = 1/20).
    rng = np.random.default_rng(12)
    d = np.sort(3.0 + np.log(rng.random(1_000_000)) / 20.0)
    gpd, expo = fit_tail(d, 1000, "gpd"), fit_exponential(d, 1000)
    # xi's standard error with 1,000 excesses is ~0.03: allow four of them.
    assert abs(gpd.xi) < 0.13 and gpd.xi_low <= gpd.xi <= gpd.xi_high
    assert expo.sigma == pytest.approx(0.05, rel=0.1)
    x = 3.0 + math.log(1e-8) / 20.0  # FMR 1e-8, two decades past the data
    assert float(expo.log10_fmr([x])[0]) == pytest.approx(-8.0, abs=0.3)
    assert float(gpd.log10_fmr([x])[0]) == pytest.approx(-8.0, abs=1.5)
    rows = extrapolation_check(expo, d[::2], ranks=(1, 10))  # half the data held out
    assert all(0.2 < r["expected"] / r["observed"] < 5.0 for r in rows if r["rank"] == 10)


def test_tail_grid_splices_fit_below_u_and_never_decreases() -> None:
    rng = np.random.default_rng(5)
    imp = np.sort(np.sqrt(rng.random(200_000)))
    fit = fit_gpd(imp, 200)
    grid = np.arange(0.0, 1.2, 0.002)
    lf = tail_grid(fit, imp, grid)
    assert np.all(np.diff(lf) >= 0) and lf[-1] == 0.0 and lf.min() >= -12.0
    above = grid >= fit.u
    np.testing.assert_allclose(
        lf[above][:-10], np.log10(m.fmr_at(imp, grid[above][:-10])), atol=1e-12
    )


def test_json_safe_replaces_non_finite_numbers() -> None:
    assert json.dumps(json_safe({"a": [1.0, math.nan], "b": {"c": math.inf}})) == (
        '{"a": [1.0, null], "b": {"c": null}}'
    )


# ---- the conservative bound ------------------------------------------------------------------


def _people(
    rng: np.random.Generator, n_ids: int, per_id: int, dim: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic templates where people differ: some lie in a crowded region of the space
    (look like many others), as LFW's "wolves" do, so impostor pairs are clustered by person."""
    crowded = rng.random(n_ids) < 0.15
    centres = rng.normal(size=(n_ids, dim)) * np.where(crowded, 0.35, 1.0)[:, None]
    ids = np.repeat(np.arange(n_ids), per_id)
    return centres[ids] + rng.normal(size=(len(ids), dim)) * 0.25, ids


def test_bound_covers_the_population_fmr_where_point_estimates_do_not() -> None:
    # The population's FMR at a distance is measured on 2,000 people (2.6M impostor pairs);
    # 20 samples of 80 people each (29k pairs) must put their 95% bound above it nearly always,
    # while their plain point estimate falls below it about half the time.
    rng = np.random.default_rng(21)
    emb, ids = _people(rng, 2000, 2)
    population = m.cross_identity_distances(emb, ids)
    d = float(population[int(3e-3 * len(population))])  # population FMR 3e-3
    true_fmr = float(m.fmr_at(population, [d])[0])
    grid = np.array([0.0, d, 10.0])
    covered = below = 0
    for _ in range(20):
        pick = rng.choice(2000, 80, replace=False)
        rows = np.isin(ids, pick)
        pairs = m.ClusteredPairs.from_embeddings(emb[rows], ids[rows], max_fmr=0.05)
        bound = empirical_upper_bound(pairs, grid, replicates=100, seed=1)
        covered += bool(bound.upper[1] >= true_fmr)
        below += bool(pairs.fmr([d])[0] < true_fmr)
        assert bound.upper[1] >= pairs.fmr([d])[0]  # a bound, never below the estimate
    assert covered >= 18, covered
    assert below >= 5, below  # the point estimate alone would not keep the promise


def test_floor_is_the_zero_event_wilson_bound_with_the_effective_sample_size() -> None:
    # Impostor distances all above 0.5: below that nothing was observed. With independent
    # replicates the measured design effect is ~1, so the tail keeps the identity bootstrap's
    # floor of 3 and n_eff = n / 3.
    rng = np.random.default_rng(4)
    imp = np.sort(rng.uniform(0.5, 1.5, 60_000))
    grid = np.round(np.arange(0.0, 1.6, 0.01), 6)
    p = m.fmr_at(imp, grid)
    boot = rng.binomial(len(imp), p, size=(300, len(grid))) / len(imp)
    b = upper_bound_from_replicates(grid, imp, boot)
    assert b.design_effect_tail == IDENTITY_BOOTSTRAP_FLOOR
    n_eff = len(imp) / IDENTITY_BOOTSTRAP_FLOOR
    assert b.lowest_credible_fmr == pytest.approx(Z * Z / (n_eff + Z * Z))
    assert 3.0 / n_eff < b.lowest_credible_fmr < 4.0 / n_eff  # rule-of-three style
    up = b.upper
    assert np.all(up[grid < 0.5] == pytest.approx(b.lowest_credible_fmr))
    assert np.all(np.diff(up) >= 0) and np.all(up >= p) and up[-1] == pytest.approx(1.0)


def test_design_effect_is_measured_from_clustered_replicates_and_held_in_the_tail() -> None:
    # Replicates whose variance is 8x binomial (pairs clustered by person): the bound widens
    # accordingly where there are pairs, and the tail keeps the largest design effect seen
    # at 30 or fewer pairs.
    rng = np.random.default_rng(5)
    n = 1_000_000
    imp = np.sort(0.3 + rng.random(n) ** (1 / 3))  # FMR = (d - 0.3)^3: a sparse lower tail
    grid = np.round(np.arange(0.0, 1.4, 0.001), 6)
    p = m.fmr_at(imp, grid)
    assert 5 <= int(((p * n >= 1) & (p * n <= 30)).sum())  # grid points with 1..30 pairs
    boot = p + rng.normal(size=(400, len(grid))) * np.sqrt(8 * p * (1 - p) / n)
    b = upper_bound_from_replicates(grid, imp, boot)
    assert 5.0 < b.design_effect_tail < 14.0
    i = int(np.searchsorted(p, 1e-3))
    assert 6.0 < b.design_effect[i] < 11.0
    naive_half = Z * math.sqrt(p[i] * (1 - p[i]) / n)
    assert b.upper[i] - p[i] > 2.0 * naive_half  # sqrt(8) wider than the naive interval
    assert b.lowest_credible_fmr == pytest.approx(Z * Z / (n / b.design_effect_tail + Z * Z))


def test_conservative_curve_takes_the_tail_fit_where_it_is_higher() -> None:
    rng = np.random.default_rng(6)
    imp = np.sort(rng.uniform(0.5, 1.5, 100_000))
    grid = np.round(np.arange(0.0, 1.6, 0.01), 6)
    p = m.fmr_at(imp, grid)
    b = upper_bound_from_replicates(grid, imp, rng.binomial(len(imp), p, (100, len(grid))) / 1e5)
    # A heavy fitted tail (FMR 1e-2 at u = 0.6, falling only tenfold per 0.23 of distance).
    heavy = TailFit("exponential", u=0.6, k=1000, n=100_000, sigma=0.1, xi=0.0)
    lf, fit_binds = conservative_log10_fmr(b, heavy, math.log10(b.lowest_credible_fmr))
    assert fit_binds[(grid > 0.2) & (grid < 0.5)].all()
    inside = (grid > 0.2) & (grid < 0.5)
    np.testing.assert_allclose(lf[inside], heavy.log10_fmr(grid[inside]), atol=1e-12)
    assert np.all(np.diff(lf) >= 0) and lf.min() >= math.log10(b.lowest_credible_fmr) - 1e-12
    # A light fit never lowers the bound.
    light = TailFit("exponential", u=0.6, k=1000, n=100_000, sigma=0.01, xi=0.0)
    lf2, binds2 = conservative_log10_fmr(b, light, math.log10(b.lowest_credible_fmr))
    assert not binds2[grid < 0.55].any()
    np.testing.assert_allclose(lf2, np.maximum.accumulate(np.log10(b.upper)), atol=1e-12)


def test_held_out_validation_compares_fit_and_bound_on_disjoint_people() -> None:
    rng = np.random.default_rng(8)
    emb, ids = _people(rng, 400, 3)
    grid = np.round(np.arange(0.0, 6.0, 0.01), 6)
    v = validate_tail(
        emb, ids, tail_fmr=1e-2, distance=grid, splits=2, replicates=50, ranks=(1, 10, 100)
    )
    curves = v["by_curve"]
    assert set(curves) == {"gpd fit", "exponential fit", "shipped bound"}
    for c in curves.values():
        assert set(c["by_rank"]) == {"1", "10", "100"}
        assert all(r["splits"] == 2 for r in c["by_rank"].values())
    # The bound predicts at least as many held-out false matches as the plain fit rule.
    assert (
        curves["shipped bound"]["mean_log10_expected_over_observed"]
        >= curves["exponential fit"]["mean_log10_expected_over_observed"]
    )
    assert len(v["lowest_credible_fmr_of_fit_share"]) == 2


# ---- the table's inverse at and below its floor -----------------------------------------------


def _table(log10_fmr: list[float]) -> CalibrationTable:
    d = [0.1 * i for i in range(len(log10_fmr))]
    return CalibrationTable.from_dict({
        "model_version": "test", "distance": d, "log10_fmr": log10_fmr,
        "fnmr": [1.0 - i / (len(d) - 1) for i in range(len(d))],
    })  # fmt: skip


def test_distance_for_fmr_below_the_floor_is_where_the_floor_ends() -> None:
    t = _table([-6, -6, -6, -5, -4, -4, -3, -2, -1, 0])
    assert t.lowest_credible_fmr == pytest.approx(1e-6)
    assert t.floor_distance == pytest.approx(0.2)
    assert t.distance_for_fmr(1e-9) == pytest.approx(0.2)  # not 0: the floor's far end
    assert t.distance_for_fmr(1e-6) == pytest.approx(0.2)
    assert not t.is_credible(1e-7) and t.is_credible(1e-6) and t.is_credible(1e-3)
    # Between grid points: log-linear, the largest distance whose FMR does not exceed the target.
    assert t.distance_for_fmr(10**-5.5) == pytest.approx(0.25)
    assert t.distance_for_fmr(1e-4) == pytest.approx(0.5)  # end of an interior plateau
    assert t.distance_for_fmr(10**-3.5) == pytest.approx(0.55)
    assert t.distance_for_fmr(1.0) == pytest.approx(0.9)
    for f in (1e-6, 3e-6, 1e-5, 1e-4, 2e-4, 1e-2, 0.5):
        assert float(t.fmr(t.distance_for_fmr(f))) == pytest.approx(f, rel=1e-9)
    assert float(t.fmr(t.distance_for_fmr(1e-8))) == pytest.approx(1e-6)  # the floor, not 1e-8
    assert t.similarity(0.0) == pytest.approx(100 * (1 - 1e-6))  # never more than this


def test_table_needs_a_grid() -> None:
    with pytest.raises(ValueError):
        CalibrationTable.from_dict(
            {"model_version": "x", "distance": [0.0], "log10_fmr": [0.0], "fnmr": [0.0]}
        )


# ---- the shipped table (measured on real LFW by `faceledger calibration build`) -----------


def test_shipped_table_is_consistent_and_documented() -> None:
    table = load_calibration("1.0")
    p = table.provenance
    assert p["format"] == 3  # normalised, and covering every measured group
    assert p["dataset"]["images"] == 4992 and p["dataset"]["identities"] == 3095
    assert p["dataset"]["failures_to_enrol"] == len(p["dataset"]["failed_images"])
    assert p["pairs"]["impostor"] > 12_000_000 and p["pairs"]["genuine"] > 3000
    assert np.all(np.diff(table.log10_fmr) >= 0) and np.all(np.diff(table.fnmr) <= 1e-12)
    # Scores are normalised distances: same order as raw ones (dlib's 0.6 sat near FMR 1e-2).
    assert 0.2 < table.distance_for_fmr(1e-3) < 0.6
    # Similarity threshold S means FMR 1 - S/100, and round-trips through distance.
    for fmr in (1e-2, 1e-3, 1e-4, 1e-5):
        d = table.distance_for_fmr(fmr)
        assert float(table.fmr(d)) == pytest.approx(fmr, rel=1e-6)
        assert table.distance_for_similarity(100 * (1 - fmr)) == pytest.approx(d)
    # The table is a bound: at each summary row's distance it is at or above the upper end of
    # LFW's 95% interval (far above it: the table is moved to cover the worst measured group).
    for row in p["summary"]:
        e = row["empirical_fmr_at_distance"]
        assert row["table_fmr"] >= e["value"]
        if row["impostor_pairs_at_or_below"] >= 50:
            assert row["table_fmr"] >= e["high"]


def test_shipped_table_covers_every_measured_group() -> None:
    table = load_calibration("1.0")
    cov = table.provenance["coverage"]
    groups = {g["group"]: g for g in cov["groups"]}
    # Ten sex x race cells, adults and children each: every one covered, directly or pooled.
    assert len(groups) == 20 and set(cov["covered"]) == set(groups) and not cov["not_covered"]
    measured = [g for g in groups.values() if g["measured"]]
    pooled = {g["group"]: g for g in cov["pooled_groups"]}
    # The table moves by the largest shift any covered group needs, no more.
    needed = [g["shift"] for g in measured] + [
        pooled[g["covered_through"]]["shift"] for g in groups.values() if g["covered_through"]
    ]
    assert cov["shift"] == pytest.approx(max(needed))
    assert all(g["covered_through"] for g in groups.values() if not g["measured"])
    # The normalisation ships as a model of 129 numbers fitted on the reference half, no templates.
    norm = table.normaliser
    assert norm is not None and norm.weights.shape == (128,)
    assert norm.provenance["reference"]["images"] > 900
    assert "test" in norm.provenance["reference"]["name"]  # says which half it never saw
    # The CLI says whom the promise covers, at each threshold the table checked, and lists them.
    out = CliRunner().invoke(main, ["calibration", "--model", "1.0"]).output
    for sim in ("99.9", "99.99", "99.999"):
        assert (f"At Similarity {sim} (false-match rate at most" in out
                and "covered (checked on the people it was fitted on only) for all 20 groups "
                "measured" in out.split(f"At Similarity {sim} ")[1].split("\n")[0])
    assert "male/asian/adult" in out


def test_shipped_table_never_claims_less_than_lfw_can_show() -> None:
    table = load_calibration("1.0")
    p = table.provenance
    n = p["pairs"]["impostor"]
    lowest = table.lowest_credible_fmr
    assert lowest == pytest.approx(p["lowest_credible_fmr"])
    # The floor is the zero-event bound with the effective sample size the build measured,
    # and sits far above what 12 million independent pairs would allow (3/n).
    n_eff = p["bound"]["n_eff_tail"]
    assert n_eff == pytest.approx(n / p["bound"]["design_effect_tail"], rel=1e-3)
    assert lowest == pytest.approx(Z * Z / (n_eff + Z * Z), rel=1e-4)
    assert lowest > 3.0 / n
    # No distance, however small, is claimed to be rarer than that.
    assert float(table.fmr(0.0)) == pytest.approx(lowest)
    assert table.floor_distance < p["pairs"]["impostor_min_distance"]
    assert table.distance_for_fmr(lowest / 100) == table.floor_distance
    # In sample, the table is at or above the empirical FMR at every checked rank: the
    # closest impostor pair (d = 0.215) that the old fit put at 1e-8.9 included.
    for row in p["tail"]["in_sample_check"]:
        assert row["table_log10_fmr"] >= row["observed_log10_fmr"]
    assert p["tail"]["in_sample_check"][0]["fit_log10_fmr"] < -8.5  # the old claim
    # Held out: fitted on 30% of the people, the plain exponential fit predicts too few false
    # matches on the rest; the shipped bound, built the same way, does not on average.
    v = p["tail_validation"]["by_curve"]
    assert v["exponential fit"]["mean_log10_expected_over_observed"] < 0
    assert v["shipped bound"]["mean_log10_expected_over_observed"] > 0
    for rank, r in v["shipped bound"]["by_rank"].items():
        assert r["mean_log10_expected_over_observed"] > 0, rank


def test_calibration_command_prints_the_table() -> None:
    result = CliRunner().invoke(main, ["calibration"])
    assert result.exit_code == 0, result.output
    assert "99.99" in result.output and "1e-04" in result.output
    assert "Lowest credible FMR" in result.output
    data = json.loads(
        CliRunner().invoke(main, ["calibration", "--model", "1.0", "--json"]).output
    )
    rows = {r["fmr"]: r for r in data["rows"]}
    assert set(rows) >= {1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6}
    d = [rows[f]["distance"] for f in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)]
    assert d == sorted(d, reverse=True)  # stricter FMR, smaller distance (or the floor)
    assert data["model_version"] == "1.0"
    assert data["provenance"]["lowest_credible_fmr"] > 0


def test_calibration_build_rejects_a_missing_dataset(tmp_path: object) -> None:
    result = CliRunner().invoke(main, ["calibration", "build", "--lfw", "/nonexistent/lfw"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


# ---- score normalisation and group coverage (pure) ---------------------------------------------


def test_normaliser_is_a_label_free_linear_density_model() -> None:
    from faceledger.calibration.normalise import ScoreNormaliser, fit_normaliser, local_density

    rng = np.random.default_rng(0)
    # Two populations: one packed tightly (small distances between different people), one spread.
    tight = rng.normal(0.0, 0.02, size=(150, 8)) + np.array([1.0] + [0.0] * 7)
    loose = rng.normal(0.0, 0.06, size=(150, 8)) - np.array([1.0] + [0.0] * 7)
    cohort = np.vstack([tight, loose])
    norm = fit_normaliser(cohort, k=10, ridge=1e-3)
    mu = local_density(cohort, cohort, 10, self_in_cohort=True)
    assert norm.provenance["r2_in_sample"] > 0.8
    h = norm.half_offsets(cohort)
    assert h[:150].mean() < 0 < h[150:].mean()  # tight faces must be closer to match
    assert abs(float(h.mean())) < 0.01  # centred: the scale stays where it was
    # Distances within each population, after normalisation, are nearer to one another's.
    d_t = np.linalg.norm(tight[0] - tight[1])
    d_l = np.linalg.norm(loose[0] - loose[1])
    n_t = norm.normalise(d_t, h[0], h[1])
    n_l = norm.normalise(d_l, h[150], h[151])
    assert abs(n_t - n_l) < abs(d_t - d_l)
    # Round trip through the table JSON; NaN rows (failures to enrol) stay NaN.
    again = ScoreNormaliser.from_dict(json.loads(json.dumps(norm.as_dict())))
    np.testing.assert_allclose(again.half_offsets(cohort), h)
    assert np.isnan(norm.half_offsets(np.full((1, 8), np.nan))).all()
    assert mu.shape == (300,)


def test_group_shift_moves_the_curve_to_cover_a_denser_group() -> None:
    from faceledger.calibration.bound import upper_bound_from_replicates
    from faceledger.calibration.coverage import group_shift, shifted_curve

    grid = np.round(np.arange(0.0, 1.2, 0.01), 6)
    rng = np.random.default_rng(1)
    reference = np.sort(rng.normal(0.8, 0.1, 400_000))
    # The reference curve: its empirical FMR on the grid (log10, floored).
    ref = np.maximum(np.log10(np.maximum(np.searchsorted(reference, grid, "right"), 1) / 4e5), -6)
    ref = np.maximum.accumulate(ref)
    group = np.sort(rng.normal(0.6, 0.1, 20_000))  # the same shape, 0.2 closer
    boot = np.tile(np.searchsorted(group, grid, "right") / len(group), (20, 1))
    bound = upper_bound_from_replicates(grid, group, boot)
    s = group_shift("dense", 200, bound, grid, ref)
    assert 0.17 < s.shift < 0.26 and s.usable_points > 0
    moved = shifted_curve(grid, ref, s.shift)
    usable = bound.count >= 10
    assert np.all(moved[usable] >= np.log10(bound.upper[usable]) - 0.05)
    # A group no denser than the reference needs no shift; one without data is not measured.
    same = np.sort(rng.normal(0.9, 0.1, 20_000))
    b2 = upper_bound_from_replicates(grid, same, np.tile(np.searchsorted(same, grid, "right") / 2e4, (20, 1)))
    assert group_shift("sparse", 200, b2, grid, ref).shift == 0.0
    few = np.array([1.1, 1.15])
    b3 = upper_bound_from_replicates(grid, few, np.tile(np.searchsorted(few, grid, "right") / 2, (20, 1)))
    assert group_shift("none", 2, b3, grid, ref).usable_points == 0


# ---- one face under two names: reviewed duplicates (pure) --------------------------------------


def test_duplicate_list_joins_images_of_one_person_and_keeps_reviewed_different_pairs() -> None:
    from faceledger.evaluation.duplicates import parse_duplicates

    dups = parse_duplicates(
        ["a\tb\tverdict\tnote", "x.jpg\ty.jpg\tsame-image\tre-crop",
         "sub/y.jpg\tz.jpg\tsame-person\t", "p.jpg\tq.jpg\tdifferent\tunsure: kept"],
        "test",
    )  # fmt: skip
    assert dups.counts() == {"same-image": 1, "same-person": 1, "different": 1}
    keys = ["m/x.jpg", "f/y.jpg", "z.jpg", "p.jpg", "q.jpg"]
    person = dups.clusters(keys)
    # x, y, z are one person (first key's index); a `different` verdict joins nothing
    assert person.tolist() == [0, 0, 0, 3, 4]
    with pytest.raises(Exception, match="verdict"):
        parse_duplicates(["a\tb\tverdict", "x.jpg\ty.jpg\tmaybe"], "bad")


def test_shipped_duplicate_list_is_reviewed_file_names_only() -> None:
    from faceledger.evaluation.duplicates import (
        VERDICTS, merged, parse_duplicates, shipped_duplicates,
    )

    dups = shipped_duplicates()
    assert len(dups.same) >= 39  # the 39 pairs found in utkface-balanced alone, at least
    for p in dups.pairs:
        assert p.verdict in VERDICTS and "/" not in p.a + p.b and p.a != p.b
        assert p.a.endswith(".jpg") and p.b.endswith(".jpg")
    assert len({frozenset((p.a, p.b)) for p in dups.pairs}) == len(dups.pairs)
    # the reviews in order: 2.0's (which 2.0's table was built with, unchanged), then 3.0's,
    # whose rows decide their pairs anew (in either order of the two names)
    first = shipped_duplicates(("utkface-duplicates.tsv",))
    assert first.counts() == {"same-image": 171, "same-person": 338, "different": 141}
    assert "utkface-duplicates-3.0.tsv" in dups.source and len(dups.pairs) > len(first.pairs)
    both = merged([parse_duplicates(["a\tb\tverdict", "x.jpg\ty.jpg\tdifferent"], "one"),
                   parse_duplicates(["a\tb\tverdict", "y.jpg\tx.jpg\tsame-person",
                                     "u.jpg\tv.jpg\tsame-image"], "two")])
    assert [(p.a, p.b, p.verdict) for p in both.pairs] == [
        ("y.jpg", "x.jpg", "same-person"), ("u.jpg", "v.jpg", "same-image")]
    assert both.source == "one + two"


def test_impostor_rates_leave_out_pairs_of_one_person() -> None:
    from faceledger.evaluation.impostors import impostor_rates

    rng = np.random.default_rng(3)
    t = rng.normal(size=(40, 8))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    t[1] = t[0]  # one face under two names
    t[20] = t[19] + 1e-3  # the same across two groups (labelled differently)
    keys = [f"{i}.jpg" for i in range(40)]
    groups = ["a"] * 20 + ["b"] * 20
    th = {"S": 0.01}
    nominal = {"S": 1e-4}
    raw = impostor_rates(t, keys, groups, th, nominal, replicates=20)
    assert raw["groups"]["a"]["at_thresholds"][0]["impostor_matches"] == 1
    person = list(range(40))
    person[1] = 0
    person[20] = 19
    clean = impostor_rates(t, keys, groups, th, nominal, replicates=20, person=person)
    a = clean["groups"]["a"]
    assert a["at_thresholds"][0]["impostor_matches"] == 0
    assert a["pairs"]["impostor"] == 20 * 19 // 2 - 1 and a["people"] == 19
    assert clean["groups"]["b"]["people"] == 20
    cross = clean["cross_groups"][0]
    assert cross["pairs"] == 20 * 20 - 1 and cross["at_thresholds"][0]["impostor_matches"] == 0
    assert clean["near_duplicates"]["count"] == 0 and raw["near_duplicates"]["count"] == 2
    assert clean["near_duplicates"]["joined_images"] == 2


def test_select_half_keeps_a_person_in_one_half() -> None:
    from faceledger.evaluation.datasets import ImageSet, people_half, select_half

    keys = [f"{i}_0_0_x.jpg" for i in range(200)]
    images = ImageSet(__import__("pathlib").Path("."), keys, list(range(200)), keys)
    a, b = next((i, j) for i in range(200) for j in range(200)
                if people_half(keys[i]) == "fit" and people_half(keys[j]) == "test")  # fmt: skip
    person = list(range(200))
    person[b] = a  # b is a's second photo: it goes with a
    fit = select_half(images, "fit", person)
    test = select_half(images, "test", person)
    assert keys[a] in fit.keys and keys[b] in fit.keys and keys[b] not in test.keys
    assert len(fit) + len(test) == 200
    # without the list, the split is today's (file-name hash) split
    assert select_half(images, "test").keys == [k for k in keys if people_half(k) == "test"]


def test_held_out_coverage_marks_each_group_and_threshold() -> None:
    from faceledger.evaluation.calibrate import ReferenceGroups, held_out_coverage

    rng = np.random.default_rng(5)
    grid = np.round(np.arange(0.0, 2.0, 0.01), 6)
    # a table whose FMR 1e-2 threshold lies at distance ~0.9 (random 64-d unit vectors: ~1.41)
    table = CalibrationTable.from_dict({
        "model_version": "t", "distance": grid.tolist(),
        "log10_fmr": np.clip(-2 + 8 * (grid - 0.9), -8, 0).tolist(),
        "fnmr": np.zeros(len(grid)).tolist(),
    })  # fmt: skip

    def people(n: int, spread: float) -> np.ndarray:
        c = rng.normal(size=16)
        x = c + spread * rng.normal(size=(n, 16))
        return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float64)

    big = people(400, 6.0)  # spread out: no pair near 0.9
    tight = people(60, 0.05)  # packed: most pairs closer than any threshold
    few = people(20, 6.0)
    test = np.vstack([big, tight, few])
    groups = ["big"] * 400 + ["tight"] * 60 + ["few"] * 20
    ref = ReferenceGroups(cohort=test, groups=groups, person=np.arange(480), provenance={},
                          test=test, test_groups=groups, test_person=np.arange(480))  # fmt: skip
    out = held_out_coverage(ref, table, cover_children=True, replicates=20, seed=0,
                            fmrs=(1e-2, 1e-4))  # fmt: skip
    status = {g["group"]: [t["status"] for t in g["thresholds"]] for g in out["held_out"]["groups"]}
    # 79,800 pairs show 1e-2 and 1e-4 only if none match; 190 pairs can show neither
    assert status["few"] == ["not shown", "not shown"]
    assert status["tight"] == ["broken", "broken"]
    assert status["big"][0] == "covered"
    by = out["held_out"]["by_threshold"]["99"]
    assert "big" in by["covered"] and by["broken"] == ["tight"] and by["not_shown"] == ["few"]


# ---- the shipped 2.0 and 3.0 tables (measured by `faceledger calibration build`) ------------


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_shipped_table_covers_a_group_only_where_held_out_people_show_it(version: str) -> None:
    table = load_calibration(version)
    p = table.provenance
    assert table.model_version == version and p["format"] == 4
    assert table.normaliser is None  # normalisation not adopted (docs/accuracy.md §0, 3.0)
    assert p["dataset"]["images"] == 4992 and p["pairs"]["impostor"] > 12_000_000
    cov = p["coverage"]
    ref = cov["reference"]
    # both UTKFace folders, the salted split, the reviewed duplicate list
    assert "utkface-more" in ref["name"] and ref["split"] == "salted-sha256"
    assert ref["duplicates"]["same-person"] + ref["duplicates"]["same-image"] >= 39
    assert ref["held_out"]["people"] > 2000 and ref["people"] > 2000
    # the shift is the largest any covered (adult) group's fit people need
    covered = [g for g in cov["groups"] if g["covered"]]
    assert covered and all(g["group"].endswith("/adult") for g in covered)
    assert cov["shift"] == pytest.approx(max(g["shift"] for g in covered))
    held = cov["held_out"]
    assert len(held["groups"]) == 20
    for g in held["groups"]:
        for t in g["thresholds"]:
            high, low = t["fmr"]["high"], t["fmr"]["low"]
            if g["group"].endswith("/child"):
                assert t["status"] == "not covered"  # children: measured, never promised
            elif t["status"] == "covered":
                assert high <= t["promised_fmr"]  # shown on people the fit never saw
            else:
                assert t["status"] in ("not shown", "broken") and high > t["promised_fmr"]
            assert t["status"] != "broken" or low > t["promised_fmr"]
    # no adult group breaks the promise on held-out people at 99.9 or 99.99
    for s in ("99.9", "99.99"):
        assert held["by_threshold"][s]["broken"] == []
    # the default threshold is shown for the groups with enough held-out people, and the CLI
    # says which ones it is not shown for
    assert held["by_threshold"]["99.99"]["covered"]
    out = CliRunner().invoke(main, ["calibration", "--model", version]).output
    assert "not shown" in out and "held-out people" in out and "Children: not covered" in out


def test_console_group_rows_say_per_threshold_where_a_group_is_not_covered() -> None:
    from faceledger.service.oversight import _group_rows

    rows = _group_rows(load_calibration("2.0").provenance["coverage"])
    assert len(rows) == 20

    def status(row: dict[str, Any], similarity: float) -> str:
        return next(str(p["Status"]) for p in row["AtThresholds"] if p["Similarity"] == similarity)

    for r in rows:
        assert r["HeldOut"] and {p["Similarity"] for p in r["AtThresholds"]} >= {99.9, 99.99}
        if r["Group"].endswith("/child"):
            assert status(r, 99.99) != "covered" and not r["Covered"]
    assert any(status(r, 99.99) == "covered" for r in rows)
    assert any(status(r, 99.99) == "not shown" for r in rows)
