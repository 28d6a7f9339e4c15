"""What separates RRPO's robust RM from its robust reward (`mechanism_rows`), the headline paired comparisons with
their power (`headline_pairs`), and the check that every RM row sees the target emotion (`target_check`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_study_overoptimisation import _curve, _seed_run
from test_study_presets import TINY  # the tiny study's sizes, shared with the preset tests

from rrpo_hf.evaluation.metrics import emotion_recognition_scores
from rrpo_hf.script_utils import parse_study_configs
from rrpo_hf.study import (
    MECHANISM_DESCRIPTIONS,
    MECHANISM_PREDICTION,
    POLICY_METHODS,
    RewardHackingStudyConfig,
    TargetCheckError,
    aggregate,
    format_headline_table,
    format_table1,
    format_target_check_table,
    get_preset,
    headline_comparisons,
    minimum_detectable_effect,
    paired_difference_ci,
    run_study,
    stages,
    target_emotion_check,
)
from rrpo_hf.study.statistics import seeds_to_detect


MECHANISM_ROWS = ["DiffRO-Adv", "RRPO-norm", "RRPO-LS", "RRPO-EAM"]


# ------------------------------------------------------------------------------------------- rows


def test_mechanism_rows_are_added_only_when_asked_and_only_where_their_rm_is_trained():
    default = RewardHackingStudyConfig()
    assert list(default.policy_rows()) == ["DiffRO", "RRPO", "DiffRO-clean", "DiffRO-beta0", "DiffRO-beta1"]
    with_rows = RewardHackingStudyConfig(mechanism_rows=True, beta_sweep=[])
    assert list(with_rows.policy_rows()) == ["DiffRO", "RRPO", "DiffRO-clean", *MECHANISM_ROWS]
    # no +LS / +EAM RM: no row against them; a row already listed is not repeated
    only_adv = RewardHackingStudyConfig(
        mechanism_rows=True, rm_variants=["base", "+Adv"], policy_methods=["DiffRO", "RRPO-norm"], beta_sweep=[]
    )
    assert list(only_adv.policy_rows()) == ["DiffRO", "RRPO-norm", "DiffRO-Adv"]
    for name in ("paper-protocol", "dataset-bias"):  # the presets' rows are unchanged
        assert not set(MECHANISM_ROWS) & set(RewardHackingStudyConfig.from_preset(name).policy_rows())
    assert set(MECHANISM_DESCRIPTIONS) == set(MECHANISM_ROWS) and "β / (1 + α)" in MECHANISM_PREDICTION
    assert POLICY_METHODS["RRPO-norm"].reward_weight == pytest.approx(1 / (1 + POLICY_METHODS["RRPO"].adv_alpha))
    assert POLICY_METHODS["RRPO"].reward_weight == 1.0 == POLICY_METHODS["DiffRO-Adv"].reward_weight


class Captured(Exception):
    pass


@pytest.mark.parametrize("method", ["RRPO", *MECHANISM_ROWS])
def test_each_mechanism_row_hands_its_reward_settings_to_the_trainer(monkeypatch, method):
    captured = {}

    def fake_trainer(**kwargs):
        captured.update(kwargs)
        raise Captured

    monkeypatch.setattr(stages, "DiffROTrainer", fake_trainer)
    config = RewardHackingStudyConfig(mechanism_rows=True)
    with pytest.raises(Captured):
        stages.optimize_policy(config, method, torch.nn.Linear(1, 1), None, "rm", None, None, None, 0, "/tmp/x")
    args = captured["args"]
    expected = {
        "RRPO": (0.1, 0.5, None),
        "DiffRO-Adv": (0.0, 0.0, None),  # DiffRO's plain cross-entropy
        "RRPO-norm": (0.1, 0.5, [1 / 1.5]),  # Eq. 5 scaled by 1 / (1 + α)
        "RRPO-LS": (0.1, 0.0, None),
        "RRPO-EAM": (0.1, 0.0, None),
    }[method]
    assert (args.reward_label_smoothing, args.reward_adv_alpha) == expected[:2]
    assert args.reward_weights == (None if expected[2] is None else pytest.approx(expected[2]))
    # ε_adv and its scale rule are the RM's own (saved in its config), never a study-wide value.
    assert args.reward_adv_epsilon is None and args.reward_adv_epsilon_scale is None
    assert captured["reward_funcs"] is None


def test_run_seed_optimises_each_mechanism_row_against_its_own_rm(monkeypatch, tmp_path):
    received = {}
    monkeypatch.setattr(stages, "train_sft_policy", lambda *a, **k: ("policy", "tokenizer", {}))
    monkeypatch.setattr(
        stages,
        "train_reward_model",
        lambda cfg, variant, *a, **k: (f"rm {variant}", {"alpha": {"wa": 1.0, "ua": 1.0, "recall_angry": 0.9}}),
    )
    monkeypatch.setattr(stages, "run_probes", lambda *a, **k: {})
    monkeypatch.setattr(stages, "run_audit", lambda *a, **k: {"intensity_rise": 0.5})

    def record(cfg, method, sft_policy, tokenizer, reward_model, *args, **kwargs):
        received[method] = reward_model
        return {"final": {}}

    monkeypatch.setattr(stages, "optimize_policy", record)
    config = RewardHackingStudyConfig(
        **{**TINY, "mechanism_rows": True, "policy_methods": ["DiffRO", "RRPO"], "beta_sweep": []}
    )
    stages.run_seed(config, 0, str(tmp_path), log=lambda message: None)
    assert received == {
        "DiffRO": "rm base",
        "RRPO": "rm +Adv",
        "DiffRO-Adv": "rm +Adv",
        "RRPO-norm": "rm +Adv",
        "RRPO-LS": "rm +LS",
        "RRPO-EAM": "rm +EAM",
    }


@pytest.mark.slow
def test_a_tiny_study_with_the_mechanism_rows_runs_them_and_reports_the_unscaled_reward(tmp_path):
    config = RewardHackingStudyConfig(
        **{
            **TINY,
            "output_dir": str(tmp_path / "study"),
            "rm_variants": ["base", "+LS", "+EAM", "+Adv"],
            "policy_methods": ["DiffRO", "RRPO"],
            "beta_sweep": [],
            "mechanism_rows": True,
            "headline_pairs": ["RRPO − DiffRO", "RRPO-norm − DiffRO-Adv", "DiffRO − SFT"],
        }
    )
    results = run_study(config, log=lambda message: None)
    summary, run = results["summary"], results["per_seed"][0]
    assert list(summary["table1"]) == ["+SFT", "+DiffRO", "+RRPO", *(f"+{row}" for row in MECHANISM_ROWS)]
    rrpo, norm = run["policies"]["RRPO"], run["policies"]["RRPO-norm"]
    # step 0 is the same SFT policy, RM, prompts and reward: Table 1's reward is the unscaled Eq. 5 reward, the
    # trainer's weighted one is kept beside it
    assert norm["start"]["reward"] == pytest.approx(rrpo["start"]["reward"])
    assert norm["start"]["reward_total"] == pytest.approx(rrpo["start"]["reward"] / 1.5)
    assert "reward_total" not in rrpo["start"]
    # per-class recalls come with Table 2's scores, and every RM row got its target check
    assert 0 <= run["table2"]["base"]["alpha"]["recall_angry"] <= 1
    assert set(run["target_check"]) == set(config.rm_variants) == set(summary["target_check"])
    assert list(summary["headline"]) == config.headline_pairs
    assert summary["headline"]["RRPO-norm − DiffRO-Adv"]["end"]["oracle_naturalness"]["n"] == 1
    report = results["report"]
    assert report.index("## Headline comparisons") < report.index("## Target emotion check")
    assert report.index("## Target emotion check") < report.index("## Table 1 analogue")
    assert "### Robust reward model or robust reward" in report and MECHANISM_PREDICTION in report
    assert all(f"**{row}**: {MECHANISM_DESCRIPTIONS[row]}" in report for row in MECHANISM_ROWS)


# ------------------------------------------------------------------------------------------- headline pairs


def test_headline_pairs_are_parsed_checked_and_paper_protocol_tests_rrpo_against_diffro_ft_first():
    config = RewardHackingStudyConfig(headline_pairs=["RRPO-DiffRO", "DiffRO - SFT", "DiffRO-clean−DiffRO"])
    assert config.headline_pairs == ["RRPO − DiffRO", "DiffRO − SFT", "DiffRO-clean − DiffRO"]
    assert RewardHackingStudyConfig().headline_pairs == ["RRPO − DiffRO", "DiffRO − SFT"]
    assert RewardHackingStudyConfig.from_preset("paper-protocol").headline_pairs[0] == "RRPO − DiffRO-FT"
    assert get_preset("paper-protocol").settings["headline_pairs"][0] == "RRPO − DiffRO-FT"
    # as the scripts take them: flags over the preset, plain hyphens
    (config,) = parse_study_configs(
        ["--preset", "paper-protocol", "--mechanism_rows", "true", "--headline_pairs", "RRPO-DiffRO-FT", "DiffRO-SFT"]
    )
    assert config.headline_pairs == ["RRPO − DiffRO-FT", "DiffRO − SFT"] and "RRPO-norm" in config.policy_rows()
    for pair in ["RRPO − PPO", "RRPO", "RRPO − RRPO"]:
        with pytest.raises(ValueError, match="headline_pairs entry"):
            RewardHackingStudyConfig(headline_pairs=[pair])


def _three_seed_study():
    """DiffRO and RRPO curves of three seeds, read at the end and at matched sqrt KL."""
    runs = []
    for seed, (diffro_n, rrpo_n) in enumerate([(3.0, 3.5), (3.4, 3.6), (2.9, 3.6)]):
        diffro = _curve([0.0, 1.0, 2.0], [3.0, 3.2, 3.1], [3.0, 3.5, 4.0], [4.0, 3.5, diffro_n])
        rrpo = _curve([0.0, 1.0, 2.0], [3.0, 3.3, 3.3], [3.0, 3.4, 3.8], [4.0, 3.8, rrpo_n])
        for point, artifact in zip(diffro, (0.0, 0.1, 0.2 + 0.1 * seed)):
            point["oracle_artifact_rate"] = artifact
        runs.append(_seed_run(seed, {"DiffRO": diffro, "RRPO": rrpo}))
    return runs


def test_headline_comparisons_against_a_hand_computation():
    runs = _three_seed_study()
    pairs = ["RRPO − DiffRO", "DiffRO − SFT", "RRPO − DiffRO-FT"]
    headline = headline_comparisons(pairs, ["DiffRO", "RRPO"], runs, confidence=0.95)
    entry = headline["RRPO − DiffRO"]["end"]["oracle_naturalness"]
    differences = [0.5, 0.2, 0.7]
    mean, sd = float(np.mean(differences)), float(np.std(differences, ddof=1))
    assert entry["n"] == 3 and entry["mean"] == pytest.approx(mean) and entry["sd"] == pytest.approx(sd)
    assert entry["half_width"] == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)
    # MDE at 80% power: (t_{0.975, 2} + t_{0.8, 2}) · SD / √n, the quantiles from a t table
    assert entry["mde"] == pytest.approx((4.302653 + 1.060660) * sd / math.sqrt(3), rel=1e-5)
    artifacts = headline["RRPO − DiffRO"]["end"]["oracle_artifact_rate"]
    assert artifacts["mean"] == pytest.approx(-0.3) and artifacts["sd"] == pytest.approx(0.1)
    # matched sqrt KL: both reach 2 in every seed, where they end
    matched = headline["RRPO − DiffRO"]["matched"]
    assert matched["sqrt_kl"] == pytest.approx(2.0) and matched["oracle_naturalness"]["mean"] == pytest.approx(mean)
    # DiffRO − SFT: DiffRO's end against its own step 0 (the SFT policy); no matched readout at sqrt KL 0
    sft = headline["DiffRO − SFT"]
    assert sft["end"]["oracle_naturalness"]["mean"] == pytest.approx(np.mean([-1.0, -0.6, -1.1]))
    assert sft["end"]["oracle_emotion_score"]["mean"] == pytest.approx(1.0) and sft["matched"] == {}
    assert headline["RRPO − DiffRO-FT"] == {"treatment": "RRPO", "control": "DiffRO-FT", "missing": ["DiffRO-FT"]}
    n_sd = headline["RRPO − DiffRO"]["end"]["oracle_naturalness"]["sd"]
    assert headline["RRPO − DiffRO"]["seeds_needed"] == seeds_to_detect(0.2, n_sd)

    config = RewardHackingStudyConfig(
        seeds=[0, 1, 2], policy_methods=["DiffRO", "RRPO"], beta_sweep=[], headline_pairs=pairs
    )
    summary = aggregate(config, runs)
    assert summary["headline"] == headline
    table = format_headline_table(summary)
    assert f"| RRPO − DiffRO | end | 3 | {_cell(headline['RRPO − DiffRO']['end']['oracle_emotion_score'])} |" in table
    assert f"{sd:.3f}; {entry['mde']:.3f}" in table and "| RRPO − DiffRO | sqrt KL 2.00 | 3 |" in table
    assert "| RRPO − DiffRO-FT | not run (DiffRO-FT not among the rows) |" in table
    assert "(t(1 − a/2, n − 1) + t(0.8, n − 1)) · SD / √n" in table


def _cell(cell):
    return f"{cell['mean']:+.3f} ± {cell['half_width']:.3f}"


def test_seeds_needed_for_a_naturalness_effect_follow_the_mde():
    # the paired SD of ΔN, 0.27: 16 seeds resolve 0.202, 17 seeds 0.196
    assert minimum_detectable_effect(0.27, 16) > 0.2 >= minimum_detectable_effect(0.27, 17)
    assert seeds_to_detect(0.2, 0.27) == 17 and seeds_to_detect(-0.2, 0.27) == 17
    assert seeds_to_detect(0.2, 0.0) == 2 and seeds_to_detect(0.2, float("nan")) is None
    assert math.isnan(minimum_detectable_effect(0.27, 1))
    mean, half_width, n = paired_difference_ci([1.0, 2.0], [0.0, 0.0])
    assert n == 2 and minimum_detectable_effect(math.sqrt(0.5), 2) > half_width


# ------------------------------------------------------------------------------------------- target check


def _recalls_from_confusion(confusion, names):
    """Predictions and references that give the hand-built confusion matrix ``confusion[true][predicted]``, scored
    as the RM trainer scores its test sets."""
    references, predictions = [], []
    for true, row in enumerate(confusion):
        for predicted, count in enumerate(row):
            references += [true] * count
            predictions += [predicted] * count
    return emotion_recognition_scores(predictions, references, label_names=names, return_per_class=True)


def test_the_target_check_flags_an_rm_whose_target_recall_or_intensity_rise_is_low():
    names = ["neutral", "angry", "happy"]
    # angry: 3 of 10 recognised (the rest called neutral); neutral and happy: 9 of 10
    low = _recalls_from_confusion([[9, 1, 0], [7, 3, 0], [1, 0, 9]], names)
    assert low["recall_angry"] == pytest.approx(0.3)
    check = target_emotion_check(low, {"intensity_rise": 0.4}, ["angry"], min_recall=0.5, min_rise=0.1)
    assert not check["passed"] and check["failures"] == ["recall of angry 0.300 < 0.5"]
    assert check["recall"] == {"angry": pytest.approx(0.3)}
    good = _recalls_from_confusion([[9, 1, 0], [2, 8, 0], [1, 0, 9]], names)
    assert target_emotion_check(good, {"intensity_rise": 0.4}, ["angry"], 0.5, 0.1)["passed"]
    flat = target_emotion_check(good, {"intensity_rise": 0.02}, ["angry"], 0.5, 0.1)
    assert flat["failures"] == ["intensity rise of P(target) +0.020 < 0.1"]
    # every target is read (policy_target_emotions None = all); a check without audit reads the recall only
    every = target_emotion_check(low, None, names, 0.5, 0.1)
    assert every["intensity_rise"] is None and every["failures"] == ["recall of angry 0.300 < 0.5"]


def test_flagged_rms_are_reported_and_their_policy_rows_marked():
    config = RewardHackingStudyConfig(seeds=[0, 1, 2], policy_methods=["DiffRO", "RRPO"], beta_sweep=[])
    runs = _three_seed_study()
    for run in runs:
        run["target_check"] = {
            "base": target_emotion_check({"recall_angry": 0.2 + 0.1 * run["seed"]}, None, ["angry"], 0.5, 0.1),
            "+Adv": target_emotion_check({"recall_angry": 0.9}, {"intensity_rise": 0.3}, ["angry"], 0.5, 0.1),
        }
    summary = aggregate(config, runs)
    assert summary["target_check"]["base"]["flagged"] and not summary["target_check"]["+Adv"]["flagged"]
    assert summary["target_check"]["base"]["flagged_seeds"] == [0, 1, 2]
    assert summary["target_check"]["base"]["recall"]["angry"]["mean"] == pytest.approx(0.3)
    assert summary["flagged_rows"] == ["DiffRO"]
    table = format_target_check_table(config, summary)
    assert "| base | 0.300 ± " in table and "| FLAG ⚠ | 0, 1, 2 |" in table
    assert "| +Adv | 0.900 ± 0.000 | 0.300 ± 0.000 | PASS | none |" in table
    table1 = format_table1(summary)
    assert "| +DiffRO ⚠ |" in table1 and "| +RRPO |" in table1 and "⚠: the row optimises against" in table1
    assert "| RRPO − DiffRO ⚠ | end |" in format_headline_table(summary)


def _fake_rm_stages(monkeypatch, reached):
    monkeypatch.setattr(stages, "train_sft_policy", lambda *a, **k: ("policy", "tokenizer", {}))
    recall = {"base": 0.1, "+Adv": 0.8, "clean": 0.1}
    monkeypatch.setattr(
        stages,
        "train_reward_model",
        lambda cfg, variant, *a, **k: (variant, {"alpha": {"wa": 0.5, "ua": 0.5, "recall_angry": recall[variant]}}),
    )
    monkeypatch.setattr(stages, "run_probes", lambda *a, **k: {})
    monkeypatch.setattr(stages, "run_audit", lambda *a, **k: {"intensity_rise": 0.3})

    def policy_stage(cfg, method, *args, **kwargs):
        reached.append(method)
        return {"final": {}}

    monkeypatch.setattr(stages, "optimize_policy", policy_stage)


def test_fail_mode_raises_before_any_policy_is_optimised(monkeypatch, tmp_path):
    reached = []
    _fake_rm_stages(monkeypatch, reached)
    config = RewardHackingStudyConfig(
        **{**TINY, "rm_variants": ["base", "+Adv"], "policy_methods": ["DiffRO", "RRPO"], "beta_sweep": []},
        target_check="fail",
    )
    with pytest.raises(TargetCheckError) as error:
        stages.run_seed(config, 3, str(tmp_path), log=lambda message: None)
    message = str(error.value)
    assert "reward model 'base'" in message and "seed 3" in message and "recall of angry 0.100 < 0.5" in message
    assert "'+Adv'" not in message and "target_check='flag'" in message and "rm_epochs" in message
    assert reached == []


def test_flag_mode_logs_a_warning_per_failing_rm_and_runs_the_policies(monkeypatch, tmp_path):
    reached, lines = [], []
    _fake_rm_stages(monkeypatch, reached)
    config = RewardHackingStudyConfig(
        **{**TINY, "rm_variants": ["base", "+Adv", "clean"], "policy_methods": ["RRPO"], "beta_sweep": []}
    )
    result = stages.run_seed(config, 0, str(tmp_path), log=lines.append)
    warnings = [line for line in lines if "WARNING" in line]
    assert warnings == [
        "[seed 0] WARNING: reward model base fails the target check: recall of angry 0.100 < 0.5",
        "[seed 0] WARNING: reward model clean fails the target check: recall of angry 0.100 < 0.5",
    ]
    assert reached == ["RRPO"] and not result["target_check"]["base"]["passed"]
    # 'fail' stops only for an RM a policy row optimises against: here RRPO's +Adv passes
    reached.clear()
    stages.run_seed(
        RewardHackingStudyConfig(**{**config.to_dict(), "target_check": "fail"}), 0, str(tmp_path), log=lines.append
    )
    assert reached == ["RRPO"]


def test_target_check_settings_are_checked():
    for overrides in (dict(target_check="abort"), dict(target_check_min_recall=1.5), dict(target_check_min_rise=2)):
        with pytest.raises(ValueError, match="target_check"):
            RewardHackingStudyConfig(**overrides)


def test_every_ensemble_member_is_target_checked_and_a_failing_member_flags_the_ensemble_rows(monkeypatch, tmp_path):
    reached, lines = [], []
    _fake_rm_stages(monkeypatch, reached)

    def train(cfg, variant, corpus, domains, seed, *args, **kwargs):
        # the third member (second extra seed) does not see anger; the RM row itself and member 2 do
        recall = 0.1 if seed == 3 + 2 * stages.ENSEMBLE_SEED_OFFSET else 0.8
        return f"{variant}@{seed}", {"alpha": {"wa": 0.5, "ua": 0.5, "recall_angry": recall}}

    monkeypatch.setattr(stages, "train_reward_model", train)
    config = RewardHackingStudyConfig(
        **{**TINY, "rm_variants": ["base", "+Adv"], "policy_methods": ["DiffRO", "RRPO"], "beta_sweep": []},
        reward_remedies=["DiffRO-ens-mean"],
        ensemble_size=3,
    )
    result = stages.run_seed(config, 3, str(tmp_path), log=lines.append)
    checks = result["target_check"]
    assert list(checks) == ["base", "+Adv", "base member 2", "base member 3"]
    assert checks["base member 2"]["passed"] and not checks["base member 3"]["passed"]
    assert [line for line in lines if "WARNING" in line] == [
        "[seed 3] WARNING: reward model base member 3 fails the target check: recall of angry 0.100 < 0.5"
    ]
    # flagged over seeds: only the ensemble row, not DiffRO (its own RM passes), is marked
    runs = _three_seed_study()
    for run in runs:
        run["target_check"] = checks
        run["policies"]["DiffRO-ens-mean"] = run["policies"]["DiffRO"]
    summary = aggregate(RewardHackingStudyConfig(**{**config.to_dict(), "seeds": [0, 1, 2]}), runs)
    assert summary["target_check"]["base member 3"]["flagged"] and not summary["target_check"]["base"]["flagged"]
    assert summary["flagged_rows"] == ["DiffRO-ens-mean"]
    assert "| base member 3 | 0.100 ± 0.000 |" in format_target_check_table(config, summary)
    # 'fail' stops on the member before any policy row is optimised
    reached.clear()
    with pytest.raises(TargetCheckError, match=r"reward model 'base member 3' \(optimised by \['DiffRO-ens-mean'\]\)"):
        stages.run_seed(RewardHackingStudyConfig(**{**config.to_dict(), "target_check": "fail"}), 3, str(tmp_path))
    assert reached == []


def test_the_overview_script_joins_studies_run_one_preset_at_a_time(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "study_overview", Path(__file__).parents[1] / "examples" / "study_overview.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config = RewardHackingStudyConfig(seeds=[0, 1, 2], policy_methods=["DiffRO", "RRPO"], beta_sweep=[])
    summary = aggregate(config, _three_seed_study())
    for preset in ("dataset-bias", "brittle"):
        (tmp_path / preset).mkdir()
        results = {"config": {**config.to_dict(), "preset": preset}, "summary": summary}
        (tmp_path / preset / "results.json").write_text(json.dumps(results, default=float))
    output = tmp_path / "overview.md"
    overview = script.main([str(tmp_path / "dataset-bias"), str(tmp_path / "brittle"), "--output", str(output)])
    assert output.read_text() == overview and "Presets: dataset-bias (3 seeds), brittle (3 seeds)" in overview
    naturalness = summary["headline"]["RRPO − DiffRO"]["end"]["oracle_naturalness"]
    assert naturalness["mean"] == pytest.approx((0.5 + 0.2 + 0.7) / 3)
    expected = f"| brittle | RRPO − DiffRO | 3 | +{naturalness['mean']:.3f} ± {naturalness['half_width']:.3f} | "
    expected += f"{naturalness['mde']:.3f} |"
    assert expected in overview and "| dataset-bias | DiffRO − SFT | 3 |" in overview
    assert "| brittle | RRPO − DiffRO | -0.200 ± 0.000 | +0.467 ± 0.625 |" in overview.split("## Every row against")[1]
    # an existing overview is replaced only with --overwrite; a folder without results names the fix
    with pytest.raises(SystemExit, match="--overwrite"):
        script.main([str(tmp_path / "brittle"), "--output", str(output)])
    with pytest.raises(SystemExit, match="no results.json"):
        script.main([str(tmp_path)])
    # a study whose mechanism gate failed has no policy rows: named in the header, absent from the tables
    (tmp_path / "chance-glitches").mkdir()
    gated = {"config": {**config.to_dict(), "preset": "chance-glitches"}, "summary": {"gate": {"passed": False}}}
    (tmp_path / "chance-glitches" / "results.json").write_text(json.dumps(gated))
    overview = script.main([str(tmp_path / "brittle"), str(tmp_path / "chance-glitches")])
    assert "Presets: brittle (3 seeds); without policy rows (mechanism gate failed" in overview
    assert "| chance-glitches |" not in overview
