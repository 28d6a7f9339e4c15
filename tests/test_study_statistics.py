"""Paired differences between the study's methods: the interval, its aggregation per seed, and its table."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from rrpo_hf.study import (
    RM_VARIANTS,
    TABLE1_COLUMNS,
    TABLE2_DOMAINS,
    RewardHackingStudyConfig,
    aggregate,
    mean_confidence_interval,
)
from rrpo_hf.study.report import format_paired_table
from rrpo_hf.study.statistics import paired_difference_ci


def test_paired_interval_is_the_t_interval_of_the_differences():
    treatment, control = [1.0, 2.5, 2.0, 4.0], [0.5, 1.0, 2.0, 2.5]
    differences = [0.5, 1.5, 0.0, 1.5]
    mean, half, n = paired_difference_ci(treatment, control, confidence=0.95)
    assert n == 4
    assert mean == pytest.approx(statistics.mean(differences))
    expected = stats.t.ppf(0.975, df=3) * statistics.stdev(differences) / math.sqrt(4)
    assert half == pytest.approx(expected, rel=1e-12)
    _, wider, _ = paired_difference_ci(treatment, control, confidence=0.99)
    assert wider > half


def test_pairing_removes_the_spread_the_seeds_share():
    # Seeds differ a lot, the treatment is better by ~0.1 in every one: the per-method intervals overlap, the paired
    # interval excludes 0.
    control = [1.0, 2.0, 3.0, 4.0, 5.0]
    treatment = [c + d for c, d in zip(control, [0.10, 0.12, 0.08, 0.11, 0.09])]
    treatment_mean, treatment_half = mean_confidence_interval(treatment)
    control_mean, control_half = mean_confidence_interval(control)
    assert treatment_mean - treatment_half < control_mean + control_half
    mean, half, _ = paired_difference_ci(treatment, control)
    assert mean == pytest.approx(0.1)
    assert mean - half > 0


def test_paired_interval_of_one_seed_has_no_width():
    mean, half, n = paired_difference_ci([0.7], [0.2])
    assert mean == pytest.approx(0.5) and n == 1 and math.isnan(half)
    assert math.isnan(mean_confidence_interval([0.5])[1])  # the same convention as the per-method intervals


def test_paired_interval_needs_one_control_per_treatment():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference_ci([1.0, 2.0], [1.0])


def test_paired_interval_drops_incomplete_pairs():
    mean, half, n = paired_difference_ci([1.0, float("nan"), 3.0, None], [0.0, 1.0, 1.0, 2.0])
    assert n == 2 and mean == pytest.approx(1.5) and math.isfinite(half)
    mean, half, n = paired_difference_ci([], [])
    assert n == 0 and math.isnan(mean) and math.isnan(half)


# ------------------------------------------------------------------------------------------- aggregation


def _point(step: int, naturalness: float, reward: float) -> dict:
    return {
        "step": step,
        "reward": reward,
        "rm_accuracy": 0.5,
        "oracle_emotion_score": 3.0,
        "oracle_naturalness": naturalness,
        "oracle_cer": 0.5,
        "oracle_artifact_rate": 0.01 * step,
    }


def _run(seed: int, finals: dict[str, float]) -> dict:
    """One seed: every method starts from the SFT policy (naturalness 2 + seed), ends at ``finals[method] + seed``."""
    policies = {}
    for method, final in finals.items():
        start = _point(0, 2.0 + seed, -1.0)
        end = _point(10, final + seed, -0.5 + 0.1 * seed)
        policies[method] = {"curve": [start, end], "start": start, "final": end}
    table2 = {v: {d: {"wa": 0.9, "ua": 0.8} for d in TABLE2_DOMAINS} for v in RM_VARIANTS}
    return {"seed": seed, "table2": table2, "probes": {v: {} for v in RM_VARIANTS}, "policies": policies}


def test_aggregate_pairs_every_method_and_the_sft_start_with_diffro():
    methods = ["DiffRO", "RRPO", "DiffRO-clean"]
    config = RewardHackingStudyConfig(seeds=[0, 1, 2], policy_methods=methods, beta_sweep=[])
    finals = [{"DiffRO": 1.0, "RRPO": 1.5, "DiffRO-clean": 2.0}, {"DiffRO": 1.2, "RRPO": 1.4, "DiffRO-clean": 2.0}]
    finals.append({"DiffRO": 0.8, "RRPO": 1.5, "DiffRO-clean": 2.0})
    per_seed = [_run(seed, f) for seed, f in enumerate(finals)]
    summary = aggregate(config, per_seed)
    paired = summary["paired"]
    assert list(paired) == ["SFT − DiffRO", "RRPO − DiffRO", "DiffRO-clean − DiffRO"]
    for comparison in paired.values():
        assert set(comparison) == set(TABLE1_COLUMNS)

    rrpo = paired["RRPO − DiffRO"]["oracle_naturalness"]
    differences = [0.5, 0.2, 0.7]  # the seed offsets cancel
    assert rrpo["n"] == 3
    assert rrpo["mean"] == pytest.approx(statistics.mean(differences))
    assert rrpo["half_width"] == pytest.approx(paired_difference_ci(differences, [0.0] * 3)[1])
    # the SFT start is DiffRO's own step 0: its reward difference is minus DiffRO's reward gain
    sft = paired["SFT − DiffRO"]
    assert sft["reward"]["mean"] == pytest.approx(-summary["table1"]["+DiffRO"]["reward_gain"]["mean"])
    assert sft["oracle_naturalness"]["mean"] == pytest.approx(statistics.mean([1.0, 0.8, 1.2]))
    assert paired["DiffRO-clean − DiffRO"]["oracle_cer"]["mean"] == pytest.approx(0.0)
    assert paired["DiffRO-clean − DiffRO"]["oracle_cer"]["half_width"] == pytest.approx(0.0)
    # the per-method rows are unchanged: the seed offsets 0, 1, 2 stay in them
    assert summary["table1"]["+RRPO"]["oracle_naturalness"]["mean"] == pytest.approx(statistics.mean([1.5, 2.4, 3.5]))


def test_paired_table_cells_and_how_to_read_them():
    config = RewardHackingStudyConfig(seeds=[0, 1, 2], policy_methods=["DiffRO", "RRPO"], beta_sweep=[])
    per_seed = [_run(s, {"DiffRO": 1.0, "RRPO": r}) for s, r in enumerate([1.5, 1.2, 1.8])]
    summary = aggregate(config, per_seed)
    table = format_paired_table(summary)
    cell = summary["paired"]["RRPO − DiffRO"]["oracle_naturalness"]
    assert f"+0.500 ± {cell['half_width']:.3f}" in table
    assert "| SFT − DiffRO | " in table and "| RRPO − DiffRO | " in table
    assert "| SFT − DiffRO | +0.000 ± 0.000 | +1.000 ± 0.000 |" in table  # the same difference in every seed
    assert "excludes 0" in table and "n = 3" in table
    for header, _ in TABLE1_COLUMNS.values():
        assert header in table.splitlines()[0]


def test_one_seed_gives_bare_differences_and_no_diffro_no_pairs():
    finals = dict.fromkeys(("DiffRO", "RRPO", "DiffRO-clean"), 1.0)
    one_seed = aggregate(RewardHackingStudyConfig(seeds=[0], beta_sweep=[]), [_run(0, finals)])
    assert math.isnan(one_seed["paired"]["RRPO − DiffRO"]["oracle_naturalness"]["half_width"])
    assert "| RRPO − DiffRO | +0.000 | +0.000 |" in format_paired_table(one_seed)

    config = RewardHackingStudyConfig(seeds=[0], rm_variants=["+Adv"], policy_methods=["RRPO"], beta_sweep=[])
    summary = aggregate(config, [_run(0, {"RRPO": 1.0})])
    assert summary["paired"] == {}
    assert "DiffRO" in format_paired_table(summary) and "|" not in format_paired_table(summary)


def test_overoptimisation_summary_finds_the_peak_of_the_seed_averaged_gold_curve():
    from rrpo_hf.study import format_overoptimisation_table, overoptimisation_summary

    def run(golds, kls):
        curve = [
            {"step": 5 * i, "oracle_gold_score": g, "sqrt_kl_to_reference": k, "oracle_emotion_score": g + 1.0}
            | {"oracle_naturalness": g - 1.0}
            for i, (g, k) in enumerate(zip(golds, kls))
        ]
        return {"policies": {"DiffRO": {"curve": curve}, "Old": {"curve": [{"step": 0, "reward": -1.0}]}}}

    # Seed means: gold 2.0, 3.0, 2.5 (peak at the second point, step 5), sqrt KL 0, 1.5, 3.
    per_seed = [run([1.0, 3.5, 2.0], [0.0, 1.0, 2.0]), run([3.0, 2.5, 3.0], [0.0, 2.0, 4.0])]
    summary = overoptimisation_summary(["DiffRO", "Old"], per_seed)
    assert list(summary) == ["DiffRO"]  # curves without the gold score (older results) give no entry
    row = summary["DiffRO"]
    assert row["start_gold"] == pytest.approx(2.0) and row["peak_gold"] == pytest.approx(3.0)
    assert row["peak_step"] == 5 and row["peak_sqrt_kl"] == pytest.approx(1.5)
    assert row["final_gold"] == pytest.approx(2.5) and row["final_sqrt_kl"] == pytest.approx(3.0)
    assert row["final_step"] == 10
    # emotion and naturalness at the start and at the peak (seed means at those points)
    assert (row["start_emotion"], row["start_naturalness"]) == (pytest.approx(3.0), pytest.approx(1.0))
    assert (row["peak_emotion"], row["peak_naturalness"]) == (pytest.approx(4.0), pytest.approx(2.0))
    assert (
        "| DiffRO | 2.000 | 3.000 | 5 | 1.50 | 2.500 | 3.00 | 3.00, 1.00 | 4.00, 2.00 |"
        in format_overoptimisation_table({"overoptimisation": summary})
    )
