"""The study's remedy rows (`reward_remedies`): DiffRO's multi-task reward (ASR, quality), reward-model ensembles and
the ASR CER gate, next to the paper's rows, with the rewards each row hands to `DiffROTrainer`."""

from pathlib import Path

import pytest
import torch
from test_study_presets import TINY  # the tiny study's sizes, shared with the preset tests

from rrpo_hf.models.robust_ser import RobustMultiTaskRMConfig, RobustSERForMultiTaskReward
from rrpo_hf.rewards import ASRErrorRate, ASRReward, QualityReward
from rrpo_hf.script_utils import parse_study_configs
from rrpo_hf.study import POLICY_METHODS, REMEDY_DESCRIPTIONS, RewardHackingStudyConfig, run_study, stages
from rrpo_hf.testbed import asr_vocabulary


ALL_REMEDIES = list(REMEDY_DESCRIPTIONS)


def tiny_multitask_rm():
    torch.manual_seed(0)
    config = RobustMultiTaskRMConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        asr_labels=asr_vocabulary(),
        tasks=["asr", "quality"],
    )
    return RobustSERForMultiTaskReward(config)


def test_remedy_rows_follow_the_preset_rows_and_are_checked():
    config = RewardHackingStudyConfig.from_preset("paper-protocol", reward_remedies=ALL_REMEDIES, beta_sweep=[1.0])
    assert list(config.policy_rows()) == [
        *config.policy_methods,
        *ALL_REMEDIES,
        "DiffRO-beta1",
    ]
    assert set(REMEDY_DESCRIPTIONS) < set(POLICY_METHODS)
    assert POLICY_METHODS["RRPO+ASR"].rm_variant == "+Adv" and POLICY_METHODS["RRPO+ASR"].asr_reward
    assert (
        POLICY_METHODS["DiffRO-gated"].needs_multitask_rm and not POLICY_METHODS["DiffRO-ens-min"].needs_multitask_rm
    )
    for overrides, message in [
        (dict(reward_remedies=["DiffRO+WER"]), "Unknown reward_remedies"),
        (dict(reward_remedies=["RRPO"]), "Unknown reward_remedies"),
        (dict(reward_remedies=["DiffRO-ens-min"], ensemble_size=1), "ensemble_size must be >= 2"),
        (dict(reward_remedies=["DiffRO-gated"], gate_max_cer=1.5), "gate_max_cer"),
        (dict(policy_methods=["DiffRO", "DiffRO+ASR"], reward_remedies=["DiffRO+ASR"]), "list each row once"),
        (
            dict(rm_variants=["base"], policy_methods=["DiffRO"], reward_remedies=["RRPO+ASR"]),
            "needs the reward model",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            RewardHackingStudyConfig(**overrides)


class Captured(Exception):
    pass


@pytest.mark.parametrize("method", ALL_REMEDIES)
def test_each_remedy_row_hands_its_rewards_to_the_trainer(monkeypatch, method):
    captured = {}

    def fake_trainer(**kwargs):
        captured.update(kwargs)
        raise Captured

    monkeypatch.setattr(stages, "DiffROTrainer", fake_trainer)
    config = RewardHackingStudyConfig(
        reward_remedies=[method], asr_reward_weight=0.5, quality_reward_weight=0.25, gate_max_cer=0.3
    )
    multitask_rm, members = tiny_multitask_rm(), ["rm0", "rm1", "rm2"]
    spec = POLICY_METHODS[method]
    reward_model = members if spec.ensemble else "rm0"
    with pytest.raises(Captured):
        stages.optimize_policy(
            config, method, torch.nn.Linear(1, 1), None, reward_model, None, None, None, 0, "/tmp/x",
            multitask_rm=multitask_rm,
        )  # fmt: skip
    args, funcs = captured["args"], captured["reward_funcs"] or []
    assert captured["reward_model"] == reward_model
    assert (args.reward_label_smoothing, args.reward_adv_alpha) == (spec.label_smoothing, spec.adv_alpha)
    expected_types, expected_weights = [], [1.0]
    if spec.asr_reward:
        expected_types.append(ASRReward)
        expected_weights.append(0.5)
    if spec.quality_reward:
        expected_types.append(QualityReward)
        expected_weights.append(0.25)
    if spec.cer_gate:
        expected_types.append(ASRErrorRate)
        expected_weights.append(0.0)
    assert [type(func) for func in funcs] == expected_types
    assert all(func.model is multitask_rm for func in funcs)
    assert args.reward_weights == (expected_weights if funcs else None)
    if spec.cer_gate:
        assert (args.reward_gate, args.reward_gate_threshold) == ("asr_cer", -0.3)
    else:
        assert args.reward_gate is None
    assert args.reward_aggregation == (spec.ensemble or "mean")


def test_a_row_that_needs_the_multitask_rm_says_so():
    config = RewardHackingStudyConfig(reward_remedies=["DiffRO+ASR"])
    with pytest.raises(ValueError, match="needs the multi-task reward model"):
        stages.optimize_policy(config, "DiffRO+ASR", None, None, "rm0", None, None, None, 0, "/tmp/x")


def test_ensemble_rows_get_members_retrained_with_other_seeds(monkeypatch, tmp_path):
    trained, calls = [], []

    def train(cfg, variant, corpus, domains, seed, output_dir, pretrained=None):
        trained.append((variant, seed, pretrained))
        return f"{variant}@{seed}", {}

    def optimize(cfg, method, sft, tokenizer, reward_model, *args, beta=None, multitask_rm=None):
        calls.append((method, reward_model, multitask_rm))
        return {"final": {}}

    monkeypatch.setattr(stages, "train_sft_policy", lambda *args: (None, None, {"train_loss": 0.0}))
    monkeypatch.setattr(stages, "train_reward_model", train)
    monkeypatch.setattr(stages, "run_probes", lambda *args: {})
    monkeypatch.setattr(stages, "run_audit", lambda *args: {})
    monkeypatch.setattr(stages, "optimize_policy", optimize)
    config = RewardHackingStudyConfig.from_preset(
        "paper-protocol",
        num_train=12,
        num_test=6,
        sft_num_train=12,
        rm_finetune_num_train=12,
        beta_sweep=[],
        reward_remedies=["DiffRO-ens-mean", "DiffRO-ens-min", "DiffRO+ASR"],
    )
    stages.run_seed(config, 3, str(tmp_path), log=lambda message: None, multitask_rm="mt")
    offset = stages.ENSEMBLE_SEED_OFFSET
    members = [entry for entry in trained if entry[1] != 3]
    # the base RM is the pre-trained one: its members are pre-trained too (from scratch, the same corpus)
    assert members == [("base", 3 + offset, None), ("base", 3 + 2 * offset, None)]
    rows = {method: (reward_model, multitask_rm) for method, reward_model, multitask_rm in calls}
    ensemble = ["base@3", f"base@{3 + offset}", f"base@{3 + 2 * offset}"]
    assert rows["DiffRO-ens-mean"][0] == rows["DiffRO-ens-min"][0] == ensemble
    assert rows["DiffRO"][0] == "base@3" and rows["DiffRO+ASR"] == ("base@3", "mt")


def test_the_scripts_take_a_comma_separated_list_of_presets():
    configs = parse_study_configs(["--preset", "dataset-bias,paper-protocol", "--output_dir", "out"])
    assert [(c.preset, c.output_dir) for c in configs] == [
        ("dataset-bias", "out/dataset-bias"),
        ("paper-protocol", "out/paper-protocol"),
    ]
    assert configs[1].rm_finetune_num_train == 240  # each keeps its own preset's settings
    with pytest.raises(ValueError, match="Unknown study preset 'nope'"):
        parse_study_configs(["--preset", "dataset-bias,nope"])


def test_the_remedies_recipe_runs_every_remedy_on_the_two_hacking_presets():
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "study_remedies.yaml"
    configs = parse_study_configs(["--config", str(recipe)])
    assert [c.preset for c in configs] == ["dataset-bias", "paper-protocol"]
    for config in configs:
        assert config.reward_remedies == ALL_REMEDIES and config.seeds == [0, 1, 2, 3, 4]
        assert list(config.policy_rows()) == ["DiffRO", "RRPO", *ALL_REMEDIES]
        assert config.output_dir == f"outputs/study_remedies/{config.preset}"


@pytest.mark.slow
def test_a_tiny_study_with_every_remedy_row_finishes_and_reports_them(tmp_path):
    config = RewardHackingStudyConfig(
        **{
            **TINY,
            "output_dir": str(tmp_path / "study"),
            "rm_variants": ["base", "+Adv"],
            "policy_methods": ["DiffRO", "RRPO"],
            "beta_sweep": [],
            "reward_remedies": ALL_REMEDIES,
            "ensemble_size": 2,
            "multitask_rm_num_train": 96,
            "multitask_rm_epochs": 1,
        }
    )
    results = run_study(config, log=lambda message: None)
    summary = results["summary"]
    assert {f"+{row}" for row in ALL_REMEDIES} <= set(summary["table1"])
    assert f"{ALL_REMEDIES[0]} − DiffRO" in summary["paired"]
    assert 0 <= summary["multitask_rm"]["asr_cer"] and 0 <= summary["multitask_rm"]["quality_accuracy"] <= 1
    final = results["per_seed"][0]["policies"]["DiffRO+MTR"]["final"]
    # the row's own emotion reward is Table 1's reward; the weighted sum of its three rewards is kept beside it
    assert final["reward"] == final["rewards/emotion/mean"] and "reward_total" in final
    assert "rewards/quality/mean" in final
    assert "gate_weight" not in final or 0 <= final["gate_weight"] <= 1
    report = results["report"]
    assert "### Other remedies" in report and "Prediction (written before their first run)" in report
    assert "quality accuracy" in report
