"""Configuration of the multi-task token reward model (DiffRO, arXiv 2507.05911): the RobustSER encoder with one head
per task (emotion, ASR, speech quality)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from .configuration_robust_ser import RobustSERConfig


#: The heads a multi-task reward model can have.
MULTITASK_TASKS = ("emotion", "asr", "quality")

#: Default quality classes: MOS rounded to 1..5 (DiffRO's SQA head predicts 5 levels).
DEFAULT_QUALITY_LABELS = ("1", "2", "3", "4", "5")


@strict(accept_kwargs=True)
class RobustMultiTaskRMConfig(RobustSERConfig):
    r"""
    Configuration of [`RobustSERForMultiTaskReward`]: the [`RobustSERConfig`] encoder (every field of it keeps its
    meaning) with a head per task in `tasks`.

    Args:
        tasks (`list[str]`, *optional*):
            The heads, any non-empty subset of `"emotion"` (the RobustSER classifier over `id2label`), `"asr"`
            (frame-wise CTC over `asr_labels`) and `"quality"` (pooled classifier over `quality_labels`). Defaults
            to every head the other arguments allow: `emotion`, `quality`, and `asr` when `asr_labels` is given.
        asr_labels (`list[str]`, *optional*):
            The ASR symbols (phonemes, characters, ...), needed with `"asr"`. Texts are space-separated symbols;
            CTC blank is class 0 and symbol `asr_labels[i]` is class `i + 1`.
        quality_labels (`list[str]`, *optional*, defaults to `["1", "2", "3", "4", "5"]`):
            The quality classes, worst first (MOS levels). `QualityReward` aims at the last one by default.
        asr_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the CTC loss in the model's `loss` (the trainer writes its own value here).
        quality_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the quality cross-entropy in the model's `loss` (the trainer writes its own value here).

    Example:

    ```python
    >>> from rrpo_hf.models.robust_ser import RobustMultiTaskRMConfig, RobustSERForMultiTaskReward
    >>> config = RobustMultiTaskRMConfig(
    ...     vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
    ...     tasks=["emotion", "asr", "quality"], asr_labels=["a", "e", "i", "p", "t"],
    ... )
    >>> model = RobustSERForMultiTaskReward(config)
    ```
    """

    model_type = "robust_multitask_rm"

    tasks: list[str] | tuple[str, ...] | None = None
    asr_labels: list[str] | tuple[str, ...] | None = None
    quality_labels: list[str] | tuple[str, ...] = DEFAULT_QUALITY_LABELS
    asr_loss_weight: float | int = 1.0
    quality_loss_weight: float | int = 1.0

    def __post_init__(self, **kwargs):
        if self.tasks is None:
            self.tasks = ["emotion", "quality"] + (["asr"] if self.asr_labels else [])
        # Stored in the canonical order, so two configs with the same heads compare (and save) equal.
        self.tasks = [task for task in MULTITASK_TASKS if task in self.tasks] + [
            task for task in self.tasks if task not in MULTITASK_TASKS
        ]
        self.asr_labels = None if self.asr_labels is None else [str(symbol) for symbol in self.asr_labels]
        self.quality_labels = [str(label) for label in self.quality_labels]
        super().__post_init__(**kwargs)

    @classmethod
    def from_robust_ser_config(cls, ser_config: RobustSERConfig, **multitask_kwargs) -> RobustMultiTaskRMConfig:
        """This config with every field of a [`RobustSERConfig`] (encoder, labels, regularization) kept, and the
        multi-task fields (`tasks`, `asr_labels`, ...) from `multitask_kwargs`."""
        values = ser_config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version"):
            values.pop(key, None)
        values["id2label"] = {int(i): name for i, name in ser_config.id2label.items()}
        values["label2id"] = {name: int(i) for name, i in ser_config.label2id.items()}
        values.update(multitask_kwargs)
        return cls(**values)

    @property
    def num_asr_classes(self) -> int:
        """CTC classes: the blank (0) plus one per ASR symbol."""
        return len(self.asr_labels or ()) + 1

    @property
    def num_quality_labels(self) -> int:
        return len(self.quality_labels)

    def validate_tasks(self):
        """Checks run by `@strict` after init: each error names the field and how to fix it."""
        unknown = [task for task in self.tasks if task not in MULTITASK_TASKS]
        if unknown or not self.tasks:
            raise ValueError(
                f"tasks must be a non-empty subset of {list(MULTITASK_TASKS)}, got {self.tasks}"
                + (f" (unknown: {unknown})." if unknown else ".")
            )
        if "asr" in self.tasks:
            if not self.asr_labels:
                raise ValueError(
                    "tasks has 'asr' but asr_labels is empty: pass the ASR symbols (e.g. the phoneme inventory) as "
                    "asr_labels, or drop 'asr' from tasks."
                )
            bad = [symbol for symbol in self.asr_labels if not symbol or any(c.isspace() for c in symbol)]
            if bad:
                raise ValueError(
                    f"asr_labels {bad} are empty or contain whitespace; texts are split on spaces, so a symbol must "
                    "be a non-empty string without spaces."
                )
            duplicates = sorted({s for s in self.asr_labels if self.asr_labels.count(s) > 1})
            if duplicates:
                raise ValueError(f"asr_labels must be unique, {duplicates} occur more than once.")
        if "quality" in self.tasks:
            if len(self.quality_labels) < 2 or len(set(self.quality_labels)) != len(self.quality_labels):
                raise ValueError(
                    f"quality_labels must be at least two distinct classes (worst first), got {self.quality_labels}."
                )
        if self.asr_loss_weight < 0 or self.quality_loss_weight < 0:
            raise ValueError(
                f"asr_loss_weight and quality_loss_weight must be >= 0, got {self.asr_loss_weight} and "
                f"{self.quality_loss_weight}."
            )


__all__ = ["DEFAULT_QUALITY_LABELS", "MULTITASK_TASKS", "RobustMultiTaskRMConfig"]
