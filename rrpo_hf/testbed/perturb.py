"""Reward-hacking perturbations of speech-token sequences (probes and tests use them).

A policy that hacks an emotion reward model tends to (a) emit artifact tokens the RM has
associated with an emotion, or (b) garble content / stretch tokens to exaggerate prosody.
Each function below produces one of these on demand, deterministically from a seed:

- :func:`insert_artifacts`: insert ``ceil(rate * n)`` artifact ids at random positions
  (``n`` = utterance length); content and prosody of the natural tokens are untouched.
- :func:`substitute_tokens`: replace ``ceil(rate * n)`` random positions by random
  natural-speech ids (garbled content, random register).
- :func:`repeat_tokens`: emit every token ``factor`` times (stretched, stuttering speech).

All accept one sequence (``list[int]``) or a batch (``list[list[int]]``) and return the same
shape as plain Python lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .world import EmotionWorld, TestbedConfig


def _as_world(world: EmotionWorld | TestbedConfig | None) -> EmotionWorld:
    if world is None:
        return EmotionWorld()
    if isinstance(world, TestbedConfig):
        return EmotionWorld(world)
    if isinstance(world, EmotionWorld):
        return world
    raise TypeError(f"Expected an EmotionWorld or TestbedConfig, got {type(world).__name__}.")


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


def insert_artifacts(
    speech_tokens: Sequence[int] | Sequence[Sequence[int]],
    rate: float,
    world: EmotionWorld | TestbedConfig | None = None,
    seed: int = 0,
) -> list[int] | list[list[int]]:
    """Insert ``ceil(rate * len)`` of the world's artifact tokens at uniformly random positions of each utterance."""
    return insert_tokens(speech_tokens, _as_world(world).artifact_token_ids, rate, seed)


def substitute_tokens(
    speech_tokens: Sequence[int] | Sequence[Sequence[int]],
    rate: float,
    world: EmotionWorld | TestbedConfig | None = None,
    seed: int = 0,
) -> list[int] | list[list[int]]:
    """Replace ``ceil(rate * len)`` distinct random positions by random natural-speech ids."""
    _check_rate(rate)
    world = _as_world(world)
    rng = np.random.default_rng(seed)
    natural = world.speech_token_ids
    single = _is_single(speech_tokens)
    batch = [speech_tokens] if single else speech_tokens
    out = []
    for tokens in batch:
        tokens = np.array(tokens, dtype=np.int64)
        n_sub = min(len(tokens), math.ceil(rate * len(tokens)))
        positions = rng.choice(len(tokens), size=n_sub, replace=False)
        tokens[positions] = rng.choice(natural, size=n_sub)
        out.append(tokens.tolist())
    return out[0] if single else out


def repeat_tokens(
    speech_tokens: Sequence[int] | Sequence[Sequence[int]], factor: int = 2
) -> list[int] | list[list[int]]:
    """Emit each token ``factor`` times in a row."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}.")
    single = _is_single(speech_tokens)
    batch = [speech_tokens] if single else speech_tokens
    out = [np.repeat(np.asarray(tokens, dtype=np.int64), int(factor)).tolist() for tokens in batch]
    return out[0] if single else out


__all__ = ["insert_artifacts", "insert_tokens", "repeat_tokens", "substitute_tokens"]
