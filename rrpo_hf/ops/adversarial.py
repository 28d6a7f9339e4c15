"""Paper Eq. 4: the Fast Gradient Method perturbation of the high-level embeddings h'.

Only ``torch`` is imported here (see ``label_smoothing.py`` for why).
"""

from __future__ import annotations

import torch


#: How the radius of δ is set: "absolute" (the paper, ``‖δ‖ = ε_adv``) or "relative" (``‖δ‖ = ε_adv`` times the RMS
#: norm of h' over the utterance's valid frames).
ADV_EPSILON_SCALES = ("absolute", "relative")


def adversarial_radius(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, epsilon: float, scale: str = "absolute"
) -> float | torch.Tensor:
    """The radius ``‖δ_b‖`` of Eq. 4's perturbation for each utterance.

    ``"absolute"`` is the paper's rule, ``ε_adv`` itself. ``"relative"`` is ``ε_adv·‖h'_b‖/√T_b`` (``(B,)``,
    detached): ε_adv times the RMS over the utterance's ``T_b`` valid frames of each frame's norm, i.e. of one
    typical frame of h'. The perturbation itself stays one FGM step per utterance (one norm over all its frames, Eq.
    4). Per frame rather than per utterance because one token edit moves h' by about one frame's norm whatever the
    length (docs/audit.md), while ``‖h'_b‖`` grows with ``√T_b``: the same ε_adv then covers the same number of token
    edits at every length, and an RM cannot become robust to a fixed radius merely by growing ‖h'‖.
    """
    if scale == "absolute":
        return epsilon
    if scale != "relative":
        raise ValueError(f"adv_epsilon_scale must be one of {list(ADV_EPSILON_SCALES)}, got {scale!r}.")
    hidden = hidden_states.detach().float()
    if attention_mask is None:
        frames = torch.full(hidden.shape[:1], hidden.shape[1], dtype=hidden.dtype, device=hidden.device)
    else:
        valid = attention_mask.to(device=hidden.device, dtype=hidden.dtype)
        hidden = hidden * valid.unsqueeze(-1)
        frames = valid.sum(dim=1).clamp_min(1)
    return epsilon * (hidden.pow(2).sum(dim=(1, 2)) / frames).sqrt()


def fgm_perturbation(
    grad: torch.Tensor, attention_mask: torch.Tensor | None, epsilon: float | torch.Tensor
) -> torch.Tensor:
    """Eq. 4: ``delta = epsilon * g / ||g||_2`` with ``g = dL_emo/dh'``, one norm per sample.

    The norm runs over the sample's valid frames and all hidden dimensions; padded frames get a zero
    perturbation (they never reach the pooled representation anyway, and must not dilute the norm).
    A sample whose gradient is exactly zero gets ``delta = 0`` instead of NaN.

    Args:
        grad: ``(B, L, D)`` gradient of ``L_emo`` w.r.t. ``h'``.
        attention_mask: ``(B, L)`` with 1 on valid frames, or ``None`` if every frame is valid.
        epsilon: the perturbation magnitude ``epsilon_adv``; ``||delta_i||_2 == epsilon`` (a ``(B,)`` tensor: one
            radius per sample, see :func:`adversarial_radius`).

    Returns:
        ``delta`` with the shape of ``grad``, detached (a constant in ``L_adv``).
    """
    if grad.dim() != 3:
        raise ValueError(f"`grad` must be (batch, frames, hidden), got shape {tuple(grad.shape)}.")
    if bool((epsilon < 0).any()) if isinstance(epsilon, torch.Tensor) else epsilon < 0:
        raise ValueError(f"The adversarial epsilon must be non-negative, got {epsilon}.")
    grad = grad.detach()
    if attention_mask is not None:
        grad = grad * attention_mask.to(grad.dtype).unsqueeze(-1)
    # The norm is taken in float32: squared bf16 gradients underflow easily.
    norm = grad.float().pow(2).sum(dim=(1, 2)).sqrt()
    if isinstance(epsilon, torch.Tensor):
        epsilon = epsilon.to(device=norm.device, dtype=norm.dtype)
    scale = torch.where(norm > 0, epsilon / norm.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(norm))
    return (grad.float() * scale[:, None, None]).to(grad.dtype)
