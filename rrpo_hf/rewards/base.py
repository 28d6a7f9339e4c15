"""The reward-function contract of `DiffROTrainer(reward_funcs=...)`.

A reward function is any callable

    f(token_probs: Tensor (B, L, V), attention_mask: Tensor (B, L), batch: Mapping[str, Any]) -> Tensor (B,)

that returns a **per-sample differentiable loss** (lower is better; the reward is ``-loss``). ``token_probs`` are
the policy's straight-through Gumbel-Softmax samples over the speech codebook (one-hot in the forward pass, relaxed
gradient in the backward pass; during evaluation, the one-hot of the generated tokens without gradient), so the
loss must be computed *from* them, e.g. through ``F = token_probs @ E`` of a frozen model, for the gradient to
reach the policy. ``batch`` is the `DataCollatorForDiffRO` batch: ``emotion_labels``, ``texts`` (the prompts' texts,
for text-conditioned rewards such as ASR), ``target_emotions``, ``text_ids``, ...

Its ``name`` attribute (a plain function: its ``__name__``) names the logs, ``rewards/<name>/mean``, and
``DiffROConfig.reward_gate``. Subclass :class:`RewardFunction` (a `torch.nn.Module`, so that the trainer moves its
frozen models to the training device) to also return per-sample diagnostics from :meth:`RewardFunction.loss_terms`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch


__all__ = ["RewardFunction", "check_reward_loss", "model_tasks", "require_head", "reward_function_name"]


class RewardFunction(torch.nn.Module, abc.ABC):
    """Base class of reward functions that hold frozen models and report diagnostics beside their loss.

    Subclasses implement :meth:`loss_terms`; calling the module returns its ``"loss"`` entry, which is what the
    trainer optimises. The other entries are per-sample diagnostics the trainer may log.

    Args:
        name (`str`): the reward's name in the logs (``rewards/<name>/mean``) and in ``DiffROConfig.reward_gate``.
    """

    def __init__(self, name: str):
        super().__init__()
        if not isinstance(name, str) or not name:
            raise ValueError(f"A reward function needs a non-empty string `name`, got {name!r}.")
        self.name = name

    @abc.abstractmethod
    def loss_terms(
        self, token_probs: torch.Tensor, attention_mask: torch.Tensor, batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        """``{"loss": (B,) differentiable per-sample loss, ...}``; further entries are per-sample diagnostics."""

    def forward(
        self, token_probs: torch.Tensor, attention_mask: torch.Tensor, batch: Mapping[str, Any]
    ) -> torch.Tensor:
        return self.loss_terms(token_probs, attention_mask, batch)["loss"]

    @property
    def frozen_models(self) -> list[torch.nn.Module]:
        """The frozen models this reward reads (default: its ``model`` attribute, if any).

        The trainer checks that each reads the policy's speech codebook, caps generation at the fewest positions
        they read, and refuses ZeRO-3-partitioned ones (the reward's forward and backward need full weights).
        """
        model = getattr(self, "model", None)
        return [model] if isinstance(model, torch.nn.Module) else []

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def model_tasks(model: torch.nn.Module) -> list[str]:
    """The heads of a reward model: ``config.tasks`` of a multi-task model; ``["emotion"]`` for an emotion classifier
    (it has ``classify``); else none."""
    tasks = getattr(getattr(model, "config", None), "tasks", None)
    if tasks is not None:
        return list(tasks)
    return ["emotion"] if hasattr(model, "classify") else []


def require_head(model: torch.nn.Module, task: str, name: str) -> None:
    """Raise, naming the reward and the fix, when ``model`` has no ``task`` head (see :func:`model_tasks`)."""
    tasks = model_tasks(model)
    if task not in tasks:
        suggested = ",".join([*tasks, task]) if tasks else f"emotion,{task}"
        raise ValueError(
            f"The reward {name!r} needs the '{task}' head, but the reward model ({type(model).__name__}) has no "
            f"'{task}' head (tasks={tasks}); train it with --tasks {suggested} (examples/train_rm.py), or drop this "
            "reward."
        )


def reward_function_name(func: Any) -> str:
    """A reward function's log name: its ``name`` attribute, else (plain functions) its ``__name__``."""
    name = getattr(func, "name", None)
    if name is None:
        name = getattr(func, "__name__", None)
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"The reward function {func!r} has no name: give it a non-empty string `name` attribute (it names the "
            "logs, rewards/<name>/mean, and DiffROConfig.reward_gate)."
        )
    return name


def check_reward_loss(name: str, loss: Any, batch_size: int) -> torch.Tensor:
    """The reward function's output if it is a floating ``(batch_size,)`` tensor, else an error naming it."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"Reward function {name!r} returned a {type(loss).__name__}; it must return a tensor of per-sample "
            f"losses, shape ({batch_size},)."
        )
    if tuple(loss.shape) != (batch_size,):
        raise ValueError(
            f"Reward function {name!r} returned shape {tuple(loss.shape)} on a batch of {batch_size} samples; it must "
            f"return one loss per sample, shape ({batch_size},) (reduce over tokens inside the function, not over the "
            "batch)."
        )
    if not loss.is_floating_point():
        raise TypeError(
            f"Reward function {name!r} returned {loss.dtype} losses; they must be floating point (differentiable)."
        )
    return loss
