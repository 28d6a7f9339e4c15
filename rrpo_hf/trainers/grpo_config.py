"""Training arguments of GRPO for the CosyVoice2 / CosyVoice3 LM (`CosyVoiceGRPOTrainer`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ops import GRPO_LOSS_TYPES, GRPO_REWARD_SCALINGS
from .diffro_config import DiffROConfig


@dataclass
class CosyVoiceGRPOConfig(DiffROConfig):
    r"""
    Configuration class for the [`CosyVoiceGRPOTrainer`]: TRL's `GRPOConfig` names and defaults for GRPO's own
    settings (`num_generations`, `loss_type`, `beta`, `epsilon`, `epsilon_high`, `scale_rewards`, `num_iterations`,
    `mask_truncated_completions`, `max_completion_length`, `learning_rate`), on top of [`DiffROConfig`]'s policy,
    sampling, reward and logging settings (`reward_weights`, `reward_gate`, `log_completions`, `top_p`, `top_k`,
    `max_new_tokens`, ...), which GRPO reads the same way. The Gumbel-Softmax settings of DiffRO are not used.

    `per_device_train_batch_size` counts completions, as in TRL: each micro-batch holds
    `per_device_train_batch_size / num_generations` prompts, each generated `num_generations` times with the LM's RAS
    sampling (docs/grpo.md).
    """

    learning_rate: float = field(
        default=1e-6, metadata={"help": "Initial AdamW learning rate (TRL's GRPO default, 1e-6)."}
    )
    rollout: str = field(
        default="online",
        metadata={
            "help": "GRPO samples its completions from the current policy: 'online' only.",
            "choices": ["online"],
        },
    )
    num_generations: int = field(
        default=8,
        metadata={
            "help": "Completions sampled per prompt, G (8). per_device_train_batch_size (completions per device) must "
            "be a multiple of it: each group's advantages are computed within one micro-batch."
        },
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "Normalisation of the token losses, TRL's: 'dapo' (default; sum over the tokens of the batch "
            "of all processes / their count per process), 'grpo' (mean of per-completion token means), 'bnpo' (local "
            "token mean), 'dr_grpo' (sum / (N · max_completion_length)).",
            "choices": list(GRPO_LOSS_TYPES),
        },
    )
    beta: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the per-token k3 KL estimate to the reference policy (TRL's default 0.0: no KL term; "
            "the reference is then built only for eval_kl)."
        },
    )
    epsilon: float = field(default=0.2, metadata={"help": "Lower clipping range ε of the ratio (0.2)."})
    epsilon_high: float | None = field(
        default=None,
        metadata={"help": "Upper clipping range (None: epsilon; DAPO recommends 0.28)."},
    )
    scale_rewards: str = field(
        default="group",
        metadata={
            "help": "Divide the centred rewards by the std of each group ('group', default), of the batch ('batch'), "
            "or not at all ('none', Dr. GRPO).",
            "choices": list(GRPO_REWARD_SCALINGS),
        },
    )
    num_iterations: int = field(
        default=1,
        metadata={"help": "Optimisation passes per generation batch, μ (1; only 1 is supported: on-policy GRPO)."},
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={"help": "Leave completions cut at the length cap (no stop token drawn) out of the loss (False)."},
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={
            "help": "The constant of loss_type='dr_grpo' (None: max_new_tokens, else the reward models' position "
            "limit). Generation's own cap is max_new_tokens / max_len_ratio, as for DiffRO."
        },
    )

    def __post_init__(self):
        if self.scale_rewards is True:
            self.scale_rewards = "group"
        elif self.scale_rewards is False:
            self.scale_rewards = "none"
        super().__post_init__()
        if self.rollout != "online":
            raise ValueError(
                f"GRPO samples its completions from the policy: rollout must be 'online', got {self.rollout!r}."
            )
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(
                f"loss_type must be one of {list(GRPO_LOSS_TYPES)} (the clipped-surrogate losses), got "
                f"{self.loss_type!r}."
            )
        if self.scale_rewards not in GRPO_REWARD_SCALINGS:
            raise ValueError(f"scale_rewards must be one of {list(GRPO_REWARD_SCALINGS)}, got {self.scale_rewards!r}.")
        if self.reward_gate is not None:
            raise ValueError(
                f"reward_gate={self.reward_gate!r}: GRPO has no gate (it scales DiffRO's emotion loss, and a "
                "gated-off reward would look perfect to the advantages). Leave reward_gate unset, or fold the "
                "condition into a reward function."
            )
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (advantages compare completions of one prompt), got "
                f"{self.num_generations}."
            )
        if self.per_device_train_batch_size % self.num_generations != 0:
            raise ValueError(
                f"per_device_train_batch_size={self.per_device_train_batch_size} counts completions and must be a "
                f"multiple of num_generations={self.num_generations} (e.g. per_device_train_batch_size="
                f"{self.num_generations * max(1, self.per_device_train_batch_size // self.num_generations)})."
            )
        if self.num_iterations != 1:
            raise ValueError(
                f"num_iterations={self.num_iterations} is not supported: each micro-batch generates its own "
                "completions and takes one step on them (num_iterations=1, TRL's default)."
            )
        if self.epsilon < 0 or (self.epsilon_high is not None and self.epsilon_high < 0):
            raise ValueError(f"epsilon and epsilon_high must be >= 0, got {self.epsilon} and {self.epsilon_high}.")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1 or None, got {self.max_completion_length}.")

    @property
    def epsilon_low(self) -> float:
        return self.epsilon

    @property
    def epsilon_upper(self) -> float:
        """The upper clipping range: `epsilon_high`, or `epsilon` when it is unset."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high
