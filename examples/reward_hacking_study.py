"""Reward-hacking study on the testbed: does DiffRO hack a vanilla reward model, and does RRPO's robust one resist?

For every seed: SFT a toy CosyVoice2 policy on natural speech, train the reward-model ablation rows (base, +LS,
+EAM, +Adv) on a corpus where the `angry` utterances carry artifact tokens, probe each RM's robustness, then run
DiffRO (base RM) and RRPO (+Adv RM) from the SFT policy and score everything with the testbed oracle. Writes
`report.md` (Table 1 / Table 2 analogues, mean ± 95% CI over seeds, paired differences against DiffRO, the
configuration), `results.json` (every figure, per seed, and the world's parameters) and
`curve_*.png` (RM reward vs oracle naturalness over training) to `output_dir`:

    python examples/reward_hacking_study.py --config recipes/toy/study.yaml          # full run (3 seeds)
    python examples/reward_hacking_study.py --config recipes/toy/study.yaml --seeds 0 --policy_steps 20

The pipeline lives in `rrpo_hf.study`; this script only parses the configuration.
"""

from __future__ import annotations

from trl import TrlParser

from rrpo_hf.study import RewardHackingStudyConfig, format_table1, format_table2, run_study
from rrpo_hf.study.report import format_paired_table


def main(config: RewardHackingStudyConfig) -> dict:
    results = run_study(config)
    print("\nTable 1 analogue (oracle scores of the policies)\n")
    print(format_table1(results["summary"]))
    print("\nPaired differences against DiffRO (per seed: same corpora and SFT policy)\n")
    print(format_paired_table(results["summary"], config.confidence))
    print("\nTable 2 analogue (reward models, WA / UA %)\n")
    print(format_table2(results["summary"]))
    print(f"\nReport, JSON and plots in {config.output_dir} ({results['wall_time_s']:.0f} s)")
    return results


if __name__ == "__main__":
    (study_config,) = TrlParser((RewardHackingStudyConfig,)).parse_args_and_config()
    main(study_config)
