"""Mean ± confidence interval over seeds, paired differences between methods, and the study's aggregate tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .checks import checked_rm_names, optimised_rm_rows
from .config import (
    GRPO_COUNTERPARTS,
    HEADLINE_START,
    TABLE1_COLUMNS,
    TABLE2_DOMAINS,
    RewardHackingStudyConfig,
    step_time_key,
)
from .overoptimisation import fit_gao_over_seeds, value_at_sqrt_kl


def mean_confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided Student-t confidence interval of the mean.

    With fewer than two finite values the half-width is ``nan`` (an interval needs a spread estimate).
    """
    from scipy import stats  # slow to import, and only the intervals need it

    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    mean = float(array.mean())
    if array.size < 2:
        return mean, float("nan")
    sem = float(array.std(ddof=1) / math.sqrt(array.size))
    return mean, float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1) * sem)


def paired_difference_ci(
    treatment: Sequence[float], control: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, int]:
    """Mean and t-interval half-width of the per-seed differences ``treatment[i] - control[i]``, and their count.

    Within a seed every method starts from the same corpora and SFT policy, so most of the seed-to-seed spread is
    shared; the interval of the differences removes it, where comparing two per-method intervals does not. Pairs with
    a missing or non-finite value are dropped (``n`` counts the rest); ``n = 1`` gives a ``nan`` half-width, as
    :func:`mean_confidence_interval` does.
    """
    if len(treatment) != len(control):
        raise ValueError(
            f"Paired values need one control per treatment value (same seeds), got {len(treatment)} and "
            f"{len(control)}."
        )
    differences = [
        t - c for t, c in zip(treatment, control) if t is not None and c is not None and math.isfinite(t - c)
    ]
    mean, half_width = mean_confidence_interval(differences, confidence)
    return mean, half_width, len(differences)


