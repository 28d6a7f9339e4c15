"""Paper Eq. 5, ``L_ser = L_emo + α·L_adv``, and the settings of that loss.

The same function computes the robust reward model's training loss (`RobustRewardTrainer`, batch mean) and the
reward DiffRO / RRPO optimises (`EmotionReward`, per sample, ``R = -L_ser``, Eq. 6), and the same settings object
carries ε (Eq. 2), ε_adv (Eq. 4), α (Eq. 5) and the perturbation's scale rule from the RM's training into its saved
config and from there into the reward built from it.

Only ``torch`` and the standard library are imported here (see ``label_smoothing.py`` for why): the reward model's
config validates its fields with :func:`check_robust_loss_settings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from .adversarial import ADV_EPSILON_SCALES, adversarial_radius, fgm_perturbation
from .label_smoothing import mixup_emotion_loss


def check_robust_loss_settings(
    label_smoothing: float, adv_epsilon: float, adv_alpha: float, adv_epsilon_scale: str = "absolute", prefix: str = ""
) -> None:
    """The one validator of the robust loss's settings; ``prefix`` names the fields as the caller spells them
    (``"reward_"`` in `DiffROConfig`). Raises a `ValueError` naming the field and the fix."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"{prefix}label_smoothing must be in [0, 1) (ε of Eq. 2; 1 would erase the label), got {label_smoothing}."
        )
    if adv_alpha < 0:
        raise ValueError(f"{prefix}adv_alpha must be >= 0 (α of Eq. 5; 0 = no adversarial term), got {adv_alpha}.")
    if adv_epsilon < 0 or (adv_alpha > 0 and adv_epsilon <= 0):
        raise ValueError(
            f"{prefix}adv_epsilon must be > 0 when {prefix}adv_alpha > 0 (and never negative), got {adv_epsilon}; set "
            f"{prefix}adv_alpha to 0 to drop the adversarial term instead."
        )
    if adv_epsilon_scale not in ADV_EPSILON_SCALES:
        raise ValueError(
            f"{prefix}adv_epsilon_scale must be one of {list(ADV_EPSILON_SCALES)}, got {adv_epsilon_scale!r}."
        )


@dataclasses.dataclass(frozen=True)
class RobustLossSettings:
    """The settings of ``L_ser`` (Eq. 2-5): what an emotion reward model was trained with and its reward computes.

    Args:
        label_smoothing: ε of Eq. 2, in ``[0, 1)``.
        adv_epsilon: ε_adv of Eq. 4, the perturbation radius on h'.
        adv_alpha: α of Eq. 5; 0 = no adversarial term (a vanilla RM's reward is its plain cross-entropy).
        adv_epsilon_scale: ``"absolute"`` (the paper: ``‖δ‖ = ε_adv`` per utterance) or ``"relative"``
            (``‖δ‖ = ε_adv·‖h'‖/√T``, ε_adv times the RMS frame norm of h' over the utterance's T valid frames), so
            that one ε_adv covers the same number of token edits whatever the length and the scale of the encoder's
            output; with it, ε_adv = 1.0 (one frame's norm ≈ one token edit's shift of h', docs/audit.md).

    The defaults are the paper's (and those of a reward-model config saved before these settings were saved).
    """

    label_smoothing: float = 0.1
    adv_epsilon: float = 0.5
    adv_alpha: float = 0.5
    adv_epsilon_scale: str = "absolute"

    def __post_init__(self):
        check_robust_loss_settings(self.label_smoothing, self.adv_epsilon, self.adv_alpha, self.adv_epsilon_scale)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_config(cls, config: Any) -> RobustLossSettings:
        """The settings saved in a reward model's config; a field the config lacks (a folder saved before the field
        existed, or a classifier from elsewhere) takes the default above."""
        defaults = cls()
        return cls(**{name: getattr(config, name, getattr(defaults, name)) for name in cls.field_names()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RobustLossSettings:
        """A copy with the given fields changed (``None`` values are ignored: "keep this one")."""
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    @property
    def adversarial(self) -> bool:
        return self.adv_alpha > 0


def robust_emotion_loss(
    head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    settings: RobustLossSettings,
    logits: torch.Tensor | None = None,
    partner_labels: torch.Tensor | None = None,
    mixup_lambda: torch.Tensor | None = None,
    reduction: str = "mean",
    adversarial: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Eq. 5: ``(L_ser, L_emo, L_adv)`` with ``L_ser = L_emo + α·L_adv`` (``L_adv`` is ``None`` without the term).

    Args:
        head: the classifier head, ``head(h', attention_mask) -> logits`` (`classify` of the reward model).
        hidden_states: h' ``(B, L, D)``, the encoder output the head reads.
        attention_mask: ``(B, L)``.
        labels: ``(B,)`` target ids; ``partner_labels`` / ``mixup_lambda``: the EAM partner of Eq. 3 (optional).
        settings: ε, ε_adv, α and the radius rule.
        logits: ``head(h')`` if already computed (used when there is no adversarial term).
        reduction: ``"mean"`` (a training loss) or ``"none"`` (per sample: a reward).
        adversarial: whether to add ``α·L_adv``; default: ``α > 0`` and gradients are enabled (Eq. 4 needs one).

    ``g = ∂L_emo/∂h'`` is taken through the head alone, on a detached copy of h' (no second encoder pass, no
    retained encoder graph); the RNG is forked around that probe so that its dropout mask is the one ``L_emo`` then
    draws, which makes ``g`` exactly the gradient of the ``L_emo`` returned. ``δ`` is the FGM step of Eq. 4 with the
    radius of ``settings.adv_epsilon_scale``, a constant in ``L_adv``.
    """
    epsilon = settings.label_smoothing
    if adversarial is None:
        adversarial = settings.adversarial and torch.is_grad_enabled()
    if not adversarial:
        if logits is None:
            logits = head(hidden_states, attention_mask)
        loss_emo = mixup_emotion_loss(logits, labels, partner_labels, mixup_lambda, epsilon, reduction=reduction)
        return loss_emo, loss_emo, None
    rng_devices = [hidden_states.device.index] if hidden_states.is_cuda else []
    with torch.enable_grad(), torch.random.fork_rng(devices=rng_devices):
        probe = hidden_states.detach().requires_grad_(True)
        probe_loss = mixup_emotion_loss(
            head(probe, attention_mask), labels, partner_labels, mixup_lambda, epsilon, reduction=reduction
        )
        (hidden_grad,) = torch.autograd.grad(probe_loss.sum(), probe)
    radius = adversarial_radius(hidden_states, attention_mask, settings.adv_epsilon, settings.adv_epsilon_scale)
    delta = fgm_perturbation(hidden_grad, attention_mask, radius)
    loss_emo = mixup_emotion_loss(
        head(hidden_states, attention_mask), labels, partner_labels, mixup_lambda, epsilon, reduction=reduction
    )
    loss_adv = mixup_emotion_loss(
        head(hidden_states + delta, attention_mask), labels, partner_labels, mixup_lambda, epsilon, reduction=reduction
    )
    return loss_emo + settings.adv_alpha * loss_adv, loss_emo, loss_adv


__all__ = ["RobustLossSettings", "check_robust_loss_settings", "robust_emotion_loss"]
