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

from ..data.labels import UnknownEmotionError, emotion_key, emotion_label_ids
from ..data.padding import right_pad
from ..data.validation import check_token_range
from ..ops import mixup_emotion_loss


__all__ = ["EmotionClassifierScorer", "EvalScorer", "classifier_logits", "emotion_classifier_scores"]


@torch.no_grad()
def classifier_logits(
    model: torch.nn.Module,
    token_lists: Sequence[Sequence[int]],
    batch_size: int = 64,
    max_length: int | None = None,
    on_batch=None,
) -> torch.Tensor:
    """The one way to run a speech-token emotion classifier over token lists: ``(N, num_labels)`` float32 logits on
    the CPU, in batches of ``batch_size`` right-padded with the model's padding id, on the model's device.

    Each utterance is checked first (not empty, ids in the model's codebook: one error naming the utterance), and
    cut to ``max_length`` tokens when given; an utterance longer than the model's ``max_position_embeddings`` is an
    error naming the fix. ``on_batch(count)`` is called after each batch (a progress bar's ``update``).
    """
    config = model.config
    limit = getattr(config, "max_position_embeddings", None)
    sequences = []
    for index, tokens in enumerate(token_lists):
        tokens = [int(token) for token in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)]
        if max_length is not None:
            tokens = tokens[:max_length]
        if not tokens:
            raise ValueError(f"Utterance {index} has no speech tokens; filter such utterances out.")
        check_token_range(tokens, config.vocab_size, f"Utterance {index}")
        if limit is not None and len(tokens) > limit:
            raise ValueError(
                f"Utterance {index} has {len(tokens)} speech tokens, more than the classifier reads "
                f"(max_position_embeddings={limit}); truncate (max_length={limit}) or filter long utterances."
            )
        sequences.append(tokens)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    pad_id = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else config.vocab_size
    chunks = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = right_pad(sequences[start : start + batch_size], pad_id, device)
        chunks.append(model(input_ids=input_ids, attention_mask=attention_mask).logits.float().cpu())
        if on_batch is not None:
            on_batch(input_ids.shape[0])
    return torch.cat(chunks) if chunks else torch.zeros(0, config.num_labels)


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
        logits = classifier_logits(self.model, tokens, batch_size=max(len(tokens), 1))
        labels = torch.tensor([self.label_lookup[emotion] for emotion in targets])
        loss = mixup_emotion_loss(logits, labels, epsilon=self.label_smoothing, reduction="none")
        return {f"{self.name}_reward": -loss, f"{self.name}_accuracy": (logits.argmax(-1) == labels).float()}