def format_mean_ci(mean: float, half_width: float, digits: int = 3) -> str:
    """A table cell: ``mean ± half-width``, the bare mean without an interval (one seed), ``n/a`` without data."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(half_width):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def aggregate(cfg: RewardHackingStudyConfig, per_seed: list[dict]) -> dict[str, Any]:
    """Mean ± CI over seeds of Table 1, Table 2 and the probes, and the paired differences against DiffRO."""

    def ci(values):
        mean, half = mean_confidence_interval(values, cfg.confidence)
        return {"mean": mean, "ci": half, "n": len(values)}

    table1: dict[str, dict[str, dict]] = {}
    # "+SFT" row: the starting policy, scored by the base RM (the reward column) and the oracle.
    rows = list(cfg.policy_rows())
    sft_rows = {m: [run["policies"][m]["start"] for run in per_seed] for m in rows}
    first = rows[0]
    table1["+SFT"] = {key: ci([row[key] for row in sft_rows[first]]) for key in TABLE1_COLUMNS}
    for method in rows:
        runs = [run["policies"][method] for run in per_seed]
        table1[f"+{method}"] = {key: ci([run["final"][key] for run in runs]) for key in TABLE1_COLUMNS}
        table1[f"+{method}"]["reward_gain"] = ci([run["final"]["reward"] - run["start"]["reward"] for run in runs])
    table2 = {
        variant: {
            domain: {
                metric: ci([100 * run["table2"][variant][domain][metric] for run in per_seed])
                for metric in ("wa", "ua")
            }
            for domain in TABLE2_DOMAINS
        }
        for variant in cfg.rm_variants
    }
    probes = {}
    for variant in cfg.rm_variants:
        keys = sorted(set().union(*(run["probes"].get(variant, {}).keys() for run in per_seed)))
        probes[variant] = {
            key: ci([run["probes"][variant][key] for run in per_seed if key in run["probes"][variant]]) for key in keys
        }
    audit = {}
    for variant in cfg.rm_variants:
        audited = [run.get("audit", {}).get(variant) for run in per_seed]
        audited = [row for row in audited if row]
        scalar = sorted({key for row in audited for key, value in row.items() if isinstance(value, (int, float))})
        if audited:
            audit[variant] = {
                key: ci([row[key] for row in audited if isinstance(row.get(key), (int, float))]) for key in scalar
            }
    target_check = target_check_summary(cfg, per_seed)
    flagged = {variant for variant, entry in target_check.items() if entry["flagged"]}
    flagged_rows = {row for name, rows in optimised_rm_rows(cfg).items() if name in flagged for row in rows}
    return {
        "headline": headline_comparisons(cfg.headline_pairs, rows, per_seed, cfg.confidence),
        "target_check": target_check,
        # Table 1 / headline rows optimised against an RM the target check flags (the report marks them).
        "flagged_rows": [row for row in cfg.policy_rows() if row in flagged_rows],
        "table1": table1,
        "table2": table2,
        "probes": probes,
        "audit": audit,
        "paired": paired_differences(cfg, per_seed),
        "overoptimisation": overoptimisation_summary(rows, per_seed),
        "gao_fits": gao_fits(rows, per_seed, cfg.confidence),
        "matched_sqrt_kl": matched_sqrt_kl_differences(rows, per_seed, PAIRED_CONTROL, cfg.confidence),
        **({"grpo": grpo_comparisons(rows, per_seed, cfg.confidence)} if set(rows) & set(GRPO_COUNTERPARTS) else {}),
    }


#: The composite oracle score of the over-optimisation summary: sqrt(emotion score x naturalness) (testbed oracle).
GOLD_KEY = "oracle_gold_score"


def overoptimisation_summary(methods: Sequence[str], per_seed: list[dict]) -> dict[str, dict[str, float]]:
    """Per method, on the curve averaged over seeds (point by point): the gold score where training starts, its peak
    (and the step and sqrt KL from the SFT policy there) and where training ends.

    A peak before the end, with the proxy reward still rising, is over-optimisation: past it the policy buys reward
    with speech the oracle rates worse. Curves without the gold score or the KL (older results) give no entry.
    """
    summary = {}
    for method in methods:
        curves = [run["policies"][method]["curve"] for run in per_seed]
        length = min(len(curve) for curve in curves)
        if length == 0 or any(GOLD_KEY not in curve[0] or "sqrt_kl_to_reference" not in curve[0] for curve in curves):
            continue

        gold = [float(np.mean([curve[i][GOLD_KEY] for curve in curves])) for i in range(length)]
        sqrt_kl = [float(np.mean([curve[i]["sqrt_kl_to_reference"] for curve in curves])) for i in range(length)]
        peak = int(np.argmax(gold))
        summary[method] = {
            "start_gold": gold[0],
            "peak_gold": gold[peak],
            "peak_step": int(curves[0][peak]["step"]),
            "peak_sqrt_kl": sqrt_kl[peak],
            "final_gold": gold[-1],
            "final_sqrt_kl": sqrt_kl[-1],
            "final_step": int(curves[0][length - 1]["step"]),
        }
        # What the peak is made of: emotion and naturalness there, against where training started.
        for key, name in (("oracle_emotion_score", "emotion"), ("oracle_naturalness", "naturalness")):
            if all(key in point for curve in curves for point in curve[:length]):
                summary[method][f"start_{name}"] = float(np.mean([curve[0][key] for curve in curves]))
                summary[method][f"peak_{name}"] = float(np.mean([curve[peak][key] for curve in curves]))
    return summary


SQRT_KL_KEY = "sqrt_kl_to_reference"


def _has_kl_and_gold(curve: list[dict]) -> bool:
    return bool(curve) and all(GOLD_KEY in point and SQRT_KL_KEY in point for point in curve)


def gao_fits(methods: Sequence[str], per_seed: list[dict], confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per method, Gao et al.'s ``R(d) = d·(α − β·log d)`` fitted to its gold-score gain against ``d = sqrt KL``.

    Each seed contributes its curve's points: ``d`` = sqrt KL from the SFT policy at each evaluation, ``R`` = the
    gold score there minus that seed's gold score at step 0 (the SFT policy, ``d = 0``). The fit and its
    seed-bootstrap intervals are :func:`~rrpo_hf.study.overoptimisation.fit_gao_over_seeds`; a method whose curves
    lack the gold score or the KL (older results) gives no entry.
    """
    fits = {}
    for method in methods:
        curves = [run["policies"][method]["curve"] for run in per_seed]
        if not curves or not all(_has_kl_and_gold(curve) for curve in curves):
            continue
        points = [
            ([p[SQRT_KL_KEY] for p in curve], [p[GOLD_KEY] - curve[0][GOLD_KEY] for p in curve]) for curve in curves
        ]
        fits[method] = fit_gao_over_seeds(points, confidence)
    return fits


