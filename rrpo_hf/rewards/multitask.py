"""DiffRO's task rewards from the heads of a multi-task token reward model (`RobustSERForMultiTaskReward`).

Each is a reward function of the :mod:`.base` contract, ``f(token_probs, attention_mask, batch) -> (B,)`` loss
(reward = -loss), computed from the policy's straight-through Gumbel-Softmax samples through the frozen model
(``F = token_probs @ E``), so the gradient reaches the policy:

* :class:`ASRReward`: ``loss = -log P_ASR(text | tokens)`` (CTC, :func:`~rrpo_hf.ops.ctc.ctc_log_likelihood`),
  divided by the number of transcript symbols when ``normalize_by_length``: DiffRO's ``R_ASR``. ``text`` is
  ``batch["texts"]``, the prompts' transcripts in the model's ASR symbols.
* :class:`ASRErrorRate`: ``loss = CER`` of the ASR head's greedy transcript, without gradient: not a reward to
  train on but the intelligibility gate of the emotion reward (weight 0, ``reward_gate``).
* :class:`QualityReward`: ``loss = -log P_quality(target class | tokens)`` (default, the best class), or
  ``-E[score] = -sum_k P_k · score_k`` with ``objective="expected"`` (scores: the labels as numbers, MOS 1..5).

:func:`task_rewards` gives one per non-emotion head of a model (`rrpo_hf.rewards.emotion` wraps the emotion head).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..models.robust_ser.modeling_robust_multitask import quality_values
from ..ops import error_rate
from .base import RewardFunction, model_tasks, require_head


__all__ = ["ASRErrorRate", "ASRReward", "QualityReward", "task_rewards"]


class ASRReward(RewardFunction):
    """DiffRO's intelligibility reward: per-sample loss ``-log P_ASR(text | tokens)`` of a frozen CTC head.

    Args:
        model: a [`RobustSERForMultiTaskReward`] with an `"asr"` head; put in eval mode with frozen parameters.
        name (`str`, defaults to `"asr"`): the name in the logs (``rewards/<name>/mean``).
        normalize_by_length (`bool`, defaults to `True`): divide by the transcript's number of symbols, so long
            and short prompts weigh alike (the per-symbol loss the model was trained with).

    ``batch["texts"]`` holds each sample's transcript as space-separated ASR symbols (the testbed's phonemes). A
    sample with fewer speech tokens than its transcript needs (``P = 0``, see ``ctc_min_input_lengths``) gets, without
    gradient, the worst loss of the batch and at least ``log(C)`` per symbol (``C`` = CTC classes, the loss of
    guessing every symbol): cutting the speech short can never score better than reading it badly.
    """

    # Its model's forward gives every head's output: rewards of one model share it (`RewardSet.compute`).
    shares_forward = True

    def __init__(self, model: torch.nn.Module, name: str = "asr", normalize_by_length: bool = True):
        super().__init__(name)
        require_head(model, "asr", name)
        self.model = model.eval().requires_grad_(False)
        self.normalize_by_length = bool(normalize_by_length)

    def train(self, mode: bool = True):
        # The reward model is read, never trained: dropout in it would only make the reward noisy.
        return super().train(False)

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.model.config, "vocab_size", None)

    def check_transcripts(self, texts: Sequence[str], where: str) -> None:
        """Raise, before training, when a transcript cannot be scored (empty, or a symbol outside ``asr_labels``);
        the error names ``where`` (e.g. "the train dataset's 'text'") and the row ("Text i" is row i)."""
        try:
            self.model.encode_asr_targets(list(texts))
        except (TypeError, ValueError) as error:
            raise type(error)(f"The reward {self.name!r} cannot score {where}: {error}") from None

    def transcripts(self, batch: Mapping[str, Any], batch_size: int) -> list[str]:
        """The samples' transcripts, ``batch["texts"]``; a clear error when the batch has none or too few."""
        texts = batch.get("texts") if isinstance(batch, Mapping) else None
        if texts is None:
            raise KeyError(
                f"The reward {self.name!r} scores the transcript, but the batch has no 'texts' (keys: "
                f"{sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__}). DataCollatorForDiffRO "
                "puts the prompts' texts there; a custom collator must too."
            )
        if len(texts) != batch_size:
            raise ValueError(f"The batch has {len(texts)} texts for {batch_size} speech samples; pass one per sample.")
        return list(texts)

    def loss_terms(
        self,
        token_probs: torch.Tensor,
        attention_mask: torch.Tensor,
        batch: Mapping[str, Any],
        outputs: Any | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per sample: ``loss``, ``log_likelihood`` (``log P_ASR(text | tokens)``, ``-inf`` when infeasible) and
        ``feasible`` (1.0 when the speech is long enough for its transcript). ``outputs``: the model's forward on
        these inputs, when another head's reward already ran it."""
        texts = self.transcripts(batch, token_probs.shape[0])
        if outputs is None:
            outputs = self.model(input_token_probs=token_probs, attention_mask=attention_mask)
        targets, target_lengths = self.model.encode_asr_targets(list(texts))
        targets, target_lengths = targets.to(token_probs.device), target_lengths.to(token_probs.device)
        log_likelihood = self.model.asr_log_likelihood(outputs.asr_logits, attention_mask, targets, target_lengths)
        feasible = torch.isfinite(log_likelihood)
        # where() keeps the infeasible samples' -inf out of the gradient.
        loss = -torch.where(feasible, log_likelihood, torch.zeros_like(log_likelihood))
        symbols = target_lengths.to(loss.dtype).clamp_min(1)
        if self.normalize_by_length:
            loss = loss / symbols
        if not bool(feasible.all()):
            with torch.no_grad():
                guess = math.log(self.model.config.num_asr_classes)
                floor = torch.full_like(loss, guess) if self.normalize_by_length else guess * symbols
                worst = loss[feasible].max() if bool(feasible.any()) else loss.new_tensor(float("-inf"))
                penalty = torch.maximum(floor, worst.expand_as(floor))
            loss = torch.where(feasible, loss, penalty)
        return {"loss": loss, "log_likelihood": log_likelihood.detach(), "feasible": feasible.float()}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, normalize_by_length={self.normalize_by_length}"


class ASRErrorRate(ASRReward):
    """The ASR head's error rate of each sample (greedy CTC transcript vs ``batch["texts"]``, edits per symbol), as its
    loss: reward ``= -CER``. Without gradient.

    Greedy decoding is not differentiable, so this trains nothing: it is the intelligibility *gate* of
    expressive-TTS RL, which stops the style reward of a sample whose transcript is off ("gate the emotion reward when
    CER exceeds 0.2"). Use it in `reward_funcs` with weight 0, and `reward_gate=<its name>`,
    `reward_gate_threshold=-0.2`: the emotion loss then counts only for samples with CER <= 0.2. It reads the same
    head and transcripts as :class:`ASRReward`.

    Args:
        model: a [`RobustSERForMultiTaskReward`] with an `"asr"` head.
        name (`str`, defaults to `"asr_cer"`): the name in the logs (``rewards/<name>/mean``) and in `reward_gate`.
    """

    def __init__(self, model: torch.nn.Module, name: str = "asr_cer"):
        super().__init__(model, name=name)

    @torch.no_grad()
    def loss_terms(
        self,
        token_probs: torch.Tensor,
        attention_mask: torch.Tensor,
        batch: Mapping[str, Any],
        outputs: Any | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per sample: ``loss`` (the error rate, no gradient)."""
        texts = self.transcripts(batch, token_probs.shape[0])
        if outputs is None:
            outputs = self.model(input_token_probs=token_probs.detach(), attention_mask=attention_mask)
        decoded = self.model.decode_asr(outputs.asr_logits.detach(), attention_mask)
        rates = [error_rate(hypothesis.split(), reference.split()) for hypothesis, reference in zip(decoded, texts)]
        return {"loss": torch.tensor(rates, dtype=torch.float32, device=token_probs.device)}

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class QualityReward(RewardFunction):
    """DiffRO's speech-quality reward from a frozen quality head (MOS classes).

    Args:
        model: a [`RobustSERForMultiTaskReward`] with a `"quality"` head; put in eval mode with frozen parameters.
        name (`str`, defaults to `"quality"`): the name in the logs (``rewards/<name>/mean``).
        target (`str`, `int` or `None`, defaults to `None`): the class to aim at, by name (`"5"`) or id; `None`: the
            highest (last) of `quality_labels`. Used by `objective="target"`.
        objective (`str`, defaults to `"target"`): `"target"`: ``loss = -log P(target)`` (cross-entropy toward the
            target class); `"expected"`: ``loss = -E[score] = -sum_k P_k · score_k``, the negative expected MOS
            (scores: the labels as numbers when they all are, else 1..Q), bounded and smooth in every class.
    """

    # Its model's forward gives every head's output: rewards of one model share it (`RewardSet.compute`).
    shares_forward = True

    def __init__(
        self,
        model: torch.nn.Module,
        name: str = "quality",
        target: str | int | None = None,
        objective: str = "target",
    ):
        super().__init__(name)
        require_head(model, "quality", name)
        if objective not in ("target", "expected"):
            raise ValueError(f"objective must be 'target' or 'expected', got {objective!r}.")
        labels = list(model.config.quality_labels)
        if target is None:
            target_id = len(labels) - 1
        elif isinstance(target, str):
            if target not in labels:
                raise ValueError(f"target {target!r} is not a quality class of the model; its classes are {labels}.")
            target_id = labels.index(target)
        elif isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(labels):
            target_id = target
        else:
            raise ValueError(
                f"target must be a class name of {labels}, a class id in [0, {len(labels)}) or None, got {target!r}."
            )
        self.model = model.eval().requires_grad_(False)
        self.objective = objective
        self.target_id = target_id
        self.register_buffer("scores", quality_values(labels), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.model.config, "vocab_size", None)

    def loss_terms(
        self,
        token_probs: torch.Tensor,
        attention_mask: torch.Tensor,
        batch: Mapping[str, Any],
        outputs: Any | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per sample: ``loss``, ``expected_score`` (``sum_k P_k · score_k``) and ``target_prob`` (``P(target)``).
        ``outputs``: the model's forward on these inputs, when another head's reward already ran it."""
        if outputs is None:
            outputs = self.model(input_token_probs=token_probs, attention_mask=attention_mask)
        log_probs = torch.log_softmax(outputs.quality_logits.float(), dim=-1)
        expected = (log_probs.exp() * self.scores.to(log_probs.device)).sum(dim=-1)
        target_log_prob = log_probs[:, self.target_id]
        loss = -target_log_prob if self.objective == "target" else -expected
        return {"loss": loss, "expected_score": expected.detach(), "target_prob": target_log_prob.detach().exp()}

    def extra_repr(self) -> str:
        target = self.model.config.quality_labels[self.target_id]
        return f"name={self.name!r}, objective={self.objective!r}, target={target!r}"


def task_rewards(model: torch.nn.Module) -> list[RewardFunction]:
    """One reward function per non-emotion head of `model`, with default settings: :class:`ASRReward` for `"asr"`,
    :class:`QualityReward` for `"quality"` (the emotion head's reward is `rrpo_hf.rewards.emotion.EmotionReward`)."""
    tasks = model_tasks(model)
    rewards: list[RewardFunction] = []
    if "asr" in tasks:
        rewards.append(ASRReward(model))
    if "quality" in tasks:
        rewards.append(QualityReward(model))
    return rewards
