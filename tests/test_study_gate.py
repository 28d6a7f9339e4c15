"""The mechanism gate (rrpo_hf.study.gate): measured on the vanilla RM alone, before any robust row, and decisive."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_study_presets import TINY as SIZES

import rrpo_hf.study.stages as stages
from rrpo_hf.study import RewardHackingStudyConfig, run_study
from rrpo_hf.study.gate import MechanismGate, decide_gate, measure_gate
from rrpo_hf.study.stages import build_corpora, gate_utterances, stage_times, train_reward_model
from rrpo_hf.testbed import EmotionWorld, Oracle


# The tiny study's sizes, with a test split that holds every target emotion the gate attacks.
TINY = {**SIZES, "num_test": 60}
ALWAYS = dict(num_utterances=2, edit_budget=2, min_first_edit_gain=-1e9, min_artifact_or_rare_share=0.0)
NEVER = dict(num_utterances=2, edit_budget=2, min_first_edit_gain=1e9)


def figures(gain, share, rise):
    return {"first_edit_gain": gain, "artifact_or_rare_share": share, "oracle_p_rise": rise}


def test_the_verdict_holds_each_mean_over_seeds_to_its_threshold():
    gate = MechanismGate()  # the thresholds: +0.5 nats, half the edits, oracle rise <= 0.02
    passed = decide_gate(gate, [figures(0.6, 0.7, 0.01), figures(0.5, 0.4, 0.03)])
    assert passed["passed"]  # means 0.55, 0.55, 0.02: every criterion holds on the mean
    assert passed["criteria"]["first_edit_gain"]["mean"] == pytest.approx(0.55)
    failed = decide_gate(gate, [figures(0.6, 0.7, 0.01), figures(0.3, 0.7, 0.01)])
    assert not failed["passed"] and not failed["criteria"]["first_edit_gain"]["holds"]
    assert failed["criteria"]["artifact_or_rare_share"]["holds"]
    assert not decide_gate(gate, [figures(0.6, math.nan, 0.0)])["passed"]  # no edit accepted: no evidence
    assert not decide_gate(gate, [figures(0.6, 0.7, 0.05)])["passed"]  # the edits add real emotion


def test_gate_thresholds_are_checked_when_the_study_is_configured():
    with pytest.raises(ValueError, match="Unknown mechanism_gate fields"):
        RewardHackingStudyConfig.from_preset("chance-glitches", mechanism_gate={"min_gain": 1})
    config = RewardHackingStudyConfig.from_preset("chance-glitches", mechanism_gate='{"min_first_edit_gain": 2}')
    assert config.gate().min_first_edit_gain == 2 and config.gate().max_oracle_p_rise == 0.02
    assert RewardHackingStudyConfig.from_preset("chance-glitches").gate() == MechanismGate()
    assert RewardHackingStudyConfig().gate() is None


def _rm(config, corpora, output_dir):
    model, _ = train_reward_model(config, "base", corpora["rm"], {"alpha": corpora["domains"]["alpha"]}, 0, output_dir)
    return model


def test_an_rm_that_pays_for_artifacts_is_caught_and_a_flat_one_is_not(tmp_path):
    # dataset-bias: every angry RM utterance carries artifacts, so the vanilla RM pays for them.
    config = RewardHackingStudyConfig(**{**TINY, "rm_epochs": 6}, output_dir=str(tmp_path))
    world = EmotionWorld(config.testbed_config())
    corpora = build_corpora(config, world, 0)
    args = (gate_utterances(config, world, 0), Oracle(world, config.oracle_config()), ["angry"])
    args += ([int(i) for i in world.artifact_token_ids], corpora["rm"]["speech_tokens"])
    gate = MechanismGate(num_utterances=4, edit_budget=2, num_candidates=8)
    biased = measure_gate(gate, _rm(config, corpora, str(tmp_path / "biased")), *args)
    assert biased["first_edit_gain"] > 0 and biased["artifact_or_rare_share"] > 0.5
    assert biased["num_utterances"] == 4 and set(biased["per_emotion"]) == {"angry"}
    flat = _rm(config, corpora, str(tmp_path / "flat"))
    with torch.no_grad():
        for parameter in flat.parameters():
            parameter.zero_()
    figures_flat = measure_gate(gate, flat, *args)
    # No edit raises a constant reward, so nothing is accepted and the oracle hears exactly the same speech.
    assert figures_flat["first_edit_gain"] == 0 and math.isnan(figures_flat["artifact_or_rare_share"])
    assert figures_flat["oracle_p_rise"] == 0
    assert not decide_gate(gate, [figures_flat])["passed"]


@pytest.fixture
def recorded(monkeypatch):
    """Every RM trained, gate measured and policy optimised, in order."""
    events = []
    train, measure, optimize = stages.train_reward_model, stages.measure_gate, stages.optimize_policy

    def train_spy(cfg, variant, *args, **kwargs):
        events.append(("rm", variant))
        return train(cfg, variant, *args, **kwargs)

    def measure_spy(*args, **kwargs):
        events.append(("gate",))
        return measure(*args, **kwargs)

    def optimize_spy(cfg, method, *args, **kwargs):
        events.append(("policy", method))
        return optimize(cfg, method, *args, **kwargs)

    monkeypatch.setattr(stages, "train_reward_model", train_spy)
    monkeypatch.setattr(stages, "measure_gate", measure_spy)
    monkeypatch.setattr(stages, "optimize_policy", optimize_spy)
    return events


@pytest.mark.slow
def test_a_failed_gate_builds_no_robust_row_and_reports_the_mechanism_absent(tmp_path, recorded):
    config = RewardHackingStudyConfig.from_preset(
        "chance-glitches", **TINY, output_dir=str(tmp_path), mechanism_gate=NEVER
    )
    results = run_study(config, log=lambda message: None)
    assert recorded == [("rm", "base"), ("gate",)]
    report = (tmp_path / "report.md").read_text()
    assert "mechanism absent" in report and "## Table 1" not in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["gate"]["passed"] is False and saved["per_seed"] == []
    assert results["summary"]["gate"]["criteria"]["first_edit_gain"]["threshold"] == 1e9


@pytest.mark.slow
def test_a_passed_gate_comes_before_every_robust_row_and_its_vanilla_rm_is_reused(tmp_path, recorded):
    config = RewardHackingStudyConfig.from_preset(
        "chance-glitches",
        **TINY,
        output_dir=str(tmp_path),
        mechanism_gate=ALWAYS,
        policy_methods=["DiffRO"],
        mechanism_rows=False,
    )
    results = run_study(config, log=lambda message: None)
    gate_at = recorded.index(("gate",))
    assert recorded[:gate_at] == [("rm", "base")]  # nothing else is built before the gate
    assert [e for e in recorded if e[0] == "rm"] == [("rm", v) for v in config.rm_variants]  # base trained once
    assert recorded[-1] == ("policy", "DiffRO")
    report = Path(tmp_path / "report.md").read_text()
    assert "Gate passed" in report and report.index("Mechanism gate") < report.index("## Table 1")
    assert results["stage_times_s"]["total"] > 0 and "## Time per seed, by stage" in report
    # The +Adv-0.5 row keeps the paper's literal radius while +Adv follows the preset's scale rule (as saved).
    audits = results["per_seed"][0]["audit"]
    assert (audits["+Adv"]["loss_adv_epsilon"], audits["+Adv"]["loss_adv_epsilon_scale"]) == (1.0, "relative")
    assert (audits["+Adv-0.5"]["loss_adv_epsilon"], audits["+Adv-0.5"]["loss_adv_epsilon_scale"]) == (0.5, "absolute")


def test_stage_times_split_policy_rows_into_steps_and_evaluation():
    timings = {"corpora": 1.0, "sft": 10.0, "rm base": 3.0, "probes base": 1.0, "audit base": 2.0}
    timings |= {"rm +Adv": 2.0, "DiffRO": 8.0, "DiffRO (optimisation steps)": 5.0, "ensemble base": 4.0}
    assert stage_times(timings) == {
        "corpora": 1.0,
        "sft": 10.0,
        "RM training": 9.0,
        "probes": 1.0,
        "audit": 2.0,
        "policy evaluation": 3.0,
        "policy steps": 5.0,
        "total": 31.0,
    }


@pytest.mark.slow
def test_a_gated_study_in_two_processes_reproduces_the_sequential_run(tmp_path):
    def study(name, workers):
        config = RewardHackingStudyConfig.from_preset(
            "chance-glitches",
            **{**TINY, "seeds": [0, 1], "num_workers": workers, "output_dir": str(tmp_path / name)},
            mechanism_gate=ALWAYS,
            rm_variants=["base", "+Adv"],
            policy_methods=["DiffRO", "RRPO"],
            mechanism_rows=False,
        )
        run_study(config, log=lambda message: None)
        results = json.loads((tmp_path / name / "results.json").read_text())
        for seed in results["per_seed"]:
            seed.pop("timings_s")
        results.pop("stage_times_s")
        assert set(results.pop("gate_seconds_s")) == {"0", "1"}  # wall-clock: apart from the summary
        return results

    sequential, parallel = study("sequential", 1), study("parallel", 2)
    assert parallel["per_seed"] == sequential["per_seed"]
    assert parallel["summary"] == sequential["summary"]
