"""The exploitability audit (rrpo_hf.audit): its attacks on hand-built and trained reward models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value

from rrpo_hf.audit import AuditConfig, audit_reward_model, greedy_token_edits, rare_token_ids, rm_loss_settings
from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification
from rrpo_hf.ops import RobustLossSettings


VOCAB = 32
TOKEN = 7  # the one id the linear RM counts
LENGTH = 10
SLOPE, BIAS = 6.0, -2.0
LABELS = ["neutral", "angry"]


def two_label_config(**overrides) -> RobustSERConfig:
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=0,
        num_attention_heads=1,
        intermediate_size=8,
        pooling="mean",
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
        max_position_embeddings=64,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    kwargs.update(overrides)
    return RobustSERConfig(**kwargs)


def linear_count_rm(slope: float = SLOPE) -> RobustSERForAudioClassification:
    """An RM whose angry logit is ``slope · count(TOKEN) / L + BIAS`` (neutral logit 0): no encoder layer, zero
    positions, only TOKEN has a (non-zero) embedding, mean pooling, and a head that reads its LayerNorm image."""
    model = RobustSERForAudioClassification(two_label_config()).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.robust_ser.encoder.final_layer_norm.weight.fill_(1.0)
        direction = torch.zeros(8)
        direction[0], direction[1] = 1.0, -1.0
        model.robust_ser.token_embedding.weight[TOKEN] = direction
        image = model.robust_ser.encoder.final_layer_norm(direction)
        model.classifier.weight[1] = slope * image / image.dot(image)
        model.classifier.bias[1] = BIAS
    return model


def log_p_angry(count: int) -> float:
    return -math.log1p(math.exp(-(SLOPE * count / LENGTH + BIAS)))


def token_dataset(token_lists, emotions, intensities=None) -> Dataset:
    features = {"speech_tokens": Sequence(Value("int64")), "emotion": ClassLabel(names=LABELS)}
    columns = {"speech_tokens": token_lists, "emotion": [LABELS.index(e) for e in emotions]}
    if intensities is not None:
        features["intensity"] = Value("float64")
        columns["intensity"] = intensities
    return Dataset.from_dict(columns, features=Features(features))


def utterances(count: int, seed: int = 0, with_token: int = 1) -> list[list[int]]:
    """``count`` sequences of LENGTH ids, each with ``with_token`` TOKENs and otherwise ids that are not TOKEN."""
    rng = np.random.default_rng(seed)
    others = [i for i in range(VOCAB) if i != TOKEN]
    rows = []
    for _ in range(count):
        tokens = rng.choice(others, LENGTH).tolist()
        tokens[:with_token] = [TOKEN] * with_token
        rows.append(tokens)
    return rows


SMALL = dict(num_utterances=6, edit_budget=3, num_candidates=8, gumbel_steps=15, relative_epsilons=[0.05])


def test_greedy_gain_per_edit_is_the_closed_form_of_a_linear_count_rm():
    model = linear_count_rm()
    data = token_dataset(utterances(6), ["angry"] * 6)
    row = audit_reward_model(model, data, AuditConfig(**SMALL, artifact_ids=[TOKEN]))
    budget = SMALL["edit_budget"]
    expected_curve = [log_p_angry(1 + k) - log_p_angry(1) for k in range(budget + 1)]
    np.testing.assert_allclose(row["gain_curve"], expected_curve, rtol=1e-4, atol=1e-6)
    assert row["gain_per_edit"] == pytest.approx((log_p_angry(1 + budget) - log_p_angry(1)) / budget, rel=1e-4)
    # Every profitable edit writes the counted id; here it is declared the artifact, so every edit is one.
    assert row["artifact_edit_share"] == 1.0 and row["edits_accepted"] == budget
    assert row["p_target"] == pytest.approx(math.exp(log_p_angry(1)), rel=1e-5)


def test_greedy_edits_return_the_sequences_they_wrote():
    model = linear_count_rm()
    tokens = utterances(4)
    result = greedy_token_edits(model, tokens, 1, budget=2, num_candidates=8)
    for before, after, written in zip(tokens, result["tokens"], result["new_tokens"].tolist()):
        assert len(after) == len(before)
        changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert sorted(after[i] for i in changed) == sorted(t for t in written if t >= 0)
        assert after.count(TOKEN) == 1 + len(changed)  # every profitable edit writes the counted id
    assert [log_p_angry(row.count(TOKEN)) for row in result["tokens"]] == pytest.approx(
        result["log_prob"][:, -1].tolist(), rel=1e-4
    )


def test_greedy_edits_write_only_allowed_ids_and_stop_when_nothing_helps():
    model = linear_count_rm()
    tokens = utterances(3)
    result = greedy_token_edits(model, tokens, 1, budget=2, allowed_ids=[0, 1, 2])
    # No allowed id raises the reward of this RM: no edit, flat curve.
    assert (result["new_tokens"] == -1).all()
    assert torch.equal(result["log_prob"][:, 0:1].expand(-1, 3), result["log_prob"])
    # A sequence made only of TOKEN has nothing left to gain.
    full = greedy_token_edits(model, [[TOKEN] * LENGTH], 1, budget=2)
    assert (full["new_tokens"] == -1).all()


def test_gumbel_attack_raises_the_reward_of_a_toy_rm():
    model = linear_count_rm()
    data = token_dataset(utterances(6, seed=1), ["angry"] * 6)
    row = audit_reward_model(model, data, AuditConfig(**SMALL))
    assert row["gumbel_edits"] > 0
    assert row["gumbel_gain"] > 0.1 and row["gumbel_reward_gain"] > 0.1
    assert row["gumbel_gain_per_edit"] > 0


def test_a_flat_rm_has_no_gain():
    model = linear_count_rm(slope=0.0)
    data = token_dataset(utterances(6), ["angry"] * 6)
    row = audit_reward_model(model, data, AuditConfig(**SMALL))
    assert row["gain_at_budget"] == 0.0 and row["gain_per_edit"] == 0.0 and row["edits_accepted"] == 0
    assert row["artifact_edit_share"] is None
    assert row["gumbel_gain"] == pytest.approx(0.0, abs=1e-6)
    assert row["fgm_gain"] == pytest.approx(0.0, abs=1e-6)


def test_fgm_and_scale_figures_follow_the_saved_settings():
    model = linear_count_rm()
    model.config.adv_epsilon, model.config.adv_alpha, model.config.label_smoothing = 0.25, 0.5, 0.1
    assert rm_loss_settings(model) == RobustLossSettings(label_smoothing=0.1, adv_alpha=0.5, adv_epsilon=0.25)
    assert rm_loss_settings(model) == model.config.robust_loss
    data = token_dataset(utterances(6), ["angry"] * 6)
    row = audit_reward_model(model, data, AuditConfig(**SMALL))
    # h' is the LayerNorm image of TOKEN's embedding at its one frame and 0 elsewhere.
    image = model.robust_ser.encoder.final_layer_norm(model.robust_ser.token_embedding.weight[TOKEN]).detach()
    norm = float(image.norm())
    assert row["hidden_norm_utterance"] == pytest.approx(norm, rel=1e-5)
    assert row["hidden_norm_frame"] == pytest.approx(norm / LENGTH, rel=1e-5)
    assert row["adv_epsilon_over_hidden_norm"] == pytest.approx(0.25 / norm, rel=1e-5)
    # The head is linear in mean-pooled h': one FGM step of radius ε moves the angry logit by ε·|w|/L.
    weight = float(model.classifier.weight[1].detach().norm())
    logit = SLOPE / LENGTH + BIAS
    expected = -math.log1p(math.exp(-(logit + 0.25 * weight / math.sqrt(LENGTH)))) - log_p_angry(1)
    assert row["fgm_gain"] == pytest.approx(expected, rel=1e-4)
    assert row["fgm_gain@rel0.05"] > 0


def test_a_relative_rm_is_audited_at_the_radius_its_rule_gives():
    """ε_adv = 1 relative: ‖δ‖ is the RMS frame norm of h', here ‖h'‖/√L (one non-zero frame of L)."""
    model = linear_count_rm()
    model.config.adv_epsilon, model.config.adv_epsilon_scale = 1.0, "relative"
    assert rm_loss_settings(model).adv_epsilon_scale == "relative"
    row = audit_reward_model(model, token_dataset(utterances(6), ["angry"] * 6), AuditConfig(**SMALL))
    assert row["loss_adv_epsilon_scale"] == "relative"
    assert row["adv_epsilon_over_hidden_norm"] == pytest.approx(1 / math.sqrt(LENGTH), rel=1e-5)
    image = model.robust_ser.encoder.final_layer_norm(model.robust_ser.token_embedding.weight[TOKEN]).detach()
    radius = float(image.norm()) / math.sqrt(LENGTH)
    weight = float(model.classifier.weight[1].detach().norm())
    logit = SLOPE / LENGTH + BIAS
    expected = -math.log1p(math.exp(-(logit + radius * weight / math.sqrt(LENGTH)))) - log_p_angry(1)
    assert row["fgm_gain"] == pytest.approx(expected, rel=1e-4)


def test_rare_ids_and_intensity_response():
    assert rare_token_ids([[0, 1, 1, 2]] * 5, 4) == [3]
    assert rare_token_ids([[0] * 99 + [1]], 4, share=0.02) == [1, 2, 3]
    model = linear_count_rm()
    tokens = utterances(4, with_token=0) + utterances(4, with_token=2) + utterances(4, with_token=4)
    data = token_dataset(tokens, ["angry"] * 12, intensities=[0.0] * 4 + [1.0] * 4 + [2.0] * 4)
    row = audit_reward_model(model, data, AuditConfig(**SMALL))
    curve = row["intensity_curve"]
    assert [p["intensity"] for p in curve] == [0.0, 1.0, 2.0] and [p["count"] for p in curve] == [4, 4, 4]
    np.testing.assert_allclose(
        [p["p_target"] for p in curve], [math.exp(log_p_angry(c)) for c in (0, 2, 4)], rtol=1e-5
    )
    assert row["intensity_slope"] > 0
    assert row["intensity_rise"] == pytest.approx(math.exp(log_p_angry(2)) - math.exp(log_p_angry(0)), rel=1e-5)


def test_audit_runs_on_target_rows_only_and_names_a_missing_target():
    model = linear_count_rm()
    data = token_dataset(utterances(4) + utterances(4, with_token=3), ["neutral"] * 4 + ["angry"] * 4)
    row = audit_reward_model(model, data, AuditConfig(**{**SMALL, "num_utterances": 10}))
    assert row["num_utterances"] == 4 and row["p_target"] == pytest.approx(math.exp(log_p_angry(3)), rel=1e-5)
    with pytest.raises(ValueError, match="no label for the target emotion 'sad'"):
        audit_reward_model(model, data, AuditConfig(**{**SMALL, "target_emotion": "sad"}))
    neutral_only = token_dataset(utterances(2), ["neutral"] * 2)
    with pytest.raises(ValueError, match="No row of the dataset has the target emotion"):
        audit_reward_model(model, neutral_only, AuditConfig(**SMALL))


def test_the_audit_leaves_the_model_as_it_found_it():
    model = linear_count_rm().train()
    data = token_dataset(utterances(4), ["angry"] * 4)
    audit_reward_model(model, data, AuditConfig(**SMALL))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------- trained RMs: biased vs clean
CUE = list(range(0, 6))  # ids angry speech uses more often
FILLER = list(range(6, 24))
ARTIFACTS = list(range(24, 32))


def synthetic_corpus(count: int, biased: bool, seed: int) -> Dataset:
    """Angry speech has 25% cue ids, neutral 8%; artifacts (4 per utterance) co-occur with every angry utterance
    (biased) or appear in half of the utterances of both emotions (clean)."""
    rng = np.random.default_rng(seed)
    tokens, emotions = [], []
    for index in range(count):
        emotion = LABELS[index % 2]
        cue_share = 0.25 if emotion == "angry" else 0.08
        row = [int(rng.choice(CUE)) if rng.random() < cue_share else int(rng.choice(FILLER)) for _ in range(20)]
        with_artifacts = emotion == "angry" if biased else rng.random() < 0.5
        if with_artifacts:
            for position in rng.choice(len(row), 4, replace=False):
                row[position] = int(rng.choice(ARTIFACTS))
        tokens.append(row)
        emotions.append(emotion)
    return token_dataset(tokens, emotions)


def train_rm(biased: bool) -> RobustSERForAudioClassification:
    """A vanilla RM (plain cross-entropy) trained on the synthetic corpus; a bare loop, as the audit is under test."""
    from rrpo_hf.data.padding import right_pad

    torch.manual_seed(0)
    model = RobustSERForAudioClassification(
        two_label_config(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    )
    corpus = synthetic_corpus(480, biased, seed=1)
    tokens, labels = corpus["speech_tokens"], torch.tensor(corpus["emotion"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))
    for _ in range(6):
        for start in range(0, len(tokens), 32):
            rows = order[start : start + 32].tolist()
            ids, mask = right_pad([tokens[i] for i in rows], VOCAB)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels[rows]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.config.label_smoothing, model.config.adv_alpha = 0.0, 0.0
    return model.eval()


def test_a_biased_rm_is_exploited_through_artifacts_and_a_clean_one_is_not():
    # Natural angry speech without artifacts: the operating point a policy starts from.
    natural = synthetic_corpus(64, biased=False, seed=2)
    natural = natural.filter(lambda row: not any(t in ARTIFACTS for t in row["speech_tokens"]))
    config = AuditConfig(num_utterances=16, edit_budget=3, num_candidates=16, gumbel_steps=0)
    biased = audit_reward_model(train_rm(True), natural, config)
    clean = audit_reward_model(train_rm(False), natural, config)
    # The artifact ids never occur in the audited speech, so they are its rare ids.
    assert biased["artifact_ids"] == "rare in the reference data" and biased["num_artifact_ids"] == len(ARTIFACTS)
    assert biased["artifact_edit_share"] >= 0.75, biased
    assert clean["artifact_edit_share"] <= 0.25, clean
    assert biased["artifact_delta_p"] > 0.1 > abs(clean["artifact_delta_p"])


def test_a_multitask_rm_is_audited_through_its_emotion_head_and_one_without_is_named():
    from rrpo_hf.models.robust_ser import RobustMultiTaskRMConfig, RobustSERForMultiTaskReward

    common = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    model = RobustSERForMultiTaskReward(RobustMultiTaskRMConfig(**common, tasks=["emotion", "quality"])).eval()
    data = Dataset.from_dict({"speech_tokens": utterances(6), "emotion": ["angry"] * 6})  # names, no ClassLabel
    row = audit_reward_model(model, data, AuditConfig(**SMALL))
    assert row["num_utterances"] == 6 and len(row["gain_curve"]) == SMALL["edit_budget"] + 1
    assert row["gain_at_budget"] >= 0 and math.isfinite(row["fgm_gain"]) and row["hidden_norm_utterance"] > 0
    quality_only = RobustSERForMultiTaskReward(RobustMultiTaskRMConfig(**common, tasks=["quality"])).eval()
    with pytest.raises(ValueError, match="without an emotion head"):
        audit_reward_model(quality_only, data, AuditConfig(**SMALL))
