"""The supervised fine-tuning trainer of the CosyVoice2 LM (the paper's "+SFT" stage)."""

from __future__ import annotations

from transformers import Trainer

from .saving import MergedSaveMixin


class CosyVoice2SFTTrainer(MergedSaveMixin, Trainer):
    """`Trainer` whose final save (and `push_to_hub`) of a LoRA run writes the merged model or the adapter.

    `save_merged` is an argument rather than a `TrainingArguments` field so that SFT keeps plain `TrainingArguments`
    (and every recipe written for them); later stages then load a plain `CosyVoice2LM` from the merged save.
    """

    def __init__(self, *args, save_merged: bool = True, **kwargs):
        self.save_merged = save_merged
        super().__init__(*args, **kwargs)


__all__ = ["CosyVoice2SFTTrainer"]
