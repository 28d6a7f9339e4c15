"""The study's report: Markdown tables of the aggregated results, the training curves, and ``report.md``."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..audit.report import format_audit_table
from ..utils.saving import atomic_write
from .config import (
    AUDIT_INTENSITIES,
    FINETUNED_VARIANTS,
    GRPO_COUNTERPARTS,
    GRPO_PREDICTION,
    HEADLINE_START,
    MECHANISM_DESCRIPTIONS,
    MECHANISM_PREDICTION,
    POLICY_METHODS,
    REMEDY_DESCRIPTIONS,
    REMEDY_PREDICTION,
    SAMPLING_DESCRIPTIONS,
    SAMPLING_PREDICTION,
    TABLE1_COLUMNS,
    TABLE2_DOMAINS,
    RewardHackingStudyConfig,
    audit_target,
)
from .gate import format_gate_section
from .overoptimisation import MIN_BOOTSTRAP_SEEDS, gao_reward
from .presets import get_preset
from .statistics import (
    GOLD_KEY,
    HEADLINE_END_KEYS,
    HEADLINE_MATCHED_KEYS,
    MATCHED_SQRT_KL_KEYS,
    SQRT_KL_KEY,
    format_mean_ci,
)
from .statistics import gao_fits as fit_gao_per_method


#: The marker of a row optimised against a reward model the target check flags.
FLAG_MARK = "⚠"


def _flag_footnote(summary: dict) -> list[str]:
    """The footnote under a table with flagged rows: which RMs the target check flagged."""
    flagged = [variant for variant, entry in (summary.get("target_check") or {}).items() if entry["flagged"]]
    return [
        "",
        f"{FLAG_MARK}: the row optimises against a reward model the target check flags ({', '.join(flagged)}: "
        "it does not see the target emotion; see 'Target emotion check'); read it as exploitation of what else "
        "that RM reads, not as the method's effect.",
    ]


def format_table1(summary: dict) -> str:
    """Table 1 (mean ± CI over seeds); a row optimised against an RM the target check flags carries ⚠."""
    headers = [TABLE1_COLUMNS[key][0] for key in TABLE1_COLUMNS]
    lines = ["| method | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    flagged = {f"+{row}" for row in summary.get("flagged_rows") or []}
    for row, scores in summary["table1"].items():
        cells = [format_mean_ci(scores[key]["mean"], scores[key]["ci"]) for key in TABLE1_COLUMNS]
        name = f"{row} {FLAG_MARK}" if row in flagged else row
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if flagged & set(summary["table1"]):
        lines += _flag_footnote(summary)
    return "\n".join(lines)


#: Short headers of the headline table's end-of-run and matched columns.
_HEADLINE_HEADERS = {
    "oracle_emotion_score": "Δ E",
    "oracle_naturalness": "Δ N",
    GOLD_KEY: "Δ gold",
    "oracle_cer": "Δ CER",
    "oracle_artifact_rate": "Δ artifact rate",
}


def format_headline_table(summary: dict, confidence: float = 0.95) -> str:
    """The headline paired comparisons (``summary["headline"]``): per pair, the differences at the end of training
    with their paired SD and minimum detectable effect, the differences at matched sqrt KL, and the seeds needed to
    detect the naturalness effect; a pair optimised against a flagged RM carries ⚠."""
    headline = summary.get("headline") or {}
    if not headline:
        return "(no headline comparisons: headline_pairs is empty)"
    flagged = set(summary.get("flagged_rows") or [])
    power = next((entry["power"] for entry in headline.values() if "power" in entry), 0.8)
    effect = next((entry["naturalness_effect"] for entry in headline.values() if "power" in entry), 0.2)
    end_keys = list(HEADLINE_END_KEYS)
    lines = [
        "| comparison | where | n | " + " | ".join(_HEADLINE_HEADERS[k] for k in end_keys) + " | seeds for "
        f"±{effect:g} N at {power:.0%} power |",
        "|---|---|---:|" + "---:|" * (len(end_keys) + 1),
    ]
    marked = False
    for pair, entry in headline.items():
        name = pair
        if "missing" not in entry and {entry["treatment"], entry["control"]} & flagged:
            name, marked = f"{pair} {FLAG_MARK}", True
        if "missing" in entry:
            lines.append(
                f"| {name} | not run ({', '.join(entry['missing'])} not among the rows) |" + " |" * (len(end_keys) + 2)
            )
            continue
        end = entry["end"]
        n = max((cell["n"] for cell in end.values()), default=0)
        needed = entry["seeds_needed"]
        lines.append(
            f"| {name} | end | {n} | "
            + " | ".join(_difference_cell(end.get(k)) for k in end_keys)
            + f" | {'n/a' if needed is None else needed} |"
        )
        lines.append(
            f"| {name} | paired SD; MDE at {power:.0%} power | {n} | "
            + " | ".join(_sd_mde_cell(end.get(k)) for k in end_keys)
            + " | |"
        )
        matched = entry.get("matched") or {}
        if matched:
            cells = [_difference_cell(matched.get(k)) if k in HEADLINE_MATCHED_KEYS else "—" for k in end_keys]
            lines.append(f"| {name} | sqrt KL {matched['sqrt_kl']:.2f} | {n} | " + " | ".join(cells) + " | |")
        elif HEADLINE_START in (entry["treatment"], entry["control"]):
            lines.append(f"| {name} | matched sqrt KL | | " + " | ".join("—" for _ in end_keys) + " | |")
    lines += [
        "",
        f"Rows 'end': mean over the n seeds of the per-seed difference (row A − B after the last step) ± the "
        f"half-width of its {confidence:.0%} t-interval. Rows 'paired SD; MDE': the SD of those per-seed "
        f"differences and the minimum detectable effect at {power:.0%} power for this n, MDE = "
        f"(t(1 − a/2, n − 1) + t({power:g}, n − 1)) · SD / √n with a = {1 - confidence:.2g} (two-sided paired "
        "t-test): a true difference smaller than the MDE is more likely missed than found. 'seeds for "
        f"±{effect:g} N': the fewest seeds whose MDE of the naturalness difference is at most {effect:g}, at this "
        "SD. Rows 'sqrt KL': the same differences read off each seed's curve where both policies are equally far "
        "from the SFT policy (as in 'Paired differences at matched sqrt KL'); none for a pair with SFT, which sits "
        "at sqrt KL 0. SFT is the starting policy scored by the other row's RM on the same evaluation prompts.",
    ]
    if marked:
        lines += _flag_footnote(summary)
    return "\n".join(lines)


def _sd_mde_cell(cell: dict | None) -> str:
    if cell is None or not math.isfinite(cell.get("sd", math.nan)):
        return "n/a"
    return f"{cell['sd']:.3f}; {cell['mde']:.3f}"


def format_target_check_table(cfg: RewardHackingStudyConfig, summary: dict) -> str:
    """The target check per RM row (``summary["target_check"]``): recall of each target emotion on the natural
    alpha test set, the audit's intensity rise, PASS / FLAG on the means over seeds, and the seeds whose own check
    failed."""
    checks = summary.get("target_check") or {}
    if not checks:
        return "(no target check in these results)"
    targets = list(next(iter(checks.values()))["recall"])
    lines = [
        "| reward model | "
        + " | ".join(f"recall {t}" for t in targets)
        + " | intensity rise of P(target) | check | seeds flagged |",
        "|---|" + "---:|" * (len(targets) + 1) + "---|---|",
    ]
    for variant, entry in checks.items():
        cells = [
            "n/a"
            if entry["recall"][t] is None
            else format_mean_ci(entry["recall"][t]["mean"], entry["recall"][t]["ci"])
            for t in targets
        ]
        rise = entry["intensity_rise"]
        cells.append("n/a" if rise is None else format_mean_ci(rise["mean"], rise["ci"]))
        cells.append(f"FLAG {FLAG_MARK}" if entry["flagged"] else "PASS")
        cells.append(", ".join(str(seed) for seed in entry["flagged_seeds"]) or "none")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"An RM row is flagged when the mean over seeds of a target emotion's recall is below "
        f"{cfg.target_check_min_recall:g} (`target_check_min_recall`) or of the rise of P(target) from intensity 0 "
        f"to 1 (the audit's, for `{audit_target(cfg)}`) below {cfg.target_check_min_rise:g} "
        "(`target_check_min_rise`); 'seeds flagged': the seeds whose own check failed (each logged a WARNING). "
        f"The policy rows were run (target_check = '{cfg.target_check}'); those optimised against a flagged RM "
        f"carry {FLAG_MARK}.",
    ]
    return "\n".join(lines)


def format_overoptimisation_table(summary: dict) -> str:
    """Gold score (sqrt(E·N), oracle) at the start, at its peak and at the end of training, with sqrt KL from the
    SFT policy, per method (``summary["overoptimisation"]``, curves averaged over seeds)."""
    rows = summary.get("overoptimisation") or {}
    if not rows:
        return "(no over-optimisation summary: the curves carry no gold score or KL)"
    lines = [
        "| method | gold at start | peak gold | at step | at sqrt KL | final gold | final sqrt KL | E, N at start "
        "| E, N at peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def emotion_and_naturalness(row, where):
        if f"{where}_emotion" not in row:
            return "n/a"
        return f"{row[f'{where}_emotion']:.2f}, {row[f'{where}_naturalness']:.2f}"

    for method, row in rows.items():
        lines.append(
            f"| {method} | {row['start_gold']:.3f} | {row['peak_gold']:.3f} | {row['peak_step']} | "
            f"{row['peak_sqrt_kl']:.2f} | {row['final_gold']:.3f} | {row['final_sqrt_kl']:.2f} | "
            f"{emotion_and_naturalness(row, 'start')} | {emotion_and_naturalness(row, 'peak')} |"
        )
    return "\n".join(lines)


def format_paired_table(summary: dict, confidence: float = 0.95) -> str:
    """Paired differences against DiffRO (``summary["paired"]``): one row per comparison, Table 1's columns."""
    paired = summary.get("paired") or {}
    if not paired:
        return "(no paired differences: DiffRO, the control they are taken against, was not run)"
    headers = [TABLE1_COLUMNS[key][0] for key in TABLE1_COLUMNS]
    lines = ["| comparison | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    counts = set()
    for row, scores in paired.items():
        cells = []
        for key in TABLE1_COLUMNS:
            cell = scores[key]
            counts.add(cell["n"])
            if not math.isfinite(cell["mean"]):
                cells.append("n/a")
            elif not math.isfinite(cell["half_width"]):
                cells.append(f"{cell['mean']:+.3f}")
            else:
                cells.append(f"{cell['mean']:+.3f} ± {cell['half_width']:.3f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    n = "/".join(str(k) for k in sorted(counts))
    lines += [
        "",
        f"Each cell: mean over seeds (n = {n}) of the per-seed difference, row method − DiffRO, ± the half-width of "
        f"its {confidence:.0%} t-interval. A seed's methods share its corpora and SFT policy, so the seed-to-seed "
        "spread they share cancels. An interval that excludes 0 separates the two methods; one that includes 0 "
        "does not (the seeds cannot tell them apart), however far apart the per-method intervals of Table 1 look. "
        "Signs are raw: higher is better for the emotion score, naturalness and RM accuracy, lower for CER and the "
        "artifact rate. The reward column compares each method's own RM with DiffRO's base RM, except in "
        "SFT − DiffRO (both under the base RM: minus DiffRO's reward gain). Without an interval: one seed.",
    ]
    return "\n".join(lines)


def _number(value: float, digits: int) -> str:
    return "∞" if value == math.inf else f"{value:.{digits}f}"


def _interval(value: float, interval, digits: int) -> str:
    """``value [low, high]``; the bare value without an interval (one seed); ``n/a`` without a value."""
    if math.isnan(value):
        return "n/a"
    low, high = interval
    if math.isnan(low) or math.isnan(high):
        return _number(value, digits)
    return f"{_number(value, digits)} [{_number(low, digits)}, {_number(high, digits)}]"


def format_gao_table(summary: dict, confidence: float = 0.95) -> str:
    """Gao et al.'s RL fit ``R(d) = d·(α − β·log d)`` per method (``summary["gao_fits"]``), with intervals."""
    fits = summary.get("gao_fits") or {}
    if not fits:
        return "(no Gao fits: the curves carry no gold score or KL)"
    lines = [
        "| method | α | β | d* = exp(α/β − 1) | gold gain at d* (β·d*) | largest sqrt KL reached | RMSE "
        "| seeds, points |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, fit in fits.items():
        peak = _interval(fit["peak_sqrt_kl"], fit["peak_sqrt_kl_interval"], 2)
        if math.isinf(fit["peak_sqrt_kl"]):
            low = fit["peak_sqrt_kl_interval"][0]
            peak = "no peak (β ≤ 0)" + (f" [{low:.2f}, ∞]" if math.isfinite(low) else "")
        elif math.isfinite(fit["peak_sqrt_kl"]) and fit["peak_sqrt_kl"] > fit["max_sqrt_kl"]:
            peak += " (beyond the data)"
        gain = "n/a" if math.isinf(fit["peak_gain"]) else _interval(fit["peak_gain"], fit["peak_gain_interval"], 3)
        lines.append(
            f"| {method} | {_interval(fit['alpha'], fit['alpha_interval'], 3)} | "
            f"{_interval(fit['beta'], fit['beta_interval'], 3)} | {peak} | {gain} | {fit['max_sqrt_kl']:.2f} | "
            f"{fit['rmse']:.3f} | {fit['num_seeds']}, {fit['num_points']} |"
        )
    lines += [
        "",
        "Gao et al. (2022)'s RL form fitted by least squares to every seed's points at once: R = the gold score's "
        "gain over the seed's SFT policy, d = sqrt KL from it. β > 0 means over-optimisation: the gain peaks at d* "
        "and falls beyond it. In brackets: "
        f"{confidence:.0%} percentile intervals of a bootstrap over seeds (the points of one seed share one "
        f"trajectory, so the seeds, not the points, are the independent replicates); none with fewer than "
        f"{MIN_BOOTSTRAP_SEEDS} seeds, and somewhat too narrow below ~15. A d* beyond the largest sqrt KL reached "
        "is an extrapolation of the form.",
    ]
    return "\n".join(lines)


#: Short headers of the matched-sqrt-KL table.
_MATCHED_HEADERS = {
    GOLD_KEY: "Δ gold",
    "oracle_emotion_score": "Δ emotion (E)",
    "oracle_naturalness": "Δ naturalness (N)",
}


def format_matched_sqrt_kl_table(summary: dict, confidence: float = 0.95) -> str:
    """Paired differences against DiffRO read off each seed's curve at a matched sqrt KL
    (``summary["matched_sqrt_kl"]``)."""
    matched = summary.get("matched_sqrt_kl") or {}
    if not matched:
        return "(no matched-sqrt-KL comparisons: DiffRO was not run, or the curves carry no gold score or KL)"
    keys = [key for key in MATCHED_SQRT_KL_KEYS if key in _MATCHED_HEADERS]
    lines = [
        "| comparison | at sqrt KL | " + " | ".join(_MATCHED_HEADERS[k] for k in keys) + " |",
        "|---|---:|" + "---:|" * len(keys),
    ]
    counts = set()
    for comparison, entry in matched.items():
        cells = []
        for key in keys:
            cell = entry.get(key)
            if cell is None or not math.isfinite(cell["mean"]):
                cells.append("n/a")
                continue
            counts.add(cell["n"])
            spread = f" ± {cell['half_width']:.3f}" if math.isfinite(cell["half_width"]) else ""
            cells.append(f"{cell['mean']:+.3f}{spread} ({cell['treatment']:.2f} vs {cell['control']:.2f})")
        lines.append(f"| {comparison} | {entry['sqrt_kl']:.2f} | " + " | ".join(cells) + " |")
    n = "/".join(str(k) for k in sorted(counts)) or "0"
    lines += [
        "",
        "The same comparisons as above, made where both policies have moved equally far from the SFT policy rather "
        "than after equally many steps: each seed's curve is read at the sqrt KL of the row (linear between "
        "evaluation points, the first time the curve gets there), the largest sqrt KL both methods reach in every "
        f"seed. Each cell: mean over seeds (n = {n}) of the per-seed difference ± the half-width of its "
        f"{confidence:.0%} t-interval, then the two methods' means there. A difference at matched steps that "
        "vanishes here came from how far the methods moved, not from what their rewards pay for.",
    ]
    return "\n".join(lines)


#: Columns of the cross-preset overview: Table 1 metric -> short header.
OVERVIEW_COLUMNS = {
    "oracle_emotion_score": "Δ emotion",
    "oracle_naturalness": "Δ naturalness",
    "oracle_artifact_rate": "Δ artifact rate",
    "oracle_cer": "Δ CER",
}


def format_headline_overview(summaries: dict[str, dict]) -> str:
    """The headline comparisons of several presets' studies in one table (``summary["headline"]`` of each): per
    preset and pair, n, the naturalness difference at the end with its MDE at the study's power, the naturalness
    difference at matched sqrt KL, and the emotion, gold and artifact-rate differences at the end."""
    lines = [
        "| preset | comparison | n | Δ N (end) | MDE of Δ N | Δ N at matched sqrt KL | Δ E (end) | Δ gold (end) "
        "| Δ artifact rate (end) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for preset, summary in summaries.items():
        flagged = set(summary.get("flagged_rows") or [])
        for pair, entry in (summary.get("headline") or {}).items():
            if "missing" in entry:
                lines.append(f"| {preset} | {pair} | not run |" + " |" * 6)
                continue
            name = f"{pair} {FLAG_MARK}" if {entry["treatment"], entry["control"]} & flagged else pair
            end, matched = entry["end"], entry.get("matched") or {}
            naturalness = end.get("oracle_naturalness")
            finite_mde = naturalness is not None and math.isfinite(naturalness["mde"])
            mde = f"{naturalness['mde']:.3f}" if finite_mde else "n/a"
            at_kl = "—"
            if matched:
                at_kl = f"{_difference_cell(matched.get('oracle_naturalness'))} (sqrt KL {matched['sqrt_kl']:.2f})"
            n = max((cell["n"] for cell in end.values()), default=0)
            cells = [
                _difference_cell(naturalness),
                mde,
                at_kl,
                _difference_cell(end.get("oracle_emotion_score")),
                _difference_cell(end.get(GOLD_KEY)),
                _difference_cell(end.get("oracle_artifact_rate")),
            ]
            lines.append(f"| {preset} | {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_presets_overview(summaries: dict[str, dict]) -> str:
    """One table over several presets' studies: per preset, DiffRO's change from SFT and each other row's paired
    difference against DiffRO (mean ± t-interval half-width over seeds), for the oracle's scores.

    ``summaries`` maps a preset name to the ``summary`` of its study. A remedy helps on a preset where its
    naturalness difference is positive with an interval excluding 0 and its emotion difference is not negative.
    """
    lines = [
        "| preset | comparison | " + " | ".join(OVERVIEW_COLUMNS.values()) + " |",
        "|---|---|" + "---:|" * len(OVERVIEW_COLUMNS),
    ]
    for preset, summary in summaries.items():
        for comparison, cells in (summary.get("paired") or {}).items():
            if comparison.startswith("SFT "):
                # minus the SFT − DiffRO difference: what DiffRO changed from the SFT policy
                comparison, sign = "DiffRO − SFT", -1.0
            else:
                sign = 1.0
            row = []
            for key in OVERVIEW_COLUMNS:
                cell = cells[key]
                if not math.isfinite(cell["mean"]):
                    row.append("n/a")
                elif not math.isfinite(cell["half_width"]):
                    row.append(f"{sign * cell['mean']:+.3f}")
                else:
                    row.append(f"{sign * cell['mean']:+.3f} ± {cell['half_width']:.3f}")
            lines.append(f"| {preset} | {comparison} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_presets_overview(summaries: dict[str, dict], seeds: dict[str, int]) -> str:
    """The cross-preset overview (``overview.md``): the headline comparisons of every preset
    (:func:`format_headline_overview`), then DiffRO's change from SFT and every row's paired difference against
    DiffRO (:func:`format_presets_overview`). ``seeds``: preset -> the number of seeds its study ran. A preset whose
    mechanism gate failed has no policy rows: the header names it and the tables leave it out."""
    compared = {preset: summary for preset, summary in summaries.items() if "table1" in summary}
    runs = ", ".join(f"{preset} ({seeds[preset]} seeds)" for preset in compared)
    gated = [preset for preset in summaries if preset not in compared]
    if gated:
        runs += f"; without policy rows (mechanism gate failed, see its report.md): {', '.join(gated)}"
    return "\n".join(
        [
            "# Reward-hacking study: every preset",
            "",
            f"Presets: {runs}. Each difference is paired per seed (same corpora and SFT policy): mean over seeds ± "
            "the half-width of its t-interval (each study's confidence); each preset's report.md has the details.",
            "",
            "## Headline comparisons",
            "",
            format_headline_overview(compared),
            "",
            "MDE: the smallest naturalness difference the study detects at its power (a smaller true difference is "
            "more likely missed than found). Matched sqrt KL: read off each seed's curves where both policies are "
            "equally far from the SFT policy; none for a pair with SFT.",
            "",
            "## Every row against DiffRO",
            "",
            format_presets_overview(compared),
            "",
        ]
    )


def format_configuration(cfg: RewardHackingStudyConfig, world: dict | None) -> str:
    """The study's settings and the resolved world, one parameter a row: what another run needs to redo this one."""

    def rows(params: dict) -> list[str]:
        return [f"| `{name}` | `{json.dumps(value, default=str)}` |" for name, value in params.items()]

    lines = ["### Study (`RewardHackingStudyConfig`)", "", "| parameter | value |", "|---|---|", *rows(cfg.to_dict())]
    if world is not None:
        world = dict(world)
        languages = world.pop("languages", ())
        lines += [
            "",
            "### World (`TestbedConfig`)",
            "",
            "Pass these as the study's `testbed` to draw the same world again; `codebook_size` and "
            "`artifact_density` are the study's own fields.",
            "",
            "| parameter | value |",
            "|---|---|",
            *rows(world),
            *rows({f"languages[{spec['name']}]": spec for spec in languages}),
        ]
    return "\n".join(lines)


def format_preset_deviations(cfg: RewardHackingStudyConfig) -> str:
    """Which settings of this run differ from its named preset (so the prediction may not apply as written)."""
    deviations = cfg.preset_deviations()
    if not deviations:
        return "This run uses the preset's settings unchanged (seeds and output folder aside)."
    lines = [
        f"This run changes {len(deviations)} setting(s) of the preset:",
        "",
        "| parameter | preset | this run |",
        "|---|---|---|",
    ]
    for name, (preset_value, value) in deviations.items():
        lines.append(f"| `{name}` | `{json.dumps(preset_value, default=str)}` | `{json.dumps(value, default=str)}` |")
    return "\n".join(lines)


def format_table2(summary: dict) -> str:
    """WA / UA per domain, and ε_adv / ‖h'‖ (the audit's: the FGM radius relative to the norm of h' per utterance)."""
    audit = summary.get("audit") or {}
    header = "| reward model | " + " | ".join(f"{d} WA (%) | {d} UA (%)" for d in TABLE2_DOMAINS)
    header += " | ε_adv/‖h'‖ |" if audit else " |"
    lines = [header, "|---|" + "---:|" * (2 * len(TABLE2_DOMAINS) + bool(audit))]
    for variant, domains in summary["table2"].items():
        cells = []
        for domain in TABLE2_DOMAINS:
            cells += [format_mean_ci(domains[domain][m]["mean"], domains[domain][m]["ci"], 1) for m in ("wa", "ua")]
        if audit:
            ratio = audit.get(variant, {}).get("adv_epsilon_over_hidden_norm")
            cells.append(format_mean_ci(ratio["mean"], ratio["ci"], 4) if ratio else "n/a")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_probe_table(summary: dict) -> str:
    keys = sorted(set().union(*(scores.keys() for scores in summary["probes"].values())))
    if not keys:
        return "(robustness probes unavailable: `rrpo_hf.evaluation.robustness` is not installed)"
    lines = ["| reward model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for variant, scores in summary["probes"].items():
        cells = [format_mean_ci(scores[k]["mean"], scores[k]["ci"]) if k in scores else "n/a" for k in keys]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_changes(summary: dict) -> str:
    """Per method: final − SFT of the oracle scores and the reward (the hacking signature in one line each)."""
    sft = summary["table1"]["+SFT"]
    keys = ("reward_gain", "oracle_naturalness", "oracle_emotion_score", "oracle_artifact_rate", "oracle_cer")
    lines = [
        "| method | Δ own-RM reward | Δ naturalness | Δ emotion score | Δ artifact rate | Δ CER |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row, scores in summary["table1"].items():
        if row == "+SFT":
            continue
        cells = [f"{scores['reward_gain']['mean']:+.3f}"]
        cells += [f"{scores[key]['mean'] - sft[key]['mean']:+.3f}" for key in keys[1:]]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(per_seed: list[dict], methods: Sequence[str], output_dir: str | os.PathLike) -> list[str]:
    """One PNG per method, one line per seed, over policy-optimisation steps.

    Top: the method's RM reward (left axis, solid) and the oracle naturalness (right axis, dashed): reward up while
    naturalness goes down is reward hacking. Bottom: what the policy changed, oracle artifact rate and CER.
    """
    import matplotlib  # optional (the `plots` extra), and only the curves need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One scale per quantity across the methods' figures, so that they can be compared side by side.
    def value_range(key):
        values = [p[key] for run in per_seed for m in methods for p in run["policies"][m]["curve"]]
        low, high = min(values), max(values)
        pad = 0.05 * (high - low) or 0.05
        return low - pad, high + pad

    limits = {key: value_range(key) for key in ("reward", "oracle_naturalness", "oracle_artifact_rate", "oracle_cer")}
    paths = []
    for method in methods:
        fig, (reward_axis, damage_axis) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)
        natural_axis = reward_axis.twinx()
        cer_axis = damage_axis.twinx()
        for run in per_seed:
            curve = run["policies"][method]["curve"]
            steps = [point["step"] for point in curve]
            reward_axis.plot(steps, [p["reward"] for p in curve], "-o", color="tab:red", alpha=0.7, ms=3)
            natural_axis.plot(
                steps, [p["oracle_naturalness"] for p in curve], "--s", color="tab:blue", alpha=0.7, ms=3
            )
            damage_axis.plot(
                steps, [p["oracle_artifact_rate"] for p in curve], "-o", color="tab:purple", alpha=0.7, ms=3
            )
            cer_axis.plot(steps, [p["oracle_cer"] for p in curve], "--s", color="tab:green", alpha=0.7, ms=3)
        for axis, key in (
            (reward_axis, "reward"),
            (natural_axis, "oracle_naturalness"),
            (damage_axis, "oracle_artifact_rate"),
            (cer_axis, "oracle_cer"),
        ):
            axis.set_ylim(*limits[key])
        reward_axis.set_ylabel("RM reward (solid)", color="tab:red")
        natural_axis.set_ylabel("oracle naturalness (dashed)", color="tab:blue")
        damage_axis.set_ylabel("artifact rate (solid)", color="tab:purple")
        cer_axis.set_ylabel("CER (dashed)", color="tab:green")
        damage_axis.set_xlabel("policy optimisation step")
        reward_axis.set_title(f"{method}: reward vs oracle over training ({len(per_seed)} seed(s))")
        fig.tight_layout()
        path = Path(output_dir) / f"curve_{method.lower()}.png"
        atomic_write(path, functools.partial(fig.savefig, format="png", dpi=110))
        plt.close(fig)
        paths.append(str(path))
    return paths


def plot_overoptimisation(
    per_seed: list[dict], methods: Sequence[str], output_dir: str | os.PathLike, gao_fits: dict | None = None
) -> str:
    """Over-optimisation curves (Gao et al. 2022): proxy reward and oracle scores against sqrt KL(π ‖ π_SFT).

    One line per method, each point the mean over seeds at one evaluation step; the x-axis is the square root of the
    mean sequence KL of the evaluation samples from the SFT policy (`DiffROConfig.eval_kl`). A proxy reward that
    keeps rising while the oracle scores peak and fall is over-optimisation of the reward model. The gold-score
    panel also draws each method's fit ``gold(SFT) + d·(α − β·log d)`` (``gao_fits``, by default computed from
    ``per_seed`` with :func:`~rrpo_hf.study.statistics.gao_fits`) up to the largest sqrt KL the method reached, and
    marks its peak d* with a dotted line where that lies within it.
    """
    import matplotlib  # optional (the `plots` extra), and only the curves need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if gao_fits is None:
        gao_fits = fit_gao_per_method(methods, per_seed)
    panels = [
        ("reward", "RM reward (proxy)"),
        ("oracle_emotion_score", "oracle emotion score"),
        ("oracle_naturalness", "oracle naturalness"),
    ]
    if all(GOLD_KEY in point for run in per_seed for m in methods for point in run["policies"][m]["curve"]):
        panels.append((GOLD_KEY, "gold score sqrt(E·N); lines: Gao fit"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6), sharex=True)
    for method in methods:
        curves = [run["policies"][method]["curve"] for run in per_seed]
        steps = min(len(curve) for curve in curves)
        x = [np.mean([curve[i][SQRT_KL_KEY] for curve in curves]) for i in range(steps)]
        for axis, (key, label) in zip(axes, panels):
            style = "o" if key == GOLD_KEY and method in gao_fits else "-o"
            (line,) = axis.plot(
                x, [np.mean([curve[i][key] for curve in curves]) for i in range(steps)], style, ms=3, label=method
            )
            axis.set_title(label)
            axis.set_xlabel("sqrt KL(π ‖ π_SFT) (nats^½)")
            fit = gao_fits.get(method)
            if key != GOLD_KEY or fit is None or not math.isfinite(fit["alpha"]):
                continue
            start = float(np.mean([curve[0][GOLD_KEY] for curve in curves]))
            grid = np.linspace(0.0, fit["max_sqrt_kl"], 100)
            axis.plot(grid, start + gao_reward(grid, fit["alpha"], fit["beta"]), "-", color=line.get_color())
            if math.isfinite(fit["peak_sqrt_kl"]) and fit["peak_sqrt_kl"] <= fit["max_sqrt_kl"]:
                axis.axvline(fit["peak_sqrt_kl"], linestyle=":", color=line.get_color())
    axes[0].legend()
    fig.suptitle(f"Over-optimisation: mean over {len(per_seed)} seed(s) at each evaluation step")
    fig.tight_layout()
    path = Path(output_dir) / "overoptimisation.png"
    atomic_write(path, functools.partial(fig.savefig, format="png", dpi=110))
    plt.close(fig)
    return str(path)


def format_remedies(cfg: RewardHackingStudyConfig, summary: dict) -> list[str]:
    """The report's lines on the remedy rows (`reward_remedies`): what each optimises, the prediction written before
    their first run, and the multi-task RM's own test scores. Empty without remedy rows."""
    if not cfg.reward_remedies:
        return []
    lines = ["### Other remedies", ""]
    lines += [f"- **{row}**: {REMEDY_DESCRIPTIONS[row]}" for row in cfg.reward_remedies]
    scores = summary.get("multitask_rm")
    if scores:
        lines += [
            f"- The multi-task RM (ASR + quality heads, trained once on {cfg.multitask_rm_num_train} natural and "
            f"degraded utterances of its own seed) scores test ASR CER {scores['asr_cer']:.3f} and quality accuracy "
            f"{scores['quality_accuracy']:.3f} (5 classes); weights: ASR {cfg.asr_reward_weight:g}, quality "
            f"{cfg.quality_reward_weight:g}; ensembles of {cfg.ensemble_size} RMs (λ = {cfg.ensemble_std_coef:g}); "
            f"gate CER <= {cfg.gate_max_cer:g}."
        ]
    lines += ["", f"**Prediction (written before their first run).** {REMEDY_PREDICTION}", ""]
    return lines


def format_mechanism_rows(cfg: RewardHackingStudyConfig) -> list[str]:
    """The report's lines on the rows that separate the robust RM from the robust reward (`mechanism_rows`): what
    each optimises and the prediction written before their first run; empty when the run has none."""
    rows = [method for method, _ in cfg.policy_rows().values() if method in MECHANISM_DESCRIPTIONS]
    if not rows:
        return []
    return [
        "### Robust reward model or robust reward",
        "",
        *[f"- **{row}**: {MECHANISM_DESCRIPTIONS[row]}" for row in rows],
        "",
        f"**Prediction (written before their first run).** {MECHANISM_PREDICTION}",
        "",
    ]


def format_sampling_rows(cfg: RewardHackingStudyConfig) -> list[str]:
    """The report's lines on the rows whose reward reads another Gumbel sample than DiffRO's (e.g.
    `DiffRO-nucleus`); empty when the run has none."""
    rows = [method for method, _ in cfg.policy_rows().values() if method in SAMPLING_DESCRIPTIONS]
    if not rows:
        return []
    return [
        "### What the reward reads",
        "",
        *[f"- **{row}**: {SAMPLING_DESCRIPTIONS[row]}" for row in rows],
        "",
        f"**Prediction (written before its first run).** {SAMPLING_PREDICTION}",
        "",
    ]


_GRPO_HEADERS = {
    GOLD_KEY: "Δ gold",
    "oracle_emotion_score": "Δ emotion",
    "oracle_naturalness": "Δ naturalness",
    "oracle_artifact_rate": "Δ artifact rate",
    SQRT_KL_KEY: "Δ sqrt KL",
}


def _difference_cell(cell: dict | None) -> str:
    if cell is None or not math.isfinite(cell["mean"]):
        return "n/a"
    spread = f" ± {cell['half_width']:.3f}" if math.isfinite(cell["half_width"]) else ""
    return f"{cell['mean']:+.3f}{spread}"


def format_grpo_section(cfg: RewardHackingStudyConfig, summary: dict) -> list[str]:
    """The GRPO rows against the DiffRO-family row on the same reward: the prediction, paired differences at the end
    and at matched sqrt KL, and the cost per step and per unit of gold gained. Empty without GRPO rows."""
    grpo = summary.get("grpo")
    rows = [row for row in cfg.policy_rows() if row in GRPO_COUNTERPARTS]
    if not rows or grpo is None:
        return []
    lines = [
        "### Policy gradient (GRPO) against the analytical gradient (DiffRO) on the same rewards",
        "",
        f"GRPO rows: {cfg.grpo_num_generations} completions per prompt (RAS sampling), {cfg.policy_batch_size} "
        f"prompts per step, lr {cfg.grpo_learning_rate or cfg.policy_learning_rate}, the same seeds, corpora, SFT "
        "policy, RMs and β as their counterparts ("
        + ", ".join(f"{row} vs {GRPO_COUNTERPARTS[row]}" for row in rows)
        + ").",
        "",
        f"**Prediction (written before their first run).** {GRPO_PREDICTION}",
        "",
    ]
    pairs = grpo["pairs"]
    if pairs:
        keys = list(_GRPO_HEADERS)
        lines += [
            "| comparison | where | " + " | ".join(_GRPO_HEADERS[k] for k in keys) + " |",
            "|---|---|" + "---:|" * len(keys),
        ]
        for comparison, entry in pairs.items():
            lines.append(
                f"| {comparison} | end | " + " | ".join(_difference_cell(entry["end"].get(k)) for k in keys) + " |"
            )
            matched = entry.get("matched") or {}
            if matched:
                cells = [_difference_cell(matched.get(k)) if k != SQRT_KL_KEY else "0" for k in keys]
                lines.append(f"| {comparison} | sqrt KL {matched['sqrt_kl']:.2f} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Paired per-seed differences (mean ± the half-width of the "
            f"{cfg.confidence:.0%} t-interval) after {cfg.policy_steps} steps and at the largest sqrt KL both rows "
            "reach in every seed (curves read as in the matched-sqrt-KL table).",
            "",
        ]
    cost = grpo.get("cost") or {}
    if cost:
        lines += [
            "| row | seconds per step | gold gain (end − SFT) | seconds per unit of gold |",
            "|---|---:|---:|---:|",
        ]
        for row, entry in cost.items():
            cells = [format_mean_ci(entry[k]["mean"], entry[k]["ci"]) for k in ("seconds_per_step", "gold_gain")]
            cells.append(format_mean_ci(entry["seconds_per_gold"]["mean"], entry["seconds_per_gold"]["ci"], 1))
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "Seconds of optimisation steps (rollouts, rewards, backward, update; evaluations left out) on this "
            "machine; seconds per unit of gold counts the seeds where the gold score rose.",
            "",
        ]
    return lines


def render_report(
    cfg: RewardHackingStudyConfig,
    summary: dict,
    plots: Sequence[str],
    wall_time_s: float,
    world: dict | None = None,
    stage_times: dict[str, float] | None = None,
) -> str:
    """``report.md``; ``world`` (the resolved `TestbedConfig` as a dict) joins the Configuration section;
    ``stage_times`` (mean seconds per seed by stage) gives the time table."""
    seeds = len(cfg.seeds)
    ci_note = f"mean ± {cfg.confidence:.0%} CI (t-distribution) over {seeds} seeds" if seeds > 1 else "1 seed (no CI)"
    preset = get_preset(cfg.preset)
    parts = [
        f"# Reward-hacking study (testbed): preset `{preset.name}`",
        "",
        f"Seeds: {cfg.seeds}; {ci_note}. Wall time: {wall_time_s:.0f} s. Policy optimisation: {cfg.rollout} "
        f"rollouts, {cfg.policy_steps} steps, lr {cfg.policy_learning_rate}, β {cfg.beta}, target emotions "
        f"{cfg.policy_target_emotions or 'all'}.",
        "",
        *format_preset_header(cfg, summary.get("gate")),
        "## Setting",
        "",
        f"- **SFT corpus**: {cfg.sft_num_train or cfg.num_train} utterances at emotion intensity {cfg.sft_intensity} "
        f"(under-expressive: headroom a reward can add genuinely), {cfg.sft_epochs:g} epochs, emotion-independent "
        f"glitches in {cfg.sft_artifact_rate:.0%} of its "
        "utterances (a policy can only learn to emit tokens it gives some probability);",
        f"- **RM corpus**: {cfg.rm_num_train or cfg.num_train} utterances, {cfg.rm_num_speakers} speakers, "
        f"intensity {cfg.rm_intensity}, {cfg.rm_label_noise:.0%} wrong labels, artifacts (density "
        f"{cfg.artifact_density}) in {cfg.spurious_artifact_rate:.0%} of the "
        f"{', '.join(cfg.spurious_emotions)} utterances;"
        + (
            f" then a fine-tune ({cfg.rm_finetune_epochs:g} epochs, lr {cfg.rm_finetune_learning_rate}) on "
            f"{cfg.rm_finetune_num_train} clean utterances of {cfg.rm_finetune_num_speakers} speaker(s) for the rows "
            f"{[v for v in cfg.rm_variants if v in FINETUNED_VARIANTS]};"
            if cfg.rm_finetune_num_train > 0
            else ""
        ),
        f"- **clean control RM** (`clean`): the RM corpus's texts and speakers with correct labels and "
        f"emotion-independent glitches in {cfg.clean_artifact_rate:.0%} of its utterances;",
        f"- **oracle**: plausible intensities {cfg.oracle_config().plausible_intensities} (naturalness); the emotion "
        "score is measured against the full-strength renderings, so it rewards intensity;",
        f"- **policy optimisation**: prompts of {cfg.policy_target_emotions or 'every emotion'} only; lr "
        f"{cfg.policy_learning_rate}, β = {cfg.beta}, {cfg.policy_steps} steps, batch {cfg.policy_batch_size}; "
        f"DiffRO's reward is plain cross-entropy, RRPO's is Eq. 5 (label smoothing "
        f"{POLICY_METHODS['RRPO'].label_smoothing}, α = {POLICY_METHODS['RRPO'].adv_alpha}, FGM radius ε = "
        f"{cfg.adv_epsilon} on h').",
        "- **controls**: DiffRO-clean optimises against the clean RM (damage it shows too is not caused by the "
        "preset's flaw); DiffRO-FT against the vanilla fine-tune (the clean data without the regularisers); "
        "DiffRO-beta<β> is DiffRO at another KL weight (how much the KL term alone holds hacking back).",
        "",
        "## Headline comparisons",
        "",
        format_headline_table(summary, cfg.confidence),
        "",
        "## Target emotion check",
        "",
        format_target_check_table(cfg, summary),
        "",
        "## Table 1 analogue: policies scored by the oracle",
        "",
        "The +SFT row is the starting policy scored by the first row's RM; each method's reward is measured with the "
        "RM it optimised ("
        + ", ".join(f"{row}: {POLICY_METHODS[method].rm_variant}" for row, (method, _) in cfg.policy_rows().items())
        + "). A row with several rewards reports its emotion reward there.",
        "",
        *format_remedies(cfg, summary),
        *format_mechanism_rows(cfg),
        *format_sampling_rows(cfg),
        *format_grpo_section(cfg, summary),
        format_table1(summary),
        "",
        "### Paired differences against DiffRO",
        "",
        format_paired_table(summary, cfg.confidence),
        "",
        "### Paired differences at matched sqrt KL",
        "",
        format_matched_sqrt_kl_table(summary, cfg.confidence),
        "",
        "### Over-optimisation: gold score sqrt(E·N) against sqrt KL from the SFT policy",
        "",
        format_overoptimisation_table(summary),
        "",
        "#### Gao et al.'s fit: R(d) = d·(α − β·log d), d = sqrt KL",
        "",
        format_gao_table(summary, cfg.confidence),
        "",
        "### Change from the SFT policy (means over seeds)",
        "",
        format_changes(summary),
        "",
        "## Table 2 analogue: reward models (WA / UA, %)",
        "",
        "`alpha`: in-domain test; `alpha+artifacts`: the same utterances with "
        f"{cfg.test_artifact_rate:.0%} artifact tokens each; `beta`: the other testbed language (cross-lingual).",
        "",
        format_table2(summary),
        "",
        "## Robustness probes",
        "",
        format_probe_table(summary),
        "",
        "## Exploitability audit",
        "",
        "White-box attacks on each RM row (docs/audit.md) on alpha test speech of the target emotion "
        f"`{audit_target(cfg)}` at intensities {list(AUDIT_INTENSITIES)}: log P(target) gained by greedy token edits "
        f"(budget {cfg.audit_edit_budget}) and by the DiffRO Gumbel path, the share of edits that write an artifact "
        "id, one FGM step on h' at ε_adv and at 5% of ‖h'‖, the rise of P(target) with 10% artifacts inserted, and "
        "the rise of P(target) from intensity 0 to 1 (an RM that sees the emotion has a clearly positive one).",
        "",
        format_audit_table(summary.get("audit") or {})
        if summary.get("audit")
        else "(no audit: audit_num_utterances = 0, or no test utterance of the target emotion)",
        "",
        "## Curves",
        "",
        *[f"![{Path(p).stem}]({Path(p).name})" for p in plots],
        "",
        *format_stage_time_table(stage_times),
        "## Configuration",
        "",
        format_configuration(cfg, world),
        "",
    ]
    return "\n".join(parts)


def format_stage_time_table(stage_times: dict[str, float] | None) -> list[str]:
    """The report's section on where a seed's time goes (mean seconds per seed, one process each)."""
    if not stage_times:
        return []
    total = stage_times.get("total") or float("nan")
    lines = ["## Time per seed, by stage (mean seconds, one process)", "", "| stage | s | share |", "|---|---|---|"]
    for kind, seconds in stage_times.items():
        lines.append(f"| {kind} | {seconds:.1f} | {seconds / total:.0%} |")
    return [*lines, ""]


def format_preset_header(cfg: RewardHackingStudyConfig, gate: dict | None) -> list[str]:
    """The report's lines above any measured table: the preset's summary, mechanism and prediction, the settings this
    run changed, and the mechanism gate where the preset has one."""
    preset = get_preset(cfg.preset)
    return [
        f"## Preset `{preset.name}`: {preset.summary}",
        "",
        f"**Mechanism.** {preset.mechanism}",
        "",
        f"**Prediction (written when the preset was designed, before its first run).** {preset.prediction}",
        "",
        format_preset_deviations(cfg),
        "",
        *format_gate_section(gate),
    ]


def render_gate_report(
    cfg: RewardHackingStudyConfig, gate: dict, wall_time_s: float, world: dict | None = None
) -> str:
    """``report.md`` of a study whose mechanism gate failed: the preset, its prediction, the gate, the setting."""
    preset = get_preset(cfg.preset)
    parts = [
        f"# Reward-hacking study (testbed): preset `{preset.name}` — mechanism absent",
        "",
        f"Seeds: {cfg.seeds}. Wall time: {wall_time_s:.0f} s.",
        "",
        *format_preset_header(cfg, gate),
        "## Configuration",
        "",
        format_configuration(cfg, world),
        "",
    ]
    return "\n".join(parts)


__all__ = [
    "format_changes",
    "format_gao_table",
    "format_grpo_section",
    "format_headline_table",
    "format_matched_sqrt_kl_table",
    "format_mechanism_rows",
    "format_remedies",
    "format_sampling_rows",
    "format_configuration",
    "format_paired_table",
    "format_preset_deviations",
    "format_headline_overview",
    "format_presets_overview",
    "render_presets_overview",
    "format_probe_table",
    "format_table1",
    "format_table2",
    "format_target_check_table",
    "plot_curves",
    "format_stage_time_table",
    "render_gate_report",
    "render_report",
]
