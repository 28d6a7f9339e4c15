"""Combining several rewards: ensemble aggregation of per-model rewards, and the gate of one reward by another.

Rewards here are per-sample values ``r = -loss`` (higher is better). Only ``torch`` is imported (see
``label_smoothing.py`` for why).

* Ensemble aggregation of ``K`` reward models' rewards ``r_{b,k}`` (Coste et al., 2023, "Reward Model Ensembles
  Help Mitigate Overoptimization"; Eisenstein et al., 2023, "Helping or Herding?"):

  - ``mean``: ``R_b = (1/K) Σ_k r_{b,k}``;
  - ``min`` (worst case): ``R_b = min_k r_{b,k}``;
  - ``mean_minus_std`` (uncertainty-penalised): ``R_b = mean_k r_{b,k} - λ·std_k r_{b,k}``, ``std`` with the
    population normaliser ``1/K`` (an ensemble of one has spread 0, not NaN).

* Gating: ``g_b = sigmoid((r_b - τ)/T)`` for ``T > 0``, the hard step ``g_b = 1[r_b >= τ]`` for ``T = 0``,
  detached.

* Several reward functions ``i`` with weights ``w_i`` and per-sample losses ``loss_{i,b}`` (DiffROTrainer, see
  docs/architecture.md, "Several rewards"): the optimised loss ``Σ_i w_i · mean_b(g_b^{[i = gated]} · loss_{i,b})``
  and the logged reward ``R_b = Σ_i w_i · r_{i,b}`` (``r = -loss``, ungated, as TRL's GRPOTrainer logs it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


REWARD_AGGREGATIONS = ("mean", "min", "mean_minus_std")


def _check_member_rewards(rewards: torch.Tensor) -> None:
    if rewards.dim() != 2 or rewards.shape[1] == 0:
        raise ValueError(
            f"Ensemble rewards must be (batch, num_models) with at least one model, got shape {tuple(rewards.shape)}."
        )


def ensemble_std(rewards: torch.Tensor) -> torch.Tensor:
    """Population standard deviation ``sqrt((1/K) Σ_k (r_{b,k} - mean_k r_{b,k})²)`` per sample, ``(B,)``.

    Where all members agree exactly (always for ``K = 1``) the value is 0 with a zero gradient: ``sqrt``'s
    derivative is infinite at 0, and ``torch.std`` would back-propagate NaN there.
    """
    _check_member_rewards(rewards)
    variance = (rewards - rewards.mean(dim=1, keepdim=True)).pow(2).mean(dim=1)
    positive = variance > 0
    return torch.where(positive, torch.where(positive, variance, torch.ones_like(variance)).sqrt(), 0.0)


def mean_reward(rewards: torch.Tensor) -> torch.Tensor:
    """``R_b = (1/K) Σ_k r_{b,k}`` of ``(B, K)`` per-model rewards, ``(B,)``."""
    _check_member_rewards(rewards)
    return rewards.mean(dim=1)


def min_reward(rewards: torch.Tensor) -> torch.Tensor:
    """Worst case ``R_b = min_k r_{b,k}``, ``(B,)``; tied minima share the gradient equally (``amin``)."""
    _check_member_rewards(rewards)
    return rewards.amin(dim=1)


def mean_minus_std_reward(rewards: torch.Tensor, std_coef: float = 1.0) -> torch.Tensor:
    """Uncertainty-penalised ``R_b = mean_k r_{b,k} - λ·std_k r_{b,k}`` (λ = ``std_coef``), ``(B,)``."""
    if std_coef < 0:
        raise ValueError(f"std_coef (λ) must be >= 0: a negative λ rewards disagreement, got {std_coef}.")
    return mean_reward(rewards) - std_coef * ensemble_std(rewards)


def aggregate_rewards(rewards: torch.Tensor, aggregation: str = "mean", std_coef: float = 1.0) -> torch.Tensor:
    """One reward per sample from ``(B, K)`` per-model rewards: ``aggregation`` in :data:`REWARD_AGGREGATIONS`."""
    if aggregation == "mean":
        return mean_reward(rewards)
    if aggregation == "min":
        return min_reward(rewards)
    if aggregation == "mean_minus_std":
        return mean_minus_std_reward(rewards, std_coef)
    raise ValueError(f"Unknown reward aggregation {aggregation!r}; choose one of {list(REWARD_AGGREGATIONS)}.")


def gate_weights(gate_reward: torch.Tensor, threshold: float, temperature: float = 0.0) -> torch.Tensor:
    """Per-sample gate ``g_b = sigmoid((r_b - τ)/T)`` (``T > 0``) or ``1[r_b >= τ]`` (``T = 0``), detached.

    Args:
        gate_reward: ``(B,)`` rewards of the gating function (e.g. an ASR reward: high = intelligible).
        threshold: τ, in the units of that reward.
        temperature: T; 0 gives the hard step, larger values a smoother ramp around τ.

    Returns:
        ``(B,)`` weights in ``[0, 1]``, a constant for autograd: a gradient through the gate would let the gated
        loss shrink by failing the gate on purpose.
    """
    if temperature < 0:
        raise ValueError(f"The gate temperature must be >= 0 (0 = hard step), got {temperature}.")
    gate_reward = gate_reward.detach()
    if temperature == 0:
        return (gate_reward >= threshold).to(gate_reward.dtype)
    return torch.sigmoid((gate_reward - threshold) / temperature)


def _check_weighted(values: Sequence[torch.Tensor], weights: Sequence[float]) -> None:
    if len(values) == 0 or len(values) != len(weights):
        raise ValueError(
            f"Need one weight per reward function and at least one function, got {len(values)} per-sample tensors "
            f"and {len(weights)} weights."
        )


def weighted_reward_loss(
    losses: Sequence[torch.Tensor],
    weights: Sequence[float],
    gate: torch.Tensor | None = None,
    gated_index: int | None = None,
) -> torch.Tensor:
    """``Σ_i w_i · mean_b(g_b^{[i = gated_index]} · loss_{i,b})``: the scalar loss of several reward functions.

    Args:
        losses: per reward function ``i``, its ``(B,)`` per-sample losses ``loss_{i,b}`` (reward ``r = -loss``).
        weights: ``w_i``, one per function.
        gate: ``(B,)`` gate weights ``g_b`` (:func:`gate_weights`), or None for no gate.
        gated_index: the function whose per-sample loss ``g_b`` multiplies (DiffRO: the emotion reward).

    The gate multiplies the *loss*, which is ``>= 0`` for the emotion reward: a gated-off sample then contributes
    nothing. Scaling the reward (``<= 0``, best at 0) instead would make a gated-off sample look perfect.
    """
    _check_weighted(losses, weights)
    if (gate is None) != (gated_index is None):
        raise ValueError("Pass both `gate` and `gated_index` (which function the gate scales), or neither.")
    total = None
    for index, (weight, loss) in enumerate(zip(weights, losses)):
        if gate is not None and index == gated_index:
            loss = loss * gate.to(loss.dtype)
        term = weight * loss.mean()
        total = term if total is None else total + term
    return total


def weighted_rewards(rewards: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Per-sample ``R_b = Σ_i w_i · r_{i,b}`` of ``(B,)`` rewards, ``(B,)``: what the trainer logs as ``reward``."""
    _check_weighted(rewards, weights)
    total = None
    for weight, reward in zip(weights, rewards):
        term = weight * reward
        total = term if total is None else total + term
    return total


__all__ = [
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
