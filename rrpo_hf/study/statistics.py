"""Mean ± confidence interval over seeds, and the per-seed results aggregated into the study's tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import TABLE1_COLUMNS, TABLE2_DOMAINS, RewardHackingStudyConfig


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


def format_mean_ci(mean: float, half_width: float, digits: int = 3) -> str:
    """A table cell: ``mean ± half-width``, the bare mean without an interval (one seed), ``n/a`` without data."""
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(half_width):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def aggregate(cfg: RewardHackingStudyConfig, per_seed: list[dict]) -> dict[str, Any]:
    """Mean ± CI over seeds of Table 1, Table 2 and the probes."""

    def ci(values):
        mean, half = mean_confidence_interval(values, cfg.confidence)
        return {"mean": mean, "ci": half, "n": len(values)}

    table1: dict[str, dict[str, dict]] = {}
    # "+SFT" row: the starting policy, scored by the base RM (the reward column) and the oracle.
    sft_rows = {m: [run["policies"][m]["start"] for run in per_seed] for m in cfg.policy_methods}
    first = cfg.policy_methods[0]
    table1["+SFT"] = {key: ci([row[key] for row in sft_rows[first]]) for key in TABLE1_COLUMNS}
    for method in cfg.policy_methods:
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
    return {"table1": table1, "table2": table2, "probes": probes}


__all__ = ["aggregate", "format_mean_ci", "mean_confidence_interval"]
