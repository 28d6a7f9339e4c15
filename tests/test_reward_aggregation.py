"""Combining rewards: ensemble aggregation, the gate, the weighted loss (`rrpo_hf.ops.reward_aggregation`), and the
reward functions' own contract (`rrpo_hf.rewards`: names, output checks, heads, `EmotionRMEnsemble`).

Expected values are written out by hand or computed with plain torch, never with the function under test.
"""

import math

import pytest
import torch

from rrpo_hf.data.labels import emotion_label_maps
from rrpo_hf.models.robust_ser import (
    RobustMultiTaskRMConfig,
    RobustSERConfig,
    RobustSERForAudioClassification,
    RobustSERForMultiTaskReward,
)
from rrpo_hf.ops import (
    aggregate_rewards,
    ensemble_std,
    gate_weights,
    mean_minus_std_reward,
    min_reward,
    weighted_reward_loss,
    weighted_rewards,
)
from rrpo_hf.rewards import (
    ASRReward,
    EmotionReward,
    EmotionRMEnsemble,
    QualityReward,
    check_reward_loss,
    reward_function_name,
    task_rewards,
)


REWARDS = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5], [-4.0, 0.0, -2.0]])


# ------------------------------------------------------------------------------------------------ aggregation


def test_mean_min_and_mean_minus_std_by_hand():
    assert aggregate_rewards(REWARDS, "mean").tolist() == pytest.approx([-2.0, -0.5, -2.0])
    assert aggregate_rewards(REWARDS, "min").tolist() == pytest.approx([-3.0, -0.5, -4.0])
    # Population std (1/K): row 0: sqrt(2/3); row 1: 0; row 2: sqrt(8/3).
    std = [math.sqrt(2 / 3), 0.0, math.sqrt(8 / 3)]
    assert ensemble_std(REWARDS).tolist() == pytest.approx(std)
    expected = [-2.0 - 0.5 * std[0], -0.5, -2.0 - 0.5 * std[2]]
    assert aggregate_rewards(REWARDS, "mean_minus_std", std_coef=0.5).tolist() == pytest.approx(expected)
    # λ = 0 is the mean.
    assert torch.equal(mean_minus_std_reward(REWARDS, 0.0), aggregate_rewards(REWARDS, "mean"))


def test_gradients_of_the_aggregations():
    rewards = REWARDS.clone().requires_grad_(True)
    aggregate_rewards(rewards, "mean").sum().backward()
    assert torch.allclose(rewards.grad, torch.full_like(rewards, 1 / 3))

    rewards = torch.tensor([[-1.0, -3.0, -3.0]], requires_grad=True)
    min_reward(rewards).sum().backward()
    assert rewards.grad.tolist() == [[0.0, 0.5, 0.5]]  # tied minima share the gradient

    # Where every member agrees the spread is 0 and so is its gradient (torch.std would give NaN).
    rewards = torch.tensor([[-0.5, -0.5, -0.5]], requires_grad=True)
    ensemble_std(rewards).sum().backward()
    assert rewards.grad.tolist() == [[0.0, 0.0, 0.0]]
    single = torch.tensor([[-2.0]], requires_grad=True)
    mean_minus_std_reward(single, 1.0).sum().backward()
    assert single.grad.tolist() == [[1.0]]


def test_aggregation_errors_name_the_problem():
    with pytest.raises(ValueError, match="Unknown reward aggregation 'median'.*mean_minus_std"):
        aggregate_rewards(REWARDS, "median")
    with pytest.raises(ValueError, match="std_coef.*>= 0"):
        mean_minus_std_reward(REWARDS, -1.0)
    with pytest.raises(ValueError, match=r"\(batch, num_models\).*\(3,\)"):
        aggregate_rewards(REWARDS[:, 0], "mean")


# ------------------------------------------------------------------------------------------------ gate, weighted sum


def test_hard_gate_is_a_step_at_the_threshold():
    reward = torch.tensor([-2.0, -1.0, -0.5, 0.0])
    assert gate_weights(reward, threshold=-1.0).tolist() == [0.0, 1.0, 1.0, 1.0]  # r >= τ passes


def test_soft_gate_is_a_sigmoid_and_carries_no_gradient():
    reward = torch.tensor([-2.0, -1.0, 0.0], requires_grad=True)
    gate = gate_weights(reward, threshold=-1.0, temperature=0.5)
    expected = [1 / (1 + math.exp(-(r + 1.0) / 0.5)) for r in (-2.0, -1.0, 0.0)]
    assert gate.tolist() == pytest.approx(expected)
    assert not gate.requires_grad
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        gate_weights(reward, threshold=0.0, temperature=-1.0)


def test_weighted_reward_loss_and_logged_reward_by_hand():
    emotion = torch.tensor([1.0, 2.0, 3.0, 4.0])
    asr = torch.tensor([0.5, 0.5, 1.5, 2.5])
    gate = torch.tensor([1.0, 0.0, 1.0, 0.5])
    assert weighted_reward_loss([emotion, asr], [2.0, 0.5]).item() == pytest.approx(2.0 * 2.5 + 0.5 * 1.25)
    gated = (1.0 * 1 + 0.0 * 2 + 1.0 * 3 + 0.5 * 4) / 4
    assert weighted_reward_loss([emotion, asr], [2.0, 0.5], gate, gated_index=0).item() == pytest.approx(
        2.0 * gated + 0.5 * 1.25
    )
    assert weighted_rewards([-emotion, -asr], [2.0, 0.5]).tolist() == pytest.approx([-2.25, -4.25, -6.75, -9.25])
    with pytest.raises(ValueError, match="one weight per reward function"):
        weighted_reward_loss([emotion, asr], [1.0])
    with pytest.raises(ValueError, match="both `gate` and `gated_index`"):
        weighted_reward_loss([emotion, asr], [1.0, 1.0], gate)


