"""Reward-hacking study on the testbed: SFT -> reward models (ablation rows) -> DiffRO vs RRPO, the oracle as judge.

The study reproduces the *shape* of the RRPO paper's Tables 1 and 2 on the synthetic testbed
(:mod:`rrpo_hf.testbed`), where the listener is replaced by a ground-truth oracle:

1. a tiny CosyVoice2-architecture policy is SFT'd on natural speech of language ``alpha`` (the "+SFT" row);
2. reward models are trained on a corpus in which the spurious emotion(s) (``angry``) co-occur with artifact
   tokens: ``base`` (the vanilla DiffRO RM), ``+LS``, ``+EAM``, ``+Adv`` (RRPO's full RM);
3. Table 2 analogue: WA / UA of every RM in-domain (``alpha``), on ``alpha`` with artifacts inserted into every
   utterance, and cross-lingually (``beta``);
4. robustness probes of every RM (:mod:`rrpo_hf.evaluation.robustness`);
5. Table 1 analogue: DiffRO with the base RM vs RRPO with the robust RM, scored by the oracle (emotion score =
   E-MOS analogue, naturalness = N-MOS analogue, CER, artifact rate) and by the RM itself, mean ± 95% CI over seeds;
   a control runs DiffRO against a vanilla RM trained without the shortcut ("DiffRO-clean"), which separates
   exploitation of the shortcut from damage the emotion reward does anyway;
6. curves of RM reward vs oracle naturalness over policy training (reward up while naturalness goes down is the
   signature of reward hacking).

Everything here is measured; nothing is fixed in advance. :func:`run_study` returns (and writes) all figures.

Modules: :mod:`.config` (settings, rows, columns), :mod:`.stages` (one seed), :mod:`.statistics` (mean ± CI over
seeds, headline comparisons), :mod:`.checks` (does each RM see the target emotion), :mod:`.overoptimisation`
(Gao et al.'s fit, values at a matched sqrt KL), :mod:`.report` (tables, curves,
``report.md``), :mod:`.pipeline` (:func:`run_study`).
"""

from .checks import TargetCheckError, target_emotion_check
from .config import (
    CLEAN_CORPUS_VARIANTS,
    FINETUNED_VARIANTS,
    GRPO_COUNTERPARTS,
    GRPO_PREDICTION,
    MECHANISM_DESCRIPTIONS,
    MECHANISM_PREDICTION,
    POLICY_METHODS,
    REMEDY_DESCRIPTIONS,
    REMEDY_PREDICTION,
    RM_VARIANTS,
    SAMPLING_DESCRIPTIONS,
    STUDY_PLAUSIBLE_INTENSITIES,
    TABLE1_COLUMNS,
    TABLE2_DOMAINS,
    PolicyMethod,
    RewardHackingStudyConfig,
)
from .overoptimisation import fit_gao, fit_gao_over_seeds, gao_peak, gao_reward, value_at_sqrt_kl
from .pipeline import run_study
from .presets import ALL_PRESETS, STUDY_PRESETS, StudyPreset, get_preset, preset_names
from .report import (
    format_changes,
    format_configuration,
    format_gao_table,
    format_grpo_section,
    format_headline_overview,
    format_headline_table,
    format_matched_sqrt_kl_table,
    format_mechanism_rows,
    format_overoptimisation_table,
    format_paired_table,
    format_preset_deviations,
    format_presets_overview,
    format_probe_table,
    format_sampling_rows,
    format_table1,
    format_table2,
    format_target_check_table,
    plot_curves,
    plot_overoptimisation,
    render_presets_overview,
    render_report,
)
from .stages import (
    build_corpora,
    optimize_policy,
    policy_prompts,
    run_probes,
    run_seed,
    train_reward_model,
    train_sft_policy,
)
from .statistics import (
    PAIRED_CONTROL,
    aggregate,
    format_mean_ci,
    gao_fits,
    grpo_comparisons,
    headline_comparisons,
    matched_sqrt_kl_differences,
    mean_confidence_interval,
    minimum_detectable_effect,
    overoptimisation_summary,
    paired_difference_ci,
    paired_differences,
)


__all__ = [
    "ALL_PRESETS",
    "CLEAN_CORPUS_VARIANTS",
    "FINETUNED_VARIANTS",
    "GRPO_COUNTERPARTS",
    "GRPO_PREDICTION",
    "MECHANISM_DESCRIPTIONS",
    "MECHANISM_PREDICTION",
    "PAIRED_CONTROL",
    "POLICY_METHODS",
    "REMEDY_DESCRIPTIONS",
    "REMEDY_PREDICTION",
    "PolicyMethod",
    "RM_VARIANTS",
    "SAMPLING_DESCRIPTIONS",
    "STUDY_PLAUSIBLE_INTENSITIES",
    "STUDY_PRESETS",
    "StudyPreset",
    "TargetCheckError",
    "TABLE1_COLUMNS",
    "TABLE2_DOMAINS",
    "RewardHackingStudyConfig",
    "aggregate",
    "build_corpora",
    "format_changes",
    "format_configuration",
    "fit_gao",
    "fit_gao_over_seeds",
    "format_gao_table",
    "format_grpo_section",
    "format_headline_table",
    "format_matched_sqrt_kl_table",
    "format_mechanism_rows",
    "format_mean_ci",
    "format_overoptimisation_table",
    "format_paired_table",
    "format_preset_deviations",
    "format_headline_overview",
    "format_presets_overview",
    "format_probe_table",
    "format_sampling_rows",
    "format_table1",
    "format_table2",
    "format_target_check_table",
    "gao_fits",
    "grpo_comparisons",
    "gao_peak",
    "headline_comparisons",
    "gao_reward",
    "get_preset",
    "preset_names",
    "matched_sqrt_kl_differences",
    "mean_confidence_interval",
    "minimum_detectable_effect",
    "optimize_policy",
    "overoptimisation_summary",
    "paired_difference_ci",
    "paired_differences",
    "plot_curves",
    "plot_overoptimisation",
    "policy_prompts",
    "render_presets_overview",
    "render_report",
    "run_probes",
    "run_seed",
    "run_study",
    "target_emotion_check",
    "train_reward_model",
    "train_sft_policy",
    "value_at_sqrt_kl",
]
