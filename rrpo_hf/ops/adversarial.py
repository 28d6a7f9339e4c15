"""Paper Eq. 4: the Fast Gradient Method perturbation of the high-level embeddings h'.

Only ``torch`` is imported here (see ``label_smoothing.py`` for why).
"""

from __future__ import annotations

import torch


def fgm_perturbation(grad: torch.Tensor, attention_mask: torch.Tensor | None, epsilon: float) -> torch.Tensor:
    """Eq. 4: ``delta = epsilon * g / ||g||_2`` with ``g = dL_emo/dh'``, one norm per sample.

    The norm runs over the sample's valid frames and all hidden dimensions; padded frames get a zero
    perturbation (they never reach the pooled representation anyway, and must not dilute the norm).
    A sample whose gradient is exactly zero gets ``delta = 0`` instead of NaN.

    Args:
        grad: ``(B, L, D)`` gradient of ``L_emo`` w.r.t. ``h'``.
        attention_mask: ``(B, L)`` with 1 on valid frames, or ``None`` if every frame is valid.
        epsilon: the perturbation magnitude ``epsilon_adv``; ``||delta_i||_2 == epsilon``.

    Returns:
        ``delta`` with the shape of ``grad``, detached (a constant in ``L_adv``).
    """
    if grad.dim() != 3:
        raise ValueError(f"`grad` must be (batch, frames, hidden), got shape {tuple(grad.shape)}.")
    if epsilon < 0:
        raise ValueError(f"The adversarial epsilon must be non-negative, got {epsilon}.")
    grad = grad.detach()
    if attention_mask is not None:
        grad = grad * attention_mask.to(grad.dtype).unsqueeze(-1)
    # The norm is taken in float32: squared bf16 gradients underflow easily.
    norm = grad.float().pow(2).sum(dim=(1, 2)).sqrt()
    scale = torch.where(norm > 0, epsilon / norm.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(norm))
    return (grad.float() * scale[:, None, None]).to(grad.dtype)
