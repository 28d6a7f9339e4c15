"""Demo (what `make demo` runs): the whole RRPO pipeline at small size on the built-in testbed, minutes on CPU.

For each of 3 seeds:

1. SFT a tiny CosyVoice2-architecture policy on testbed speech (the "+SFT" row);
2. train the reward-model ablation rows (base, +LS, +EAM, +Adv) on a corpus where every `angry` utterance carries
   artifact tokens (the shortcut the paper says a vanilla RM learns), score them in-domain, with artifacts, and
   cross-lingually (Table 2 analogue), and probe them directly (artifact sensitivity, token-substitution and
   embedding attacks);
3. optimise the policy with DiffRO (base RM) and RRPO (+Adv RM) and score the samples with the testbed oracle
   (Table 1 analogue: emotion score, naturalness, CER, artifact rate, the RM's own reward).

Prints both tables (mean ± 95% CI over seeds) and the paired differences against DiffRO, and writes
`outputs/study/{report.md, results.json, curve_*.png}`. Every number is measured in the run. The larger study is
`examples/reward_hacking_study.py --config recipes/toy/study.yaml`; any of its options can be passed here too (e.g.
`--seeds 0 --policy_steps 20`).
"""

from __future__ import annotations

import time

from trl import TrlParser

from rrpo_hf.study import RewardHackingStudyConfig, format_probe_table, format_table1, format_table2, run_study
from rrpo_hf.study.report import format_overoptimisation_table, format_paired_table


# Small enough for ~5 minutes on 2 CPU cores; the study recipe runs more seeds and steps.
DEMO_DEFAULTS = dict(output_dir="outputs/study", seeds=[0, 1, 2], policy_steps=60, eval_steps=5)


def main(config: RewardHackingStudyConfig) -> dict:
    start = time.perf_counter()
    results = run_study(config)
    summary = results["summary"]
    print(f"\n{'=' * 30} RRPO demo: {len(config.seeds)} seed(s), mean ± 95% CI {'=' * 30}")
    print("\nTable 2 analogue: reward models trained where every angry utterance carries artifacts (WA / UA %)\n")
    print(format_table2(summary))
    print("\nRobustness probes of the reward models\n")
    print(format_probe_table(summary))
    print(f"\nTable 1 analogue: policies after {config.policy_steps} steps, scored by the testbed oracle\n")
    print(format_table1(summary))
    print("\nPaired differences against DiffRO (per seed: same corpora and SFT policy)\n")
    print(format_paired_table(summary, config.confidence))
    print("\nOver-optimisation: oracle gold score sqrt(E x N) at the start, peak and end, with sqrt KL from SFT\n")
    print(format_overoptimisation_table(summary))
    print(f"\nReport, JSON and plots: {config.output_dir}/ (wall time {time.perf_counter() - start:.0f} s)")
    return results


if __name__ == "__main__":
    parser = TrlParser((RewardHackingStudyConfig,))
    parser.set_defaults(**DEMO_DEFAULTS)
    (demo_config,) = parser.parse_args_and_config()
    main(demo_config)
