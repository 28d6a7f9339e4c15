"""GRPO's group-relative advantages and clipped surrogate loss (Shao et al., 2024, DeepSeekMath; with the loss
normalisations of TRL's `GRPOTrainer`: DAPO, Dr. GRPO, BNPO).

Pure torch functions, shared by `CosyVoiceGRPOTrainer` and its tests; the formulas and their names follow TRL 1.16
(`GRPOConfig.loss_type`, `scale_rewards`, `epsilon`, `epsilon_high`, `beta`) so that a number here is the number TRL
computes on the same batch.
"""

from __future__ import annotations

import torch


#: The `loss_type` values whose normalisations are implemented (TRL's clipped-surrogate family).
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
#: TRL's `scale_rewards` values.
GRPO_REWARD_SCALINGS = ("group", "batch", "none")
#: Added to the std before dividing, as TRL does, so that a group of equal rewards gets advantage 0, not NaN.
ADVANTAGE_STD_EPS = 1e-4


def group_relative_advantages(
    rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group"
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's advantages ``A_i = (r_i - mean_g r) / (std + 1e-4)`` for rewards laid out as consecutive groups.

    Args:
        rewards: `(N,)` rewards of `N = groups × num_generations` completions, the `num_generations` completions of one
            prompt next to each other.
        scale_rewards: `"group"` (std of each group), `"batch"` (std of all `N`) or `"none"` (no division, Dr. GRPO).

    Returns:
        `(advantages, std)`, both `(N,)`: `std` is the group's std for `"group"` and `"none"` (what TRL's
        `frac_reward_zero_std` counts), the batch std for `"batch"`. Stds have Bessel's correction (`torch.std`).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (one per completion), got shape {tuple(rewards.shape)}.")
    if num_generations < 1 or rewards.shape[0] % num_generations != 0:
        raise ValueError(
            f"{rewards.shape[0]} rewards do not split into groups of num_generations={num_generations}; the batch "
            "must hold whole groups."
        )
    if scale_rewards not in GRPO_REWARD_SCALINGS:
        raise ValueError(f"scale_rewards must be one of {list(GRPO_REWARD_SCALINGS)}, got {scale_rewards!r}.")
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1).repeat_interleave(num_generations)
    if scale_rewards == "batch":
        std = rewards.std().expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    elif num_generations > 1:
        std = grouped.std(dim=1).repeat_interleave(num_generations)
    else:
        std = torch.zeros_like(rewards)
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + ADVANTAGE_STD_EPS)
    return advantages, std


def grpo_per_token_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.0,
    ref_per_token_logps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The clipped surrogate per token, plus ``β·KL``:

    ``ρ_t = exp(log π_θ - log π_old)``, ``ℓ_t = -min(ρ_t·A, clip(ρ_t, 1 - ε_low, 1 + ε_high)·A) + β·k3_t`` with
    the k3 estimator ``k3_t = exp(log π_ref - log π_θ) - (log π_ref - log π_θ) - 1`` (Schulman), as TRL.

    Args:
        per_token_logps, old_per_token_logps, ref_per_token_logps: `(N, T)` log-probabilities of the completion
            tokens under the policy (with gradient), the sampling policy and the reference.
        advantages: `(N,)` or `(N, T)`.

    Returns:
        `(per_token_loss, is_clipped, per_token_kl)`: `(N, T)` each (`per_token_kl` is None when `beta == 0`);
        `is_clipped` marks the tokens where the clipped term was the minimum (TRL's `clip_ratio/region_mean`).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(per_token_logps - old_per_token_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss = -torch.min(ratio * advantages, clipped * advantages)
    is_clipped = ((ratio < 1 - epsilon_low) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
    per_token_kl = None
    if beta != 0.0:
        if ref_per_token_logps is None:
            raise ValueError("beta != 0 needs the reference log-probabilities (ref_per_token_logps).")
        delta = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(delta) - delta - 1
        per_token_loss = per_token_loss + beta * per_token_kl
    return per_token_loss, is_clipped, per_token_kl


def aggregate_grpo_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
    num_active_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Reduce `(N, T)` per-token losses to the scalar loss of `loss_type`, TRL's normalisations:

    - ``"grpo"``: mean over completions of each completion's token mean (length-biased);
    - ``"bnpo"``: sum over the batch's tokens / their number (local batch);
    - ``"dr_grpo"``: sum / (N · max_completion_length), a constant;
    - ``"dapo"``: sum / `num_active_tokens`, the active tokens of the global batch per process (TRL: the generation
      batch's token count over the number of processes); the local count when it is None.
    """
    mask = mask.to(per_token_loss.dtype)
    total = (per_token_loss * mask).sum()
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return total / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("loss_type='dr_grpo' normalises by max_completion_length; give it.")
        return total / (per_token_loss.shape[0] * max_completion_length)
    if loss_type == "dapo":
        count = mask.sum() if num_active_tokens is None else torch.as_tensor(num_active_tokens, dtype=total.dtype)
        return total / count.clamp(min=1.0)
    raise ValueError(f"loss_type must be one of {list(GRPO_LOSS_TYPES)}, got {loss_type!r}.")


__all__ = [
    "ADVANTAGE_STD_EPS",
    "GRPO_LOSS_TYPES",
    "GRPO_REWARD_SCALINGS",
    "aggregate_grpo_loss",
    "group_relative_advantages",
    "grpo_per_token_loss",
]
