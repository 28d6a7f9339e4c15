"""The study's GRPO rows: GRPO, GRPO-robust and GRPO-clean next to their DiffRO-family counterparts, run by
`CosyVoiceGRPOTrainer` on the same RMs, compared at the end and at matched sqrt KL, with their cost."""

from pathlib import Path

import pytest
from test_study_presets import TINY  # the tiny study's sizes, shared with the preset tests

from rrpo_hf.script_utils import parse_study_configs
from rrpo_hf.study import GRPO_COUNTERPARTS, POLICY_METHODS, RewardHackingStudyConfig, get_preset, run_study


def test_grpo_rows_reuse_their_counterparts_rewards_and_live_in_their_own_recipe():
    for row, counterpart in GRPO_COUNTERPARTS.items():
        grpo, diffro = POLICY_METHODS[row], POLICY_METHODS[counterpart]
        assert grpo.optimizer == "grpo" and diffro.optimizer == "diffro"
        assert (grpo.rm_variant, grpo.label_smoothing, grpo.adv_alpha) == (
            diffro.rm_variant,
            diffro.label_smoothing,
            diffro.adv_alpha,
        )
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "study_grpo.yaml"
    for config in parse_study_configs(["--config", str(recipe)]):
        assert set(GRPO_COUNTERPARTS) | set(GRPO_COUNTERPARTS.values()) <= set(config.policy_rows())
        # the presets' own rows stay as they were: the demo's tables do not change
        assert not set(GRPO_COUNTERPARTS) & set(get_preset(config.preset).settings.get("policy_methods", []))


@pytest.mark.slow
def test_a_tiny_study_with_grpo_rows_reports_paired_and_matched_differences_and_cost(tmp_path):
    config = RewardHackingStudyConfig(
        **{
            **TINY,
            "output_dir": str(tmp_path / "study"),
            "rm_variants": ["base", "+Adv"],
            "policy_methods": ["DiffRO", "RRPO", "GRPO", "GRPO-robust"],
            "beta_sweep": [],
            "grpo_num_generations": 2,
            "audit_num_utterances": 0,
        }
    )
    results = run_study(config, log=lambda message: None)
    grpo = results["summary"]["grpo"]
    assert set(grpo["pairs"]) == {"GRPO − DiffRO", "GRPO-robust − RRPO"}
    assert "oracle_gold_score" in grpo["pairs"]["GRPO − DiffRO"]["end"]
    assert "oracle_artifact_rate" in grpo["pairs"]["GRPO − DiffRO"]["matched"]
    assert grpo["cost"]["GRPO"]["seconds_per_step"]["mean"] > 0
    run = results["per_seed"][0]["policies"]["GRPO"]
    assert run["steps"] == config.policy_steps and len(run["curve"]) == config.policy_steps + 1
    report = results["report"]
    assert "### Policy gradient (GRPO)" in report and "seconds per step" in report
    assert "+GRPO-robust" in report  # the Table 1 row
