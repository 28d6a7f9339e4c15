"""Evaluation scorers: callables that score a policy's generated speech, one named score per sample.

`DiffROTrainer.evaluate` generates speech tokens for every evaluation batch and hands them to each scorer in its
``eval_scorers`` list, the way TRL's trainers take reward functions. A scorer is any callable

    scorer(tokens: list[list[int]], batch: Mapping[str, Any]) -> Mapping[str, Sequence[float]]

where ``tokens`` are the generated speech ids per sample (stop token removed) and ``batch`` is the evaluation batch
of :class:`~rrpo_hf.data.diffro_collator.DataCollatorForDiffRO` (``texts``, ``target_emotions`` as canonical names,
``languages`` when the dataset has them, ``text_ids``, ...). It returns per-sample scores under metric names; the
trainer logs the mean of each as ``eval_<name>``. Names must be unique across the trainer's scorers.

Two scorers ship: :class:`EmotionClassifierScorer` (an independent emotion classifier as judge, `judge_*`) here, and
:class:`~rrpo_hf.testbed.OracleScorer` (the testbed's ground truth, `oracle_*`). An ASR or a DNSMOS scorer on
synthesized audio is written the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from ..data.diffro_collator import pad_speech_tokens
from ..data.labels import UnknownEmotionError, emotion_key, emotion_label_ids
from ..ops import mixup_emotion_loss


__all__ = ["EmotionClassifierScorer", "EvalScorer", "emotion_classifier_scores"]


class EvalScorer(Protocol):
    """What `DiffROTrainer(eval_scorers=...)` calls on every evaluation batch."""

    def __call__(self, tokens: list[list[int]], batch: Mapping[str, Any]) -> Mapping[str, Sequence[float]]: ...


@torch.no_grad()
def emotion_classifier_scores(
    model: torch.nn.Module,
    speech_ids: torch.Tensor,
    speech_attention_mask: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(reward, correct)`` per sample of a speech-token emotion classifier on padded speech: the negative
    (label-smoothed, Eq. 2) cross-entropy of the target label ids, and whether its top label is the target."""
    logits = model(input_ids=speech_ids, attention_mask=speech_attention_mask).logits
    loss = mixup_emotion_loss(logits, labels, epsilon=label_smoothing, reduction="none")
    return -loss, (logits.argmax(-1) == labels).float()


class EmotionClassifierScorer:
    """Scores generated speech with a frozen speech-token emotion classifier (a judge independent of the training RM).

    Per sample: ``<name>_reward`` = -cross-entropy of the target emotion (with ``label_smoothing``, as the training
    reward is computed) and ``<name>_accuracy`` = whether the classifier's top label is the target. A policy that
    fools its training RM but not the judge shows as a widening gap between ``rm_accuracy`` and ``judge_accuracy``.

    Args:
        model: an `AutoModelForAudioClassification`-style module reading speech-token ``input_ids`` (e.g.
            `RobustSERForAudioClassification`) in eval mode; the scorer runs it on the device of its parameters.
        name (`str`, defaults to `"judge"`): metric prefix.
        label_smoothing (`float`, defaults to 0.0): ε of the cross-entropy (Eq. 2).
    """

    def __init__(self, model: torch.nn.Module, name: str = "judge", label_smoothing: float = 0.0):
        self.model = model
        self.name = name
        self.label_smoothing = label_smoothing
        self.label_lookup = emotion_label_ids(model.config.id2label)

    @torch.no_grad()
    def __call__(self, tokens: list[list[int]], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        targets = [emotion_key(emotion) for emotion in batch["target_emotions"]]
        missing = sorted(set(targets) - set(self.label_lookup))
        if missing:
            raise UnknownEmotionError(
                f"The {self.name} classifier has no label for target emotion(s) {missing}; its labels are "
                f"{sorted(self.label_lookup)}."
            )
        device = next(self.model.parameters()).device
        speech_ids, speech_attention_mask = pad_speech_tokens(tokens, device)
        labels = torch.tensor([self.label_lookup[emotion] for emotion in targets], device=device)
        reward, correct = emotion_classifier_scores(
            self.model, speech_ids, speech_attention_mask, labels, self.label_smoothing
        )
        return {f"{self.name}_reward": reward, f"{self.name}_accuracy": correct}
