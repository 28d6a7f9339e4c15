"""Straight-through Gumbel-Softmax over speech-token logits and the soft-token embedding lookup (DiffRO).

DiffRO (arXiv 2507.05911) scores *sampled tokens* with a reward model that reads token embeddings. Sampling is
made differentiable with the straight-through Gumbel-Softmax estimator: the forward pass sees an exact one-hot
sample ``onehot(argmax(z + g))`` (so the reward model reads a real token, as at inference), the backward pass
uses the gradient of the relaxed sample ``softmax((z + g) / tau)``.

:func:`nucleus_logits` optionally restricts the sample to the ids the rollout's nucleus (top-k / top-p) sampling can
draw, so that the reward model reads the kind of token the policy emits at inference.

Only ``torch`` is imported here, like every module of :mod:`rrpo_hf.ops`.
"""

from __future__ import annotations

import torch


def sample_gumbel_noise(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard Gumbel noise ``g = -log(-log(u))``, ``u ~ U(0, 1)``, from an optional seeded generator.

    ``u`` is kept inside ``[tiny, 1 - eps]`` so neither logarithm can return ``inf``.
    """
    if generator is not None and device is not None and torch.device(device).type != generator.device.type:
        raise ValueError(
            f"The generator lives on {generator.device} but noise was requested on {device}; build the generator "
            "on the logits' device (torch.Generator(device=logits.device))."
        )
    uniform = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    uniform = uniform.clamp(min=torch.finfo(torch.float32).tiny, max=1.0 - torch.finfo(torch.float32).eps)
    return (-torch.log(-torch.log(uniform))).to(dtype)


def gumbel_softmax_sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    straight_through: bool = True,
    generator: torch.Generator | None = None,
    gumbel_noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gumbel-Softmax sample per position of ``logits`` (``(..., V)``).

    Args:
        logits: unnormalised scores ``z``; the sample is drawn from ``softmax(z)``.
        temperature: ``tau`` of the relaxation ``softmax((z + g) / tau)``; must be positive.
        straight_through: ``True`` returns the one-hot ``onehot(argmax(z + g))`` in the forward pass with the
            gradient of the relaxed sample (``y = hard - soft.detach() + soft``); ``False`` returns the relaxed
            sample itself.
        generator: source of the noise (reproducible sampling); ignored when ``gumbel_noise`` is given.
        gumbel_noise: explicit noise ``g`` with the shape of ``logits`` (tests and analytic checks).

    Returns:
        ``(sample, token_ids)``: ``sample`` has the shape and dtype of ``logits``; ``token_ids`` (``(...)``, long)
        are the sampled ids ``argmax(z + g)``.
    """
    if temperature <= 0:
        raise ValueError(f"The Gumbel-Softmax temperature must be positive, got {temperature}.")
    if gumbel_noise is None:
        gumbel_noise = sample_gumbel_noise(logits.shape, generator=generator, device=logits.device)
    elif gumbel_noise.shape != logits.shape:
        raise ValueError(f"gumbel_noise {tuple(gumbel_noise.shape)} must match logits {tuple(logits.shape)}.")
    # The relaxation runs in float32: bf16 softmax over thousands of ids loses most of the gradient signal.
    perturbed = logits.float() + gumbel_noise.to(device=logits.device, dtype=torch.float32)
    soft = torch.softmax(perturbed / temperature, dim=-1)
    token_ids = perturbed.argmax(dim=-1)
    if not straight_through:
        return soft.to(logits.dtype), token_ids
    hard = torch.zeros_like(soft).scatter_(-1, token_ids.unsqueeze(-1), 1.0)
    # Forward value: exactly `hard` (soft - soft.detach() is 0); gradient: that of `soft`.
    return (hard - soft.detach() + soft).to(logits.dtype), token_ids


def nucleus_logits(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """``logits`` with ``-inf`` outside the nucleus of ``softmax(logits)`` that CosyVoice2's sampling draws from.

    At each position the ids are sorted by probability; the i-th is kept when fewer than ``top_k`` ids come before
    it and their mass is below ``top_p``. The most likely id is always kept. This is the inclusion rule of
    CosyVoice2's ``nucleus_sampling`` (``rrpo_hf.models.cosyvoice2.generation``). Gumbel-max sampling from the result
    (:func:`gumbel_softmax_sample`) draws from the renormalised nucleus, and the relaxation's gradient reaches only
    the kept logits. Which ids are kept is a selection, computed without gradient.

    Args:
        logits: ``(..., V)`` unnormalised scores.
        top_p: nucleus mass in ``(0, 1]``.
        top_k: most ids kept per position, ``>= 1``.
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}.")
    with torch.no_grad():
        # fp32 probabilities: in bf16 the cumulative mass is too coarse for the top-p cut (as in the rollout).
        probs = torch.softmax(logits.detach().float(), dim=-1)
        sorted_probs, sorted_ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        keep_sorted = mass_before < top_p
        keep_sorted[..., 0] = True
        keep = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, sorted_ids, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def soft_token_embedding(token_probs: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
    """Embed token distributions: ``probs @ E[:V]`` (``(..., V) -> (..., D)``), exact for one-hot inputs.

    ``embedding_weight`` may have more rows than ``V`` (special or padding rows); only the first ``V`` are used.
    """
    num_tokens = token_probs.shape[-1]
    if embedding_weight.dim() != 2 or embedding_weight.shape[0] < num_tokens:
        raise ValueError(
            f"The embedding matrix {tuple(embedding_weight.shape)} has fewer rows than the {num_tokens} token "
            "probabilities; the policy's speech vocabulary does not match the embedding's codebook."
        )
    weight = embedding_weight[:num_tokens]
    return torch.matmul(token_probs.to(weight.dtype), weight)


__all__ = ["gumbel_softmax_sample", "nucleus_logits", "sample_gumbel_noise", "soft_token_embedding"]