#: What the matched-sqrt-KL readout compares: gold score, emotion score (E) and naturalness (N) of the oracle.
MATCHED_SQRT_KL_KEYS = (GOLD_KEY, "oracle_emotion_score", "oracle_naturalness")


def matched_sqrt_kl_differences(
    methods: Sequence[str],
    per_seed: list[dict],
    control: str,
    confidence: float = 0.95,
    keys: Sequence[str] = MATCHED_SQRT_KL_KEYS,
) -> dict[str, dict[str, Any]]:
    """``"<method> − <control>"`` -> the paired difference of each of ``keys`` at a sqrt KL both methods reach.

    A method that moves further from the SFT policy in the same number of steps gains more emotion and loses more
    naturalness for that alone; comparing at matched steps mixes that with what its reward does. Here each seed's
    curve is read at one sqrt KL ``d_m`` (:func:`~rrpo_hf.study.overoptimisation.value_at_sqrt_kl`: linear between
    evaluation points, the first time the curve reaches ``d_m``), and the per-seed differences get the t-interval of
    :func:`paired_difference_ci`. ``d_m`` is the largest sqrt KL that both methods reach in every seed: the smallest,
    over the seeds and the two methods, of a curve's largest sqrt KL. One ``d_m`` for all seeds keeps the readout a
    point on the over-optimisation plot; taking the largest such point compares the methods as far along as the
    data allow without extrapolating.

    Each entry holds ``sqrt_kl`` (``d_m``) and, per key, ``{"mean", "half_width", "n", "treatment", "control"}``
    (the last two: the methods' means over seeds at ``d_m``). Methods without KL and gold in their curves, and the
    control itself, give no entry; so does everything when the control was not run.
    """
    if control not in methods:
        return {}
    control_curves = [run["policies"][control]["curve"] for run in per_seed]
    if not control_curves or not all(_has_kl_and_gold(curve) for curve in control_curves):
        return {}
    differences = {}
    for method in methods:
        if method == control:
            continue
        curves = [run["policies"][method]["curve"] for run in per_seed]
        if not all(_has_kl_and_gold(curve) for curve in curves):
            continue
        matched = min(max(p[SQRT_KL_KEY] for p in curve) for curve in [*curves, *control_curves])
        entry: dict[str, Any] = {"sqrt_kl": float(matched)}
        for key in keys:
            if not all(key in p for curve in [*curves, *control_curves] for p in curve):
                continue
            treated, controls = (
                [value_at_sqrt_kl([p[SQRT_KL_KEY] for p in c], [p[key] for p in c], matched) for c in group]
                for group in (curves, control_curves)
            )
            mean, half_width, n = paired_difference_ci(treated, controls, confidence)
            entry[key] = {
                "mean": mean,
                "half_width": half_width,
                "n": n,
                "treatment": float(np.nanmean(treated)),
                "control": float(np.nanmean(controls)),
            }
        differences[f"{method} − {control}"] = entry
    return differences


#: The end-of-run values the GRPO rows are compared on, besides the matched-sqrt-KL keys.
GRPO_END_KEYS = (GOLD_KEY, "oracle_emotion_score", "oracle_naturalness", "oracle_artifact_rate", SQRT_KL_KEY)


