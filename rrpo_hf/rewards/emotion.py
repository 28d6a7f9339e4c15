"""The emotion reward of DiffRO / RRPO as a reward function, and an ensemble of emotion reward models.

:class:`EmotionReward` is the reward the paper optimises: a frozen speech-emotion classifier reads the policy's
straight-through Gumbel-Softmax samples ``y`` (``F = y @ E``) and gives ``L_emo`` (Eq. 3 with λ = 0, label smoothing
ε of Eq. 2); for RRPO (``adv_alpha > 0``) also ``L_adv`` on ``classify(h' + δ)`` with ``δ`` the FGM perturbation of
Eq. 4, so that the loss is ``L_ser = L_emo + α·L_adv`` (Eq. 5) and the reward ``R = -L_ser`` (Eq. 6).

:class:`EmotionRMEnsemble` scores the same samples with ``K`` such models and aggregates their per-sample rewards
``r_k = -L_ser,k`` (:func:`~rrpo_hf.ops.aggregate_rewards`: mean, worst case, or mean minus λ·std), so that a
policy cannot win by exploiting one model's idiosyncrasies (Coste et al., 2023; Eisenstein et al., 2023).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..data.labels import UnknownEmotionError, emotion_key, emotion_label_ids
from ..ops import REWARD_AGGREGATIONS, aggregate_rewards, ensemble_std, fgm_perturbation, mixup_emotion_loss
from .base import RewardFunction, require_head


__all__ = ["EmotionRMEnsemble", "EmotionReward"]


def _check_reward_settings(label_smoothing: float, adv_alpha: float, adv_epsilon: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    if adv_alpha < 0:
        raise ValueError(f"adv_alpha must be >= 0 (0 = plain DiffRO), got {adv_alpha}.")
    if adv_alpha > 0 and adv_epsilon <= 0:
        raise ValueError(
            f"adv_epsilon must be > 0 when adv_alpha > 0, got {adv_epsilon}; set adv_alpha=0 for plain DiffRO."
        )


class EmotionReward(RewardFunction):
    """The (robust) emotion reward of a frozen speech-emotion classifier: loss ``L_ser = L_emo + α·L_adv`` per sample.

    Args:
        model: a speech-token emotion classifier with `classify(hidden_states, attention_mask)` and
            `last_hidden_state` in its outputs (e.g. [`RobustSERForAudioClassification`]). It is put in eval mode
            with frozen parameters: gradients flow through its inputs, never into it.
        label_smoothing (`float`, defaults to 0.0): ε of Eq. 2 in ``L_emo``.
        adv_alpha (`float`, defaults to 0.0): α of Eq. 5; 0 gives plain DiffRO's ``L_emo``.
        adv_epsilon (`float`, defaults to 0.5): ε_adv of Eq. 4 (per-sample L2 norm of the perturbation of ``h'``).
        name (`str`, defaults to `"emotion"`): the name in the logs (``rewards/<name>/mean``).

    The target of each sample is ``batch["target_emotions"]`` (canonical names) looked up in this model's own
    labels, so that models with different label orders can score one batch; a batch without names uses
    ``batch["emotion_labels"]`` as this model's label ids.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        label_smoothing: float = 0.0,
        adv_alpha: float = 0.0,
        adv_epsilon: float = 0.5,
        name: str = "emotion",
    ):
        super().__init__(name)
        _check_reward_settings(label_smoothing, adv_alpha, adv_epsilon)
        if getattr(getattr(model, "config", None), "tasks", None) is not None:
            # A multi-task reward model always has `classify`; it works only with its emotion head.
            require_head(model, "emotion", name)
        if not hasattr(model, "classify") or not hasattr(getattr(model, "config", None), "id2label"):
            raise TypeError(
                f"The emotion reward {name!r} needs a speech-emotion classifier with a `config.id2label` and a "
                f"`classify(hidden_states, attention_mask)` head (the adversarial term perturbs its input), got "
                f"{type(model).__name__} (use RobustSERForAudioClassification)."
            )
        self.model = model.eval().requires_grad_(False)
        self.label_smoothing = label_smoothing
        self.adv_alpha = adv_alpha
        self.adv_epsilon = adv_epsilon
        self.label_ids = emotion_label_ids(model.config.id2label)

    def train(self, mode: bool = True):
        # The classifier is read, never trained: dropout in it would only make the reward noisy.
        return super().train(False)

    @property
    def classifiers(self) -> list[torch.nn.Module]:
        """The emotion classifiers this reward reads."""
        return [self.model]

    @property
    def vocab_size(self) -> int | None:
        return getattr(self.model.config, "vocab_size", None)

    def target_labels(self, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
        """``(B,)`` target label ids in this model's label space."""
        names = batch.get("target_emotions")
        if names is None:
            return batch["emotion_labels"].to(device)
        keys = [emotion_key(emotion) for emotion in names]
        missing = sorted(set(keys) - set(self.label_ids))
        if missing:
            raise UnknownEmotionError(
                f"The emotion reward {self.name!r} has no label for the target emotion(s) {missing}; its labels are "
                f"{sorted(self.label_ids)}."
            )
        return torch.tensor([self.label_ids[key] for key in keys], dtype=torch.long, device=device)

    def loss_terms(
        self, token_probs: torch.Tensor, attention_mask: torch.Tensor, batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Per sample: ``loss`` (= ``L_ser``), ``loss_emo``, ``loss_adv`` (zeros when α = 0 or without gradients),
        ``correct`` (whether the classifier's top label is the target) and the classifier's ``logits``.

        ``L_adv`` needs ``∂L_emo/∂h'``, taken with ``torch.autograd.grad`` on ``h'`` alone; the graph is kept for
        the backward of the total loss.
        """
        labels = self.target_labels(batch, token_probs.device)
        outputs = self.model(input_token_probs=token_probs, attention_mask=attention_mask)
        loss_emo = mixup_emotion_loss(outputs.logits, labels, epsilon=self.label_smoothing, reduction="none")
        loss_adv = torch.zeros_like(loss_emo)
        hidden_states = outputs.last_hidden_state
        if self.adv_alpha > 0 and torch.is_grad_enabled() and hidden_states.requires_grad:
            (hidden_grad,) = torch.autograd.grad(loss_emo.sum(), hidden_states, retain_graph=True)
            delta = fgm_perturbation(hidden_grad, attention_mask, self.adv_epsilon)
            adv_logits = self.model.classify(hidden_states + delta, attention_mask)
            loss_adv = mixup_emotion_loss(adv_logits, labels, epsilon=self.label_smoothing, reduction="none")
        with torch.no_grad():
            correct = (outputs.logits.argmax(dim=-1) == labels).float()
        return {
            "loss": loss_emo + self.adv_alpha * loss_adv,
            "loss_emo": loss_emo,
            "loss_adv": loss_adv,
            "correct": correct,
            "logits": outputs.logits,
        }

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, label_smoothing={self.label_smoothing}, adv_alpha={self.adv_alpha}, "
            f"adv_epsilon={self.adv_epsilon}"
        )


class EmotionRMEnsemble(RewardFunction):
    """Several frozen emotion reward models scoring the same samples, their rewards aggregated per sample.

    Each member ``k`` is an [`EmotionReward`] with the same settings, giving ``r_{b,k} = -L_ser,b,k``; the
    ensemble's loss is ``-R_b`` with ``R_b`` = :func:`~rrpo_hf.ops.aggregate_rewards` of them:

    - ``"mean"``: ``mean_k r_{b,k}``;
    - ``"min"``: ``min_k r_{b,k}``, the worst case (the sample counts as good only if every model agrees);
    - ``"mean_minus_std"``: ``mean_k r_{b,k} - λ·std_k r_{b,k}``, penalising samples the models disagree on.

    Args:
        models (sequence of modules): the emotion classifiers; all read the same speech vocabulary and know the
            same emotions (their label ids may be ordered differently).
        aggregation (`str`, defaults to `"mean"`): one of `"mean"`, `"min"`, `"mean_minus_std"`.
        std_coef (`float`, defaults to 1.0): λ of `"mean_minus_std"`.
        label_smoothing, adv_alpha, adv_epsilon: as in [`EmotionReward`], for every member.
        name (`str`, defaults to `"emotion"`): the name in the logs.

    Besides ``loss``, :meth:`loss_terms` returns the members' means of ``loss_emo``, ``loss_adv`` and ``correct``,
    the ``(B, K)`` ``member_rewards`` and their per-sample spread ``reward_std``.
    """

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        aggregation: str = "mean",
        std_coef: float = 1.0,
        label_smoothing: float = 0.0,
        adv_alpha: float = 0.0,
        adv_epsilon: float = 0.5,
        name: str = "emotion",
    ):
        super().__init__(name)
        if not isinstance(models, (list, tuple, torch.nn.ModuleList)) or len(models) == 0:
            raise TypeError(
                f"EmotionRMEnsemble takes a non-empty list of emotion reward models, got {type(models).__name__}; "
                "use EmotionReward for a single model."
            )
        if aggregation not in REWARD_AGGREGATIONS:
            raise ValueError(
                f"Unknown ensemble aggregation {aggregation!r}; choose one of {list(REWARD_AGGREGATIONS)}."
            )
        if std_coef < 0:
            raise ValueError(f"std_coef (λ of mean - λ·std) must be >= 0, got {std_coef}.")
        self.members = torch.nn.ModuleList(
            EmotionReward(model, label_smoothing, adv_alpha, adv_epsilon, name=f"{name}[{k}]")
            for k, model in enumerate(models)
        )
        first = self.members[0]
        for k, member in enumerate(self.members):
            if member.vocab_size != first.vocab_size:
                raise ValueError(
                    f"Ensemble {name!r}: member {k} reads vocab_size={member.vocab_size} speech tokens but member 0 "
                    f"reads {first.vocab_size}; every member must score the same speech tokenizer's tokens."
                )
            if set(member.label_ids) != set(first.label_ids):
                raise ValueError(
                    f"Ensemble {name!r}: member {k} knows the emotions {sorted(member.label_ids)} but member 0 knows "
                    f"{sorted(first.label_ids)}; members aggregate per-sample rewards of the same target, so they "
                    "must share their emotion labels."
                )
        self.aggregation = aggregation
        self.std_coef = std_coef
        self.label_smoothing = label_smoothing
        self.adv_alpha = adv_alpha
        self.adv_epsilon = adv_epsilon
        self.label_ids = first.label_ids

    def train(self, mode: bool = True):
        return super().train(False)

    @property
    def classifiers(self) -> list[torch.nn.Module]:
        """The members' emotion classifiers, in order."""
        return [member.model for member in self.members]

    @property
    def frozen_models(self) -> list[torch.nn.Module]:
        return self.classifiers

    @property
    def vocab_size(self) -> int | None:
        return self.members[0].vocab_size

    def loss_terms(
        self, token_probs: torch.Tensor, attention_mask: torch.Tensor, batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        terms = [member.loss_terms(token_probs, attention_mask, batch) for member in self.members]
        member_rewards = -torch.stack([term["loss"] for term in terms], dim=1)
        aggregate = aggregate_rewards(member_rewards, self.aggregation, self.std_coef)

        def member_mean(key):
            return torch.stack([term[key] for term in terms], dim=1).mean(dim=1)

        return {
            "loss": -aggregate,
            "loss_emo": member_mean("loss_emo"),
            "loss_adv": member_mean("loss_adv"),
            "correct": member_mean("correct"),
            "member_rewards": member_rewards,
            "reward_std": ensemble_std(member_rewards.detach()),
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, aggregation={self.aggregation!r}, std_coef={self.std_coef}"
