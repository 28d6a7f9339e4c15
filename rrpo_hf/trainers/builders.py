"""Builders of the models and collator that `examples/sft.py`, `examples/train_rm.py` and `rrpo_hf.study` share.

The study re-runs the SFT and reward-model stages of the example scripts; building the toy policy, its collator and a
from-scratch reward model in one place keeps the study's "+SFT" and RM rows the models the scripts train.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from datasets import ClassLabel

from ..data.labels import emotion_label_maps
from ..data.speech_lm_collator import DataCollatorForCosyVoice2
from ..models.cosyvoice2 import CosyVoice2LM, CosyVoice2LMConfig, tiny_cosyvoice2_config
from ..models.robust_ser import RobustSERConfig


def build_tiny_cosyvoice2_policy(
    tokenizer, speech_token_size: int, *, attn_implementation: str | None = None, **config_kwargs: Any
) -> CosyVoice2LM:
    """A freshly initialised toy CosyVoice2 LM sized to `tokenizer`; `config_kwargs` go to `tiny_cosyvoice2_config`.

    The weights are drawn from torch's global RNG: seed it first for a repeatable policy.
    """
    config = tiny_cosyvoice2_config(tokenizer, speech_token_size, **config_kwargs)
    if attn_implementation:
        config.llm_config._attn_implementation = attn_implementation
    return CosyVoice2LM(config)


def build_cosyvoice2_sft_collator(
    tokenizer, model_config: CosyVoice2LMConfig, emotion_feature=None, **collator_kwargs: Any
) -> DataCollatorForCosyVoice2:
    """The SFT collator of a CosyVoice2 LM whose codebook size and bistream chunk sizes are read from `model_config`.

    Those three must match the model (labels beyond the codebook, or chunks the model was not built for, fail only
    deep inside training otherwise). `emotion_feature` is the dataset's emotion feature: a `ClassLabel` names the
    integer labels, anything else (or None) leaves the canonical order. With `seed` unset the bistream coin flips are
    seeded from the global `random` RNG, as `DataCollatorForCosyVoice2` does.
    """
    return DataCollatorForCosyVoice2(
        tokenizer,
        speech_token_size=model_config.speech_token_size,
        cosyvoice_version=model_config.cosyvoice_version,
        emotion_names=emotion_feature if isinstance(emotion_feature, ClassLabel) else None,
        bistream_text_chunk=model_config.bistream_text_chunk,
        bistream_speech_chunk=model_config.bistream_speech_chunk,
        **collator_kwargs,
    )


def build_robust_ser_config(
    vocab_size: int,
    label_names: Iterable[str],
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    **config_kwargs: Any,
) -> RobustSERConfig:
    """A from-scratch reward-model config (toy size by default) whose classes are `label_names`, in that order.

    `intermediate_size` defaults to twice `hidden_size`; `config_kwargs` (dropouts, pooling, ...) go to
    `RobustSERConfig` and otherwise keep its defaults.
    """
    id2label, label2id = emotion_label_maps(label_names)
    return RobustSERConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        id2label=id2label,
        label2id=label2id,
        **config_kwargs,
    )


__all__ = ["build_cosyvoice2_sft_collator", "build_robust_ser_config", "build_tiny_cosyvoice2_policy"]
