"""Paper Algorithm 1: Energy-Adaptive Mixup (EAM), split into plan sampling and plan application.

The randomness (partner, mix length, start frames, SNR) is drawn once per batch by the data
collator as a *plan* of five ``(B,)`` tensors; the model applies the plan to its low-level
features F, which for token inputs only exist after the embedding lookup. Both halves are
vectorised over the batch.

Only ``torch`` is imported here: this module is copied next to the reward model's
modeling file when the model is saved, so the checkpoint loads with ``trust_remote_code=True``
without rrpo-hf installed.
"""

from __future__ import annotations

import torch


#: Keys of an EAM plan, in the order of the model's forward arguments.
EAM_PLAN_KEYS = ("eam_partner", "eam_mix_length", "eam_start", "eam_partner_start", "eam_snr_db")


def sample_eam_plan(
    lengths: torch.Tensor,
    snr_range_db: tuple[float, float] = (-5.0, 5.0),
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Draw the random part of Algorithm 1 (lines 1-13 and 16) for a batch of sequence lengths.

    * partner ``j = pi_i`` for a random permutation ``pi``; when ``pi_i = i`` the next index is taken
      (lines 5-7), so a sample is never mixed with itself;
    * ``l_mix ~ U(1, l_i / 2)`` cast to an integer (truncation), then capped at ``l_j`` (lines 9-12);
    * start frames ``b_i ~ U{0..l_i - l_mix}``, ``b_j ~ U{0..l_j - l_mix}`` (line 13);
    * SNR ``r ~ U(r_min, r_max)`` dB (line 16).

    A batch of one has no partner: its plan has ``eam_mix_length = 0``, which the model applies as
    "no mixing" (``lambda = 0``).

    Args:
        lengths: ``(B,)`` number of valid frames per sample (all ``>= 1``).
        snr_range_db: ``(r_min, r_max)`` in dB.
        generator: a ``torch.Generator`` on ``lengths.device`` for reproducible plans.

    Returns:
        dict with the long tensors ``eam_partner``, ``eam_mix_length``, ``eam_start``,
        ``eam_partner_start`` and the float tensor ``eam_snr_db``, each of shape ``(B,)``.
    """
    lengths = torch.as_tensor(lengths).long()
    if lengths.dim() != 1:
        raise ValueError(f"`lengths` must be a 1-D tensor of sequence lengths, got shape {tuple(lengths.shape)}.")
    if lengths.numel() and int(lengths.min()) < 1:
        raise ValueError("EAM needs non-empty sequences: every length must be >= 1.")
    r_min, r_max = float(snr_range_db[0]), float(snr_range_db[1])
    if r_min > r_max:
        raise ValueError(f"`snr_range_db` must be (min, max), got {snr_range_db}.")
    batch_size, device = lengths.shape[0], lengths.device
    snr_db = r_min + (r_max - r_min) * torch.rand(batch_size, generator=generator, device=device)
    if batch_size < 2:
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        return {
            "eam_partner": torch.arange(batch_size, device=device),
            "eam_mix_length": zeros,
            "eam_start": zeros.clone(),
            "eam_partner_start": zeros.clone(),
            "eam_snr_db": snr_db,
        }

    index = torch.arange(batch_size, device=device)
    permutation = torch.randperm(batch_size, generator=generator, device=device)
    partner = torch.where(permutation == index, (permutation + 1) % batch_size, permutation)

    # U(1, l_i/2) is empty for l_i = 1; such a sample mixes its single frame.
    upper = (lengths.float() / 2).clamp_min(1.0)
    mix_length = (1.0 + (upper - 1.0) * torch.rand(batch_size, generator=generator, device=device)).long()
    partner_lengths = lengths[partner]
    mix_length = torch.minimum(mix_length, partner_lengths).clamp_min(1)

    def uniform_start(length):
        # floor(u * (n + 1)) is uniform on {0..n}; the clamp guards against u rounding up to 1.
        span = (length - mix_length + 1).float()
        start = (torch.rand(batch_size, generator=generator, device=device) * span).long()
        return torch.minimum(start, length - mix_length)

    return {
        "eam_partner": partner,
        "eam_mix_length": mix_length,
        "eam_start": uniform_start(lengths),
        "eam_partner_start": uniform_start(partner_lengths),
        "eam_snr_db": snr_db,
    }


def apply_energy_adaptive_mixup(
    features: torch.Tensor,
    attention_mask: torch.Tensor,
    eam_partner: torch.Tensor,
    eam_mix_length: torch.Tensor,
    eam_start: torch.Tensor,
    eam_partner_start: torch.Tensor,
    eam_snr_db: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply an EAM plan to a batch of features (Algorithm 1, lines 14-21), vectorised.

    For every sample ``i`` with partner ``j`` and ``l = l_mix``:
    ``s_i = F_i[b_i:b_i+l]``, ``s_j = F_j[b_j:b_j+l]`` (from the *unmixed* batch),
    ``E = mean(s^2)``, ``E'_j = E_j / 10^(r/10)``, ``F'_i[b_i:b_i+l] += sqrt(E'_j / E_j) * s_j`` and
    ``lambda_i = (l / l_i) * E'_j / (E_i + E'_j)``. Rows with ``l_mix = 0`` are left unchanged with
    ``lambda_i = 0``.

    ``sqrt(E'_j / E_j)`` equals ``10^(-r/20)`` whatever ``E_j`` is, which is how it is computed (a
    silent, all-zero segment would otherwise divide by zero). ``lambda`` is detached: it is a
    loss weight, and letting gradients flow into it would reward the embedding for shrinking the
    partner's energy instead of for recognising emotion.

    Returns:
        ``(mixed_features, mixup_lambda)`` of shapes ``(B, L, D)`` and ``(B,)`` (float32).
    """
    if features.dim() != 3:
        raise ValueError(f"`features` must be (batch, frames, hidden), got shape {tuple(features.shape)}.")
    batch_size, max_len, hidden = features.shape
    device = features.device
    plan = [eam_partner, eam_mix_length, eam_start, eam_partner_start, eam_snr_db]
    for name, value in zip(EAM_PLAN_KEYS, plan):
        if value.shape != (batch_size,):
            raise ValueError(f"EAM plan tensor `{name}` must have shape ({batch_size},), got {tuple(value.shape)}.")
    partner, mix_length = eam_partner.long().to(device), eam_mix_length.long().to(device)
    start, partner_start = eam_start.long().to(device), eam_partner_start.long().to(device)
    snr_db = eam_snr_db.to(device=device, dtype=torch.float32)

    lengths = attention_mask.long().sum(dim=1)
    index = torch.arange(batch_size, device=device)
    invalid = (
        (partner < 0)
        | (partner >= batch_size)
        | (mix_length < 0)
        | ((partner == index) & (mix_length > 0))
        | (start < 0)
        | (partner_start < 0)
        | (start + mix_length > lengths)
        | (partner_start + mix_length > lengths[partner.clamp(0, batch_size - 1)])
    )
    if bool(invalid.any()):
        bad = invalid.nonzero().flatten().tolist()
        raise ValueError(
            f"EAM plan is inconsistent with the batch for samples {bad} (partner out of range or equal to self, or a "
            "mixed segment runs past a sequence's valid frames). The plan must be sampled from the same lengths the "
            "model sees: build it with `sample_eam_plan(attention_mask.sum(1))` after any truncation."
        )

    frames = torch.arange(max_len, device=device)
    in_segment = (frames[None, :] >= start[:, None]) & (frames[None, :] < (start + mix_length)[:, None])
    # Frame t of sample i (inside the segment) receives frame b_j + (t - b_i) of partner j.
    source_frames = (frames[None, :] - start[:, None] + partner_start[:, None]).clamp(0, max_len - 1)
    partner_frames = features[partner[:, None], source_frames]
    segment_mask = in_segment.unsqueeze(-1).to(features.dtype)

    scale = torch.pow(10.0, -snr_db / 20.0)
    mixed = features + segment_mask * scale.to(features.dtype)[:, None, None] * partner_frames

    with torch.no_grad():
        values = mix_length.clamp_min(1).float() * hidden
        energy_self = (features.float().pow(2) * segment_mask.float()).sum(dim=(1, 2)) / values
        energy_partner = (partner_frames.float().pow(2) * segment_mask.float()).sum(dim=(1, 2)) / values
        target_energy = energy_partner / torch.pow(10.0, snr_db / 10.0)
        denominator = energy_self + target_energy
        energy_ratio = torch.where(
            denominator > 0, target_energy / denominator.clamp_min(torch.finfo(torch.float32).tiny), 0.0
        )
        mixup_lambda = mix_length.float() / lengths.clamp_min(1).float() * energy_ratio
    return mixed, mixup_lambda


__all__ = ["EAM_PLAN_KEYS", "apply_energy_adaptive_mixup", "sample_eam_plan"]
