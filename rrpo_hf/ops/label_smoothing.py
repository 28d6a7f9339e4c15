"""Paper Eq. 2 (label smoothing) and Eq. 3 (energy-adaptive mixup loss).

Only ``torch`` is imported here: this module is copied next to the reward model's modeling file
when the model is saved, so that the checkpoint loads with ``trust_remote_code=True`` without
rrpo-hf installed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_labels(labels: torch.Tensor, num_classes: int, epsilon: float) -> torch.Tensor:
    """Eq. 2: ``y'_k = (1 - epsilon) * y_k + epsilon / K``.

    Args:
        labels: integer class ids of shape ``(B,)``.
        num_classes: ``K``.
        epsilon: smoothing strength in ``[0, 1]``; ``0`` gives one-hot targets.

    Returns:
        Float targets of shape ``(B, K)`` whose rows sum to one.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"Label smoothing epsilon must lie in [0, 1], got {epsilon}.")
    if labels.dtype.is_floating_point:
        raise TypeError(f"`labels` must hold integer class ids, got dtype {labels.dtype}.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Label ids must lie in [0, {num_classes}), got min {labels.min().item()} and max "
            f"{labels.max().item()}. Check that the model's `num_labels`/`id2label` matches the dataset's label "
            "column."
        )
    one_hot = F.one_hot(labels.long(), num_classes).float()
    return (1.0 - epsilon) * one_hot + epsilon / num_classes


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``-sum_k t_k log softmax(z)_k`` against a target distribution.

    Returns a tensor of shape ``(B,)`` (no reduction), computed in float32 for stability.
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and soft targets {tuple(soft_targets.shape)} must have the same shape."
        )
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(soft_targets.to(log_probs.dtype) * log_probs).sum(dim=-1)


def mixup_emotion_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    partner_labels: torch.Tensor | None = None,
    mixup_lambda: torch.Tensor | None = None,
    epsilon: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Eq. 3: ``L_emo = mean_i[(1 - lambda_i) L_LS(y_hat_i, y'_i) + lambda_i L_LS(y_hat_i, y'_j)]``.

    Without ``partner_labels`` / ``mixup_lambda`` (no EAM in this batch) every ``lambda_i`` is 0 and
    this is the label-smoothed cross-entropy. ``reduction="none"`` returns the per-sample terms
    (used as per-sample rewards ``-L`` by DiffRO).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    num_classes = logits.shape[-1]
    loss = soft_cross_entropy(logits, smooth_labels(labels, num_classes, epsilon))
    if (partner_labels is None) != (mixup_lambda is None):
        raise ValueError("Pass both `partner_labels` and `mixup_lambda` (an EAM batch) or neither.")
    if partner_labels is not None:
        partner_loss = soft_cross_entropy(logits, smooth_labels(partner_labels, num_classes, epsilon))
        mixup_lambda = mixup_lambda.to(loss.dtype)
        loss = (1.0 - mixup_lambda) * loss + mixup_lambda * partner_loss
    return loss.mean() if reduction == "mean" else loss
