"""Training arguments of the robust speech-emotion reward model (RRPO, Sec. 2.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..ops.adversarial import ADV_EPSILON_SCALES
from ..ops.robust_loss import RobustLossSettings
from .base_config import _BaseConfig


@dataclass
class RobustRewardConfig(_BaseConfig):
    r"""
    Configuration class for the [`RobustRewardTrainer`].

    Only the parameters specific to the robust reward model are listed here; see [`~transformers.TrainingArguments`]
    for the rest. Defaults are the paper's (RRPO, arXiv 2512.04552, Sec. 3.1.1): label smoothing ε = 0.1,
    Energy-Adaptive Mixup with SNR in [-5, 5] dB, adversarial ε_adv = 0.5, α = 0.5, learning rate 1e-5.

    The rows of the paper's ablation (Table 2) are cumulative and each is one flag away from the previous one:

    | row                 | flags                                                  |
    |---------------------|--------------------------------------------------------|
    | base (DiffRO RM)    | `--label_smoothing 0 --use_eam false --adv_alpha 0`    |
    | + LS                | `--use_eam false --adv_alpha 0`                        |
    | + EAM               | `--adv_alpha 0`                                        |
    | + Adv (RRPO)        | (defaults)                                             |

    Parameters:
        > Hybrid regularization

        label_smoothing (`float`, *optional*, defaults to `0.1`):
            ε of Eq. 2: targets become `(1 - ε)·onehot(y) + ε/K`. `0` disables label smoothing (LS).
        use_eam (`bool`, *optional*, defaults to `True`):
            Apply Energy-Adaptive Mixup (Algorithm 1) to the low-level features of training batches.
        eam_probability (`float`, *optional*, defaults to `1.0`):
            Fraction of training batches that are mixed when `use_eam` is set.
        eam_snr_range (`list[float]`, *optional*, defaults to `[-5.0, 5.0]`):
            `[r_min, r_max]` in dB of the partner segment's energy ratio r ~ U(r_min, r_max).
        adv_epsilon (`float`, *optional*, defaults to `0.5`):
            ε_adv of Eq. 4: L2 norm of the perturbation δ added to each sample's high-level embeddings h'.
        adv_alpha (`float`, *optional*, defaults to `0.5`):
            α of Eq. 5, `L_ser = L_emo + α·L_adv`. `0` disables adversarial training (and its extra cost).
        adv_epsilon_scale (`str`, *optional*, defaults to `"absolute"`):
            Radius rule of δ: `"absolute"` (`‖δ‖ = ε_adv`, the paper, with its 0.5; the default, so existing runs are
            unchanged) or `"relative"` (`‖δ‖ = ε_adv·‖h'‖/√T`: ε_adv times the RMS frame norm of h' over the
            utterance's T valid frames; δ stays one FGM step per utterance). With `"relative"`, `adv_epsilon=1.0` is
            the recommended value: one frame's norm is about one token edit's shift of h' (docs/audit.md).

        These four settings are saved in the model's config: the DiffRO / RRPO reward built from the saved model
        computes the same `L_ser` unless `DiffROConfig.reward_*` overrides them.

        > Data

        label_column (`str`, *optional*, defaults to `"emotion"`):
            Dataset column holding the emotion (a `ClassLabel`, canonical/alias names, or ids of the model's labels).
        max_length (`int` or `None`, *optional*, defaults to `None`):
            Truncate speech-token sequences to this many tokens. `None` keeps them whole and raises an error for
            sequences longer than the model's `max_position_embeddings`.

        > Model

        model_init_kwargs (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Keyword arguments for `AutoModelForAudioClassification.from_pretrained` when the trainer's `model` is a
            path or Hub id.
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    # Paper value; the CPU toy recipes raise it because their models start from scratch.
    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "Initial learning rate for AdamW (the paper fine-tunes the RM at 1e-5)."},
    )
    logging_steps: float = field(
        default=10,
        metadata={
            "help": "Log every X update steps. Should be an integer or a float in range `[0,1)`. If smaller than 1, "
            "will be interpreted as ratio of total training steps."
        },
    )
    # The collator needs `speech_tokens` and the label column, which the model's forward does not name.
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep dataset columns the model's forward does not name (the collator needs them)."},
    )

    label_smoothing: float = field(
        default=0.1,
        metadata={
            "help": "Label smoothing ε of Eq. 2: targets (1-ε)·onehot(y) + ε/K. 0 disables LS (ablation: base)."
        },
    )
    use_eam: bool = field(
        default=True,
        metadata={
            "help": "Apply Energy-Adaptive Mixup (Algorithm 1) to training batches. `--use_eam false` gives the "
            "ablation row '+LS'."
        },
    )
    eam_probability: float = field(
        default=1.0,
        metadata={"help": "Fraction of training batches mixed by EAM when `use_eam` is set (1.0 = every batch)."},
    )
    eam_snr_range: list[float] = field(
        default_factory=lambda: [-5.0, 5.0],
        metadata={"help": "EAM mixing SNR range [r_min, r_max] in dB (partner energy E'_j = E_j / 10^(r/10))."},
    )
    adv_epsilon: float = field(
        default=0.5,
        metadata={"help": "Adversarial perturbation size ε_adv of Eq. 4 (per-sample L2 norm of δ on h')."},
    )
    adv_alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight α of the adversarial loss in Eq. 5 (L_ser = L_emo + α·L_adv). 0 disables adversarial "
            "training (ablation row '+EAM')."
        },
    )
    adv_epsilon_scale: str = field(
        default="absolute",
        metadata={
            "help": "Radius rule of the adversarial perturbation: 'absolute' (‖δ‖ = ε_adv, the paper; the default) or "
            "'relative' (‖δ‖ = ε_adv·‖h'‖/√T, ε_adv times the RMS frame norm of h' over the utterance's T valid "
            "frames). With 'relative', --adv_epsilon 1.0 is the recommended value: one frame's norm ≈ one token "
            "edit's shift of h' (docs/audit.md).",
            "choices": list(ADV_EPSILON_SCALES),
        },
    )
    label_column: str = field(
        default="emotion",
        metadata={"help": "Dataset column with the emotion label (ClassLabel, emotion names or label ids)."},
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncate speech-token sequences to this many tokens. None: keep them and reject sequences "
            "longer than the model's max_position_embeddings."
        },
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForAudioClassification.from_pretrained` when `model` is a path "
            "or Hub id (JSON string on the command line)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        _ = self.robust_loss  # RobustLossSettings validates ε, ε_adv, α and the radius rule (one validator)
        if not 0.0 <= self.eam_probability <= 1.0:
            raise ValueError(f"eam_probability must be in [0, 1], got {self.eam_probability}.")
        if len(self.eam_snr_range) != 2 or self.eam_snr_range[0] > self.eam_snr_range[1]:
            raise ValueError(
                f"eam_snr_range must be two numbers [r_min, r_max] with r_min <= r_max, got {self.eam_snr_range}."
            )
        self.eam_snr_range = [float(value) for value in self.eam_snr_range]
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be a positive number of tokens or None, got {self.max_length}.")
        if self.label_smoothing_factor != 0:
            raise ValueError(
                "RobustRewardConfig applies its own label smoothing (Eq. 2): set `label_smoothing` and leave "
                "`label_smoothing_factor` at 0."
            )

    @property
    def robust_loss(self) -> RobustLossSettings:
        """The settings of `L_ser` (Eq. 2-5) these arguments train with, as saved in the model's config."""
        return RobustLossSettings(
            label_smoothing=self.label_smoothing,
            adv_epsilon=self.adv_epsilon,
            adv_alpha=self.adv_alpha,
            adv_epsilon_scale=self.adv_epsilon_scale,
        )
