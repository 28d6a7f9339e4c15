"""Right-padding of token-id lists, shared by every collator, probe and generation entry point."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def right_pad(
    sequences: Sequence[Sequence[int]], pad_value: int = 0, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` of shape ``(batch, longest)``: each list left-aligned, ``pad_value`` after it, mask 1
    on real tokens. An empty batch gives ``(0, 0)`` tensors."""
    lengths = torch.tensor([len(tokens) for tokens in sequences], dtype=torch.long)
    width = int(lengths.max()) if len(sequences) else 0
    ids = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    for row, tokens in enumerate(sequences):
        ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
    attention_mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    if device is not None:
        ids, attention_mask = ids.to(device), attention_mask.to(device)
    return ids, attention_mask


__all__ = ["right_pad"]
