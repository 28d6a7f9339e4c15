"""What every audit measurement reads from a reward model: its saved robust-loss settings, the target's log-probability
of token sequences, and the scale of its high-level embeddings h'.

A reward model here is a speech-token emotion classifier with ``config.id2label``, ``config.vocab_size``,
``config.pad_token_id``, a ``forward(input_ids | input_token_probs, attention_mask)`` that returns ``logits`` and
``last_hidden_state`` (h'), and ``classify(h', attention_mask)``: [`RobustSERForAudioClassification`], or a
[`RobustSERForMultiTaskReward`] with an emotion head.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..data.labels import emotion_key, emotion_label_ids
from ..data.padding import right_pad
from ..ops.adversarial import adversarial_radius
from ..ops.robust_loss import RobustLossSettings
from ..rewards.builder import load_reward_model
from ..rewards.emotion import reward_loss_settings


TokenLists = Sequence[Sequence[int]]


def rm_loss_settings(model: torch.nn.Module) -> RobustLossSettings:
    """The robust-loss settings a reward model was trained with (ε of Eq. 2, ε_adv and its radius rule of Eq. 4, α of
    Eq. 5): its `RobustLossSettings` as saved in its config (`config.robust_loss`), read as the reward built from it
    reads them (`rewards.emotion.reward_loss_settings`; the paper's values for a config without them). The audit
    reads them only through this function."""
    return reward_loss_settings(model)


def load_audit_model(path: str, device: str | torch.device = "cpu", trust_remote_code: bool = False):
    """A reward-model folder (or Hub id) loaded as `DiffROTrainer` loads a path (`rewards.load_reward_model`: frozen,
    `AutoModel` for a multi-task folder), checked to be an emotion classifier the audit can read, on ``device``."""
    model = load_reward_model(path, {"trust_remote_code": True} if trust_remote_code else None, name=str(path))
    check_reward_model(model, path)
    return model.to(device).eval()


def check_reward_model(model, name: str = "reward model") -> None:
    """Raise, naming what is missing and the fix, unless ``model`` is an emotion classifier the audit can read."""
    config = getattr(model, "config", None)
    missing = [attr for attr in ("classify",) if not hasattr(model, attr)]
    missing += [
        f"config.{key}" for key in ("id2label", "vocab_size", "pad_token_id") if not getattr(config, key, None)
    ]
    if missing:
        raise TypeError(
            f"{name} ({type(model).__name__}) lacks {missing}; the audit needs a speech-token emotion classifier "
            "(RobustSERForAudioClassification, or RobustSERForMultiTaskReward with an emotion head)."
        )
    tasks = getattr(config, "tasks", None)
    if tasks is not None and "emotion" not in tasks:
        raise ValueError(
            f"{name} is a multi-task reward model without an emotion head (tasks={list(tasks)}); the audit scores "
            "the emotion reward. Train it with --tasks emotion,... (examples/train_rm.py)."
        )


def target_label_id(model, target_emotion: str) -> int:
    """The model's label id of ``target_emotion`` (any alias of a canonical emotion, or the model's own name)."""
    lookup = emotion_label_ids({int(k): str(v) for k, v in model.config.id2label.items()})
    key = emotion_key(target_emotion)
    if key not in lookup:
        raise ValueError(
            f"The reward model has no label for the target emotion {target_emotion!r}; its labels are "
            f"{sorted(lookup)}. Pass --target_emotion with one of them."
        )
    return lookup[key]


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def frozen_eval(model) -> Iterator[None]:
    """Eval mode and frozen parameters while the audit runs (input gradients only); the caller's state after."""
    was_training = model.training
    flags = [parameter.requires_grad for parameter in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)
        model.train(was_training)


def pad(model, token_lists: TokenLists) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` on the model's device, padded with its pad id."""
    return right_pad([list(tokens) for tokens in token_lists], model.config.pad_token_id, model_device(model))


def log_prob_of(logits: torch.Tensor, label: int) -> torch.Tensor:
    """``log P(label)`` per row, in float32."""
    return torch.log_softmax(logits.float(), dim=-1)[:, label]


@torch.no_grad()
def score_tokens(
    model, token_lists: TokenLists, label: int, batch_size: int = 64, settings: RobustLossSettings | None = None
) -> dict[str, torch.Tensor]:
    """Per sequence: ``log_prob`` = log P_RM(label | tokens) and the L2 norms of h': ``hidden_norm`` over the whole
    utterance (every valid frame and dimension, the norm Eq. 4's δ is measured in) and ``frame_norm``, the mean over
    frames of each frame's norm; with ``settings``, also ``adv_radius``, the radius ‖δ‖ of Eq. 4 by their rule
    (`ops.adversarial.adversarial_radius`). CPU tensors."""
    log_probs, utterance_norms, frame_norms, radii = [], [], [], []
    for start in range(0, len(token_lists), batch_size):
        ids, mask = pad(model, token_lists[start : start + batch_size])
        outputs = model(input_ids=ids, attention_mask=mask)
        log_probs.append(log_prob_of(outputs.logits, label).cpu())
        hidden = outputs.last_hidden_state.float() * mask.unsqueeze(-1)
        per_frame = hidden.pow(2).sum(dim=-1).sqrt()
        utterance_norms.append(per_frame.pow(2).sum(dim=1).sqrt().cpu())
        frame_norms.append((per_frame.sum(dim=1) / mask.sum(dim=1)).cpu())
        if settings is not None:
            radius = adversarial_radius(
                outputs.last_hidden_state, mask, settings.adv_epsilon, settings.adv_epsilon_scale
            )
            radii.append(torch.as_tensor(radius, dtype=torch.float32).expand(len(ids)).cpu())
    if not log_probs:
        empty = torch.zeros(0)
        return {"log_prob": empty, "hidden_norm": empty, "frame_norm": empty} | (
            {} if settings is None else {"adv_radius": empty}
        )
    scores = {
        "log_prob": torch.cat(log_probs),
        "hidden_norm": torch.cat(utterance_norms),
        "frame_norm": torch.cat(frame_norms),
    }
    if settings is not None:
        scores["adv_radius"] = torch.cat(radii)
    return scores


def hidden_state_norms(model, token_lists: TokenLists, batch_size: int = 64) -> dict[str, float]:
    """Mean L2 norm of h' per utterance and per frame over ``token_lists``, the model's saved ``adv_epsilon``, and the
    radius ‖δ‖ its rule gives (ε_adv itself when absolute, ε_adv times the RMS frame norm when relative) over the
    per-utterance norm, averaged over utterances: how far Eq. 4 pushes h', relative to its scale."""
    settings = rm_loss_settings(model)
    with frozen_eval(model):
        scores = score_tokens(model, token_lists, 0, batch_size, settings)
    return {
        "hidden_norm_utterance": float(scores["hidden_norm"].mean()),
        "hidden_norm_frame": float(scores["frame_norm"].mean()),
        "adv_epsilon": settings.adv_epsilon,
        "adv_epsilon_over_hidden_norm": float((scores["adv_radius"] / scores["hidden_norm"].clamp_min(1e-12)).mean()),
    }


__all__ = [
    "check_reward_model",
    "frozen_eval",
    "hidden_state_norms",
    "load_audit_model",
    "log_prob_of",
    "rm_loss_settings",
    "score_tokens",
    "target_label_id",
]