def grpo_comparisons(methods: Sequence[str], per_seed: list[dict], confidence: float = 0.95) -> dict[str, Any]:
    """Each GRPO row against the DiffRO-family row on the same reward (`GRPO_COUNTERPARTS`): paired differences at
    the end and at matched sqrt KL (:func:`matched_sqrt_kl_differences` with the counterpart as control), and the
    cost of each row: seconds per optimisation step (evaluations left out) and per unit of gold gained by the end.

    Returns ``{"pairs": {"<GRPO row> − <counterpart>": {"end": {key: {mean, half_width, n}}, "matched": entry}},
    "cost": {row: {"seconds_per_step": ci, "gold_gain": ci, "seconds_per_gold": ci}}}``. A row whose results lack the
    step timings (older results) gets no cost entry.
    """
    pairs = {}
    for row, control in GRPO_COUNTERPARTS.items():
        if row not in methods or control not in methods:
            continue
        finals = {m: [run["policies"][m]["final"] for run in per_seed] for m in (row, control)}
        end = {}
        for key in GRPO_END_KEYS:
            if all(key in point for points in finals.values() for point in points):
                mean, half_width, n = paired_difference_ci(
                    [p[key] for p in finals[row]], [p[key] for p in finals[control]], confidence
                )
                end[key] = {"mean": mean, "half_width": half_width, "n": n}
        # The artifact rate too: whether GRPO exploits the artifact shortcut is what its prediction is about.
        keys = (*MATCHED_SQRT_KL_KEYS, "oracle_artifact_rate")
        matched = matched_sqrt_kl_differences([row, control], per_seed, control, confidence, keys)
        pairs[f"{row} − {control}"] = {"end": end, "matched": matched.get(f"{row} − {control}", {})}
    cost = {}
    rows = [m for m in methods if m in GRPO_COUNTERPARTS or m in GRPO_COUNTERPARTS.values()]
    for method in rows:
        runs = [run["policies"][method] for run in per_seed]
        seconds = [run.get("timings_s", {}).get(step_time_key(method)) for run in per_seed]
        if not all(run.get("steps") for run in runs) or None in seconds:
            continue
        per_step = [s / run["steps"] for s, run in zip(seconds, runs)]
        gains = [run["final"].get(GOLD_KEY, math.nan) - run["start"].get(GOLD_KEY, math.nan) for run in runs]
        # Seconds per unit of gold: only where the gold rose (a loss has no cost per unit of gain).
        per_gold = [s / gain if gain > 0 else math.nan for s, gain in zip(seconds, gains)]
        cost[method] = {
            name: dict(zip(("mean", "ci"), mean_confidence_interval(values, confidence)), n=len(values))
            for name, values in (("seconds_per_step", per_step), ("gold_gain", gains), ("seconds_per_gold", per_gold))
        }
    return {"pairs": pairs, "cost": cost}


#: The end-of-run values of the headline comparisons: emotion (E), naturalness (N), gold, CER, artifact rate.
HEADLINE_END_KEYS = ("oracle_emotion_score", "oracle_naturalness", GOLD_KEY, "oracle_cer", "oracle_artifact_rate")

#: The values the headline comparisons read at matched sqrt KL.
HEADLINE_MATCHED_KEYS = (*MATCHED_SQRT_KL_KEYS, "oracle_artifact_rate")

#: Power of the minimum detectable effects and of the seeds-needed estimate of the headline comparisons.
HEADLINE_POWER = 0.8

#: The naturalness difference whose seeds-needed estimate the headline comparisons report (the issue's ±0.2 N).
HEADLINE_NATURALNESS_EFFECT = 0.2


