"""Training arguments of the multi-task token reward model (DiffRO's ASR / SER / SQA heads on the RobustSER body)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models.robust_ser.configuration_robust_multitask import MULTITASK_TASKS
from .robust_reward_config import RobustRewardConfig


@dataclass
class MultiTaskRewardConfig(RobustRewardConfig):
    r"""
    Configuration class for the [`MultiTaskRewardTrainer`].

    Everything of [`RobustRewardConfig`] applies to the emotion head unchanged (label smoothing, EAM, adversarial
    training on h'). The parameters below add the ASR (CTC) and quality heads of a
    [`~rrpo_hf.models.robust_ser.RobustSERForMultiTaskReward`]:

    `L = L_ser + asr_loss_weight · L_ASR + quality_loss_weight · L_quality`, with `L_ser = L_emo + α·L_adv` (Eq. 5),
    `L_ASR = mean_b(-log P_CTC(text_b | tokens_b) / |text_b|)` and `L_quality` the cross-entropy of the quality
    classes. `L_ASR` and `L_quality` are computed on the un-mixed speech (EAM mixes the emotion head's input only).

    Parameters:
        > Tasks

        tasks (`list[str]` or `None`, *optional*, defaults to `None`):
            Heads to train, a subset of the model's (`emotion`, `asr`, `quality`); comma-separated on the command line
            (`--tasks emotion,asr,quality`). `None`: every head the model has. Heads left out are frozen.
        asr_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the CTC loss.
        quality_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the quality cross-entropy.

        > Data

        text_column (`str`, *optional*, defaults to `"text"`):
            Column with each utterance's transcript as space-separated ASR symbols (the ASR target).
        quality_column (`str`, *optional*, defaults to `"quality"`):
            Column with the quality class: a `ClassLabel` or strings named like the model's `quality_labels`, or class
            ids in `[0, len(quality_labels))`.
    """

    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "Heads to train, a subset of the model's (emotion, asr, quality), comma-separated "
            "(`--tasks emotion,asr,quality`). None: every head the model has; heads left out are frozen."
        },
    )
    asr_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the ASR loss (CTC, -log P(text | tokens) per transcript symbol)."},
    )
    quality_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the quality loss (cross-entropy over the quality classes, e.g. MOS 1..5)."},
    )
    text_column: str = field(
        default="text",
        metadata={"help": "Dataset column with the transcript (space-separated ASR symbols) for the ASR head."},
    )
    quality_column: str = field(
        default="quality",
        metadata={
            "help": "Dataset column with the quality class (ClassLabel / names of the model's quality_labels, or ids)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.tasks is not None:
            if isinstance(self.tasks, str):
                self.tasks = [self.tasks]
            tasks = [task.strip() for entry in self.tasks for task in str(entry).split(",") if task.strip()]
            unknown = [task for task in tasks if task not in MULTITASK_TASKS]
            if unknown or not tasks:
                raise ValueError(
                    f"tasks must be a non-empty subset of {list(MULTITASK_TASKS)} (e.g. --tasks emotion,asr,quality), "
                    f"got {self.tasks}."
                )
            self.tasks = [task for task in MULTITASK_TASKS if task in tasks]
        if self.asr_loss_weight < 0 or self.quality_loss_weight < 0:
            raise ValueError(
                f"asr_loss_weight and quality_loss_weight must be >= 0, got {self.asr_loss_weight} and "
                f"{self.quality_loss_weight}."
            )
