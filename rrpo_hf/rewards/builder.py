"""One reward builder: reward models, their folders, callables, multi-task heads, ensembles, weights and the gate
-> one :class:`RewardSet`, the object `DiffROTrainer` holds (docs/architecture.md, "Several rewards").

The set is built and checked without a `Trainer`: which functions, in which order, with which names and weights, the
emotion reward the gate scales, and every frozen model they read. Each emotion reward computes the robust loss its
model was trained with (saved in its config) unless the caller overrides a setting. Checks of a reward model against
the policy it will train belong in :meth:`RewardSet.check_policy`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import AutoModel, AutoModelForAudioClassification, PretrainedConfig, PreTrainedModel

from ..models.frozen import freeze, full_weight_copy, is_zero3_partitioned, zero3_init_disabled
from ..models.robust_ser import RobustSERForAudioClassification  # noqa: F401  (registers the Auto classes)
from ..models.speech_tokenizer_check import check_speech_tokenizer_match
from ..ops import gate_weights, weighted_reward_loss, weighted_rewards
from .base import RewardFunction, check_reward_loss, model_tasks, reward_function_name
from .emotion import EmotionReward, EmotionRMEnsemble
from .multitask import task_rewards


__all__ = ["RewardSet", "build_reward_set", "load_reward_model"]

logger = logging.getLogger(__name__)

_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "revision", "subfolder", "token")


def _is_multitask_folder(path: str, init_kwargs: dict[str, Any]) -> bool:
    """Whether the saved model at `path` is a multi-task reward model: its `config.json` lists `tasks`."""
    config_dict, _ = PretrainedConfig.get_config_dict(
        path, **{key: value for key, value in init_kwargs.items() if key in _HUB_KWARGS}
    )
    return config_dict.get("tasks") is not None


def load_reward_model(model, init_kwargs: Mapping[str, Any] | None = None, name: str = "reward_model"):
    """A reward model / judge as a frozen plain module with full weights on every rank, even under ZeRO-3.

    A path loads with `AutoModelForAudioClassification`, or with `AutoModel` when its config lists `tasks` (a
    multi-task reward model saved by `examples/train_rm.py --tasks ...`); `init_kwargs` (e.g. `trust_remote_code`)
    are passed on.

    The policy's loss back-propagates through the reward model's forward, and the adversarial term takes
    `torch.autograd.grad` w.r.t. its hidden states. ZeRO-3 shards would need gathering in that forward and again in
    the policy's backward, and ZeRO-3's hooks re-wrap each module output separately, which cuts the graph between
    `last_hidden_state` and `logits` that the adversarial gradient follows. The emotion classifiers are small (the
    recipe's: ~20M parameters, against the 0.5B policy), so a full frozen copy per rank costs little memory and no
    per-step all-gather; only the policy and its reference are sharded.
    """
    if isinstance(model, str):
        init_kwargs = dict(init_kwargs or {})
        auto_class = AutoModel if _is_multitask_folder(model, init_kwargs) else AutoModelForAudioClassification
        with zero3_init_disabled():
            return freeze(auto_class.from_pretrained(model, **init_kwargs))
    if isinstance(model, torch.nn.Module):
        return freeze(full_weight_copy(model) if is_zero3_partitioned(model) else model)
    raise TypeError(f"`{name}` must be a path or a model, got {type(model).__name__}.")


def _check_reward_signature(func, name: str) -> None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return  # builtins and C callables: their output is checked on a batch instead
    try:
        signature.bind(None, None, None)
    except TypeError:
        raise TypeError(
            f"Reward function {name!r} has the signature {signature}; reward functions are called as "
            "`f(token_probs, attention_mask, batch)` and return a (B,) per-sample loss."
        ) from None


class RewardSet:
    """The reward functions of a DiffRO / RRPO run, in the order `weights` follows, and what is computed from them.

    Attributes:
        funcs, names, weights: the functions, their log names and weights, in order.
        emotion_index: the emotion reward's position (the reward the gate scales, whose labels the batches use).
        gate_index: the gating function's position, or `None`.
        models: every frozen model the functions read, once, as `(where, model)` named for error messages.
    """

    def __init__(
        self,
        funcs: list[Callable],
        names: list[str],
        weights: list[float],
        emotion_index: int,
        gate_index: int | None = None,
        gate_threshold: float | None = None,
        gate_temperature: float = 0.0,
        models: list[tuple[str, torch.nn.Module]] | None = None,
    ):
        self.funcs = funcs
        self.names = names
        self.weights = weights
        self.emotion_index = emotion_index
        self.gate_index = gate_index
        self.gate_threshold = gate_threshold
        self.gate_temperature = gate_temperature
        self.models = models or []
        self._warned_no_gradient: set[str] = set()

    def __len__(self) -> int:
        return len(self.funcs)

    @property
    def emotion_reward(self) -> EmotionReward | EmotionRMEnsemble:
        return self.funcs[self.emotion_index]

    @property
    def reward_model(self) -> torch.nn.Module:
        """The emotion reward's (first) classifier: its labels define the batches' `emotion_labels`."""
        return self.emotion_reward.classifiers[0]

    def to(self, device) -> RewardSet:
        for func in self.funcs:
            if isinstance(func, torch.nn.Module):
                func.to(device)
        return self

    # ------------------------------------------------------------------ checks

    def check_policy(self, policy_config) -> None:
        """Every reward model reads the policy's speech tokens: the same codebook and the same S3 tokenizer (a v2
        reward model on a v3 policy has the same 6561 codes but other sounds). The place for any check of a reward
        model against the policy, before the first step."""
        speech_token_size = policy_config.speech_token_size
        for where, model in self.models:
            rm_vocab = getattr(model.config, "vocab_size", None)
            if rm_vocab != speech_token_size:
                raise ValueError(
                    f"Vocabulary mismatch: the policy's speech codebook has speech_token_size={speech_token_size} "
                    f"tokens but the {where} reads vocab_size={rm_vocab}. The reward model must be trained on the "
                    "same speech tokenizer as the policy (CosyVoice2 S3: 6561; testbed: its codebook_size)."
                )
            check_speech_tokenizer_match(policy_config, model.config, where)

    def max_positions(self) -> dict[str, int | None]:
        """The most speech tokens each reward model reads (`max_position_embeddings`), by its name."""
        return {where: getattr(model.config, "max_position_embeddings", None) for where, model in self.models}

    def loss_settings(self) -> list[tuple[str, Any]]:
        """The robust loss each emotion reward computes, as `(setting, value)` rows for logs and model cards."""
        rows = []
        for func, name in zip(self.funcs, self.names):
            rewards = getattr(func, "members", None) or ([func] if isinstance(func, EmotionReward) else [])
            distinct = {member.settings for member in rewards}
            for settings in sorted(distinct, key=lambda s: tuple(map(str, s.to_dict().values()))):
                prefix = f"reward {name!r}" if len(self.funcs) > 1 or len(distinct) > 1 else "reward"
                rows += [
                    (f"{prefix} label smoothing ε (Eq. 2)", settings.label_smoothing),
                    (f"{prefix} adversarial ε_adv (Eq. 4)", settings.adv_epsilon),
                    (f"{prefix} adversarial weight α (Eq. 5)", settings.adv_alpha),
                    (f"{prefix} adversarial radius rule", settings.adv_epsilon_scale),
                ]
        return rows

    # ------------------------------------------------------------------ computing

    def terms(
        self,
        func,
        name: str,
        token_probs: torch.Tensor,
        attention_mask: torch.Tensor,
        batch: Mapping[str, Any],
        outputs: Any | None = None,
    ) -> dict[str, torch.Tensor]:
        """One reward function's ``{"loss": (B,), ...}`` on the samples, its output checked (shape, dtype).

        A `RewardFunction` (e.g. `EmotionReward`: ``loss_emo``, ``loss_adv``, ``correct``, ``logits``) adds its
        diagnostics; a plain callable gives its loss only. A loss without gradient while gradients are on is
        reported once: it is logged but cannot train the policy.
        """
        if isinstance(func, RewardFunction):
            extra = {} if outputs is None else {"outputs": outputs}
            terms = dict(func.loss_terms(token_probs, attention_mask, batch, **extra))
            if "loss" not in terms:
                raise KeyError(
                    f"Reward function {name!r}: `loss_terms` returned no 'loss' entry (keys: {list(terms)}); return "
                    "the (B,) per-sample loss under 'loss'."
                )
        else:
            terms = {"loss": func(token_probs, attention_mask, batch)}
        loss = check_reward_loss(name, terms["loss"], token_probs.shape[0]).to(token_probs.device)
        # A function weighted 0 is there to be logged or to gate (e.g. ASRErrorRate): no gradient is its design.
        weight = self.weights[self.names.index(name)]
        if torch.is_grad_enabled() and not loss.requires_grad and weight != 0 and name not in self._warned_no_gradient:
            self._warned_no_gradient.add(name)
            logger.warning(
                f"Reward function {name!r} returned a loss without gradient: it is logged but does not train the "
                "policy. Compute it from `token_probs` (e.g. through a frozen model's input embeddings) for the "
                "gradient to reach the policy."
            )
        terms["loss"] = loss
        return terms

    def compute(
        self, token_probs: torch.Tensor, attention_mask: torch.Tensor, batch: Mapping[str, Any]
    ) -> list[dict[str, torch.Tensor]]:
        """Each reward function's terms on the same samples, in order.

        Rewards that read the same model (the heads of one multi-task RM) share one forward of it: its encoder runs
        once per step, whatever the number of its heads in use.
        """
        readers: dict[int, int] = {}
        for func in self.funcs:
            if getattr(func, "shares_forward", False):
                readers[id(func.model)] = readers.get(id(func.model), 0) + 1
        shared: dict[int, Any] = {}
        results = []
        for func, name in zip(self.funcs, self.names):
            outputs = None
            if getattr(func, "shares_forward", False) and readers[id(func.model)] > 1:
                key = id(func.model)
                if key not in shared:
                    shared[key] = func.model(input_token_probs=token_probs, attention_mask=attention_mask)
                outputs = shared[key]
            results.append(self.terms(func, name, token_probs, attention_mask, batch, outputs))
        return results

    def gate(self, reward_outputs: list[dict[str, torch.Tensor]]) -> torch.Tensor | None:
        """``g_b`` of the gating reward, detached; None without a gate."""
        if self.gate_index is None:
            return None
        gate_reward = -reward_outputs[self.gate_index]["loss"]
        return gate_weights(gate_reward, self.gate_threshold, self.gate_temperature)

    def loss(self, reward_outputs: list[dict[str, torch.Tensor]], gate: torch.Tensor | None) -> torch.Tensor:
        """``Σ_i w_i · mean_b loss_{i,b}``, the emotion loss multiplied per sample by the gate ``g_b``."""
        return weighted_reward_loss(
            [terms["loss"] for terms in reward_outputs],
            self.weights,
            gate=gate,
            gated_index=None if gate is None else self.emotion_index,
        )

    def weighted_reward(self, reward_outputs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Per-sample ``Σ_i w_i · r_{i,b}`` with ``r = -loss``, detached: what `reward` logs (TRL's convention)."""
        return weighted_rewards([-terms["loss"].detach().float() for terms in reward_outputs], self.weights)


