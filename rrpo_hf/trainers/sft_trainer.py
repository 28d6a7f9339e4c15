"""The supervised fine-tuning trainer of the CosyVoice2 LM (the paper's "+SFT" stage)."""

from __future__ import annotations

from transformers import Trainer

from .saving import MergedSaveMixin


class CosyVoice2SFTTrainer(MergedSaveMixin, Trainer):
    """`Trainer` whose final save (and `push_to_hub`) of a LoRA run writes the merged model or the adapter.

    Keeps the dataset columns the collator reads (`DataCollatorForCosyVoice2.input_columns`), so a user dataset
    trains with `TrainingArguments`' default `remove_unused_columns=True`.

    `save_merged` is an argument rather than a `TrainingArguments` field so that SFT keeps plain `TrainingArguments`
    (and every recipe written for them); later stages then load a plain `CosyVoice2LM` from the merged save.
    """

    def __init__(self, *args, save_merged: bool = True, **kwargs):
        self.save_merged = save_merged
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        # The collator builds the model inputs from dataset columns (text, speech tokens, emotion, ...) that are no
        # `forward` arguments; with `remove_unused_columns=True` (TrainingArguments' default) Trainer would drop
        # them all. The columns the collator reads count as used; any other column is still dropped.
        super()._set_signature_columns_if_needed()
        extra = getattr(self.data_collator, "input_columns", ())
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *extra]))


__all__ = ["CosyVoice2SFTTrainer"]
