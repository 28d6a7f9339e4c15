"""Collator that turns (text, speech tokens[, instruction / emotion]) rows into CosyVoice2LM batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .labels import CANONICAL_EMOTIONS
from .padding import right_pad


#: Cross-entropy ignore index of `CosyVoice2LM` labels (upstream uses -1; transformers' convention is -100).
IGNORE_INDEX = -100


@dataclass
class DataCollatorForCosyVoice2:
    """Build padded `CosyVoice2LM` inputs and labels from dataset rows.

    Each row needs `text` (str) and `speech_tokens` (list of ids in `[0, speech_token_size)`), and
    may carry `instruction` (str) or `emotion` (a canonical name, a corpus alias, or a `ClassLabel`
    integer). With `use_instruction=True` the text given to the LM is
    `instruction + "<|endofprompt|>" + text` (CosyVoice2's instruct format, built by
    `rrpo_hf.models.cosyvoice2.prompts.build_instruct_text`); the instruction is the row's
    `instruction` when present, else the emotion template (e.g. "Your emotion is happy").

    Returns a dict of tensors:
        `text_ids` / `text_attention_mask` (B, T): right-padded with the tokenizer's pad id;
        `speech_ids` / `speech_attention_mask` (B, S): right-padded with 0 (masked out);
        `labels` (B, S + 1): speech tokens followed by the eos id (`speech_token_size`), -100 on
        padding, aligned with `CosyVoice2LMOutput.logits`.
    """

    tokenizer: Any = field(metadata={"help": "Text tokenizer with CosyVoice2's special tokens (`<|endofprompt|>`)."})
    instruction_template: str = field(
        default="en", metadata={"help": "Key of `EMOTION_INSTRUCTION_TEMPLATES` used to phrase emotion instructions."}
    )
    use_instruction: bool = field(
        default=True, metadata={"help": "Prefix the text with an instruction; False trains plain (non-instruct) TTS."}
    )
    max_text_length: int | None = field(
        default=None,
        metadata={"help": "Truncate text ids to this many tokens (from the end). Prefer filtering long rows beforehand."},
    )
    speech_token_size: int = field(
        default=6561, metadata={"help": "Speech codebook size; also the eos id appended to the labels."}
    )
    emotion_names: Sequence[str] | Any | None = field(
        default=None,
        metadata={
            "help": "Names of integer emotion labels: a list or a `datasets.ClassLabel` (e.g. "
            "`dataset.features['emotion']`). Defaults to CANONICAL_EMOTIONS, the testbed's ClassLabel order."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text to speak."})
    speech_column: str = field(default="speech_tokens", metadata={"help": "Column holding the target speech tokens."})
    instruction_column: str = field(default="instruction", metadata={"help": "Optional column of explicit instructions."})
    emotion_column: str = field(default="emotion", metadata={"help": "Optional column of emotions (name or class id)."})
    return_tensors: str = field(default="pt", metadata={"help": "Only 'pt' is supported."})

    def __post_init__(self):
        if self.return_tensors != "pt":
            raise ValueError(f"DataCollatorForCosyVoice2 only returns PyTorch tensors, got return_tensors={self.return_tensors!r}.")
        if self.speech_token_size < 1:
            raise ValueError(f"speech_token_size must be positive, got {self.speech_token_size}.")
        if self.max_text_length is not None and self.max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1 or None, got {self.max_text_length}.")
        names = self.emotion_names
        if names is None:
            names = CANONICAL_EMOTIONS
        elif hasattr(names, "names"):  # datasets.ClassLabel
            names = names.names
        self._emotion_names = list(names)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("The tokenizer has no pad token; set `tokenizer.pad_token` (CosyVoice2 uses <|endoftext|>).")

    def _emotion_name(self, value, row_index: int) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Row {row_index}: emotion must be a name or a class id, got {value!r}.")
        if not 0 <= value < len(self._emotion_names):
            raise ValueError(
                f"Row {row_index}: emotion id {value} is outside the {len(self._emotion_names)} known names "
                f"{self._emotion_names}; pass `emotion_names=dataset.features['{self.emotion_column}']`."
            )
        return self._emotion_names[value]

    def prompt_text(self, row: Mapping[str, Any], row_index: int = 0) -> str:
        """The text the LM reads for one row (instruction + `<|endofprompt|>` + text, or the bare text)."""
        from ..models.cosyvoice2.prompts import build_instruct_text

        if self.text_column not in row:
            raise KeyError(f"Row {row_index} has no '{self.text_column}' column (columns: {sorted(row)}).")
        text = row[self.text_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Row {row_index}: '{self.text_column}' must be a non-empty string, got {text!r}.")
        if not self.use_instruction:
            return text
        instruction = row.get(self.instruction_column) or None  # datasets fill missing strings with ""
        emotion = row.get(self.emotion_column)
        if instruction is None and emotion is None:
            raise KeyError(
                f"Row {row_index} has neither '{self.instruction_column}' nor '{self.emotion_column}', so no instruction "
                "can be built; add one of them or set use_instruction=False."
            )
        if instruction is not None:
            return build_instruct_text(text, instruction=instruction, template=self.instruction_template)
        return build_instruct_text(text, emotion=self._emotion_name(emotion, row_index), template=self.instruction_template)

    def _speech_tokens(self, row: Mapping[str, Any], row_index: int) -> list[int]:
        if self.speech_column not in row:
            raise KeyError(f"Row {row_index} has no '{self.speech_column}' column (columns: {sorted(row)}).")
        tokens = row[self.speech_column]
        tokens = tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
        if len(tokens) == 0:
            raise ValueError(f"Row {row_index} has empty '{self.speech_column}'; drop it before training.")
        low, high = min(tokens), max(tokens)
        if low < 0 or high >= self.speech_token_size:
            raise ValueError(
                f"Row {row_index}: speech token ids must lie in [0, {self.speech_token_size}), found range [{low}, {high}]. "
                "Check that speech_token_size matches the model's codebook and that stop ids were stripped."
            )
        return [int(t) for t in tokens]

    def encode_prompts(self, features: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text_ids, text_attention_mask)`` of the rows' prompts, truncated to ``max_text_length``, right-padded."""
        prompts = [self.prompt_text(row, i) for i, row in enumerate(features)]
        text_rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        for i, ids in enumerate(text_rows):
            if len(ids) == 0:
                raise ValueError(f"Row {i}: the tokenizer produced no ids for {prompts[i]!r}.")
        if self.max_text_length is not None:
            text_rows = [ids[: self.max_text_length] for ids in text_rows]
        return right_pad(text_rows, self.tokenizer.pad_token_id)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("DataCollatorForCosyVoice2 got an empty batch.")
        text_ids, text_attention_mask = self.encode_prompts(features)
        speech = [self._speech_tokens(row, i) for i, row in enumerate(features)]
        speech_ids, speech_attention_mask = right_pad(speech, 0)
        # targets: the speech tokens, then eos closing every utterance, IGNORE_INDEX after
        labels = torch.full((len(speech), speech_ids.shape[1] + 1), IGNORE_INDEX, dtype=torch.long)
        labels[:, :-1] = speech_ids.masked_fill(speech_attention_mask == 0, IGNORE_INDEX)
        labels[torch.arange(len(speech)), speech_attention_mask.sum(dim=1)] = self.speech_token_size
        return {
            "text_ids": text_ids,
            "text_attention_mask": text_attention_mask,
            "speech_ids": speech_ids,
            "speech_attention_mask": speech_attention_mask,
            "labels": labels,
        }


__all__ = ["DataCollatorForCosyVoice2", "IGNORE_INDEX"]
