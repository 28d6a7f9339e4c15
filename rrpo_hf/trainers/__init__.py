"""Trainers: the robust speech-emotion reward model (stage 1 of RRPO)."""

from .robust_reward_config import RobustRewardConfig
from .robust_reward_trainer import RobustRewardTrainer

__all__ = ["RobustRewardConfig", "RobustRewardTrainer"]

# Stage 2: DiffRO / RRPO policy optimisation.
from .diffro_config import DiffROConfig  # noqa: E402
from .diffro_trainer import DataCollatorForDiffRO, DiffROTrainer  # noqa: E402

__all__ += ["DataCollatorForDiffRO", "DiffROConfig", "DiffROTrainer"]
