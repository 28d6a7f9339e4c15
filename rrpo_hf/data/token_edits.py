"""Generic edits of speech-token sequences, for any set of token ids (a testbed world's artifacts, a real codebook's
click tokens): used by the robustness probes (`rrpo_hf.evaluation.robustness`) and by the testbed's perturbations,
so it lives below both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _is_single(speech_tokens) -> bool:
    if isinstance(speech_tokens, np.ndarray):
        return speech_tokens.ndim == 1
    return len(speech_tokens) == 0 or isinstance(speech_tokens[0], (int, np.integer))


def _check_rate(rate: float):
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1] (events per original token), got {rate}.")


def insert_tokens(
    speech_tokens: Sequence[int] | Sequence[Sequence[int]], token_ids: Sequence[int], rate: float, seed: int = 0
) -> list[int] | list[list[int]]:
    """Insert ``ceil(rate * len)`` ids drawn uniformly from ``token_ids`` at uniformly random positions of each
    utterance (any id set: a testbed world's artifacts, or a real codebook's click tokens)."""
    _check_rate(rate)
    token_ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if token_ids.size == 0:
        raise ValueError("`token_ids` is empty: pass at least one token id to insert.")
    rng = np.random.default_rng(seed)
    single = _is_single(speech_tokens)
    batch = [speech_tokens] if single else speech_tokens
    out = []
    for tokens in batch:
        tokens = np.asarray(tokens, dtype=np.int64)
        n_insert = math.ceil(rate * len(tokens))
        positions = np.sort(rng.integers(0, len(tokens) + 1, size=n_insert))
        out.append(np.insert(tokens, positions, rng.choice(token_ids, size=n_insert)).tolist())
    return out[0] if single else out


__all__ = ["insert_tokens"]