def build_reward_set(
    reward_model=None,
    reward_funcs: Sequence[Callable | str | PreTrainedModel] | Callable | str | None = None,
    *,
    weights: Sequence[float] | None = None,
    gate: str | None = None,
    gate_threshold: float | None = None,
    gate_temperature: float = 0.0,
    aggregation: str = "mean",
    std_coef: float = 1.0,
    loss_overrides: Mapping[str, Any] | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
) -> RewardSet:
    """The reward functions of a run, in the order `weights` follows, each setting checked.

    Order: the emotion reward of `reward_model` (a model, a path, a list of them as an ensemble, or a ready
    `EmotionReward` / `EmotionRMEnsemble`), then `reward_funcs` in their order, a reward model among them expanded
    into its head rewards (`emotion` when it is the emotion reward, then `asr`, `quality`). `loss_overrides`
    (`RobustLossSettings` field -> value) replace the emotion reward models' own robust-loss settings.
    """
    overrides = dict(loss_overrides or {})
    if isinstance(reward_funcs, (str, torch.nn.Module)) or callable(reward_funcs):
        reward_funcs = [reward_funcs]
    funcs: list[Callable] = []
    names: list[str] = []

    def free_name(name: str) -> str:
        # A head's reward is named after its head; a later model's same head gets the first free suffix.
        if name not in names:
            return name
        suffix = 2
        while f"{name}_{suffix}" in names:
            suffix += 1
        return f"{name}_{suffix}"

    def add(func) -> None:
        funcs.append(func)
        names.append(reward_function_name(func))

    def emotion_reward(model: torch.nn.Module, name: str) -> EmotionReward:
        return EmotionReward(model, name=name, **overrides)

    if isinstance(reward_model, (EmotionReward, EmotionRMEnsemble)):
        add(reward_model)
    elif isinstance(reward_model, (list, tuple)):
        if not reward_model:
            raise ValueError("`reward_model` is an empty list; give one emotion reward model, or several.")
        members = [
            load_reward_model(member, init_kwargs, f"reward_model[{k}]") for k, member in enumerate(reward_model)
        ]
        add(EmotionRMEnsemble(members, aggregation=aggregation, std_coef=std_coef, name="emotion", **overrides))
    elif reward_model is not None:
        # Only the emotion head of a multi-task model given here: its other heads are rewards once it is also (or
        # only) in `reward_funcs`.
        add(emotion_reward(load_reward_model(reward_model, init_kwargs, "reward_model"), "emotion"))

    for position, func in enumerate(reward_funcs or []):
        where = f"reward_funcs[{position}]"
        if isinstance(func, (str, PreTrainedModel)):
            model = load_reward_model(func, init_kwargs, where)
            tasks = model_tasks(model)
            has_emotion_reward = any(isinstance(f, (EmotionReward, EmotionRMEnsemble)) for f in funcs)
            # A multi-task model's emotion head is the emotion reward only while there is none; an emotion
            # classifier alone (no other head) is always an extra emotion reward.
            use_emotion_head = "emotion" in tasks and (not has_emotion_reward or tasks == ["emotion"])
            heads = ([emotion_reward(model, "emotion")] if use_emotion_head else []) + task_rewards(model)
            if not heads:
                raise TypeError(
                    f"{where} ({type(model).__name__}) has no head a reward is defined for (tasks={tasks}); give an "
                    "emotion classifier or a multi-task reward model (RobustSERForMultiTaskReward)."
                )
            for head in heads:
                head.name = free_name(head.name)
                add(head)
        elif callable(func):
            add(func)
        else:
            raise TypeError(
                f"{where} is a {type(func).__name__}; a reward function is a callable "
                "`f(token_probs, attention_mask, batch) -> (B,) loss`, a reward model or its path."
            )

    emotion_indices = [i for i, func in enumerate(funcs) if isinstance(func, (EmotionReward, EmotionRMEnsemble))]
    if not emotion_indices:
        raise ValueError(
            f"DiffROTrainer needs an emotion reward (the reward functions are {names}): pass `reward_model` (an "
            "emotion reward model, its path, or a list of them), or put an emotion reward model, a multi-task reward "
            "model with an emotion head, or an EmotionReward / EmotionRMEnsemble in `reward_funcs`."
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"Several reward functions are named {duplicates} (all: {names}); give each its own `name`: it names its "
            "log (rewards/<name>/mean, /std) and DiffROConfig.reward_gate."
        )
    for func, name in zip(funcs, names):
        if not isinstance(func, torch.nn.Module):
            _check_reward_signature(func, name)
    weights = [1.0] * len(funcs) if weights is None else list(weights)
    if len(weights) != len(funcs):
        raise ValueError(
            f"reward_weights has {len(weights)} entries {weights} but there are {len(funcs)} reward functions {names} "
            "(the emotion reward of reward_model first, then reward_funcs, a reward model expanded into one reward "
            "per head); give one weight per reward function, in this order."
        )
    emotion_index = emotion_indices[0]
    gate_index = None
    if gate is not None:
        if gate not in names:
            raise ValueError(
                f"reward_gate={gate!r} names no reward function; the reward functions are {names}. Name one of them "
                "(e.g. 'asr', from a multi-task reward model with an ASR head in reward_funcs)."
            )
        gate_index = names.index(gate)
        if gate_index == emotion_index:
            raise ValueError(
                f"reward_gate={gate!r} is the emotion reward itself, which the gate scales; name another reward "
                f"function ({[name for name in names if name != gate]})."
            )

    # Every frozen model a reward function reads, once, named for the error messages.
    models: list[tuple[str, torch.nn.Module]] = []
    seen: set[int] = set()
    for index, (func, name) in enumerate(zip(funcs, names)):
        frozen = func.frozen_models if isinstance(func, RewardFunction) else []
        for k, model in enumerate(frozen):
            if id(model) in seen:
                continue
            seen.add(id(model))
            if is_zero3_partitioned(model):
                raise ValueError(
                    f"The reward function {name!r} holds a ZeRO-3 partitioned model; pass the model (or its path) as "
                    "`reward_model` / in `reward_funcs` instead, so that the trainer keeps a full frozen copy on "
                    "every rank."
                )
            if index == emotion_index and reward_model is not None and len(frozen) == 1:
                where = "reward_model"
            else:
                where = f"reward function {name!r}" + (f" (model {k})" if len(frozen) > 1 else "")
            models.append((where, model))
    return RewardSet(funcs, names, weights, emotion_index, gate_index, gate_threshold, gate_temperature, models)
