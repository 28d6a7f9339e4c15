"""Pure tensor functions, one per equation of the RRPO paper (no classes, no I/O).

* Eq. 2 :func:`smooth_labels`, with :func:`soft_cross_entropy`;
* Eq. 3 :func:`mixup_emotion_loss`;
* Eq. 4 :func:`fgm_perturbation` (radius: :func:`adversarial_radius`);
* Eq. 5 :func:`robust_emotion_loss`, its settings :class:`RobustLossSettings`;
* Algorithm 1 :func:`sample_eam_plan` + :func:`apply_energy_adaptive_mixup`.

The reward-model modules here import nothing but ``torch`` so they can ship inside a saved
checkpoint (remote code); see ``RobustSERPreTrainedModel.save_pretrained``.
"""

from .adversarial import ADV_EPSILON_SCALES, adversarial_radius, fgm_perturbation
from .eam import EAM_PLAN_KEYS, apply_energy_adaptive_mixup, sample_eam_plan
from .label_smoothing import mixup_emotion_loss, smooth_labels, soft_cross_entropy
from .robust_loss import RobustLossSettings, check_robust_loss_settings, robust_emotion_loss


__all__ = [
    "ADV_EPSILON_SCALES",
    "EAM_PLAN_KEYS",
    "RobustLossSettings",
    "adversarial_radius",
    "check_robust_loss_settings",
    "robust_emotion_loss",
    "apply_energy_adaptive_mixup",
    "fgm_perturbation",
    "mixup_emotion_loss",
    "sample_eam_plan",
    "smooth_labels",
    "soft_cross_entropy",
]

# DiffRO / RRPO policy step.
from .gumbel import gumbel_softmax_sample, nucleus_logits, sample_gumbel_noise, soft_token_embedding  # noqa: E402
from .kl import masked_mean, sequence_kl, token_entropy, token_level_kl  # noqa: E402


__all__ += [
    "gumbel_softmax_sample",
    "masked_mean",
    "nucleus_logits",
    "sample_gumbel_noise",
    "sequence_kl",
    "soft_token_embedding",
    "token_entropy",
    "token_level_kl",
]

# Several rewards: ensemble aggregation and gating.
from .reward_aggregation import (  # noqa: E402
    REWARD_AGGREGATIONS,
    aggregate_rewards,
    ensemble_std,
    gate_weights,
    mean_minus_std_reward,
    mean_reward,
    min_reward,
    weighted_reward_loss,
    weighted_rewards,
)


__all__ += [
    "REWARD_AGGREGATIONS",
    "aggregate_rewards",
    "ensemble_std",
    "gate_weights",
    "mean_minus_std_reward",
    "mean_reward",
    "min_reward",
    "weighted_reward_loss",
    "weighted_rewards",
]

# DiffRO multi-task reward model: the ASR head's CTC likelihood.
from .ctc import ctc_greedy_decode, ctc_log_likelihood, ctc_min_input_lengths  # noqa: E402


__all__ += ["ctc_greedy_decode", "ctc_log_likelihood", "ctc_min_input_lengths"]

# Error rates (CER / WER) of transcripts: the ASR head's evaluation and the intelligibility gate.
from .edit_distance import edit_distance, error_rate  # noqa: E402


__all__ += ["edit_distance", "error_rate"]

# GRPO: group-relative advantages, the clipped surrogate and TRL's loss normalisations.
from .grpo import (  # noqa: E402
    ADVANTAGE_STD_EPS,
    GRPO_LOSS_TYPES,
    GRPO_REWARD_SCALINGS,
    aggregate_grpo_loss,
    group_relative_advantages,
    grpo_per_token_loss,
)


__all__ += [
    "ADVANTAGE_STD_EPS",
    "GRPO_LOSS_TYPES",
    "GRPO_REWARD_SCALINGS",
    "aggregate_grpo_loss",
    "group_relative_advantages",
    "grpo_per_token_loss",
]