def minimum_detectable_effect(sd: float, n: int, confidence: float = 0.95, power: float = HEADLINE_POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at level ``1 − confidence`` detects with
    probability ``power`` from ``n`` pairs of standard deviation ``sd``:
    ``(t_{1−a/2, n−1} + t_{power, n−1}) · sd / √n`` (the usual t approximation of the noncentral t); ``nan`` below
    two pairs or without a finite ``sd``."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd):
        return float("nan")
    quantiles = stats.t.ppf(0.5 + confidence / 2, df=n - 1) + stats.t.ppf(power, df=n - 1)
    return float(quantiles * sd / math.sqrt(n))


def seeds_to_detect(
    effect: float, sd: float, confidence: float = 0.95, power: float = HEADLINE_POWER, max_seeds: int = 10_000
) -> int | None:
    """The fewest seeds whose :func:`minimum_detectable_effect` is at most ``|effect|`` (paired SD ``sd``); None
    without a finite ``sd`` or beyond ``max_seeds``. ``sd = 0``: two seeds."""
    if not math.isfinite(sd) or effect == 0:
        return None
    for n in range(2, max_seeds + 1):
        if minimum_detectable_effect(sd, n, confidence, power) <= abs(effect):
            return n
    return None


def _pair_values(row: str, other: str, per_seed: list[dict], where: str) -> list[dict]:
    """Per seed, the points a headline pair reads for ``row``: its ``final`` (or ``start``) point; SFT = the other
    row's step 0 (the SFT policy scored under that row's RM, on the same evaluation prompts)."""
    if row == HEADLINE_START:
        return [run["policies"][other]["start"] for run in per_seed]
    return [run["policies"][row][where] for run in per_seed]


def headline_comparisons(
    pairs: Sequence[str],
    rows: Sequence[str],
    per_seed: list[dict],
    confidence: float = 0.95,
    power: float = HEADLINE_POWER,
    naturalness_effect: float = HEADLINE_NATURALNESS_EFFECT,
) -> dict[str, dict[str, Any]]:
    """The study's headline paired comparisons (`headline_pairs`, each ``"A − B"``; A or B may be ``SFT``).

    Per pair: ``end`` -> for each of :data:`HEADLINE_END_KEYS` the paired difference at the end of training
    (:func:`paired_difference_ci`: ``mean``, ``half_width``, ``n``) with the paired ``sd`` (of the per-seed
    differences) and ``mde``, the minimum detectable effect at ``power`` for that ``n``
    (:func:`minimum_detectable_effect`); ``matched`` -> the same differences at the largest sqrt KL both reach
    (:func:`matched_sqrt_kl_differences`, keys :data:`HEADLINE_MATCHED_KEYS`; empty for a pair with SFT, which sits
    at sqrt KL 0); ``seeds_needed`` -> seeds for the naturalness difference ``±naturalness_effect`` at ``power``
    (:func:`seeds_to_detect` with the naturalness ``sd``). A pair whose rows were not run gets ``{"missing": [...]}``.
    """
    results: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        treatment, _, control = pair.partition(" − ")
        missing = [name for name in (treatment, control) if name != HEADLINE_START and name not in rows]
        if missing:
            results[pair] = {"treatment": treatment, "control": control, "missing": missing}
            continue
        treated = _pair_values(treatment, control, per_seed, "final")
        controls = _pair_values(control, treatment, per_seed, "final")
        end = {}
        for key in HEADLINE_END_KEYS:
            a, b = [p.get(key) for p in treated], [p.get(key) for p in controls]
            mean, half_width, n = paired_difference_ci(a, b, confidence)
            differences = [x - y for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x - y)]
            sd = float(np.std(differences, ddof=1)) if len(differences) > 1 else float("nan")
            end[key] = {
                "mean": mean,
                "half_width": half_width,
                "n": n,
                "sd": sd,
                "mde": minimum_detectable_effect(sd, n, confidence, power),
            }
        matched = {}
        if HEADLINE_START not in (treatment, control):
            matched = matched_sqrt_kl_differences(
                [treatment, control], per_seed, control, confidence, HEADLINE_MATCHED_KEYS
            ).get(f"{treatment} − {control}", {})
        results[pair] = {
            "treatment": treatment,
            "control": control,
            "end": end,
            "matched": matched,
            "seeds_needed": seeds_to_detect(naturalness_effect, end["oracle_naturalness"]["sd"], confidence, power),
            "naturalness_effect": naturalness_effect,
            "power": power,
        }
    return results


