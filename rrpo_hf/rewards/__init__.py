"""Reward functions for `DiffROTrainer(reward_funcs=...)`: the contract (:mod:`.base`), the emotion reward with its
ensemble (:mod:`.emotion`) and the task rewards of a multi-task reward model (:mod:`.multitask`).

A reward function maps the policy's Gumbel-Softmax samples to a per-sample differentiable loss,
``f(token_probs, attention_mask, batch) -> (B,)`` (reward = -loss); the trainer combines several of them with
``DiffROConfig.reward_weights`` and optionally gates the emotion loss by one of them (``reward_gate``), see
docs/architecture.md, "Several rewards".
"""

from .base import RewardFunction, check_reward_loss, model_tasks, require_head, reward_function_name
from .emotion import EmotionReward, EmotionRMEnsemble
from .multitask import ASRErrorRate, ASRReward, QualityReward, task_rewards


__all__ = [
    "ASRErrorRate",
    "ASRReward",
    "EmotionRMEnsemble",
    "EmotionReward",
    "QualityReward",
    "RewardFunction",
    "check_reward_loss",
    "model_tasks",
    "require_head",
    "reward_function_name",
    "task_rewards",
]
