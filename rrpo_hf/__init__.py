"""rrpo-hf: Robust Reward Policy Optimization for LLM-based emotional TTS on the Hugging Face stack.

The public API is importable from the top level, as in TRL (``from rrpo_hf import DiffROConfig, DiffROTrainer``).
Names are resolved lazily on first access (PEP 562), so ``import rrpo_hf`` does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


__version__ = "0.1.0"

# submodule -> public names it provides. One table serves `__getattr__`, `__dir__` and `__all__`.
_IMPORT_STRUCTURE: dict[str, list[str]] = {
    "trainers": [
        "CosyVoice2SFTTrainer",
        "CosyVoiceGRPOConfig",
        "CosyVoiceGRPOTrainer",
        "DiffROConfig",
        "DiffROTrainer",
        "MultiTaskRewardConfig",
        "MultiTaskRewardTrainer",
        "RobustRewardConfig",
        "RobustRewardTrainer",
        "build_cosyvoice2_sft_collator",
        "build_robust_ser_config",
        "build_tiny_cosyvoice2_policy",
    ],
    "models.robust_ser": [
        "RobustMultiTaskRMConfig",
        "RobustSERConfig",
        "RobustSERForAudioClassification",
        "RobustSERForMultiTaskReward",
        "RobustSERModel",
        "RobustSEROutput",
    ],
    "models.cosyvoice2": [
        "CosyVoice2LM",
        "CosyVoice2LMConfig",
        "CosyVoice2LMOutput",
        "build_tiny_cosyvoice2_tokenizer",
        "generate_speech_tokens",
        "load_cosyvoice2_lm_and_tokenizer",
        "load_cosyvoice2_tokenizer",
        "tiny_cosyvoice2_config",
    ],
    "models.cosyvoice3": [
        "CosyVoice3LM",
        "CosyVoice3LMConfig",
        "build_tiny_cosyvoice3_tokenizer",
        "load_cosyvoice3_tokenizer",
        "tiny_cosyvoice3_config",
    ],
    "data": [
        "CANONICAL_EMOTIONS",
        "DataCollatorForCosyVoice2",
        "DataCollatorForDiffRO",
        "DataCollatorForEnergyAdaptiveMixup",
        "DataCollatorForSpeechEmotion",
        "UnknownEmotionError",
        "normalize_emotion",
    ],
    "testbed": [
        "EmotionWorld",
        "Oracle",
        "OracleScorer",
        "TestbedConfig",
        "make_emotion_corpus",
        "make_quality_corpus",
    ],
    "evaluation": ["EmotionClassifierScorer", "compute_emotion_metrics", "emotion_recognition_scores"],
    "audit": ["AuditConfig", "audit_reward_model"],
    "rewards": [
        "ASRErrorRate",
        "ASRReward",
        "EmotionRMEnsemble",
        "EmotionReward",
        "QualityReward",
        "RewardFunction",
        "RewardSet",
        "build_reward_set",
        "SpeechTokenReward",
        "task_rewards",
    ],
    "ops": [
        "aggregate_rewards",
        "apply_energy_adaptive_mixup",
        "fgm_perturbation",
        "gate_weights",
        "gumbel_softmax_sample",
        "RobustLossSettings",
        "mixup_emotion_loss",
        "sample_eam_plan",
        "smooth_labels",
        "soft_cross_entropy",
        "token_entropy",
        "token_level_kl",
        "weighted_reward_loss",
    ],
}
_NAME_TO_MODULE = {name: module for module, names in _IMPORT_STRUCTURE.items() for name in names}

__all__ = ["__version__", *sorted(_NAME_TO_MODULE)]


def __getattr__(name: str) -> Any:
    module_name = _NAME_TO_MODULE.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAME_TO_MODULE))


if TYPE_CHECKING:  # static type checkers and IDEs see the eager imports
    from .audit import AuditConfig, audit_reward_model
    from .data import (
        CANONICAL_EMOTIONS,
        DataCollatorForCosyVoice2,
        DataCollatorForDiffRO,
        DataCollatorForEnergyAdaptiveMixup,
        DataCollatorForSpeechEmotion,
        UnknownEmotionError,
        normalize_emotion,
    )
    from .evaluation import EmotionClassifierScorer, compute_emotion_metrics, emotion_recognition_scores
    from .models.cosyvoice2 import (
        CosyVoice2LM,
        CosyVoice2LMConfig,
        CosyVoice2LMOutput,
        build_tiny_cosyvoice2_tokenizer,
        generate_speech_tokens,
        load_cosyvoice2_lm_and_tokenizer,
        load_cosyvoice2_tokenizer,
        tiny_cosyvoice2_config,
    )
    from .models.cosyvoice3 import (
        CosyVoice3LM,
        CosyVoice3LMConfig,
        build_tiny_cosyvoice3_tokenizer,
        load_cosyvoice3_tokenizer,
        tiny_cosyvoice3_config,
    )
    from .models.robust_ser import (
        RobustMultiTaskRMConfig,
        RobustSERConfig,
        RobustSERForAudioClassification,
        RobustSERForMultiTaskReward,
        RobustSERModel,
        RobustSEROutput,
    )
    from .ops import (
        RobustLossSettings,
        aggregate_rewards,
        apply_energy_adaptive_mixup,
        fgm_perturbation,
        gate_weights,
        gumbel_softmax_sample,
        mixup_emotion_loss,
        sample_eam_plan,
        smooth_labels,
        soft_cross_entropy,
        token_entropy,
        token_level_kl,
        weighted_reward_loss,
    )
    from .rewards import (
        ASRErrorRate,
        ASRReward,
        EmotionReward,
        EmotionRMEnsemble,
        QualityReward,
        RewardFunction,
        RewardSet,
        SpeechTokenReward,
        build_reward_set,
        task_rewards,
    )
    from .testbed import EmotionWorld, Oracle, OracleScorer, TestbedConfig, make_emotion_corpus, make_quality_corpus
    from .trainers import (
        CosyVoice2SFTTrainer,
        CosyVoiceGRPOConfig,
        CosyVoiceGRPOTrainer,
        DiffROConfig,
        DiffROTrainer,
        MultiTaskRewardConfig,
        MultiTaskRewardTrainer,
        RobustRewardConfig,
        RobustRewardTrainer,
        build_cosyvoice2_sft_collator,
        build_robust_ser_config,
        build_tiny_cosyvoice2_policy,
    )
