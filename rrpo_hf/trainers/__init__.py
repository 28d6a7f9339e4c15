"""Trainers: the robust speech-emotion reward model (stage 1), DiffRO / RRPO policy optimisation (stage 2), GRPO on
the same rewards, the SFT stage ("+SFT") and the builders the example scripts and the study share."""

from .builders import build_cosyvoice2_sft_collator, build_robust_ser_config, build_tiny_cosyvoice2_policy
from .diffro_config import DiffROConfig
from .diffro_trainer import DataCollatorForDiffRO, DiffROTrainer
from .grpo_config import CosyVoiceGRPOConfig
from .grpo_trainer import CosyVoiceGRPOTrainer
from .multitask_reward_config import MultiTaskRewardConfig
from .multitask_reward_trainer import DataCollatorForMultiTaskReward, MultiTaskRewardTrainer
from .robust_reward_config import RobustRewardConfig
from .robust_reward_trainer import RobustRewardTrainer
from .sft_trainer import CosyVoice2SFTTrainer


__all__ = [
    "CosyVoice2SFTTrainer",
    "CosyVoiceGRPOConfig",
    "CosyVoiceGRPOTrainer",
    "DataCollatorForDiffRO",
    "DataCollatorForMultiTaskReward",
    "DiffROConfig",
    "DiffROTrainer",
    "MultiTaskRewardConfig",
    "MultiTaskRewardTrainer",
    "RobustRewardConfig",
    "RobustRewardTrainer",
    "build_cosyvoice2_sft_collator",
    "build_robust_ser_config",
    "build_tiny_cosyvoice2_policy",
]
