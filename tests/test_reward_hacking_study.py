"""Reward-hacking study: statistics, aggregation, configuration and a tiny seeded end-to-end run."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from rrpo_hf.study import (
    POLICY_METHODS,
    RM_VARIANTS,
    TABLE1_COLUMNS,
    TABLE2_DOMAINS,
    RewardHackingStudyConfig,
    aggregate,
    format_mean_ci,
    format_table1,
    format_table2,
    mean_confidence_interval,
    run_study,
)
from rrpo_hf.testbed import TestbedConfig


REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- statistics


def test_confidence_interval_is_student_t():
    mean, half = mean_confidence_interval([1.0, 2.0, 3.0], confidence=0.95)
    # sd = 1, sem = 1/sqrt(3), t_{0.975, 2} = 4.302653
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    _, wider = mean_confidence_interval([1.0, 2.0, 3.0], confidence=0.99)
    assert wider > half


def test_confidence_interval_needs_two_finite_values():
    mean, half = mean_confidence_interval([0.7])
    assert mean == pytest.approx(0.7) and math.isnan(half)
    mean, half = mean_confidence_interval([float("nan"), 1.0, 3.0])  # non-finite values are dropped
    assert mean == pytest.approx(2.0) and math.isfinite(half)
    assert all(math.isnan(v) for v in mean_confidence_interval([]))


def test_format_mean_ci():
    assert format_mean_ci(1.23456, 0.1, digits=2) == "1.23 ± 0.10"
    assert format_mean_ci(1.0, float("nan"), digits=1) == "1.0"
    assert format_mean_ci(float("nan"), float("nan")) == "n/a"


# ------------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rm_variants=["base", "+XYZ"]), "Unknown rm_variants"),
        (dict(policy_methods=["PPO"]), "Unknown policy_methods"),
        (dict(rm_variants=["base"], policy_methods=["RRPO"]), "needs the reward model '\\+Adv'"),
        (dict(seeds=[]), "at least one seed"),
        (dict(rollout="sometimes"), "rollout"),
        (dict(confidence=1.0), "confidence"),
    ],
)
def test_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardHackingStudyConfig(**kwargs)


def test_study_recipe_parses_to_multi_seed_configs():
    from rrpo_hf.script_utils import parse_study_configs

    configs = parse_study_configs(["--config", str(REPO / "recipes/toy/study.yaml")])
    for config in configs:
        assert len(config.seeds) >= 5
        assert set(config.rm_variants) <= set(RM_VARIANTS)
        assert set(config.policy_methods) <= set(POLICY_METHODS) and "DiffRO" in config.policy_methods
        assert config.rollout == "online"


# ------------------------------------------------------------------------------------------- aggregation


def _fake_run(seed: int, diffro_naturalness: float) -> dict:
    def point(step, reward, naturalness):
        return {
            "step": step,
            "reward": reward,
            "rm_accuracy": 0.5,
            "oracle_emotion_score": 3.0,
            "oracle_naturalness": naturalness,
            "oracle_cer": 0.5,
            "oracle_artifact_rate": 0.01 * step,
            "sqrt_kl_to_reference": 0.1 * step,
        }

    policies = {
        method: {
            "curve": [point(0, -1.0, 2.0), point(10, -0.5, final)],
            "start": point(0, -1.0, 2.0),
            "final": point(10, -0.5, final),
        }
        for method, final in (("DiffRO", diffro_naturalness), ("RRPO", 2.0))
    }
    table2 = {v: {d: {"wa": 0.9, "ua": 0.8} for d in TABLE2_DOMAINS} for v in RM_VARIANTS}
    probes = {v: {"artifact_delta_p": 0.1 * seed} for v in RM_VARIANTS}
    audit = {v: {"adv_epsilon_over_hidden_norm": 0.01 * (seed + 1), "gain_curve": [0.0, 0.1]} for v in RM_VARIANTS}
    return {"seed": seed, "table2": table2, "probes": probes, "audit": audit, "policies": policies}


def test_aggregate_builds_both_tables_with_intervals():
    config = RewardHackingStudyConfig(seeds=[0, 1, 2], policy_methods=["DiffRO", "RRPO"], beta_sweep=[])
    summary = aggregate(config, [_fake_run(0, 1.0), _fake_run(1, 1.5), _fake_run(2, 2.0)])
    assert list(summary["table1"]) == ["+SFT", "+DiffRO", "+RRPO"]
    diffro = summary["table1"]["+DiffRO"]
    assert diffro["oracle_naturalness"]["mean"] == pytest.approx(1.5)
    assert diffro["oracle_naturalness"]["ci"] == pytest.approx(4.302653 * 0.5 / math.sqrt(3), rel=1e-5)
    assert diffro["reward_gain"]["mean"] == pytest.approx(0.5)
    assert summary["table1"]["+RRPO"]["oracle_naturalness"]["ci"] == pytest.approx(0.0)
    assert summary["table1"]["+SFT"]["oracle_naturalness"]["mean"] == pytest.approx(2.0)
    assert summary["table2"]["+Adv"]["beta"]["wa"]["mean"] == pytest.approx(90.0)
    assert summary["probes"]["base"]["artifact_delta_p"]["mean"] == pytest.approx(0.1)
    # the audit's scalar figures get mean ± CI (its curves stay per seed); Table 2 shows ε_adv/‖h'‖
    assert summary["audit"]["+Adv"]["adv_epsilon_over_hidden_norm"]["mean"] == pytest.approx(0.02)
    assert "gain_curve" not in summary["audit"]["+Adv"]
    assert "ε_adv/‖h'‖" in format_table2(summary) and "| 0.0200 ± " in format_table2(summary)
    table = format_table1(summary)
    assert "| +DiffRO |" in table and "1.500 ±" in table
    # paired by seed: RRPO − DiffRO naturalness is 1.0, 0.5, 0.0
    paired = summary["paired"]
    assert list(paired) == ["SFT − DiffRO", "RRPO − DiffRO"]
    rrpo = paired["RRPO − DiffRO"]["oracle_naturalness"]
    assert rrpo["mean"] == pytest.approx(0.5) and rrpo["n"] == 3
    assert rrpo["half_width"] == pytest.approx(4.302653 * 0.5 / math.sqrt(3), rel=1e-5)


# ------------------------------------------------------------------------------------------- the world as an input


def test_default_world_is_the_one_the_study_always_drew():
    config = RewardHackingStudyConfig()
    assert config.testbed == {}
    assert config.testbed_config() == TestbedConfig(codebook_size=512, artifact_density=0.15)


def test_testbed_overrides_reach_the_world_and_the_study_fields_keep_precedence():
    config = RewardHackingStudyConfig(codebook_size=1024, testbed={"duration_jitter": 0.05, "seed": 3})
    world = config.testbed_config()
    assert (world.duration_jitter, world.seed, world.codebook_size, world.artifact_density) == (0.05, 3, 1024, 0.15)
    # JSON on the command line
    assert RewardHackingStudyConfig(testbed='{"stress_period": 2}').testbed_config().stress_period == 2
    # a written world, passed back, draws the same world
    again = RewardHackingStudyConfig(codebook_size=1024, testbed=json.loads(json.dumps(asdict(world))))
    assert again.testbed_config() == world


@pytest.mark.parametrize(
    "testbed, message",
    [
        ({"jitter": 0.05}, "Unknown testbed fields"),
        ({"codebook_size": 1024}, "contradicts the study's codebook_size"),
        ({"artifact_density": 0.5}, "contradicts the study's artifact_density"),
        ({"duration_jitter": 1.5}, "duration_jitter"),
        ("[0.05]", "must map TestbedConfig fields"),
    ],
)
def test_config_rejects_bad_testbed_overrides(testbed, message):
    with pytest.raises(ValueError, match=message):
        RewardHackingStudyConfig(testbed=testbed)


def test_run_seed_draws_its_world_from_the_testbed_overrides(monkeypatch, tmp_path):
    from rrpo_hf.study import stages

    class Drawn(Exception):
        pass

    def capture(config):
        raise Drawn(config)

    monkeypatch.setattr(stages, "EmotionWorld", capture)
    config = RewardHackingStudyConfig(testbed={"duration_jitter": 0.05})
    with pytest.raises(Drawn) as drawn:
        stages.run_seed(config, 0, str(tmp_path), log=lambda message: None)
    assert drawn.value.args[0] == config.testbed_config()
    assert drawn.value.args[0].duration_jitter == 0.05


def test_run_seed_scores_with_the_oracle_overrides_and_renders_sft_speech_at_sft_intensity(monkeypatch, tmp_path):
    from rrpo_hf.study import stages

    class Stop(Exception):
        pass

    oracles, corpora = [], []
    real_oracle, real_corpus = stages.Oracle, stages.make_emotion_corpus

    def make_corpus(*args, **kwargs):
        corpora.append(kwargs)
        if len(corpora) == 2:  # the SFT corpus is the second: stop before any training
            raise Stop
        return real_corpus(*args, **kwargs)

    monkeypatch.setattr(stages, "Oracle", lambda world, config: oracles.append(config) or real_oracle(world, config))
    monkeypatch.setattr(stages, "make_emotion_corpus", make_corpus)
    config = RewardHackingStudyConfig(
        num_train=12, num_test=6, oracle={"plausible_intensities": [0.5, 1.0]}, sft_intensity=[0.4, 0.7]
    )
    with pytest.raises(Stop):
        stages.run_seed(config, 0, str(tmp_path), log=lambda message: None)
    assert oracles == [config.oracle_config()] and oracles[0].plausible_intensities == (0.5, 1.0)
    assert corpora[1]["intensity"] == (0.4, 0.7)
    assert "intensity" not in corpora[0]  # the RM and test corpora stay at full strength


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"oracle": {"temprature": 0.5}}, "Unknown oracle fields"),
        ({"oracle": {"plausible_intensities": [2.0]}}, "plausible_intensities"),
        ({"sft_intensity": [0.1, 0.5, 1.0]}, "sft_intensity takes"),
    ],
)
def test_bad_oracle_and_intensity_settings_fail_when_the_config_is_built(overrides, message):
    with pytest.raises(ValueError, match=message):
        RewardHackingStudyConfig(**overrides)


def test_results_and_report_record_the_world_and_the_paired_differences(monkeypatch, tmp_path):
    from rrpo_hf.study import pipeline

    naturalness = {0: 1.0, 1: 1.5, 2: 2.0}
    monkeypatch.setattr(
        pipeline, "run_seed", lambda cfg, seed, workdir, log, **kwargs: _fake_run(seed, naturalness[seed])
    )
    config = RewardHackingStudyConfig(
        output_dir=str(tmp_path / "study"),
        seeds=[0, 1, 2],
        policy_methods=["DiffRO", "RRPO"],
        beta_sweep=[],
        testbed={"duration_jitter": 0.05},
    )
    run_study(config, log=lambda message: None)
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["world"] == json.loads(json.dumps(asdict(config.testbed_config())))
    assert saved["world"]["duration_jitter"] == 0.05 and saved["world"]["codebook_size"] == config.codebook_size
    assert [spec["name"] for spec in saved["world"]["languages"]] == ["alpha", "beta"]
    assert saved["config"]["testbed"] == {"duration_jitter": 0.05}
    assert saved["summary"]["paired"]["RRPO − DiffRO"]["oracle_naturalness"]["mean"] == pytest.approx(0.5)
    report = (tmp_path / "study" / "report.md").read_text()
    # the headline comparisons lead the results; the paired table against DiffRO follows Table 1
    table1 = report.index("## Table 1 analogue")
    assert report.index("## Headline comparisons") < report.index("| RRPO − DiffRO | end | 3 |") < table1
    assert table1 < report.index("| RRPO − DiffRO | ", table1) < report.index("## Table 2")
    configuration = report[report.index("## Configuration") :]
    assert "| `duration_jitter` | `0.05` |" in configuration and "languages[beta]" in configuration
    assert "| `policy_steps` | `60` |" in configuration


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_tiny_study_writes_report_json_and_plots(tmp_path):
    config = RewardHackingStudyConfig(
        output_dir=str(tmp_path / "study"),
        seeds=[0],
        num_train=96,
        sft_num_train=96,
        num_test=48,
        policy_hidden_size=32,
        sft_epochs=1,
        rm_hidden_size=32,
        rm_num_layers=1,
        rm_epochs=1,
        policy_steps=2,
        eval_steps=1,
        policy_batch_size=4,
        max_new_tokens=24,
        num_eval_prompts=4,
        probe_num_utterances=12,
        probe_substitutions=1,
        probe_pgd_steps=2,
        audit_num_utterances=6,
        audit_gumbel_steps=2,
        beta_sweep=[],
    )
    results = run_study(config, log=lambda message: None)
    out = Path(config.output_dir)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["seeds"] == [0]
    summary = saved["summary"]
    assert set(summary["table1"]) == {"+SFT"} | {f"+{method}" for method in config.policy_methods}
    for row in summary["table1"].values():
        for key in TABLE1_COLUMNS:
            assert math.isfinite(row[key]["mean"]), (row, key)
    assert list(summary["table2"]) == config.rm_variants
    assert saved["world"] == json.loads(json.dumps(asdict(config.testbed_config())))
    # one seed: each paired difference is that seed's difference, without an interval
    assert list(summary["paired"]) == ["SFT − DiffRO", "RRPO − DiffRO", "DiffRO-clean − DiffRO"]
    policies = saved["per_seed"][0]["policies"]
    for method in ("RRPO", "DiffRO-clean"):
        for key in TABLE1_COLUMNS:
            cell = summary["paired"][f"{method} − DiffRO"][key]
            assert cell["mean"] == pytest.approx(policies[method]["final"][key] - policies["DiffRO"]["final"][key])
            assert cell["n"] == 1 and math.isnan(cell["half_width"])
    sft_reward = summary["paired"]["SFT − DiffRO"]["reward"]["mean"]
    assert sft_reward == pytest.approx(-summary["table1"]["+DiffRO"]["reward_gain"]["mean"])
    for variant in config.rm_variants:
        for domain in TABLE2_DOMAINS:
            assert 0.0 <= summary["table2"][variant][domain]["wa"]["mean"] <= 100.0
        assert {
            "artifact_delta_p",
            "substitution_attack_success",
            "embedding_attack_accuracy@0.5",
            "embedding_attack_accuracy@32",
            "hidden_norm",
        } <= set(summary["probes"][variant])
        assert summary["probes"][variant]["hidden_norm"]["mean"] > 0
        audit = summary["audit"][variant]  # the exploitability audit of every RM row
        assert audit["adv_epsilon_over_hidden_norm"]["mean"] > 0 and "gain_per_edit" in audit and "fgm_gain" in audit
    # a curve point at step 0 (the SFT policy) and after every eval_steps
    curve = saved["per_seed"][0]["policies"]["DiffRO"]["curve"]
    assert [point["step"] for point in curve] == [0, 1, 2]
    assert np.isfinite([point["oracle_naturalness"] for point in curve]).all()
    # the over-optimisation x-axis: sqrt KL from the SFT policy, 0 where training starts
    assert curve[0]["sqrt_kl_to_reference"] == pytest.approx(0.0, abs=1e-3)
    assert all(point["sqrt_kl_to_reference"] >= 0 for point in curve)
    assert saved["oracle"] == json.loads(json.dumps(asdict(config.oracle_config())))

    report = (out / "report.md").read_text()
    for heading in ("Table 1 analogue", "Table 2 analogue", "Robustness probes", "| +RRPO |", "| +Adv |", "| clean |"):
        assert heading in report
    for heading in ("## Exploitability audit", "ε_adv/‖h'‖", "Δlog P / edit"):
        assert heading in report
    assert "| RRPO − DiffRO | " in report and "## Configuration" in report
    for method in ("diffro", "rrpo", "diffro-clean"):
        png = out / f"curve_{method}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"curve_{method}.png" in report
    assert (out / "overoptimisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "overoptimisation.png" in report
    assert set(summary["overoptimisation"]) == set(config.policy_methods)
    assert all(1.0 <= row["peak_gold"] <= 5.0 for row in summary["overoptimisation"].values())
    assert "### Over-optimisation" in report
    # Gao's fit per method and the matched-sqrt-KL readout against DiffRO (one seed: values, no intervals)
    assert set(summary["gao_fits"]) == set(config.policy_methods)
    assert all(math.isfinite(fit["alpha"]) and fit["num_seeds"] == 1 for fit in summary["gao_fits"].values())
    assert list(summary["matched_sqrt_kl"]) == ["RRPO − DiffRO", "DiffRO-clean − DiffRO"]
    assert "### Paired differences at matched sqrt KL" in report and "#### Gao et al.'s fit" in report
    assert results["plots"] and results["wall_time_s"] > 0


def test_study_without_matplotlib_fails_before_training(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    config = RewardHackingStudyConfig(output_dir=str(tmp_path / "study"), seeds=[0])
    with pytest.raises(ImportError, match=r"rrpo-hf\[plots\]"):
        run_study(config, log=lambda message: pytest.fail(f"training started: {message}"))


def test_beta_sweep_adds_diffro_control_rows_at_each_kl_weight(monkeypatch, tmp_path):
    from rrpo_hf.study import pipeline, stages

    config = RewardHackingStudyConfig(
        num_train=12,
        num_test=6,
        num_eval_prompts=4,
        beta=0.1,
        beta_sweep=[0.0, 1.0],
        policy_methods=["DiffRO", "RRPO"],
    )
    assert config.policy_rows() == {
        "DiffRO": ("DiffRO", 0.1),
        "RRPO": ("RRPO", 0.1),
        "DiffRO-beta0": ("DiffRO", 0.0),
        "DiffRO-beta1": ("DiffRO", 1.0),
    }
    calls = []
    monkeypatch.setattr(stages, "train_sft_policy", lambda *args: (None, None, {"train_loss": 0.0}))
    monkeypatch.setattr(stages, "train_reward_model", lambda cfg, variant, *args, **kwargs: (variant, {}))
    monkeypatch.setattr(stages, "run_probes", lambda *args: {})
    monkeypatch.setattr(stages, "run_audit", lambda *args: {})

    def optimize(cfg, method, sft, tokenizer, reward_model, *args, beta=None, multitask_rm=None):
        calls.append((method, reward_model, beta))
        return {"final": {}}

    monkeypatch.setattr(stages, "optimize_policy", optimize)
    run = stages.run_seed(config, 0, str(tmp_path), log=lambda message: None)
    assert list(run["policies"]) == ["DiffRO", "RRPO", "DiffRO-beta0", "DiffRO-beta1"]
    assert calls == [("DiffRO", "base", 0.1), ("RRPO", "+Adv", 0.1), ("DiffRO", "base", 0.0), ("DiffRO", "base", 1.0)]

    # The rows reach Table 1 and the paired differences.
    def fake_run(cfg, seed, workdir, log, **kwargs):
        run = _fake_run(seed, 1.0 + seed)
        for row, beta in (("DiffRO-beta0", 0.0), ("DiffRO-beta1", 1.0)):
            run["policies"][row] = _fake_run(seed, 1.0 + seed + beta)["policies"]["DiffRO"]
        return run

    monkeypatch.setattr(pipeline, "run_seed", fake_run)
    config.output_dir, config.seeds = str(tmp_path / "study"), [0, 1]
    summary = run_study(config, log=lambda message: None)["summary"]
    assert {"+DiffRO-beta0", "+DiffRO-beta1"} <= set(summary["table1"])
    assert summary["paired"]["DiffRO-beta1 − DiffRO"]["oracle_naturalness"]["mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="beta_sweep values must be >= 0"):
        RewardHackingStudyConfig(beta_sweep=[-1.0])
