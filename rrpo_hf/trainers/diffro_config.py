"""Training arguments of DiffRO / RRPO policy optimisation (stage 2 of RRPO)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..ops import REWARD_AGGREGATIONS, check_robust_loss_settings
from .base_config import _BaseConfig


@dataclass
class DiffROConfig(_BaseConfig):
    r"""
    Configuration class for the [`DiffROTrainer`].

    Only the parameters specific to differentiable reward optimisation are listed here; see
    [`~transformers.TrainingArguments`] for the rest. Defaults are the papers' (DiffRO, arXiv 2507.05911; RRPO,
    arXiv 2512.04552): Gumbel temperature 1.0, token-level KL weight β = 0.1, learning rate 1e-5. The reward's robust
    loss (label smoothing ε, adversarial ε_adv, α, radius rule) is the reward model's own: the settings it was trained
    with, saved in its config.

    DiffRO and RRPO differ in the reward model alone:

    | method | reward model | reward |
    |---|---|---|
    | DiffRO baseline | vanilla (`recipes/toy/rm_base.yaml`: ε = 0, α = 0) | `-L_emo`, its plain cross-entropy |
    | RRPO            | robust (`recipes/toy/rm_robust.yaml`: ε = 0.1, ε_adv = 0.5, α = 0.5) | `-L_ser` of Eq. 5 |

    `reward_label_smoothing`, `reward_adv_epsilon`, `reward_adv_alpha` and `reward_adv_epsilon_scale` override the
    model's values (logged once, naming both values); the policy's model card records the values used.

    Parameters:
        > Rollout

        rollout (`str`, *optional*, defaults to `"offline"`):
            `"offline"`: teacher-force the dataset's `speech_tokens` (DiffRO's setting; no generation cost).
            `"online"`: generate the tokens with the current policy at every step (no gradient through sampling).
        top_p, top_k, win_size, tau_r (*optional*, defaults to `0.8`, `25`, `10`, `0.1`):
            CosyVoice2's repetition-aware sampling, for online rollouts and evaluation.
        ras_exclude_repeated (`bool`, *optional*, defaults to `True`):
            Upstream's re-draw rule (the repeated id is excluded); `False` re-draws including it (pre-2026 rule).
            Passed to `generate_speech_tokens(exclude_repeated=...)`.
        min_len_ratio, max_len_ratio (`float`, *optional*, defaults to `2.0`, `20.0`):
            Generated length bounds as multiples of the target text tokens (CosyVoice2's rule).
        max_new_tokens (`int` or `None`, *optional*, defaults to `None`):
            Hard cap on generated tokens per sample (overrides `max_len_ratio`).

        > Gumbel-Softmax

        gumbel_temperature (`float`, *optional*, defaults to `1.0`):
            τ of the relaxation `softmax((z + g)/τ)`.
        straight_through (`bool`, *optional*, defaults to `True`):
            One-hot samples in the forward pass, relaxed gradient in the backward pass. `False` feeds the relaxed
            samples to the reward model.
        gumbel_sampling (`str`, *optional*, defaults to `"full"`):
            Which distribution the Gumbel sample is drawn from. `"full"`: the policy's full softmax over the codebook,
            as DiffRO describes its Gumbel-Softmax sample of the predicted token distribution. `"rollout"`: only the
            ids the rollout's nucleus sampling can draw (`top_k`, `top_p`; `ops.nucleus_logits`), renormalised, so
            the reward reads the kind of token generation emits rather than tail tokens it rarely does. τ
            (`gumbel_temperature`) shapes the relaxation in both; it does not change which id is drawn.

        > Objective

        beta (`float`, *optional*, defaults to `0.1`):
            Weight of the token-level KL(π_θ‖π_ref). `0` skips the reference model entirely (unless `eval_kl`).
        eval_kl (`bool`, *optional*, defaults to `False`):
            `evaluate` also reports `kl_to_reference`, the mean over the evaluation samples of their sequence-level
            KL(π_θ‖π_ref) (the policy teacher-forced on each sample, against the reference on the same tokens), and
            `sqrt_kl_to_reference`, its square root: the x-axis of over-optimisation curves (Gao et al., 2022). The
            reference is where training started, so it is built even with `beta = 0`, as for `beta > 0`: a frozen
            copy for full fine-tuning, the disabled adapter for a fresh LoRA, a frozen "ref" adapter for a trained one.
        reward_label_smoothing (`float` or `None`, *optional*, defaults to `None`):
            ε of Eq. 2 in the reward loss L_emo. `None`: the reward model's own (`config.label_smoothing`).
        reward_adv_epsilon (`float` or `None`, *optional*, defaults to `None`):
            ε_adv of Eq. 4 (the radius of the perturbation of the RM's h'). `None`: the reward model's own.
        reward_adv_alpha (`float` or `None`, *optional*, defaults to `None`):
            α of Eq. 5, `L_ser = L_emo + α·L_adv`; `0` drops the adversarial term. `None`: the reward model's own.
        reward_adv_epsilon_scale (`str` or `None`, *optional*, defaults to `None`):
            Radius rule of Eq. 4, `"absolute"` or `"relative"` (`‖δ‖ = ε_adv·‖h'‖/√T`, the RMS frame norm of h' over
            the T valid frames; ε_adv = 1.0 recommended with it, docs/audit.md). `None`: the reward model's own.

        > Several rewards (docs/architecture.md, "Several rewards")

        reward_weights (`list[float]` or `None`, *optional*, defaults to `None`):
            Weight `w_i` of each reward function in `loss = Σ_i w_i · mean_b loss_{i,b} + β·KL`, in the trainer's
            order: the emotion reward (from `reward_model`) first, then `reward_funcs`. `None`: 1.0 each. A list of
            another length than the reward functions fails at init.
        reward_aggregation (`str`, *optional*, defaults to `"mean"`):
            How a list of emotion reward models (`reward_model=[...]`) combines their per-sample rewards
            `r_k = -L_ser,k`: `"mean"`, `"min"` (worst case) or `"mean_minus_std"` (`mean - λ·std`).
        reward_ensemble_std_coef (`float`, *optional*, defaults to `1.0`):
            λ of `"mean_minus_std"`.
        reward_gate (`str` or `None`, *optional*, defaults to `None`):
            Name of the reward function (e.g. `"asr"`) whose per-sample reward `r_b` gates the emotion loss:
            `L_emo,b` is multiplied by the detached `g_b` (below), so the style gradient flows only for samples
            that pass the gate while every other reward still pushes. `None`: no gate.
        reward_gate_threshold (`float` or `None`, *optional*, defaults to `None`):
            τ of the gate, in the gating reward's units (rewards are `-loss`, so usually negative); required when
            `reward_gate` is set.
        reward_gate_temperature (`float`, *optional*, defaults to `0.0`):
            T of `g_b = sigmoid((r_b - τ)/T)`; `0` gives the hard step `g_b = 1[r_b >= τ]`.

        > Data

        instruction_template (`str`, *optional*, defaults to `"en"`):
            Emotion instruction template ("en" = DiffRO's "Your emotion is E", "zh", or a format string).
        emotion_column, text_column, speech_column (`str`):
            Dataset columns of the target emotion, the text to speak and the (offline) speech tokens.
        max_text_length (`int` or `None`, *optional*, defaults to `None`):
            Truncate prompt text ids to this many tokens.
        max_speech_length (`int` or `None`, *optional*, defaults to `None`):
            The most speech tokens the reward model reads per sample. Offline rows longer than this are truncated to
            it; generated speech (online rollouts, evaluation) stops at it. `None`: the reward model's (and judge's)
            `max_position_embeddings`; then an offline row longer than that fails before training, naming the row.
            Generation is always capped at what the reward model and judge can read (a warning says so).

        > Models

        model_init_kwargs, reward_model_init_kwargs (`dict` or `None`):
            Keyword arguments for `from_pretrained` when `model` / `reward_model` are paths.
        eval_seed (`int`, *optional*, defaults to `1234`):
            Seed of the sampling during evaluation (the same prompts get comparable samples at every evaluation).

        > Logging (as TRL's `GRPOConfig`; docs/completions.md)

        log_completions (`bool`, *optional*, defaults to `False`):
            Every `logging_steps` and at every evaluation, print the samples behind the logged numbers (prompt text,
            target emotion, sampled speech tokens with their count, each reward function's value, the judge and
            scorer values) as a `rich` table, write them to `output_dir/completions/completions_<step>.parquet`
            (`eval_completions_<step>.parquet` at evaluation) and log them as a table to wandb / trackio when they are
            in `report_to`. At a training log the trainer's `eval_scorers` also score that step's samples.
        num_completions_to_print (`int` or `None`, *optional*, defaults to `None`):
            Rows printed (and synthesised, with a `token2wav`); `None`: all of them. Every row is written.

        > Saving

        save_merged (`bool`, *optional*, defaults to `True`):
            With a LoRA adapter, the final save (and `push_to_hub`) writes the merged model, loadable with
            `CosyVoice2LM.from_pretrained`; `False` writes the adapter instead (load it with PEFT on the base model
            its `adapter_config.json` names). A folder never holds both; checkpoints always hold the adapter.
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs", "reward_model_init_kwargs"]

    learning_rate: float = field(
        default=1e-5, metadata={"help": "Initial AdamW learning rate (DiffRO and RRPO fine-tune the LM at 1e-5)."}
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every X update steps (an integer, or a float in [0, 1) as a ratio of total steps)."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep dataset columns the policy's forward does not name (the collator needs them)."},
    )

    rollout: str = field(
        default="offline",
        metadata={
            "help": "Where the tokens u come from: 'offline' = the dataset's speech tokens (teacher forcing), "
            "'online' = generated by the current policy at every step.",
            "choices": ["offline", "online"],
        },
    )
    top_p: float = field(
        default=0.8, metadata={"help": "Nucleus mass of repetition-aware sampling (CosyVoice2: 0.8)."}
    )
    top_k: int = field(default=25, metadata={"help": "Maximum nucleus candidates of repetition-aware sampling (25)."})
    win_size: int = field(default=10, metadata={"help": "Window of recent tokens checked for repetitions (10)."})
    tau_r: float = field(
        default=0.1, metadata={"help": "Repetition threshold ratio: re-draw when count >= win_size * tau_r (0.1)."}
    )
    ras_exclude_repeated: bool = field(
        default=True,
        metadata={
            "help": "Exclude the repeated id from the repetition-aware re-draw (CosyVoice since Feb 2026). False "
            "keeps the older rule, whose re-draw may pick it again, for comparing with older releases."
        },
    )
    min_len_ratio: float = field(
        default=2.0, metadata={"help": "Minimum generated length, as a multiple of the target text tokens (2.0)."}
    )
    max_len_ratio: float = field(
        default=20.0, metadata={"help": "Maximum generated length, as a multiple of the target text tokens (20.0)."}
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Hard cap on generated speech tokens per sample (overrides max_len_ratio)."}
    )
    gumbel_temperature: float = field(
        default=1.0, metadata={"help": "Temperature τ of the Gumbel-Softmax relaxation (DiffRO: 1.0)."}
    )
    straight_through: bool = field(
        default=True,
        metadata={"help": "Straight-through estimator: one-hot samples forward, relaxed gradient backward."},
    )
    gumbel_sampling: str = field(
        default="full",
        metadata={
            "help": "Distribution of the Gumbel sample the reward reads. 'full' (default, DiffRO's description: a "
            "Gumbel-Softmax sample of the LM's predicted token distribution): softmax over the whole codebook, tail "
            "ids included, at temperature 1. 'rollout': the nucleus the rollout's sampling draws from (top_k ids at "
            "most, mass top_p, CosyVoice2's rule; the repetition-aware re-draw is not modelled), renormalised: the "
            "reward reads tokens of the kind generation emits, and the relaxation's gradient reaches only those "
            "logits. gumbel_temperature is the relaxation's τ in both modes; the drawn id does not depend on it.",
            "choices": ["full", "rollout"],
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "help": "Weight β of the token-level KL(pi_theta || pi_ref) (DiffRO: 0.1). 0 drops the reference "
            "(unless eval_kl)."
        },
    )
    eval_kl: bool = field(
        default=False,
        metadata={
            "help": "Evaluation also reports kl_to_reference (mean sequence KL(pi_theta || pi_ref) of the evaluation "
            "samples) and sqrt_kl_to_reference, for over-optimisation curves. Builds the reference policy (where "
            "training started) even with beta = 0."
        },
    )
    reward_label_smoothing: float | None = field(
        default=None,
        metadata={
            "help": "Label smoothing ε of Eq. 2 in the reward loss L_emo. Default None: the reward model's own (the "
            "value it was trained with, saved in its config); a value overrides it."
        },
    )
    reward_adv_epsilon: float | None = field(
        default=None,
        metadata={
            "help": "Adversarial radius ε_adv of Eq. 4 on the RM's h'. Default None: the reward model's own; a value "
            "overrides it."
        },
    )
    reward_adv_alpha: float | None = field(
        default=None,
        metadata={
            "help": "Weight α of L_adv in L_ser = L_emo + α·L_adv. Default None: the reward model's own (a vanilla "
            "RM: 0, DiffRO; a robust RM: RRPO); a value overrides it, 0 drops the adversarial term."
        },
    )
    reward_adv_epsilon_scale: str | None = field(
        default=None,
        metadata={
            "help": "Radius rule of Eq. 4: 'absolute' (‖δ‖ = ε_adv) or 'relative' (‖δ‖ = ε_adv·‖h'‖/√T, ε_adv times "
            "the RMS frame norm of h' over the T valid frames; ε_adv = 1.0 is the recommended value with it, one "
            "frame's norm ≈ one token edit's shift of h', docs/audit.md). Default None: the reward model's own."
        },
    )
    reward_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Weight of each reward function's mean loss in the total loss, in order: the emotion reward "
            "(from reward_model) first, then reward_funcs. Default None: 1.0 for each. Its length must equal the "
            "number of reward functions."
        },
    )
    reward_aggregation: str = field(
        default="mean",
        metadata={
            "help": "How a list of emotion reward models combines their per-sample rewards r_k = -L_ser,k: 'mean' "
            "(default), 'min' (worst case) or 'mean_minus_std' (mean - λ·std, λ = reward_ensemble_std_coef).",
            "choices": ["mean", "min", "mean_minus_std"],
        },
    )
    reward_ensemble_std_coef: float = field(
        default=1.0,
        metadata={"help": "λ of reward_aggregation='mean_minus_std' (default 1.0); must be >= 0."},
    )
    reward_gate: str | None = field(
        default=None,
        metadata={
            "help": "Name of the reward function (e.g. 'asr') whose per-sample reward gates the emotion loss: the "
            "style gradient flows only for samples above reward_gate_threshold. Default None: no gate."
        },
    )
    reward_gate_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Threshold τ of the gate, in the gating reward's units (reward = -loss, usually negative). "
            "Default None; required when reward_gate is set."
        },
    )
    reward_gate_temperature: float = field(
        default=0.0,
        metadata={
            "help": "Temperature T of the gate sigmoid((r - τ)/T). Default 0.0: the hard step 1[r >= τ]; must be >= 0."
        },
    )
    instruction_template: str = field(
        default="en",
        metadata={"help": "Emotion instruction template: 'en' (\"Your emotion is E\"), 'zh', or a format string."},
    )
    emotion_column: str = field(
        default="emotion", metadata={"help": "Dataset column with the target emotion (ClassLabel or names)."}
    )
    text_column: str = field(default="text", metadata={"help": "Dataset column with the text to speak."})
    speech_column: str = field(
        default="speech_tokens", metadata={"help": "Dataset column with speech tokens (needed for offline rollouts)."}
    )
    max_text_length: int | None = field(
        default=None, metadata={"help": "Truncate prompt text ids to this many tokens (None: keep them whole)."}
    )
    max_speech_length: int | None = field(
        default=None,
        metadata={
            "help": "Most speech tokens the reward model reads per sample: longer offline rows are truncated to it "
            "and generation (online rollouts, evaluation) stops at it. None: the reward model's (and judge's) "
            "max_position_embeddings, and a longer offline row fails before training. Generation is always capped at "
            "what the reward model can read."
        },
    )
    eval_seed: int = field(
        default=1234, metadata={"help": "Seed of the sampling used during evaluation (comparable across evals)."}
    )
    log_completions: bool = field(
        default=False,
        metadata={
            "help": "Every logging step and evaluation, print the sampled completions with their rewards and scores, "
            "write them to output_dir/completions/*.parquet and log them as a table to wandb/trackio (False)."
        },
    )
    num_completions_to_print: int | None = field(
        default=None,
        metadata={"help": "Completions printed (and synthesised with a token2wav) per table; None: all (None)."},
    )
    save_merged: bool = field(
        default=True,
        metadata={
            "help": "With a LoRA adapter, `save_model` and `push_to_hub` write the merged model (a plain "
            "CosyVoice2LM); False: the adapter, whose adapter_config.json names the base model. Never both in one "
            "folder; checkpoints always hold the adapter."
        },
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModel.from_pretrained` (a CosyVoice2LM or CosyVoice3LM folder) when "
            "`model` is a path (JSON)."
        },
    )
    reward_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForAudioClassification.from_pretrained` when `reward_model` is "
            "a path (JSON)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.rollout not in ("offline", "online"):
            raise ValueError(f"rollout must be 'offline' or 'online', got {self.rollout!r}.")
        if self.gumbel_temperature <= 0:
            raise ValueError(f"gumbel_temperature must be positive, got {self.gumbel_temperature}.")
        if self.gumbel_sampling not in ("full", "rollout"):
            raise ValueError(f"gumbel_sampling must be 'full' or 'rollout', got {self.gumbel_sampling!r}.")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0 (0 disables the KL term), got {self.beta}.")
        # The bounds of RobustLossSettings, on the values given (the others are the reward model's, checked when
        # the reward is built); an unset ε_adv counts as valid, an unset α as 0.
        overrides = self.reward_loss_overrides
        check_robust_loss_settings(
            overrides.get("label_smoothing", 0.0),
            overrides.get("adv_epsilon", 1.0),
            overrides.get("adv_alpha", 0.0),
            overrides.get("adv_epsilon_scale", "absolute"),
            prefix="reward_",
        )
        if self.reward_weights is not None:
            weights = [self.reward_weights] if isinstance(self.reward_weights, (int, float)) else self.reward_weights
            try:
                weights = [float(weight) for weight in weights]
            except (TypeError, ValueError):
                raise ValueError(f"reward_weights must be a list of numbers, got {self.reward_weights!r}.") from None
            if not weights or not all(math.isfinite(weight) for weight in weights):
                raise ValueError(f"reward_weights must be a non-empty list of finite numbers, got {weights}.")
            self.reward_weights = weights
        if self.reward_aggregation not in REWARD_AGGREGATIONS:
            raise ValueError(
                f"reward_aggregation must be one of {list(REWARD_AGGREGATIONS)}, got {self.reward_aggregation!r}."
            )
        if self.reward_ensemble_std_coef < 0:
            raise ValueError(
                f"reward_ensemble_std_coef must be >= 0 (a negative λ rewards disagreement between the reward "
                f"models), got {self.reward_ensemble_std_coef}."
            )
        if self.reward_gate_temperature < 0:
            raise ValueError(
                f"reward_gate_temperature must be >= 0 (0 = hard step), got {self.reward_gate_temperature}."
            )
        if self.reward_gate is not None and self.reward_gate_threshold is None:
            raise ValueError(
                f"reward_gate={self.reward_gate!r} needs reward_gate_threshold (τ, in that reward's units: the "
                "emotion loss counts for samples whose gating reward is >= τ)."
            )
        if not 0.0 < self.min_len_ratio <= self.max_len_ratio:
            raise ValueError(
                f"Need 0 < min_len_ratio <= max_len_ratio, got {self.min_len_ratio} and {self.max_len_ratio}."
            )
        if self.max_speech_length is not None and self.max_speech_length < 1:
            raise ValueError(f"max_speech_length must be >= 1 or None, got {self.max_speech_length}.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {self.max_new_tokens}.")
        if self.num_completions_to_print is not None and self.num_completions_to_print < 1:
            raise ValueError(f"num_completions_to_print must be >= 1 or None, got {self.num_completions_to_print}.")
        if self.label_smoothing_factor != 0:
            raise ValueError(
                "DiffROConfig applies its own reward label smoothing: set `reward_label_smoothing` and leave "
                "`label_smoothing_factor` at 0."
            )

    @property
    def reward_loss_overrides(self) -> dict[str, Any]:
        """The reward's robust-loss settings set here (not `None`), by `RobustLossSettings` field name."""
        values = {
            "label_smoothing": self.reward_label_smoothing,
            "adv_epsilon": self.reward_adv_epsilon,
            "adv_alpha": self.reward_adv_alpha,
            "adv_epsilon_scale": self.reward_adv_epsilon_scale,
        }
        return {name: value for name, value in values.items() if value is not None}