# ------------------------------------------------------------------------------------------------ reward functions


SMALL = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def emotion_model(seed: int, emotions=None, vocab_size: int = 64) -> RobustSERForAudioClassification:
    torch.manual_seed(seed)
    kwargs = {}
    if emotions is not None:
        kwargs["id2label"], kwargs["label2id"] = emotion_label_maps(emotions)
    return RobustSERForAudioClassification(RobustSERConfig(**{**SMALL, "vocab_size": vocab_size}, **kwargs)).eval()


def multitask_model(tasks, seed: int = 0) -> RobustSERForMultiTaskReward:
    torch.manual_seed(seed)
    asr = ["a", "b", "c"] if "asr" in tasks else None
    return RobustSERForMultiTaskReward(RobustMultiTaskRMConfig(**SMALL, tasks=tasks, asr_labels=asr)).eval()


def one_hot_batch(batch_size=3, length=7, vocab=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, length), generator=generator)
    mask = torch.ones(batch_size, length, dtype=torch.long)
    mask[0, 5:] = 0
    return ids, torch.nn.functional.one_hot(ids, vocab).float(), mask


def member_loss(model, ids, mask, emotions, epsilon):
    """Label-smoothed cross-entropy (Eq. 2-3, λ = 0) of each sample's target emotion, by hand."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor([model.config.label2id[name] for name in emotions])
    nll = -log_probs[torch.arange(len(emotions)), targets]
    return (1 - epsilon) * nll - epsilon * log_probs.mean(dim=-1)


@pytest.mark.parametrize("aggregation", ["mean", "min", "mean_minus_std"])
def test_ensemble_loss_is_minus_the_aggregated_member_rewards(aggregation):
    order = ["sad", "fearful", "happy", "neutral", "angry", "surprised"]
    models = [emotion_model(1), emotion_model(2, emotions=order), emotion_model(3)]  # member 1: other label ids
    ensemble = EmotionRMEnsemble(models, aggregation=aggregation, std_coef=0.7, label_smoothing=0.1)
    ids, probs, mask = one_hot_batch()
    emotions = ["happy", "sad", "angry"]
    batch = {"target_emotions": emotions}
    terms = ensemble.loss_terms(probs, mask, batch)

    with torch.no_grad():
        rewards = -torch.stack([member_loss(m, ids, mask, emotions, 0.1) for m in models], dim=1)
    mean = rewards.mean(dim=1)
    if aggregation == "mean":
        expected = mean
    elif aggregation == "min":
        expected = rewards.min(dim=1).values
    else:
        expected = mean - 0.7 * ((rewards - mean[:, None]) ** 2).mean(dim=1).sqrt()
    torch.testing.assert_close(terms["loss"], -expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["member_rewards"], rewards, rtol=1e-5, atol=1e-6)


def test_ensemble_members_must_share_codebook_and_labels():
    with pytest.raises(ValueError, match="member 1 reads vocab_size=32.*member 0 reads 64"):
        EmotionRMEnsemble([emotion_model(1), emotion_model(2, vocab_size=32)])
    with pytest.raises(ValueError, match="member 1 knows the emotions"):
        EmotionRMEnsemble([emotion_model(1), emotion_model(2, emotions=["happy", "sad"])])
    with pytest.raises(TypeError, match="non-empty list"):
        EmotionRMEnsemble([])
    with pytest.raises(ValueError, match="Unknown ensemble aggregation 'max'"):
        EmotionRMEnsemble([emotion_model(1)], aggregation="max")


def test_a_reward_that_asks_for_a_missing_head_names_the_head_and_the_fix():
    with pytest.raises(ValueError, match=r"'asr' needs the 'asr' head.*tasks=\['emotion', 'quality'\].*--tasks"):
        ASRReward(multitask_model(["emotion", "quality"]))
    with pytest.raises(ValueError, match=r"'quality' needs the 'quality' head.*--tasks emotion,asr,quality"):
        QualityReward(multitask_model(["emotion", "asr"]))
    with pytest.raises(ValueError, match=r"'emotion' needs the 'emotion' head.*tasks=\['asr'\]"):
        EmotionReward(multitask_model(["asr"]))
    assert [r.name for r in task_rewards(multitask_model(["emotion", "asr", "quality"]))] == ["asr", "quality"]
    assert task_rewards(multitask_model(["emotion"])) == []


def test_frozen_models_are_what_the_trainer_checks():
    model = multitask_model(["emotion", "asr", "quality"])
    assert ASRReward(model).frozen_models == [model]
    members = [emotion_model(1), emotion_model(2)]
    assert EmotionRMEnsemble(members).frozen_models == members
    assert all(not p.requires_grad for p in model.parameters())


def test_reward_output_and_name_checks():
    with pytest.raises(ValueError, match=r"'f' returned shape \(3, 1\) on a batch of 3 samples"):
        check_reward_loss("f", torch.zeros(3, 1), 3)
    with pytest.raises(TypeError, match="'f' returned a float"):
        check_reward_loss("f", 1.0, 3)
    with pytest.raises(TypeError, match="torch.int64 losses"):
        check_reward_loss("f", torch.zeros(3, dtype=torch.long), 3)

    def brevity(token_probs, attention_mask, batch):
        return attention_mask.sum(1).float()

    assert reward_function_name(brevity) == "brevity"
    assert reward_function_name(ASRReward(multitask_model(["asr"]), name="intelligibility")) == "intelligibility"
    with pytest.raises(TypeError, match="has no name"):
        reward_function_name(type("Nameless", (), {"__call__": lambda self, *a: None})())
