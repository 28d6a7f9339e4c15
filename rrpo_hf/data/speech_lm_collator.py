"""Collator that turns (text, speech tokens[, instruction / emotion]) rows into CosyVoice2LM batches."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .labels import CANONICAL_EMOTIONS, UnknownEmotionError
from .padding import right_pad
from .prompts import COSYVOICE2_END_OF_PROMPT, build_instruct_text, build_plain_text, join_zero_shot_text
from .validation import ROW_INDEX_COLUMN, check_token_range, describe_row


#: Cross-entropy ignore index of `CosyVoice2LM` labels (upstream uses -1; transformers' convention is -100).
IGNORE_INDEX = -100


@dataclass
class DataCollatorForCosyVoice2:
    """Build padded `CosyVoice2LM` inputs and labels from dataset rows.

    Each row needs `text` (str) and `speech_tokens` (list of ids in `[0, speech_token_size)`), and
    may carry `instruction` (str) or `emotion` (a canonical name, a corpus alias, or a `ClassLabel`
    integer). With `use_instruction=True` the text given to the LM is
    `instruction + "<|endofprompt|>" + text` (CosyVoice2's instruct format, built by
    `rrpo_hf.data.prompts.build_instruct_text`); the instruction is the row's
    `instruction` when present, else the emotion template (e.g. "Your emotion is happy").

    Zero-shot (voice cloning) rows may also carry `prompt_text` (the transcript of a prompt utterance)
    and `prompt_speech_tokens` (its speech tokens), CosyVoice2's `inference_zero_shot` input: the LM
    reads `[sos, prompt_text + text, task_id, prompt_speech, speech]` and only `speech` is a target.
    The two come together (rows without them are ordinary rows in the same batch).

    Bistream training (`bistream_probability > 0`, upstream uses 0.5): a row without prompt speech
    whose speech/text token ratio exceeds `bistream_speech_chunk / bistream_text_chunk` (15 / 5) is,
    with that probability, laid out as CosyVoice2's interleaved streaming-text sequence
    `[sos, 5 text, 15 speech, ..., remaining text, task_id, remaining speech]`, whose targets put the
    fill id (`speech_token_size + 2`) after every full speech chunk, so that the trained LM also
    serves CosyVoice's `inference_bistream`.

    With `cosyvoice_version=3` (a CosyVoice3 policy; builders pass `model.config.cosyvoice_version`) eos is
    `speech_token_size + 1` and fill `+ 3`, every text starts with CosyVoice3's system prompt
    (`You are a helpful assistant. instruction<|endofprompt|>text`, or
    `You are a helpful assistant.<|endofprompt|>text` without an instruction), a zero-shot transcript follows that
    `<|endofprompt|>`, and bistream rows chunk only the text after it (the instruction precedes the chunks, as
    upstream's `instruct_token`).

    Returns a dict of tensors:
        `text_ids` / `text_attention_mask` (B, T): right-padded with the tokenizer's pad id;
        `speech_ids` / `speech_attention_mask` (B, S): right-padded with 0 (masked out);
        `labels` (B, S + 1): speech tokens followed by the eos id (`speech_token_size`; CosyVoice3: `+ 1`), -100 on
        padding, aligned with `CosyVoice2LMOutput.logits`; with bistream rows in the batch,
        (B, S + max full chunks + 1), the fill id inserted after each full speech chunk of those rows;
        `bistream` (B,) bool: only when `bistream_probability > 0`;
        `prompt_speech_ids` / `prompt_speech_attention_mask` (B, P) and `text_ratio_lengths` (B,) (the
        text tokens CosyVoice2's length bounds count: neither the prompt transcript nor the
        instruction): only when a row of the batch has prompt speech.
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
        metadata={
            "help": "Truncate text ids to this many tokens (from the end). Prefer filtering long rows beforehand."
        },
    )
    speech_token_size: int = field(
        default=6561, metadata={"help": "Speech codebook size; also the eos id appended to the labels."}
    )
    cosyvoice_version: int = field(
        default=2,
        metadata={
            "help": "The policy's CosyVoice generation (`model.config.cosyvoice_version`). 2: eos = "
            "speech_token_size, fill = +2, texts `instruction<|endofprompt|>text`. 3 (CosyVoice3): eos = +1, "
            "fill = +3, texts "
            "`You are a helpful assistant. instruction<|endofprompt|>text` (and the system prompt without one)."
        },
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
    instruction_column: str = field(
        default="instruction", metadata={"help": "Optional column of explicit instructions."}
    )
    emotion_column: str = field(
        default="emotion", metadata={"help": "Optional column of emotions (name or class id)."}
    )
    prompt_text_column: str = field(
        default="prompt_text",
        metadata={"help": "Optional column: transcript of a zero-shot prompt utterance, read before the text."},
    )
    prompt_speech_column: str = field(
        default="prompt_speech_tokens",
        metadata={"help": "Optional column: speech tokens of the zero-shot prompt utterance, read after task_id."},
    )
    bistream_probability: float = field(
        default=0.0,
        metadata={
            "help": "Probability of training an eligible row (speech/text ratio > speech_chunk / text_chunk, no "
            "prompt speech) in CosyVoice2's bistream layout, so the LM also serves streaming text input. Upstream "
            "CosyVoice2 trains with 0.5; 0 trains unistream only."
        },
    )
    bistream_text_chunk: int = field(
        default=5, metadata={"help": "Text tokens per bistream chunk (upstream mix_ratio[0]; must match the model)."}
    )
    bistream_speech_chunk: int = field(
        default=15,
        metadata={"help": "Speech tokens per bistream chunk (upstream mix_ratio[1]; must match the model)."},
    )
    seed: int | None = field(
        default=None, metadata={"help": "Seed of the bistream coin flips (None: seeded from the global RNG)."}
    )
    return_tensors: str = field(default="pt", metadata={"help": "Only 'pt' is supported."})

    def __post_init__(self):
        if self.return_tensors != "pt":
            raise ValueError(
                f"DataCollatorForCosyVoice2 only returns PyTorch tensors, got return_tensors={self.return_tensors!r}."
            )
        if self.speech_token_size < 1:
            raise ValueError(f"speech_token_size must be positive, got {self.speech_token_size}.")
        if self.cosyvoice_version not in (2, 3):
            raise ValueError(f"cosyvoice_version must be 2 or 3, got {self.cosyvoice_version!r}.")
        if self.max_text_length is not None and self.max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1 or None, got {self.max_text_length}.")
        names = self.emotion_names
        if names is None:
            names = CANONICAL_EMOTIONS
        elif hasattr(names, "names"):  # datasets.ClassLabel
            names = names.names
        self._emotion_names = list(names)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                "The tokenizer has no pad token; set `tokenizer.pad_token` (CosyVoice2 uses <|endoftext|>)."
            )
        if not 0.0 <= self.bistream_probability <= 1.0:
            raise ValueError(f"bistream_probability must be in [0, 1], got {self.bistream_probability}.")
        if self.bistream_text_chunk < 1 or self.bistream_speech_chunk < 1:
            raise ValueError(
                "bistream chunk sizes must be positive, got "
                f"{self.bistream_text_chunk} and {self.bistream_speech_chunk}."
            )
        # Seeded from the global RNG when no seed is given, so `transformers.set_seed` makes runs repeatable.
        self._bistream_rng = random.Random(self.seed if self.seed is not None else random.getrandbits(64))

    @property
    def input_columns(self) -> list[str]:
        """The dataset columns this collator reads: a trainer must keep them (they are no arguments of the model's
        `forward`, so `Trainer(remove_unused_columns=True)` would drop them)."""
        return [
            self.text_column,
            self.speech_column,
            self.instruction_column,
            self.emotion_column,
            self.prompt_text_column,
            self.prompt_speech_column,
            ROW_INDEX_COLUMN,
        ]

    def _emotion_name(self, value, row_index: int | str) -> str:
        # `row_index`: the row's position in the batch, or already a description such as "Dataset row 12".
        where = row_index if isinstance(row_index, str) else f"Sample {row_index} of the batch"
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: emotion must be a name or a class id, got {value!r}.")
        if not 0 <= value < len(self._emotion_names):
            raise ValueError(
                f"{where}: emotion id {value} is outside the {len(self._emotion_names)} known names "
                f"{self._emotion_names}; pass `emotion_names=dataset.features['{self.emotion_column}']`."
            )
        return self._emotion_names[value]

    def prompt_text(self, row: Mapping[str, Any], row_index: int = 0) -> str:
        """The text the LM reads for one row (instruction + `<|endofprompt|>` + text, or the bare text)."""
        where = describe_row(row, row_index)
        if self.text_column not in row:
            raise KeyError(f"{where} has no '{self.text_column}' column (columns: {sorted(row)}).")
        text = row[self.text_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"{where}: '{self.text_column}' must be a non-empty string, got {text!r}. "
                "Drop the row or give it text."
            )
        if not self.use_instruction:
            return build_plain_text(text, self.cosyvoice_version)
        instruction = row.get(self.instruction_column) or None  # datasets fill missing strings with ""
        emotion = row.get(self.emotion_column)
        if instruction is None and emotion is None:
            raise KeyError(
                f"{where} has neither '{self.instruction_column}' nor '{self.emotion_column}', so no instruction "
                "can be built; add one of them or set use_instruction=False."
            )
        if instruction is not None:
            return build_instruct_text(
                text,
                instruction=instruction,
                template=self.instruction_template,
                cosyvoice_version=self.cosyvoice_version,
            )
        try:
            return build_instruct_text(
                text,
                emotion=self._emotion_name(emotion, where),
                template=self.instruction_template,
                cosyvoice_version=self.cosyvoice_version,
            )
        except UnknownEmotionError as error:
            raise UnknownEmotionError(f"{where}: {error}") from None

    def _speech_tokens(self, row: Mapping[str, Any], row_index: int) -> list[int]:
        where = describe_row(row, row_index)
        if self.speech_column not in row:
            raise KeyError(f"{where} has no '{self.speech_column}' column (columns: {sorted(row)}).")
        tokens = row[self.speech_column]
        tokens = tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
        if len(tokens) == 0:
            raise ValueError(f"{where} has empty '{self.speech_column}'; drop it before training.")
        check_token_range(tokens, self.speech_token_size, where)
        return [int(t) for t in tokens]

    def zero_shot_prompt(self, row: Mapping[str, Any], row_index: int = 0) -> tuple[str, list[int]] | None:
        """``(prompt_text, prompt_speech_tokens)`` of a zero-shot row, or None for a row without a prompt."""
        where = describe_row(row, row_index)
        prompt_text = row.get(self.prompt_text_column) or None  # datasets fill missing strings with ""
        prompt_speech = row.get(self.prompt_speech_column)
        if prompt_speech is not None:
            prompt_speech = prompt_speech.tolist() if hasattr(prompt_speech, "tolist") else list(prompt_speech)
            prompt_speech = prompt_speech or None
        if prompt_text is None and prompt_speech is None:
            return None
        if prompt_text is None or prompt_speech is None:
            have, lack = (
                (self.prompt_text_column, self.prompt_speech_column)
                if prompt_speech is None
                else (self.prompt_speech_column, self.prompt_text_column)
            )
            raise ValueError(
                f"{where} has '{have}' but no '{lack}': a zero-shot prompt needs both the prompt utterance's "
                "transcript and its speech tokens. Fill both or neither."
            )
        if not isinstance(prompt_text, str):
            raise TypeError(f"{where}: '{self.prompt_text_column}' must be a string, got {prompt_text!r}.")
        check_token_range(prompt_speech, self.speech_token_size, where, column=self.prompt_speech_column)
        return prompt_text, [int(t) for t in prompt_speech]

    def _encode(self, features: Sequence[Mapping[str, Any]]):
        """Per row: LM text ids (prompt transcript + text), the count of them the length bounds use, prompt speech."""
        texts = [self.prompt_text(row, i) for i, row in enumerate(features)]
        prompts = [self.zero_shot_prompt(row, i) for i, row in enumerate(features)]
        text_rows = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, ids in enumerate(text_rows):
            if len(ids) == 0:
                raise ValueError(f"{describe_row(features[i], i)}: the tokenizer produced no ids for {texts[i]!r}.")
        # Everything before the spoken text (prompt transcript, instruction, <|endofprompt|>) is a prefix the
        # length bounds do not count; truncation cuts the end, so it shortens the spoken text first.
        prefix_lengths = [len(ids) - self._spoken_length(ids) for ids in text_rows]
        prompt_ids = {}
        if any(prompts):
            # Tokenized apart from the text and prepended, as upstream's frontend does (no BPE merge across them).
            with_prompt = [i for i, prompt in enumerate(prompts) if prompt is not None]
            encoded = self.tokenizer([prompts[i][0] for i in with_prompt], add_special_tokens=False)["input_ids"]
            prompt_ids = dict(zip(with_prompt, encoded))
            end_id = self.tokenizer.convert_tokens_to_ids(COSYVOICE2_END_OF_PROMPT)
            text_rows = [
                join_zero_shot_text(prompt_ids[i], ids, end_id, self.cosyvoice_version) if i in prompt_ids else ids
                for i, ids in enumerate(text_rows)
            ]
            prefix_lengths = [prefix + len(prompt_ids.get(i, [])) for i, prefix in enumerate(prefix_lengths)]
        if self.max_text_length is not None:
            text_rows = [ids[: self.max_text_length] for ids in text_rows]
        ratio_lengths = [max(len(ids) - prefix, 0) for ids, prefix in zip(text_rows, prefix_lengths)]
        prompt_speech = [prompt[1] if prompt is not None else [] for prompt in prompts]
        return text_rows, ratio_lengths, prompt_speech

    def _spoken_length(self, ids: list[int]) -> int:
        """Text tokens after the last ``<|endofprompt|>`` (all of them without one): what the length bounds count."""
        end_id = self.tokenizer.convert_tokens_to_ids(COSYVOICE2_END_OF_PROMPT)
        positions = [i for i, token in enumerate(ids) if token == end_id]
        return len(ids) - positions[-1] - 1 if positions else len(ids)

    def prompt_inputs(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """The generation inputs of the rows: ``text_ids`` / ``text_attention_mask`` and, when a row has a zero-shot
        prompt, ``prompt_speech_ids`` / ``prompt_speech_attention_mask`` / ``text_ratio_lengths``."""
        text_rows, ratio_lengths, prompt_speech = self._encode(features)
        return self._prompt_batch(text_rows, ratio_lengths, prompt_speech)

    def _prompt_batch(self, text_rows, ratio_lengths, prompt_speech) -> dict[str, torch.Tensor]:
        text_ids, text_attention_mask = right_pad(text_rows, self.tokenizer.pad_token_id)
        batch = {"text_ids": text_ids, "text_attention_mask": text_attention_mask}
        if any(prompt_speech):
            batch["prompt_speech_ids"], batch["prompt_speech_attention_mask"] = right_pad(prompt_speech, 0)
            batch["text_ratio_lengths"] = torch.tensor(ratio_lengths, dtype=torch.long)
        return batch

    def encode_prompts(self, features: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(text_ids, text_attention_mask)`` of the rows' prompts (a zero-shot transcript first), truncated to
        ``max_text_length``, right-padded."""
        batch = self.prompt_inputs(features)
        return batch["text_ids"], batch["text_attention_mask"]

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("DataCollatorForCosyVoice2 got an empty batch.")
        text_rows, ratio_lengths, prompt_speech = self._encode(features)
        batch = self._prompt_batch(text_rows, ratio_lengths, prompt_speech)
        speech = [self._speech_tokens(row, i) for i, row in enumerate(features)]
        speech_ids, speech_attention_mask = right_pad(speech, 0)
        bistream = [
            self._draw_bistream(self._chunked_length(text), len(tokens), bool(prompt))
            for text, tokens, prompt in zip(text_rows, speech, prompt_speech)
        ]
        full_chunks = [
            self._chunked_length(text) // self.bistream_text_chunk if on else 0
            for text, on in zip(text_rows, bistream)
        ]
        # The model's logits have width S + max(full chunks) + 1; the labels match it.
        labels = torch.full((len(speech), speech_ids.shape[1] + max(full_chunks) + 1), IGNORE_INDEX, dtype=torch.long)
        for row, (tokens, chunks) in enumerate(zip(speech, full_chunks)):
            targets = self._targets(tokens, chunks)
            labels[row, : len(targets)] = torch.tensor(targets, dtype=torch.long)
        batch.update(speech_ids=speech_ids, speech_attention_mask=speech_attention_mask, labels=labels)
        if self.bistream_probability > 0:
            batch["bistream"] = torch.tensor(bistream, dtype=torch.bool)
        return batch

    def _chunked_length(self, text_ids: list[int]) -> int:
        """Text tokens that bistream chunks: all of them in CosyVoice2; in CosyVoice3 those after the instruction's
        ``<|endofprompt|>``, which precedes the chunks (upstream's ``instruct_token``)."""
        return self._spoken_length(text_ids) if self.cosyvoice_version == 3 else len(text_ids)

    def _draw_bistream(self, text_length: int, speech_length: int, has_prompt: bool) -> bool:
        """Upstream's rule: a coin flip with `bistream_probability`, for rows whose speech/text ratio exceeds
        speech_chunk / text_chunk (the coin is flipped first and for every row, as upstream does)."""
        if self.bistream_probability <= 0:
            return False
        heads = self._bistream_rng.random() < self.bistream_probability
        eligible = speech_length * self.bistream_text_chunk > text_length * self.bistream_speech_chunk
        return heads and eligible and not has_prompt

    def _targets(self, tokens: list[int], full_chunks: int) -> list[int]:
        """The speech tokens, a fill id after each of the first `full_chunks` speech chunks, then eos."""
        # CosyVoice2: eos = V, fill = V + 2; CosyVoice3: sos = V, eos = V + 1, task_id = V + 2, fill = V + 3.
        eos_id = self.speech_token_size + (1 if self.cosyvoice_version == 3 else 0)
        fill_id, chunk = eos_id + 2, self.bistream_speech_chunk
        targets = []
        for block in range(full_chunks):
            targets += tokens[block * chunk : (block + 1) * chunk] + [fill_id]
        return targets + tokens[full_chunks * chunk :] + [eos_id]


__all__ = ["DataCollatorForCosyVoice2", "IGNORE_INDEX"]
