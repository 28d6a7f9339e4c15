"""The study's report: Markdown tables of the aggregated results, the training curves, and ``report.md``."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..utils.saving import atomic_write
from .config import POLICY_METHODS, TABLE1_COLUMNS, TABLE2_DOMAINS, RewardHackingStudyConfig
from .statistics import format_mean_ci


def format_table1(summary: dict) -> str:
    headers = [TABLE1_COLUMNS[key][0] for key in TABLE1_COLUMNS]
    lines = ["| method | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers)]
    for row, scores in summary["table1"].items():
        cells = [format_mean_ci(scores[key]["mean"], scores[key]["ci"]) for key in TABLE1_COLUMNS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_overoptimisation_table(summary: dict) -> str:
    """Gold score (sqrt(E·N), oracle) at the start, at its peak and at the end of training, with sqrt KL from the
    SFT policy, per method (``summary["overoptimisation"]``, curves averaged over seeds)."""
    rows = summary.get("overoptimisation") or {}
    if not rows:
        return "(no over-optimisation summary: the curves carry no gold score or KL)"
    lines = [
        "| method | gold at start | peak gold | at step | at sqrt KL | final gold | final sqrt KL |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, row in rows.items():
        lines.append(
            f"| {method} | {row['start_gold']:.3f} | {row['peak_gold']:.3f} | {row['peak_step']} | "
            f"{row['peak_sqrt_kl']:.2f} | {row['final_gold']:.3f} | {row['final_sqrt_kl']:.2f} |"
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


def format_table2(summary: dict) -> str:
    header = "| reward model | " + " | ".join(f"{d} WA (%) | {d} UA (%)" for d in TABLE2_DOMAINS) + " |"
    lines = [header, "|---|" + "---:|" * (2 * len(TABLE2_DOMAINS))]
    for variant, domains in summary["table2"].items():
        cells = []
        for domain in TABLE2_DOMAINS:
            cells += [format_mean_ci(domains[domain][m]["mean"], domains[domain][m]["ci"], 1) for m in ("wa", "ua")]
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


def plot_overoptimisation(per_seed: list[dict], methods: Sequence[str], output_dir: str | os.PathLike) -> str:
    """Over-optimisation curves (Gao et al. 2022): proxy reward and oracle scores against sqrt KL(π ‖ π_SFT).

    One line per method, each point the mean over seeds at one evaluation step; the x-axis is the square root of the
    mean sequence KL of the evaluation samples from the SFT policy (`DiffROConfig.eval_kl`). A proxy reward that
    keeps rising while the oracle scores peak and fall is over-optimisation of the reward model.
    """
    import matplotlib  # optional (the `plots` extra), and only the curves need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("reward", "RM reward (proxy)"),
        ("oracle_emotion_score", "oracle emotion score"),
        ("oracle_naturalness", "oracle naturalness"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(12.0, 3.6), sharex=True)
    for method in methods:
        curves = [run["policies"][method]["curve"] for run in per_seed]
        steps = min(len(curve) for curve in curves)
        x = [np.mean([curve[i]["sqrt_kl_to_reference"] for curve in curves]) for i in range(steps)]
        for axis, (key, label) in zip(axes, panels):
            axis.plot(
                x, [np.mean([curve[i][key] for curve in curves]) for i in range(steps)], "-o", ms=3, label=method
            )
            axis.set_title(label)
            axis.set_xlabel("sqrt KL(π ‖ π_SFT) (nats^½)")
    axes[0].legend()
    fig.suptitle(f"Over-optimisation: mean over {len(per_seed)} seed(s) at each evaluation step")
    fig.tight_layout()
    path = Path(output_dir) / "overoptimisation.png"
    atomic_write(path, functools.partial(fig.savefig, format="png", dpi=110))
    plt.close(fig)
    return str(path)


def render_report(
    cfg: RewardHackingStudyConfig,
    summary: dict,
    plots: Sequence[str],
    wall_time_s: float,
    world: dict | None = None,
) -> str:
    """``report.md``; ``world`` (the resolved `TestbedConfig` as a dict) joins the Configuration section."""
    seeds = len(cfg.seeds)
    ci_note = f"mean ± {cfg.confidence:.0%} CI (t-distribution) over {seeds} seeds" if seeds > 1 else "1 seed (no CI)"
    parts = [
        "# Reward-hacking study (testbed)",
        "",
        f"Seeds: {cfg.seeds}; {ci_note}. Wall time: {wall_time_s:.0f} s. Spurious shortcut in the RM corpus: "
        f"{cfg.spurious_artifact_rate:.0%} of {', '.join(cfg.spurious_emotions)} utterances carry artifact tokens "
        f"(density {cfg.artifact_density}). Policy optimisation: {cfg.rollout} rollouts, {cfg.policy_steps} steps, "
        f"lr {cfg.policy_learning_rate}, β {cfg.beta}, target emotions {cfg.policy_target_emotions or 'all'}.",
        "",
        "## Setting",
        "",
        "Choices that make reward hacking measurable on the testbed. With the toy recipes' settings (offline "
        "rollouts, lr 1e-4, all emotions) the training reward rose only slightly: the SFT policy's own tokens "
        "already satisfy the RM, and teacher-forced rollouts never show the RM what the policy would emit.",
        "",
        f"- **online rollouts** ({cfg.rollout}): the policy is scored on what it generates, so it can drift;",
        f"- **prompts of the spurious emotion only** ({cfg.policy_target_emotions or 'all emotions'}): that is where "
        "the shortcut pays (for other targets the base RM's gradient pushes artifacts *down*);",
        f"- **emotion-independent glitches in the SFT data** ({cfg.sft_artifact_rate:.0%} of SFT utterances carry "
        "artifacts): a policy can only learn to emit tokens it gives some probability; the Gumbel samples of the "
        "DiffRO step come from the full softmax, whereas generation's top-p/top-k cuts the rare tail;",
        f"- **denser artifacts in the RM corpus** (density {cfg.artifact_density} instead of the world's 0.05) so the "
        "shortcut is strong enough to be found within the budget;",
        f"- **lr {cfg.policy_learning_rate}** for the tiny from-scratch policy, β = {cfg.beta} (paper value), "
        f"{cfg.policy_steps} steps, batch {cfg.policy_batch_size}; DiffRO's reward is plain cross-entropy, "
        f"RRPO's is Eq. 5 (label smoothing {POLICY_METHODS['RRPO'][1]}, α = {POLICY_METHODS['RRPO'][2]}, "
        f"FGM radius ε = {cfg.adv_epsilon} on h').",
        "",
        "Control: **DiffRO-clean** runs DiffRO against a vanilla RM trained on the artifact-free corpus (`clean` "
        "row of Table 2). Artifacts that DiffRO emits but DiffRO-clean does not are exploitation of the shortcut; "
        "damage both show (e.g. CER) comes from optimising an emotion-only reward, not from the shortcut.",
        "",
        "## Table 1 analogue: policies scored by the oracle",
        "",
        "The +SFT row is the starting policy scored by the base RM; each method's reward is measured with the RM it "
        "optimised (DiffRO: base RM, RRPO: +Adv RM, DiffRO-clean: clean RM).",
        "",
        format_table1(summary),
        "",
        "### Paired differences against DiffRO",
        "",
        format_paired_table(summary, cfg.confidence),
        "",
        "### Over-optimisation: gold score sqrt(E·N) against sqrt KL from the SFT policy",
        "",
        format_overoptimisation_table(summary),
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
        "## Curves",
        "",
        *[f"![{Path(p).stem}]({Path(p).name})" for p in plots],
        "",
        "## Configuration",
        "",
        format_configuration(cfg, world),
        "",
    ]
    return "\n".join(parts)


__all__ = [
    "format_changes",
    "format_configuration",
    "format_paired_table",
    "format_probe_table",
    "format_table1",
    "format_table2",
    "plot_curves",
    "render_report",
]
