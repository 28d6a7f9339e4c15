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

from ..data.token_edits import _check_rate, _is_single, insert_tokens  # noqa: F401  (insert_tokens re-exported)
from .world import EmotionWorld, TestbedConfig


def _as_world(world: EmotionWorld | TestbedConfig | None) -> EmotionWorld:
    if world is None:
        return EmotionWorld()
    if isinstance(world, TestbedConfig):
        return EmotionWorld(world)
    if isinstance(world, EmotionWorld):
        return world
    raise TypeError(f"Expected an EmotionWorld or TestbedConfig, got {type(world).__name__}.")


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
