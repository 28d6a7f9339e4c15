"""Gao et al.'s over-optimisation fit and the matched-sqrt-KL readout of the study (rrpo_hf.study.overoptimisation,
their aggregation in rrpo_hf.study.statistics and their report sections)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rrpo_hf.study import (
    RM_VARIANTS,
    TABLE2_DOMAINS,
    RewardHackingStudyConfig,
    aggregate,
    fit_gao,
    fit_gao_over_seeds,
    gao_peak,
    gao_reward,
    paired_difference_ci,
    value_at_sqrt_kl,
)
from rrpo_hf.study.report import format_gao_table, format_matched_sqrt_kl_table, plot_overoptimisation, render_report


ALPHA, BETA = 0.8, 0.4  # d* = exp(1) ≈ 2.72, inside the range the synthetic curves reach


# ------------------------------------------------------------------------------------------- the Gao form


@pytest.mark.parametrize("alpha, beta", [(0.8, 0.4), (1.5, 0.2), (0.3, -0.1), (-0.2, 0.5)])
def test_fit_recovers_alpha_and_beta_from_a_noise_free_curve(alpha, beta):
    d = np.array([0.0, 0.3, 0.7, 1.2, 2.0, 3.1])
    fitted = fit_gao(d, gao_reward(d, alpha, beta))
    assert fitted == (pytest.approx(alpha, abs=1e-9), pytest.approx(beta, abs=1e-9))


def test_peak_is_where_the_form_is_largest_and_its_value_is_beta_times_d():
    peak = gao_peak(ALPHA, BETA)
    assert peak == pytest.approx(math.exp(ALPHA / BETA - 1))
    grid = np.linspace(1e-6, 10, 200_001)
    values = gao_reward(grid, ALPHA, BETA)
    assert grid[values.argmax()] == pytest.approx(peak, abs=1e-4)
    assert values.max() == pytest.approx(BETA * peak, rel=1e-8)
    assert gao_peak(ALPHA, 0.0) == math.inf and gao_peak(ALPHA, -0.1) == math.inf  # no turn-down, no peak
    assert math.isnan(gao_peak(float("nan"), BETA))
    assert gao_reward([0.0], ALPHA, BETA)[0] == 0.0  # the gain over the initial policy starts at 0
    with pytest.raises(ValueError, match="negative"):
        gao_reward([-0.1], ALPHA, BETA)


def test_a_fit_needs_two_distinct_nonzero_distances():
    assert all(math.isnan(v) for v in fit_gao([0.0, 1.0, 1.0], [0.0, 0.5, 0.5]))
    assert all(math.isnan(v) for v in fit_gao([0.0], [0.0]))
    # non-finite points are dropped, not propagated
    d = np.array([0.5, 1.0, float("nan"), 2.0])
    assert fit_gao(d, gao_reward(np.nan_to_num(d), ALPHA, BETA)) == (pytest.approx(ALPHA), pytest.approx(BETA))


def _synthetic_seeds(rng, num_seeds=15, point_noise=0.05, alpha_spread=0.1):
    """One curve per seed: 12 evaluations along a trajectory of its own speed, the seed's own α around ALPHA (seeds
    differ), and noise on every evaluation; d = 0 at step 0, where the gain is 0 by construction."""
    curves = []
    for _ in range(num_seeds):
        d = np.abs(np.linspace(0.0, 3.0 * rng.uniform(0.6, 1.4), 13) + np.r_[0.0, rng.normal(0, 0.02, 12)])
        gain = gao_reward(d, ALPHA + rng.normal(0, alpha_spread), BETA) + np.r_[0.0, rng.normal(0, point_noise, 12)]
        curves.append((d, gain))
    return curves


def test_noise_free_seeds_give_the_truth_and_intervals_that_hold_it():
    curves = _synthetic_seeds(np.random.default_rng(0), num_seeds=5, point_noise=0.0, alpha_spread=0.0)
    fit = fit_gao_over_seeds(curves)
    truth = {"alpha": ALPHA, "beta": BETA, "peak_sqrt_kl": math.e, "peak_gain": BETA * math.e}
    for key, value in truth.items():
        assert fit[key] == pytest.approx(value, rel=1e-9)
        low, high = fit[f"{key}_interval"]
        assert low - 1e-9 <= value <= high + 1e-9 and high - low < 1e-8  # every resample fits the same curve
    assert fit["num_seeds"] == 5 and fit["num_points"] == 60 and fit["rmse"] == pytest.approx(0.0, abs=1e-12)
    assert fit["max_sqrt_kl"] == pytest.approx(max(d.max() for d, _ in curves))


def test_noisy_seeds_give_intervals_that_cover_the_truth():
    rng = np.random.default_rng(1)
    fit = fit_gao_over_seeds(_synthetic_seeds(rng))
    for key, value in (("alpha", ALPHA), ("beta", BETA), ("peak_sqrt_kl", math.e)):
        low, high = fit[f"{key}_interval"]
        assert low < fit[key] < high and low <= value <= high, (key, fit)
    # Over 200 synthetic 15-seed studies the 95% intervals cover the truth about as often as claimed (measured:
    # 0.94 for α, 0.91 for β, 0.88 for d*; a seed bootstrap is somewhat too narrow with 15 seeds).
    covered = {"alpha": 0, "beta": 0, "peak_sqrt_kl": 0}
    for _ in range(200):
        fit = fit_gao_over_seeds(_synthetic_seeds(rng))
        for key, value in (("alpha", ALPHA), ("beta", BETA), ("peak_sqrt_kl", math.e)):
            low, high = fit[f"{key}_interval"]
            covered[key] += low <= value <= high
    assert min(covered.values()) / 200 >= 0.84, covered
    assert max(covered.values()) / 200 <= 0.99, covered  # not so wide that it says nothing


def test_bootstrap_is_seeded_and_one_seed_has_no_interval():
    curves = _synthetic_seeds(np.random.default_rng(2), num_seeds=6)
    assert fit_gao_over_seeds(curves) == fit_gao_over_seeds(curves)
    assert (
        fit_gao_over_seeds(curves, bootstrap_seed=1)["alpha_interval"] != fit_gao_over_seeds(curves)["alpha_interval"]
    )
    wider = fit_gao_over_seeds(curves, confidence=0.99)["alpha_interval"]
    narrower = fit_gao_over_seeds(curves, confidence=0.8)["alpha_interval"]
    assert wider[0] <= narrower[0] and narrower[1] <= wider[1]
    for few in (curves[:1], curves[:4]):  # fewer than MIN_BOOTSTRAP_SEEDS: a fit, no interval
        fit = fit_gao_over_seeds(few)
        assert math.isfinite(fit["alpha"]) and all(math.isnan(v) for v in fit["alpha_interval"])
    row = format_gao_table({"gao_fits": {"DiffRO": fit_gao_over_seeds(curves[:1])}}).splitlines()[2]
    assert row.startswith("| DiffRO | ") and "[" not in row  # bare values in the table
    with pytest.raises(ValueError, match="confidence"):
        fit_gao_over_seeds(curves, confidence=1.0)


def test_a_curve_that_never_turns_down_has_no_peak():
    d = np.linspace(0, 3, 10)
    curves = [(d, gao_reward(d, 0.5, -0.05 * (1 + k % 2))) for k in range(5)]
    fit = fit_gao_over_seeds(curves)
    assert fit["beta"] < 0 and fit["peak_sqrt_kl"] == math.inf and fit["peak_gain"] == math.inf
    assert fit["peak_sqrt_kl_interval"] == (math.inf, math.inf)


# ------------------------------------------------------------------------------------------- matched sqrt KL


def test_value_at_sqrt_kl_interpolates_linearly_between_evaluations():
    d = [0.0, 0.4, 1.0, 1.6]
    values = [3.0, 3.5, 2.9, 2.0]
    # by hand: 0.7 lies halfway between 0.4 and 1.0, so halfway between 3.5 and 2.9
    assert value_at_sqrt_kl(d, values, 0.7) == pytest.approx(3.2)
    # 1.45 is 3/4 of the way from 1.0 to 1.6: 2.9 + 0.75 · (2.0 − 2.9)
    assert value_at_sqrt_kl(d, values, 1.45) == pytest.approx(2.225)
    assert value_at_sqrt_kl(d, values, 0.4) == 3.5 and value_at_sqrt_kl(d, values, 0.0) == 3.0
    assert math.isnan(value_at_sqrt_kl(d, values, 1.7))  # never reached: no extrapolation


def test_value_at_sqrt_kl_takes_the_first_crossing_of_a_curve_whose_kl_falls_back():
    d = [0.0, 1.0, 0.5, 2.0]
    values = [1.0, 2.0, 10.0, 20.0]
    # 0.75 is crossed first between the first two evaluations (0 -> 1): 1 + 0.75 · 1
    assert value_at_sqrt_kl(d, values, 0.75) == pytest.approx(1.75)
    # 1.5 only on the last segment (0.5 -> 2): 10 + (1/1.5) · 10
    assert value_at_sqrt_kl(d, values, 1.5) == pytest.approx(10 + 10 / 1.5)


def _curve(sqrt_kl, gold, emotion, naturalness):
    return [
        {
            "step": 5 * i,
            "sqrt_kl_to_reference": d,
            "oracle_gold_score": g,
            "oracle_emotion_score": e,
            "oracle_naturalness": n,
            # the rest of Table 1's columns, constant: the paired tables need them
            "reward": -1.0,
            "rm_accuracy": 0.5,
            "oracle_cer": 0.1,
            "oracle_artifact_rate": 0.0,
        }
        for i, (d, g, e, n) in enumerate(zip(sqrt_kl, gold, emotion, naturalness))
    ]


def _seed_run(seed, policies):
    table2 = {v: {d: {"wa": 0.9, "ua": 0.8} for d in TABLE2_DOMAINS} for v in RM_VARIANTS}
    runs = {}
    for method, curve in policies.items():
        runs[method] = {"curve": curve, "start": curve[0], "final": curve[-1]}
    return {"seed": seed, "table2": table2, "probes": {v: {} for v in RM_VARIANTS}, "policies": runs}


def _two_seed_study():
    """DiffRO moves fast (to sqrt KL 3 and 2.5), RRPO slowly (to 1.2 and 1.5): the matched point is 1.2."""
    diffro = [
        _curve([0.0, 1.0, 3.0], [3.0, 3.6, 2.6], [3.0, 3.8, 4.6], [4.0, 3.8, 1.6]),
        _curve([0.0, 0.5, 2.5], [3.2, 3.4, 3.0], [3.1, 3.5, 4.3], [4.1, 4.0, 2.1]),
    ]
    rrpo = [
        _curve([0.0, 0.6, 1.2], [3.0, 3.3, 3.7], [3.0, 3.4, 3.9], [4.0, 4.0, 3.9]),
        _curve([0.0, 1.5, 1.5], [3.2, 3.5, 3.6], [3.1, 3.9, 4.0], [4.1, 3.9, 3.9]),
    ]
    return [_seed_run(s, {"DiffRO": diffro[s], "RRPO": rrpo[s]}) for s in range(2)]


def test_matched_sqrt_kl_differences_read_every_seed_at_the_largest_common_distance():
    config = RewardHackingStudyConfig(seeds=[0, 1], policy_methods=["DiffRO", "RRPO"], beta_sweep=[])
    summary = aggregate(config, _two_seed_study())
    entry = summary["matched_sqrt_kl"]["RRPO − DiffRO"]
    assert list(summary["matched_sqrt_kl"]) == ["RRPO − DiffRO"]
    assert entry["sqrt_kl"] == pytest.approx(1.2)  # min over seeds and methods of the largest sqrt KL reached
    # By hand, at d = 1.2. DiffRO seed 0: 0.2/2 of the way from d 1 to 3; seed 1: 0.7/2 of the way from 0.5 to 2.5.
    # RRPO seed 0: its last point; seed 1: 1.2/1.5 of the way from 0 to 1.5.
    hand = {
        "oracle_gold_score": ([3.7, 3.2 + 0.8 * 0.3], [3.6 - 0.1, 3.4 - 0.35 * 0.4]),
        "oracle_emotion_score": ([3.9, 3.1 + 0.8 * 0.8], [3.8 + 0.1 * 0.8, 3.5 + 0.35 * 0.8]),
        "oracle_naturalness": ([3.9, 4.1 - 0.8 * 0.2], [3.8 - 0.1 * 2.2, 4.0 - 0.35 * 1.9]),
    }
    for key, (rrpo, diffro) in hand.items():
        mean, half_width, n = paired_difference_ci(rrpo, diffro)
        assert entry[key]["mean"] == pytest.approx(mean) and entry[key]["half_width"] == pytest.approx(half_width)
        assert entry[key]["n"] == n == 2
        assert entry[key]["treatment"] == pytest.approx(np.mean(rrpo))
        assert entry[key]["control"] == pytest.approx(np.mean(diffro))
    # at matched steps (the end of training) RRPO looks far better on naturalness; at matched sqrt KL less so
    at_steps = summary["paired"]["RRPO − DiffRO"]["oracle_naturalness"]["mean"]
    assert at_steps > entry["oracle_naturalness"]["mean"] > 0

    table = format_matched_sqrt_kl_table(summary)
    assert f"| RRPO − DiffRO | 1.20 | {entry['oracle_gold_score']['mean']:+.3f} ± " in table
    assert "n = 2" in table and "largest sqrt KL both methods reach" in table


def test_no_matched_readout_without_diffro_or_kl():
    config = RewardHackingStudyConfig(seeds=[0, 1], policy_methods=["DiffRO", "RRPO"], beta_sweep=[])
    runs = _two_seed_study()
    for run in runs:
        for point in run["policies"]["RRPO"]["curve"]:
            del point["sqrt_kl_to_reference"]  # results written before the KL was logged
    summary = aggregate(config, runs)
    assert summary["matched_sqrt_kl"] == {} and list(summary["gao_fits"]) == ["DiffRO"]
    assert "no matched-sqrt-KL" in format_matched_sqrt_kl_table(summary)


# ------------------------------------------------------------------------------------------- aggregation, report


def _gao_study(num_seeds=6):
    """Curves that follow the Gao form exactly (DiffRO: α 0.8, β 0.4; RRPO: α 0.5, β -0.05) from seed-specific
    gold starts and speeds, with E and N alongside."""
    rng = np.random.default_rng(3)
    runs = []
    for seed in range(num_seeds):
        policies = {}
        for method, (alpha, beta) in {"DiffRO": (ALPHA, BETA), "RRPO": (0.5, -0.05)}.items():
            d = np.linspace(0.0, 3.5 * rng.uniform(0.8, 1.2), 8)
            start = 3.0 + 0.1 * seed
            gold = start + gao_reward(d, alpha, beta)
            policies[method] = _curve(d, gold, gold + 0.5, gold - 0.5)
        runs.append(_seed_run(seed, policies))
    return runs


def test_aggregate_fits_each_method_and_the_report_prints_and_plots_the_fit(tmp_path):
    config = RewardHackingStudyConfig(
        seeds=list(range(6)), policy_methods=["DiffRO", "RRPO"], beta_sweep=[], output_dir=str(tmp_path)
    )
    per_seed = _gao_study()
    summary = aggregate(config, per_seed)
    fits = summary["gao_fits"]
    assert fits["DiffRO"]["alpha"] == pytest.approx(ALPHA) and fits["DiffRO"]["beta"] == pytest.approx(BETA)
    assert fits["DiffRO"]["peak_sqrt_kl"] == pytest.approx(math.e)
    assert fits["RRPO"]["beta"] == pytest.approx(-0.05) and fits["RRPO"]["peak_sqrt_kl"] == math.inf

    table = format_gao_table(summary)
    assert "| DiffRO | 0.800 [0.800, 0.800] | 0.400 [0.400, 0.400] | 2.72 [2.72, 2.72] | 1.087" in table
    assert "| RRPO | 0.500 [0.500, 0.500] | -0.050 [-0.050, -0.050] | no peak (β ≤ 0) |" in table
    assert "bootstrap over seeds" in table

    path = plot_overoptimisation(per_seed, ["DiffRO", "RRPO"], tmp_path)
    with open(path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"

    report = render_report(config, summary, [path], wall_time_s=1.0)
    paired = report.index("### Paired differences against DiffRO")
    matched = report.index("### Paired differences at matched sqrt KL")
    gao = report.index("#### Gao et al.'s fit")
    assert paired < matched < report.index("### Over-optimisation") < gao < report.index("## Table 2")
    assert "| RRPO − DiffRO | " in report[matched:gao] and "| DiffRO | 0.800" in report[gao:]


def test_a_gao_fit_beyond_the_reached_distance_is_marked_as_extrapolated():
    d = np.linspace(0.0, 1.0, 6)
    fit = fit_gao_over_seeds([(d, gao_reward(d, ALPHA, BETA))] * 5)
    table = format_gao_table({"gao_fits": {"DiffRO": fit}})
    assert "2.72 [2.72, 2.72] (beyond the data)" in table
