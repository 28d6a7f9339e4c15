"""Configuration of the robust speech-emotion reward model (RRPO stage 1)."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Absolute on purpose (see modeling_robust_ser.py): `save_pretrained` bundles the module with remote-code folders.
from rrpo_hf.ops.robust_loss import RobustLossSettings, check_robust_loss_settings


# The canonical emotion names of rrpo_hf.data.labels.CANONICAL_EMOTIONS, restated because this file
# ships inside saved checkpoints and must not import rrpo_hf (tests assert the two stay equal).
DEFAULT_EMOTIONS = ("neutral", "happy", "angry", "sad", "surprised", "fearful")


@strict(accept_kwargs=True)
class RobustSERConfig(PreTrainedConfig):
    r"""
    Configuration of [`RobustSERForAudioClassification`]: a Transformer speech-emotion classifier over
    discrete speech tokens (CosyVoice2 S3 tokens by default), trained with the RRPO hybrid
    regularization (label smoothing, Energy-Adaptive Mixup, adversarial training on h').

    Args:
        vocab_size (`int`, *optional*, defaults to 6561):
            Size of the speech-token codebook (CosyVoice2: 6561). Valid token ids are `[0, vocab_size)`.
        pad_token_id (`int`, *optional*):
            Id of the padding token; defaults to `vocab_size`, an extra embedding row outside the codebook, so
            padding can never be confused with a real speech token.
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the token embedding and of the encoder.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of (pre-LayerNorm) Transformer encoder layers.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 1024):
            Width of the feed-forward block.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward block (any key of `transformers.activations.ACT2FN`).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings, residual branches and before the classifier.
        attention_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on attention probabilities.
        max_position_embeddings (`int`, *optional*, defaults to 1500):
            Longest token sequence the model accepts (1500 tokens = 60 s of 25 Hz speech).
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal weight initialisation.
        pooling (`str`, *optional*, defaults to `"attention"`):
            How h' is pooled over frames: `"attention"` (learned, masked attention weights) or `"mean"`
            (masked mean).
        label_smoothing (`float`, *optional*, defaults to 0.1):
            Eq. 2 epsilon of the model's loss, in [0, 1).
        adv_epsilon (`float`, *optional*, defaults to 0.5):
            Eq. 4 perturbation radius on h'.
        adv_alpha (`float`, *optional*, defaults to 0.5):
            Eq. 5 weight of the adversarial loss (0 disables it).
        adv_epsilon_scale (`str`, *optional*, defaults to `"absolute"`):
            Eq. 4 radius rule: `"absolute"` (`‖δ‖ = adv_epsilon`, the paper, with its 0.5) or `"relative"`
            (`‖δ‖ = adv_epsilon·‖h'‖/√T`, the RMS frame norm of h' over the utterance's T valid frames; with it,
            `adv_epsilon=1.0` is the recommended value: one frame's norm ≈ one token edit's shift of h',
            docs/audit.md).

            These four are the robust loss the model was trained with (`RobustRewardTrainer` writes them) and the
            defaults of the DiffRO / RRPO reward built from it (`robust_loss`, `EmotionReward`).
        eam_snr_range (`list[float]`, *optional*, defaults to `[-5.0, 5.0]`):
            Algorithm 1 SNR range `[r_min, r_max]` in dB (used by the EAM collator).
        speech_tokenizer_version (`str`, *optional*, defaults to `"v2"`):
            The S3 tokenizer whose tokens the model reads: `"v2"` (`speech_tokenizer_v2.onnx`, CosyVoice2) or `"v3"`
            (`speech_tokenizer_v3.onnx`, CosyVoice3). Both have 6561 codes, but a code means different sounds in
            each, so DiffRO refuses a policy of the other version. Folders saved before this field read as `"v2"`.
        id2label (`dict[int, str]`, *optional*):
            Class names; defaults to the six canonical emotions
            `neutral, happy, angry, sad, surprised, fearful`.

    Example:

    ```python
    >>> from rrpo_hf import RobustSERConfig, RobustSERForAudioClassification
    >>> config = RobustSERConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    >>> model = RobustSERForAudioClassification(config)
    ```
    """

    model_type = "robust_ser"

    vocab_size: int = 6561
    pad_token_id: int | None = None
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_dropout: float | int = 0.1
    max_position_embeddings: int = 1500
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    pooling: str = "attention"
    label_smoothing: float | int = 0.1
    adv_epsilon: float | int = 0.5
    adv_alpha: float | int = 0.5
    adv_epsilon_scale: str = "absolute"
    eam_snr_range: list[float | int] | tuple[float | int, ...] = (-5.0, 5.0)
    speech_tokenizer_version: str = "v2"

    def __post_init__(self, **kwargs):
        if self.pad_token_id is None:
            self.pad_token_id = self.vocab_size
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(DEFAULT_EMOTIONS))
            self.label2id = {name: i for i, name in enumerate(DEFAULT_EMOTIONS)}
        self.eam_snr_range = [float(v) for v in self.eam_snr_range]
        super().__post_init__(**kwargs)
        if self.label2id is None or len(self.label2id) != len(self.id2label):
            self.label2id = {name: int(i) for i, name in self.id2label.items()}

    def validate_token_ids(self):
        """The padding row deliberately sits *outside* the codebook, at index `vocab_size` (the base check would
        warn about that); any other pad id would alias a real speech token."""
        if self.pad_token_id != self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id} but the padding row of RobustSER is the extra row at index "
                f"vocab_size={self.vocab_size}; ids below vocab_size are real speech tokens. Leave pad_token_id unset."
            )

    def validate_architecture(self):
        """Checks run by `@strict` after init: each error names the field and how to fix it."""
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}."
            )
        if self.pooling not in ("attention", "mean"):
            raise ValueError(f"pooling must be 'attention' or 'mean', got {self.pooling!r}.")
        check_robust_loss_settings(self.label_smoothing, self.adv_epsilon, self.adv_alpha, self.adv_epsilon_scale)
        if not isinstance(self.speech_tokenizer_version, str) or not self.speech_tokenizer_version:
            raise ValueError(
                f"speech_tokenizer_version must name the S3 tokenizer (e.g. 'v2', 'v3'), got "
                f"{self.speech_tokenizer_version!r}."
            )
        if len(self.eam_snr_range) != 2 or self.eam_snr_range[0] > self.eam_snr_range[1]:
            raise ValueError(
                f"eam_snr_range must be [r_min, r_max] in dB with r_min <= r_max, got {self.eam_snr_range}."
            )

    @property
    def robust_loss(self) -> RobustLossSettings:
        """The settings of the robust loss (Eq. 2-5) this model was trained with: its reward's defaults."""
        return RobustLossSettings.from_config(self)


__all__ = ["DEFAULT_EMOTIONS", "RobustSERConfig"]
