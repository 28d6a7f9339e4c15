"""Study presets: each one's corpora have the property its mechanism needs, scripts resolve presets as documented,
and a tiny seeded study of every preset finishes and writes its report and figures."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rrpo_hf.script_utils import parse_study_configs
from rrpo_hf.study import (
    STUDY_PRESETS,
    RewardHackingStudyConfig,
    build_corpora,
    get_preset,
    run_study,
)
from rrpo_hf.testbed import EmotionWorld


REPO = Path(__file__).resolve().parents[1]

#: Sizes small enough for corpus checks in a fraction of a second.
SMALL = dict(num_train=600, sft_num_train=1200, num_test=60, rm_finetune_num_train=120)


def corpora_of(name: str, **overrides):
    config = RewardHackingStudyConfig.from_preset(name, **{**SMALL, **overrides})
    if name != "paper-protocol":
        config = dataclasses.replace(config, rm_finetune_num_train=0)
    world = EmotionWorld(config.testbed_config())
    return config, world, build_corpora(config, world, seed=0)


def artifact_counts(dataset, world) -> np.ndarray:
    return np.array(
        [int(np.sum(np.asarray(tokens) >= world.first_artifact_id)) for tokens in dataset["speech_tokens"]]
    )


def emotion_names(dataset, column="emotion") -> np.ndarray:
    names = dataset.features[column].names
    return np.array([names[i] for i in dataset[column]])


# ------------------------------------------------------------------------------------------- the presets themselves


def test_every_preset_is_a_valid_documented_study():
    assert list(STUDY_PRESETS) == ["dataset-bias", "paper-protocol", "brittle", "cue-exaggeration", "chance-glitches"]
    fields = {f.name for f in dataclasses.fields(RewardHackingStudyConfig)}
    for name, preset in STUDY_PRESETS.items():
        assert set(preset.settings) <= fields, name
        assert len(preset.mechanism) > 100 and len(preset.prediction) > 100, name
        config = RewardHackingStudyConfig.from_preset(name)
        assert config.preset == name and config.preset_deviations() == {}
        for key, value in preset.settings.items():
            assert getattr(config, key) == value


def test_the_config_defaults_are_the_dataset_bias_preset():
    assert RewardHackingStudyConfig() == RewardHackingStudyConfig.from_preset("dataset-bias")
    assert get_preset("dataset-bias").settings == {}


def test_deviations_from_the_preset_are_listed_and_reach_the_report_text():
    from rrpo_hf.study.report import format_preset_deviations

    config = RewardHackingStudyConfig.from_preset("brittle", spurious_artifact_rate=0.5, seeds=[7])
    assert config.preset_deviations() == {"spurious_artifact_rate": (0.0, 0.5)}  # seeds are not a deviation
    table = format_preset_deviations(config)
    assert "| `spurious_artifact_rate` | `0.0` | `0.5` |" in table
    assert "unchanged" in format_preset_deviations(RewardHackingStudyConfig.from_preset("brittle"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(preset="hackable"), "Unknown study preset 'hackable'"),
        (dict(rm_variants=["base", "+FT"], policy_methods=["DiffRO"]), "set rm_finetune_num_train > 0"),
        (dict(rm_variants=["+FT", "base"], policy_methods=["DiffRO"], rm_finetune_num_train=10), "List 'base' before"),
        (dict(rm_variants=["+LS"], policy_methods=[], rm_finetune_num_train=10), "add 'base'"),
        (dict(rm_label_noise=1.5), "rm_label_noise must be in"),
        (dict(rm_intensity=[0.1, 0.2, 0.3]), "rm_intensity takes"),
    ],
)
def test_bad_preset_settings_fail_when_the_config_is_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardHackingStudyConfig(**kwargs)


def test_run_study_refuses_the_all_presets_name(tmp_path):
    with pytest.raises(ValueError, match="names several studies"):
        run_study(RewardHackingStudyConfig(preset="all", output_dir=str(tmp_path)), log=lambda message: None)


# ------------------------------------------------------------------------------------------- the scripts' parsing


def test_scripts_resolve_preset_then_recipe_then_flags(tmp_path):
    recipe = tmp_path / "study.yaml"
    recipe.write_text("preset: paper-protocol\nrm_label_noise: 0.3\nseeds: [4]\n")
    (config,) = parse_study_configs(["--config", str(recipe), "--rm_finetune_num_train", "60"])
    assert config.preset == "paper-protocol"
    assert config.rm_num_speakers == 8  # the preset's
    assert config.rm_label_noise == 0.3  # the recipe's over the preset's 0.2
    assert config.rm_finetune_num_train == 60  # the flag's over the preset's 240
    assert config.seeds == [4]
    assert set(config.preset_deviations()) == {"rm_label_noise", "rm_finetune_num_train"}
    # script defaults sit under the preset; a flag picks another preset
    (config,) = parse_study_configs(["--preset", "brittle"], defaults=dict(preset="paper-protocol", policy_steps=7))
    assert (config.preset, config.spurious_artifact_rate, config.policy_steps) == ("brittle", 0.0, 7)


def test_all_presets_run_one_after_the_other_into_their_own_folders():
    configs = parse_study_configs(["--preset", "all", "--output_dir", "out", "--seeds", "0", "1"])
    assert [c.preset for c in configs] == list(STUDY_PRESETS)
    assert [c.output_dir for c in configs] == [f"out/{name}" for name in STUDY_PRESETS]
    assert all(c.seeds == [0, 1] and c.preset_deviations() == {} for c in configs)


def test_the_study_recipe_runs_every_preset_with_five_seeds():
    configs = parse_study_configs(["--config", str(REPO / "recipes/toy/study.yaml")])
    assert [c.preset for c in configs] == list(STUDY_PRESETS)
    for config in configs:
        assert len(config.seeds) >= 5
        sweep = [] if config.preset == "chance-glitches" else [0.0, 1.0]  # the β sweep {0, 0.1, 1}; none gate-first
        assert config.beta_sweep == sweep and config.beta == 0.1
        assert config.preset_deviations() == {}, config.preset


def test_the_demo_runs_the_paper_protocol_with_three_seeds():
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_under_test", REPO / "examples" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    (config,) = parse_study_configs([], defaults=demo.DEMO_DEFAULTS)
    assert config.preset == "paper-protocol" and len(config.seeds) == 3
    assert config.preset_deviations() == {}


# ------------------------------------------------------------------------------------------- each preset's corpora


def test_dataset_bias_puts_artifacts_in_every_angry_rm_utterance_and_no_other():
    _, world, corpora = corpora_of("dataset-bias")
    emotions, artifacts = emotion_names(corpora["rm"]), artifact_counts(corpora["rm"], world)
    assert (artifacts[emotions == "angry"] > 0).all()
    assert (artifacts[emotions != "angry"] == 0).all()
    # the clean control: glitches in every emotion alike, none of them tied to a label
    clean_hit = artifact_counts(corpora["clean"], world) > 0
    clean_emotions = emotion_names(corpora["clean"])
    rates = {e: clean_hit[clean_emotions == e].mean() for e in set(clean_emotions)}
    assert all(0.05 < rate < 0.4 for rate in rates.values()), rates


def test_paper_protocol_pretrains_on_noisy_multi_speaker_data_and_fine_tunes_on_a_clean_single_speaker_set():
    config, world, corpora = corpora_of("paper-protocol")
    rm = corpora["rm"]
    assert len(set(rm["speaker"])) == config.rm_num_speakers == 8
    wrong = emotion_names(rm) != emotion_names(rm, "true_emotion")
    assert 0.14 < wrong.mean() < 0.26  # 20% pseudo-labelling errors
    # partial shortcut: about half of the truly angry utterances carry artifacts, no other emotion does
    truly_angry = emotion_names(rm, "true_emotion") == "angry"
    hit = artifact_counts(rm, world) > 0
    assert 0.35 < hit[truly_angry].mean() < 0.65 and not hit[~truly_angry].any()
    finetune = corpora["finetune"]
    assert len(finetune) == config.rm_finetune_num_train and set(finetune["speaker"]) == {"alpha_spk0"}
    assert "true_emotion" not in finetune.column_names and artifact_counts(finetune, world).sum() == 0
    assert not set(finetune["text"]) & set(rm["text"])  # texts of its own
    assert Counter(emotion_names(finetune)).most_common()[-1][1] >= len(finetune) // 6  # balanced


def test_brittle_rm_corpora_never_show_artifacts_with_a_label_and_the_rm_corpus_none_at_all():
    _, world, corpora = corpora_of("brittle")
    assert artifact_counts(corpora["rm"], world).sum() == 0  # the RM never sees an artifact id
    assert (artifact_counts(corpora["sft"], world) > 0).mean() > 0.02  # the policy can emit them
    clean_hit = artifact_counts(corpora["clean"], world) > 0
    clean_emotions = emotion_names(corpora["clean"])
    rates = [clean_hit[clean_emotions == e].mean() for e in set(clean_emotions)]
    assert max(rates) - min(rates) < 0.15  # no label correlation in the control either


def test_chance_glitches_rm_corpus_is_small_single_speaker_with_glitches_in_every_emotion():
    config, world, corpora = corpora_of("chance-glitches")
    rm = corpora["rm"]
    assert len(rm) == config.rm_num_train == 120 and set(rm["speaker"]) == {"alpha_spk0"}
    assert "true_emotion" not in rm.column_names  # correct labels
    hit = artifact_counts(rm, world) > 0
    emotions = emotion_names(rm)
    # glitches in ~30% of the utterances of every emotion: only chance ties them to a label
    assert 0.15 < hit.mean() < 0.45 and all(hit[emotions == e].any() for e in set(emotions))
    assert config.gate() is not None and config.rm_epochs == 60 and config.adv_epsilon_scale == "relative"
    assert {"+Adv", "+Adv-0.5"} <= set(config.rm_variants) and "RRPO-0.5" in config.policy_rows()
    assert len(config.policy_target_emotions) == 5


def test_cue_exaggeration_grades_the_rm_emotion_and_has_no_artifacts_anywhere():
    config, world, corpora = corpora_of("cue-exaggeration")
    intensities = np.asarray(corpora["rm"]["intensity"])
    low, high = config.rm_intensity
    assert intensities.min() >= low and intensities.max() <= high and intensities.std() > 0.15
    for name in ("rm", "sft"):
        assert artifact_counts(corpora[name], world).sum() == 0, name
    # graded emotion: the more intense an angry utterance, the more accent tokens (bank (r+1) mod 3 = high) it has
    angry = emotion_names(corpora["rm"]) == "angry"
    banks = [world.decompose(np.asarray(tokens))[0] for tokens in corpora["rm"]["speech_tokens"]]
    high_share = np.array([np.mean(bank == 2) for bank in banks])
    assert np.corrcoef(intensities[angry], high_share[angry])[0, 1] > 0.5


def test_the_exaggeration_probe_set_says_the_test_texts_with_accents_past_natural_levels():
    config, world, corpora = corpora_of("cue-exaggeration")
    natural, exaggerated = corpora["domains"]["alpha"], corpora["exaggerated"]
    assert config.probe_exaggeration == 2.0
    for column in ("text", "emotion", "speaker"):
        assert natural[column] == exaggerated[column], column

    def high_share(dataset):
        return np.array([np.mean(world.decompose(np.asarray(t))[0] == 2) for t in dataset["speech_tokens"]])

    angry = emotion_names(natural) == "angry"
    assert high_share(exaggerated)[angry].mean() > 1.5 * high_share(natural)[angry].mean()


# ------------------------------------------------------------------------------------------- tiny studies


TINY = dict(
    seeds=[0],
    num_train=96,
    sft_num_train=96,
    num_test=48,
    policy_hidden_size=32,
    sft_epochs=1,
    rm_hidden_size=32,
    rm_num_layers=1,
    rm_epochs=1,
    rm_finetune_epochs=1,
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
)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDY_PRESETS))
def test_a_tiny_study_of_each_preset_finishes_and_writes_its_figures(name, tmp_path):
    overrides = dict(TINY, output_dir=str(tmp_path / name))
    if name == "paper-protocol":
        overrides["rm_finetune_num_train"] = 24
    if name == "chance-glitches":
        # A tiny RM fails the preset's gate, which stops the study (tests/test_study_gate.py); let every row run.
        overrides["mechanism_gate"] = dict(
            min_first_edit_gain=-1e9, min_artifact_or_rare_share=0, max_oracle_p_rise=1, num_utterances=2
        )
    config = RewardHackingStudyConfig.from_preset(name, **overrides)
    run_study(config, log=lambda message: None)
    out = Path(config.output_dir)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["preset"] == name
    summary = saved["summary"]
    assert list(summary["table2"]) == config.rm_variants
    assert list(summary["table1"]) == ["+SFT"] + [f"+{row}" for row in config.policy_rows()]
    assert set(summary["overoptimisation"]) == set(config.policy_rows())
    report = (out / "report.md").read_text()
    preset = get_preset(name)
    # mechanism and prediction come before any measured table
    assert report.index(preset.mechanism) < report.index(preset.prediction) < report.index("## Table 1 analogue")
    assert "| `rm_finetune_num_train` |" in report or name != "paper-protocol"
    for row in config.policy_rows():
        assert (out / f"curve_{row.lower()}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "overoptimisation.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_paper_protocol_fine_tunes_a_copy_of_the_pretrained_rm(monkeypatch, tmp_path):
    from rrpo_hf.study import stages

    calls = []
    real = stages.train_reward_model

    def recording(cfg, variant, train_dataset, domains, seed, output_dir, pretrained=None):
        before = None if pretrained is None else {k: v.clone() for k, v in pretrained.state_dict().items()}
        model, scores = real(cfg, variant, train_dataset, domains, seed, output_dir, pretrained=pretrained)
        calls.append((variant, len(train_dataset), pretrained is not None))
        if before is not None:  # the pre-trained RM itself is left as it was
            assert all((pretrained.state_dict()[k] == v).all() for k, v in before.items())
            assert model is not pretrained
        return model, scores

    monkeypatch.setattr(stages, "train_reward_model", recording)
    monkeypatch.setattr(stages, "optimize_policy", lambda *args, **kwargs: {"final": {}})
    config = RewardHackingStudyConfig.from_preset(
        "paper-protocol", **{**TINY, "rm_finetune_num_train": 24, "policy_methods": []}
    )
    stages.run_seed(config, 0, str(tmp_path), log=lambda message: None)
    assert calls == [
        ("base", 96, False),
        ("+FT", 24, True),
        ("+LS", 24, True),
        ("+EAM", 24, True),
        ("+Adv", 24, True),
        ("clean", 96, False),
    ]


def test_the_presets_overview_turns_sft_minus_diffro_around_and_keeps_the_other_pairs():
    from rrpo_hf.study import format_presets_overview

    def cell(mean, half_width=0.1):
        return {"mean": mean, "half_width": half_width, "n": 3}

    keys = ("oracle_emotion_score", "oracle_naturalness", "oracle_artifact_rate", "oracle_cer")
    summary = {
        "paired": {
            "SFT − DiffRO": {key: cell(-0.5) for key in keys},
            "RRPO − DiffRO": {key: cell(0.25, float("nan")) for key in keys},
        }
    }
    table = format_presets_overview({"brittle": summary})
    assert "| brittle | DiffRO − SFT | +0.500 ± 0.100 | +0.500 ± 0.100 |" in table
    assert "| brittle | RRPO − DiffRO | +0.250 | +0.250 |" in table


@pytest.mark.slow
def test_the_study_script_with_several_presets_writes_their_headline_overview(tmp_path, monkeypatch, capsys):
    import runpy

    flags = []
    for key, value in TINY.items():
        flags += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    argv = ["reward_hacking_study.py", "--preset", "brittle,cue-exaggeration", "--output_dir", str(tmp_path), *flags]
    monkeypatch.setattr(sys, "argv", argv)
    script = Path(__file__).resolve().parents[1] / "examples" / "reward_hacking_study.py"
    runpy.run_path(str(script), run_name="__main__")
    overview = (tmp_path / "overview.md").read_text()
    assert overview.startswith("# Reward-hacking study: every preset")
    assert "Presets: brittle (1 seeds), cue-exaggeration (1 seeds)" in overview
    headline = overview.split("## Every row against DiffRO")[0]
    for preset in ("brittle", "cue-exaggeration"):
        for pair in ("RRPO − DiffRO", "DiffRO − SFT"):  # ⚠ where the tiny RMs fail the target check
            assert re.search(rf"\| {preset} \| {pair}( ⚠)? \| 1 \| [+-]\d\.\d{{3}} \|", headline), (preset, pair)
    assert overview in capsys.readouterr().out
