"""Reward functions for `DiffROTrainer(reward_funcs=...)`: the contract (:mod:`.base`), the emotion reward with its
ensemble (:mod:`.emotion`), the task rewards of a multi-task reward model (:mod:`.multitask`), and the one builder
(:mod:`.builder`) that turns reward models, folders and callables into the :class:`RewardSet` the trainer holds.

A reward function maps the policy's Gumbel-Softmax samples to a per-sample differentiable loss,
``f(token_probs, attention_mask, batch) -> (B,)`` (reward = -loss); the trainer combines several of them with
``DiffROConfig.reward_weights`` and optionally gates the emotion loss by one of them (``reward_gate``), see
docs/architecture.md, "Several rewards".
"""

from .base import RewardFunction, check_reward_loss, model_tasks, require_head, reward_function_name
from .builder import RewardSet, build_reward_set, load_reward_model
from .emotion import EmotionReward, EmotionRMEnsemble, reward_loss_settings
from .multitask import ASRErrorRate, ASRReward, QualityReward, task_rewards
from .tokens import SpeechTokenReward


__all__ = [
    "ASRErrorRate",
    "ASRReward",
    "EmotionRMEnsemble",
    "EmotionReward",
    "QualityReward",
    "RewardFunction",
    "RewardSet",
    "SpeechTokenReward",
    "build_reward_set",
    "check_reward_loss",
    "load_reward_model",
    "model_tasks",
    "require_head",
    "reward_function_name",
    "reward_loss_settings",
    "task_rewards",
]
