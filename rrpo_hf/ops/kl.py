"""Token-level KL divergence ``KL(pi_theta || pi_ref)`` between two speech-token distributions (DiffRO Eq. of the
policy regulariser): ``KL_t = sum_k P_theta(k) (log P_theta(k) - log P_ref(k))``, averaged over valid positions.

Only ``torch`` is imported here, like every module of :mod:`rrpo_hf.ops`.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true (all positions without a mask)."""
    if mask is None:
        return values.mean()
    if mask.shape != values.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the shape of the values {tuple(values.shape)}.")
    mask = mask.to(values.dtype)
    count = mask.sum()
    if count == 0:
        raise ValueError("The mask selects no position; the mean is undefined (is every sample empty?).")
    return (values * mask).sum() / count


def token_level_kl(
    policy_logits: torch.Tensor,
    reference_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``KL(softmax(policy_logits) || softmax(reference_logits))`` per position, over the last dimension.

    Args:
        policy_logits: ``(..., V)`` logits of the trained policy (gradients flow through them).
        reference_logits: ``(..., V)`` logits of the reference policy (treated as constants).
        mask: ``(...)`` true at the positions to average over (``reduction="mean"``).
        reduction: ``"mean"`` (masked mean, a scalar) or ``"none"`` (per position, zero where masked out).
    """
    if policy_logits.shape != reference_logits.shape:
        raise ValueError(
            f"policy logits {tuple(policy_logits.shape)} and reference logits {tuple(reference_logits.shape)} differ; "
            "both policies must score the same tokens over the same vocabulary."
        )
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    # float32: log-probabilities of a 6564-way bf16 softmax are too coarse for a KL of order 1e-3.
    policy_log_probs = torch.log_softmax(policy_logits.float(), dim=-1)
    reference_log_probs = torch.log_softmax(reference_logits.detach().float(), dim=-1)
    per_position = (policy_log_probs.exp() * (policy_log_probs - reference_log_probs)).sum(dim=-1)
    if reduction == "none":
        return per_position if mask is None else per_position * mask.to(per_position.dtype)
    return masked_mean(per_position, mask)


def sequence_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL estimate ``sum_t KL(pi(.|prefix_t) || ref(.|prefix_t))`` over the valid positions, ``(B,)``.

    By the chain rule, the KL of two autoregressive distributions over whole sequences is the expectation under
    ``pi`` of this sum along a sequence drawn from ``pi``: its mean over sampled sequences estimates the
    sequence-level ``KL(pi || ref)`` (each step contributes its exact, full-vocabulary KL, so the estimate is never
    negative and has lower variance than the sampled log-ratio ``log pi(y) - log ref(y)``). Its square root is the
    x-axis of the over-optimisation curves of Gao et al. (2022), "Scaling Laws for Reward Model Overoptimization".
    The mean over samples is taken before the square root: ``sqrt(mean)``, not ``mean(sqrt)``.

    Args:
        policy_logits: ``(B, T, V)`` logits of the policy along each sequence (position ``t`` predicts token ``t``).
        reference_logits: ``(B, T, V)`` logits of the reference policy on the same tokens.
        mask: ``(B, T)`` true at the positions that belong to each sequence (its tokens and the step that ends it).
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be (batch, positions), got shape {tuple(mask.shape)}.")
    return token_level_kl(policy_logits, reference_logits, mask=mask, reduction="none").sum(dim=-1)


def token_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy ``-sum_k p_k log p_k`` of ``softmax(logits)`` over the valid positions."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return masked_mean(-(log_probs.exp() * log_probs).sum(dim=-1), mask)


__all__ = ["masked_mean", "sequence_kl", "token_entropy", "token_level_kl"]