def target_check_summary(cfg: RewardHackingStudyConfig, per_seed: list[dict]) -> dict[str, dict[str, Any]]:
    """Per RM row and ensemble member (:func:`~rrpo_hf.study.checks.checked_rm_names`), the target check
    (:func:`~rrpo_hf.study.checks.target_emotion_check`) over seeds: ``recall`` -> target -> mean ± CI,
    ``intensity_rise`` (mean ± CI, None without audit), ``flagged`` (a mean below its bar: `target_check_min_recall`,
    `target_check_min_rise`) and ``flagged_seeds`` (seeds whose own check failed). Results without the check (older
    runs) give no entry."""

    def ci(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        mean, half = mean_confidence_interval(values, cfg.confidence)
        return {"mean": mean, "ci": half, "n": len(values)}

    summary = {}
    for variant in checked_rm_names(cfg):
        checks = [(run["seed"], run.get("target_check", {}).get(variant)) for run in per_seed]
        checks = [(seed, check) for seed, check in checks if check]
        if not checks:
            continue
        targets = list(checks[0][1]["recall"])
        recall = {t: ci([check["recall"].get(t) for _, check in checks]) for t in targets}
        rise = ci([check["intensity_rise"] for _, check in checks])
        flagged = any(entry is not None and entry["mean"] < cfg.target_check_min_recall for entry in recall.values())
        flagged = flagged or (rise is not None and rise["mean"] < cfg.target_check_min_rise)
        summary[variant] = {
            "recall": recall,
            "intensity_rise": rise,
            "flagged": flagged,
            "flagged_seeds": [seed for seed, check in checks if not check["passed"]],
        }
    return summary


#: The method every paired difference is taken against: the vanilla-RM baseline whose hacking RRPO should reduce.
PAIRED_CONTROL = "DiffRO"


def paired_differences(cfg: RewardHackingStudyConfig, per_seed: list[dict]) -> dict[str, dict[str, dict]]:
    """``"<method> − DiffRO"`` -> Table 1 metric -> ``{"mean", "half_width", "n"}`` of the per-seed differences.

    One row per policy method other than DiffRO, and ``"SFT − DiffRO"``: the starting policy as DiffRO's run scored it
    (same evaluation prompts and RM), so that its reward column is minus DiffRO's reward gain. The other methods'
    reward columns compare different RMs (each method's own). Empty when DiffRO was not run.
    """
    if PAIRED_CONTROL not in cfg.policy_methods:
        return {}
    control = [run["policies"][PAIRED_CONTROL]["final"] for run in per_seed]
    treatments = {"SFT": [run["policies"][PAIRED_CONTROL]["start"] for run in per_seed]}
    for method in cfg.policy_rows():
        if method != PAIRED_CONTROL:
            treatments[method] = [run["policies"][method]["final"] for run in per_seed]
    paired: dict[str, dict[str, dict]] = {}
    for name, rows in treatments.items():
        paired[f"{name} − {PAIRED_CONTROL}"] = {}
        for key in TABLE1_COLUMNS:
            mean, half_width, n = paired_difference_ci(
                [row.get(key) for row in rows], [row.get(key) for row in control], cfg.confidence
            )
            paired[f"{name} − {PAIRED_CONTROL}"][key] = {"mean": mean, "half_width": half_width, "n": n}
    return paired


__all__ = [
    "HEADLINE_END_KEYS",
    "HEADLINE_MATCHED_KEYS",
    "MATCHED_SQRT_KL_KEYS",
    "PAIRED_CONTROL",
    "aggregate",
    "format_mean_ci",
    "gao_fits",
    "grpo_comparisons",
    "headline_comparisons",
    "matched_sqrt_kl_differences",
    "mean_confidence_interval",
    "minimum_detectable_effect",
    "paired_difference_ci",
    "paired_differences",
    "seeds_to_detect",
    "target_check_summary",
]
