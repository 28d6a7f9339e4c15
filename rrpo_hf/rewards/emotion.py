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

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..data.labels import UnknownEmotionError, emotion_key, emotion_label_ids
from ..ops import REWARD_AGGREGATIONS, RobustLossSettings, aggregate_rewards, ensemble_std, robust_emotion_loss
from .base import RewardFunction, require_head


__all__ = ["EmotionRMEnsemble", "EmotionReward", "reward_loss_settings"]

logger = logging.getLogger(__name__)


def reward_loss_settings(
    model: torch.nn.Module,
    label_smoothing: float | None = None,
    adv_alpha: float | None = None,
    adv_epsilon: float | None = None,
    adv_epsilon_scale: str | None = None,
    name: str = "emotion",
) -> RobustLossSettings:
    """The robust loss a reward computes from ``model``: the settings saved in its config (what it was trained with,
    :meth:`RobustLossSettings.from_config`), each given value overriding its own. An override that changes a value
    is logged once, naming both values."""
    own = RobustLossSettings.from_config(getattr(model, "config", None))
    overrides = dict(
        label_smoothing=label_smoothing,
        adv_alpha=adv_alpha,
        adv_epsilon=adv_epsilon,
        adv_epsilon_scale=adv_epsilon_scale,
    )
    settings = own.replace(**overrides)
    changed = [
        f"{field}={getattr(settings, field)!r} (the reward model's own: {getattr(own, field)!r})"
        for field, value in overrides.items()
        if value is not None and getattr(settings, field) != getattr(own, field)
    ]
    if changed:
        logger.warning(
            f"The emotion reward {name!r} overrides the robust loss its reward model was trained with: "
            f"{', '.join(changed)}. Leave DiffROConfig.reward_* unset to use the model's own."
        )
    return settings


