"""Demo (what `make demo` runs): the `paper-protocol` preset of the reward-hacking study, minutes on CPU.

For each of 3 seeds, on the built-in testbed:

1. SFT a tiny CosyVoice2-architecture policy on under-expressive testbed speech (the "+SFT" row: intelligible,
   with emotion headroom);
2. pre-train a vanilla reward model on a large, noisy (20% wrong labels), multi-speaker corpus in which half of the
   `angry` utterances carry artifact tokens, then fine-tune it on a small clean single-speaker set: vanilla (+FT),
   and with label smoothing, Energy-Adaptive Mixup and adversarial training (+LS, +EAM, +Adv, the paper's
   protocol); score every RM in-domain, with artifacts and cross-lingually (Table 2 analogue), and probe them;
3. optimise the policy with DiffRO (pre-trained RM), DiffRO-FT (vanilla fine-tune), RRPO (+Adv RM, Eq. 5) and
   DiffRO-clean (control: an RM without the shortcut) and score the samples with the testbed oracle (Table 1
   analogue: emotion score, naturalness, CER, artifact rate, the RM's own reward).

Prints the headline comparisons (RRPO − DiffRO-FT first), both tables (mean ± 95% CI over seeds), the paired
differences against DiffRO and the over-optimisation table, and writes `outputs/study/{report.md, results.json,
curve_*.png, overoptimisation.png}`. Every number is measured in the run. Every preset, 5 seeds:
`examples/reward_hacking_study.py --config recipes/toy/study.yaml`; any of its options can be passed here too
(e.g. `--seeds 0 --policy_steps 20`, `--preset brittle`).
"""

from __future__ import annotations

import time

from rrpo_hf.script_utils import parse_study_configs, run_studies
from rrpo_hf.study import RewardHackingStudyConfig, format_probe_table, format_table1, format_table2, run_study
from rrpo_hf.study.report import format_headline_table, format_overoptimisation_table, format_paired_table


# Under 15 minutes on 2 CPU cores, the seeds in parallel (num_workers 0: one process per core); the study recipe runs
# every preset with 5 seeds.
DEMO_DEFAULTS = dict(output_dir="outputs/study", seeds=[0, 1, 2], preset="paper-protocol", num_workers=0)


def main(config: RewardHackingStudyConfig) -> dict:
    start = time.perf_counter()
    results = run_study(config)
    summary = results["summary"]
    print(f"\n{'=' * 30} RRPO demo ({config.preset}): {len(config.seeds)} seed(s), mean ± 95% CI {'=' * 30}")
    print("\nHeadline comparisons (paired per seed; minimum detectable effects at 80% power)\n")
    print(format_headline_table(summary, config.confidence))
    print("\nTable 2 analogue: the reward models (WA / UA %)\n")
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
    run_studies(parse_study_configs(defaults=DEMO_DEFAULTS), main)
