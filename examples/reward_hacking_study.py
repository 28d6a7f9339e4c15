"""Reward-hacking study on the testbed: does DiffRO hack a reward model, and which remedy stops it?

Each preset (`rrpo_hf.study.presets`) models one vulnerability of a reward model: `dataset-bias`, `paper-protocol`,
`brittle`, `cue-exaggeration`. For every seed: SFT a toy CosyVoice2 policy on under-expressive speech, train the
preset's reward-model rows (Table 2 analogue), probe each RM's robustness, then run DiffRO, RRPO and the controls
from the SFT policy and score everything with the testbed oracle. Writes `report.md` (the preset's mechanism and
prediction, Table 1 / Table 2 analogues, mean ± 95% CI over seeds, paired differences against DiffRO,
over-optimisation table, the configuration), `results.json` (every figure, per seed, and the world's parameters),
`curve_*.png` and `overoptimisation.png` to `output_dir`:

    python examples/reward_hacking_study.py --config recipes/toy/study.yaml          # every preset, 5 seeds
    python examples/reward_hacking_study.py --preset brittle --seeds 0 --policy_steps 20

Flags and recipe keys override the preset's settings. The pipeline lives in `rrpo_hf.study`; this script only
parses the configuration.
"""

from __future__ import annotations

from pathlib import Path

from rrpo_hf.script_utils import parse_study_configs, run_studies
from rrpo_hf.study import RewardHackingStudyConfig, format_table1, format_table2, run_study
from rrpo_hf.study.report import (
    format_headline_table,
    format_overoptimisation_table,
    format_paired_table,
    format_target_check_table,
    render_presets_overview,
)
from rrpo_hf.utils.saving import atomic_write_text


def main(config: RewardHackingStudyConfig) -> dict:
    results = run_study(config)
    summary = results["summary"]
    print(f"\n{'=' * 30} preset {config.preset}: {len(config.seeds)} seed(s) {'=' * 30}")
    print("\nHeadline comparisons (paired per seed; minimum detectable effects at 80% power)\n")
    print(format_headline_table(summary, config.confidence))
    print("\nTarget emotion check (does each reward model see the target emotion?)\n")
    print(format_target_check_table(config, summary))
    print("\nTable 1 analogue (oracle scores of the policies)\n")
    print(format_table1(summary))
    print("\nPaired differences against DiffRO (per seed: same corpora and SFT policy)\n")
    print(format_paired_table(summary, config.confidence))
    print("\nOver-optimisation: gold score sqrt(E x N) at the start, peak and end, with sqrt KL from SFT\n")
    print(format_overoptimisation_table(summary))
    print("\nTable 2 analogue (reward models, WA / UA %)\n")
    print(format_table2(summary))
    print(f"\nReport, JSON and plots in {config.output_dir} ({results['wall_time_s']:.0f} s)")
    return results


if __name__ == "__main__":
    configs = parse_study_configs()
    summaries = {config.preset: result["summary"] for config, result in zip(configs, run_studies(configs, main))}
    if len(configs) > 1:
        overview = render_presets_overview(summaries, {config.preset: len(config.seeds) for config in configs})
        print(f"\n{overview}")
        path = Path(configs[0].output_dir).parent / "overview.md"
        atomic_write_text(path, overview)
        print(f"Overview: {path} (examples/study_overview.py joins studies run one preset at a time)")