class EmotionReward(RewardFunction):
    """The (robust) emotion reward of a frozen speech-emotion classifier: loss ``L_ser = L_emo + α·L_adv`` per sample.

    Args:
        model: a speech-token emotion classifier with `classify(hidden_states, attention_mask)` and
            `last_hidden_state` in its outputs (e.g. [`RobustSERForAudioClassification`]). It is put in eval mode
            with frozen parameters: gradients flow through its inputs, never into it.
        label_smoothing (`float`, *optional*): ε of Eq. 2 in ``L_emo``.
        adv_alpha (`float`, *optional*): α of Eq. 5; 0 gives plain DiffRO's ``L_emo``.
        adv_epsilon (`float`, *optional*): ε_adv of Eq. 4 (the radius of the perturbation of ``h'``).
        name (`str`, defaults to `"emotion"`): the name in the logs (``rewards/<name>/mean``).
        adv_epsilon_scale (`str`, *optional*): the radius rule, `"absolute"` or `"relative"` (Eq. 4).

    Each setting left `None` is the model's own: the robust loss it was trained with, saved in its config
    (`model.config.robust_loss`; the paper's 0.1 / 0.5 / 0.5 / absolute for a config without them). So a vanilla
    RM's reward is its plain cross-entropy and a robust RM's its Eq. 5: DiffRO vs RRPO is the choice of the model.
    A value given overrides the model's and is logged. ``settings`` holds the values used.

    The target of each sample is ``batch["target_emotions"]`` (canonical names) looked up in this model's own
    labels, so that models with different label orders can score one batch; a batch without names uses
    ``batch["emotion_labels"]`` as this model's label ids.
    """

    # Its model's forward gives every head's output: rewards of one model share it (`RewardSet.compute`).
    shares_forward = True

    def __init__(
        self,
        model: torch.nn.Module,
        label_smoothing: float | None = None,
        adv_alpha: float | None = None,
        adv_epsilon: float | None = None,
        name: str = "emotion",
        adv_epsilon_scale: str | None = None,
    ):
        super().__init__(name)
        if getattr(getattr(model, "config", None), "tasks", None) is not None:
            # A multi-task reward model always has `classify`; it works only with its emotion head.
            require_head(model, "emotion", name)
        if not hasattr(model, "classify") or not hasattr(getattr(model, "config", None), "id2label"):
            raise TypeError(
                f"The emotion reward {name!r} needs a speech-emotion classifier with a `config.id2label` and a "
                f"`classify(hidden_states, attention_mask)` head (the adversarial term perturbs its input), got "
                f"{type(model).__name__} (use RobustSERForAudioClassification)."
            )
        self.settings = reward_loss_settings(model, label_smoothing, adv_alpha, adv_epsilon, adv_epsilon_scale, name)
        self.model = model.eval().requires_grad_(False)
        self.label_ids = emotion_label_ids(model.config.id2label)

    @property
    def label_smoothing(self) -> float:
        return self.settings.label_smoothing

    @property
    def adv_alpha(self) -> float:
        return self.settings.adv_alpha

    @property
    def adv_epsilon(self) -> float:
        return self.settings.adv_epsilon

    @property
    def adv_epsilon_scale(self) -> str:
        return self.settings.adv_epsilon_scale

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
        self,
        token_probs: torch.Tensor,
        attention_mask: torch.Tensor,
        batch: Mapping[str, Any],
        outputs: Any | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per sample: ``loss`` (= ``L_ser``, :func:`~rrpo_hf.ops.robust_emotion_loss`), ``loss_emo``, ``loss_adv``
        (zeros when α = 0 or without gradients), ``correct`` (whether the classifier's top label is the target) and
        the classifier's ``logits``.

        ``outputs``: the model's forward on these inputs, when another reward of the same model already ran it
        (`RewardSet` runs a multi-task model's encoder once for all its heads).
        """
        labels = self.target_labels(batch, token_probs.device)
        if outputs is None:
            outputs = self.model(input_token_probs=token_probs, attention_mask=attention_mask)
        hidden_states = outputs.last_hidden_state
        loss, loss_emo, loss_adv = robust_emotion_loss(
            self.model.classify,
            hidden_states,
            attention_mask,
            labels,
            self.settings,
            logits=outputs.logits,
            reduction="none",
            adversarial=self.settings.adversarial and torch.is_grad_enabled() and hidden_states.requires_grad,
        )
        with torch.no_grad():
            correct = (outputs.logits.argmax(dim=-1) == labels).float()
        return {
            "loss": loss,
            "loss_emo": loss_emo,
            "loss_adv": torch.zeros_like(loss_emo) if loss_adv is None else loss_adv,
            "correct": correct,
            "logits": outputs.logits,
        }

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, label_smoothing={self.label_smoothing}, adv_alpha={self.adv_alpha}, "
            f"adv_epsilon={self.adv_epsilon}, adv_epsilon_scale={self.adv_epsilon_scale!r}"
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
        label_smoothing, adv_alpha, adv_epsilon, adv_epsilon_scale: as in [`EmotionReward`]: `None` = each
            member's own (saved in its config), a value overrides it for every member.
        name (`str`, defaults to `"emotion"`): the name in the logs.

    Besides ``loss``, :meth:`loss_terms` returns the members' means of ``loss_emo``, ``loss_adv`` and ``correct``,
    the ``(B, K)`` ``member_rewards`` and their per-sample spread ``reward_std``.
    """

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        aggregation: str = "mean",
        std_coef: float = 1.0,
        label_smoothing: float | None = None,
        adv_alpha: float | None = None,
        adv_epsilon: float | None = None,
        name: str = "emotion",
        adv_epsilon_scale: str | None = None,
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
            EmotionReward(model, label_smoothing, adv_alpha, adv_epsilon, f"{name}[{k}]", adv_epsilon_scale)
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
        self.label_ids = first.label_ids

    @property
    def settings(self) -> RobustLossSettings:
        """The first member's settings (members keep their own: each scores with the loss it was trained with)."""
        return self.members[0].settings

    @property
    def label_smoothing(self) -> float:
        return self.settings.label_smoothing

    @property
    def adv_alpha(self) -> float:
        """The largest member α: the ensemble has an adversarial term when any member has."""
        return max(member.adv_alpha for member in self.members)

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
