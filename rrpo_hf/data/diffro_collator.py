"""Batches of (text, target emotion[, speech tokens]) prompts for the DiffRO / RRPO step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .labels import UnknownEmotionError, emotion_key
from .padding import right_pad
from .speech_lm_collator import DataCollatorForCosyVoice2
from .validation import describe_row


@dataclass
class DataCollatorForDiffRO:
    """Batch (text, target emotion[, instruction][, speech tokens]) rows for the DiffRO step.

    Prompts are CosyVoice2 instruct texts (``instruction<|endofprompt|>text``, built by
    :class:`DataCollatorForCosyVoice2`). Returns ``text_ids`` / ``text_attention_mask``, the target emotion as reward
    model label ids (``emotion_labels``), the speech tokens when ``with_speech`` (``speech_ids`` /
    ``speech_attention_mask``), a zero-shot prompt when a row has ``prompt_text`` / ``prompt_speech_tokens``
    (``prompt_speech_ids`` / ``prompt_speech_attention_mask`` / ``text_ratio_lengths``, see
    :class:`DataCollatorForCosyVoice2`), and per-row metadata lists for evaluation scorers: ``texts``,
    ``target_emotions`` (canonical names; a reward-model label that is no known emotion as written) and, when the
    column exists, ``languages``.
    """

    tokenizer: Any = field(metadata={"help": "Text tokenizer with CosyVoice2's `<|endofprompt|>` token."})
    emotion_to_label_id: Mapping[str, int] = field(
        metadata={"help": "Canonical emotion name -> reward-model label id (see `DiffROTrainer`)."}
    )
    emotion_names: Sequence[str] | None = field(
        default=None, metadata={"help": "Names of integer emotion values (the dataset's ClassLabel names)."}
    )
    with_speech: bool = field(default=True, metadata={"help": "Batch the speech tokens too (offline rollouts)."})
    speech_token_size: int = field(default=6561, metadata={"help": "Policy codebook size (speech ids must be below)."})
    cosyvoice_version: int = field(
        default=2,
        metadata={"help": "The policy's CosyVoice generation (2 or 3): its prompt format (see the SFT collator)."},
    )
    instruction_template: str = field(default="en", metadata={"help": "Emotion instruction template."})
    max_text_length: int | None = field(default=None, metadata={"help": "Truncate prompt text ids to this length."})
    text_column: str = field(default="text", metadata={"help": "Column with the text to speak."})
    speech_column: str = field(default="speech_tokens", metadata={"help": "Column with the speech tokens."})
    emotion_column: str = field(default="emotion", metadata={"help": "Column with the target emotion."})
    prompt_text_column: str = field(
        default="prompt_text", metadata={"help": "Optional column: transcript of a zero-shot prompt utterance."}
    )
    prompt_speech_column: str = field(
        default="prompt_speech_tokens", metadata={"help": "Optional column: speech tokens of the zero-shot prompt."}
    )
    language_column: str = field(default="language", metadata={"help": "Optional column with the language."})

    def __post_init__(self):
        self._lm_collator = DataCollatorForCosyVoice2(
            self.tokenizer,
            instruction_template=self.instruction_template,
            max_text_length=self.max_text_length,
            speech_token_size=self.speech_token_size,
            cosyvoice_version=self.cosyvoice_version,
            emotion_names=self.emotion_names,
            text_column=self.text_column,
            speech_column=self.speech_column,
            emotion_column=self.emotion_column,
            prompt_text_column=self.prompt_text_column,
            prompt_speech_column=self.prompt_speech_column,
        )

    def target_emotion(self, row: Mapping[str, Any], row_index: int) -> str:
        where = describe_row(row, row_index)
        if self.emotion_column not in row or row[self.emotion_column] is None:
            raise KeyError(
                f"{where} has no '{self.emotion_column}': DiffRO needs a target emotion per prompt for the reward."
            )
        name = self._lm_collator._emotion_name(row[self.emotion_column], where)
        # The trainer's rule (`emotion_label_ids`): the canonical name of a known emotion, else the label as written.
        key = emotion_key(name)
        if key not in self.emotion_to_label_id:
            raise UnknownEmotionError(
                f"{where}: target emotion {key!r} is not a label of the reward model "
                f"({sorted(self.emotion_to_label_id)})."
            )
        return key

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(features) == 0:
            raise ValueError("DataCollatorForDiffRO got an empty batch.")
        emotions = [self.target_emotion(row, i) for i, row in enumerate(features)]
        if self.with_speech:
            batch = self._lm_collator(features)
            batch.pop("labels")  # DiffRO has no token targets: the reward replaces them
        else:
            batch = self._lm_collator.prompt_inputs(features)
        batch["emotion_labels"] = torch.tensor([self.emotion_to_label_id[e] for e in emotions], dtype=torch.long)
        batch["texts"] = [row[self.text_column] for row in features]
        batch["target_emotions"] = emotions
        if all(self.language_column in row for row in features):
            batch["languages"] = [row[self.language_column] for row in features]
        return batch


def pad_speech_tokens(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad generated token lists to ``(speech_ids, speech_attention_mask)``; empty samples are an error."""
    empty = [i for i, tokens in enumerate(sequences) if len(tokens) == 0]
    if empty:
        raise ValueError(
            f"Generation returned no speech token for samples {empty}; raise `min_len_ratio` so every sample speaks."
        )
    return right_pad(sequences, 0, device)


__all__ = ["DataCollatorForDiffRO", "pad_speech_tokens"]
