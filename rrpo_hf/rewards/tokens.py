"""`SpeechTokenReward`: a plain Python reward over generated speech tokens, in TRL's reward-function convention.

TRL's `GRPOTrainer` calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)`` and
expects one float per completion (higher is better). `SpeechTokenReward(func)` calls `func` that way on the speech
tokens the one-hot `token_probs` hold (CosyVoice's completions are speech tokens: ``completions`` and
``completion_ids`` are both the lists of token ids) and returns ``loss = -reward``, so that it joins a `RewardSet`
beside the model rewards, with a weight, a log name and the gate. It has no gradient: GRPO needs none, and in a
DiffRO run (where it would get one-hot Gumbel samples) it is logged but does not train the policy.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .base import RewardFunction, reward_function_name


__all__ = ["SpeechTokenReward"]

# Batch entries passed to the function under TRL's names, and the batch's per-row lists passed as they are.
_LIST_COLUMNS = ("target_emotions", "languages")


def _check_trl_signature(func: Callable[..., Any], name: str) -> None:
    """Fail at construction, naming the fix, when `func` cannot take TRL's keyword arguments (e.g. a DiffRO-style
    `f(token_probs, attention_mask, batch)`)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    names = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    missing = [key for key in ("prompts", "completions", "completion_ids") if key not in names]
    if missing:
        raise TypeError(
            f"Reward function {name!r} does not take {missing}: a plain callable reward takes TRL's signature "
            "`f(prompts, completions, completion_ids, **kwargs) -> list[float]` over the generated speech tokens. "
            "A differentiable `f(token_probs, attention_mask, batch)` reward belongs in a `RewardFunction` subclass."
        )


class SpeechTokenReward(RewardFunction):
    """Wrap `func(prompts, completions, completion_ids, **kwargs) -> list[float]` (TRL's reward signature).

    Args:
        func: called with keyword arguments `prompts` (the texts to speak), `completions` and `completion_ids` (the
            generated speech token ids of each sample, padding removed), `target_emotions` (canonical emotion names)
            and `languages` when the batch has them. It returns one finite float per sample (a list, tuple or 1-D
            tensor).
        name: the log name (default: `func.__name__`).
    """

    def __init__(self, func: Callable[..., Any], name: str | None = None):
        super().__init__(name or reward_function_name(func))
        if not callable(func):
            raise TypeError(f"SpeechTokenReward needs a callable, got {type(func).__name__}.")
        _check_trl_signature(func, self.name)
        self.func = func

    @property
    def frozen_models(self) -> list[torch.nn.Module]:
        return []

    def loss_terms(
        self, token_probs: torch.Tensor, attention_mask: torch.Tensor, batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        lengths = attention_mask.sum(dim=1).tolist()
        ids = token_probs.detach().argmax(dim=-1).tolist()
        tokens = [row[: int(length)] for row, length in zip(ids, lengths)]
        kwargs = {key: batch[key] for key in _LIST_COLUMNS if key in batch}
        values = self.func(
            prompts=list(batch.get("texts", [""] * len(tokens))), completions=tokens, completion_ids=tokens, **kwargs
        )
        rewards = self._check(values, len(tokens))
        return {"loss": -rewards.to(token_probs.device)}

    def _check(self, values: Any, batch_size: int) -> torch.Tensor:
        if isinstance(values, torch.Tensor):
            values = values.detach().flatten().tolist() if values.dim() <= 1 else values
        if isinstance(values, torch.Tensor) or not isinstance(values, (list, tuple)):
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(
                f"Reward function {self.name!r} returned {shape}; it must return one float per completion (a list "
                f"of {batch_size} numbers), as TRL's reward functions do."
            )
        if len(values) != batch_size:
            raise ValueError(
                f"Reward function {self.name!r} returned {len(values)} rewards for {batch_size} completions; it must "
                "return one float per completion, in the order of `completions`."
            )
        try:
            rewards = [float(value) for value in values]
        except (TypeError, ValueError):
            raise TypeError(
                f"Reward function {self.name!r} returned non-numeric rewards ({values[:3]!r}...); return floats."
            ) from None
        if not all(math.isfinite(value) for value in rewards):
            raise ValueError(f"Reward function {self.name!r} returned a non-finite reward: {rewards}.")
        return torch.tensor(rewards, dtype=torch.float32)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, func={getattr(self.func, '__qualname__', self.func)!r}"
