"""Batching speech-token emotion data for the reward model, with the Energy-Adaptive Mixup plan.

Features are dataset rows ``{"speech_tokens": list[int], "emotion": int, ...}`` (the shared schema).
:class:`DataCollatorForSpeechEmotion` pads them; :class:`DataCollatorForEnergyAdaptiveMixup` also
draws a seeded EAM plan (Algorithm 1) that ``RobustSERForAudioClassification`` applies to its
low-level features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ops.eam import sample_eam_plan
from .labels import UnknownEmotionError, normalize_emotion
from .padding import right_pad
from .validation import check_token_range, describe_row


@dataclass
class DataCollatorForSpeechEmotion:
    """Pad speech tokens with ``pad_token_id``, build ``attention_mask`` and ``labels``.

    Returns ``{"input_ids": (B, L) long, "attention_mask": (B, L) long, "labels": (B,) long}``
    (``labels`` only when ``label_column`` is set). Extra columns are ignored.
    """

    pad_token_id: int = field(
        metadata={"help": "Padding id; for RobustSER this is `config.pad_token_id` (= vocab_size)."}
    )
    label_column: str | None = field(
        default="emotion", metadata={"help": "Column holding the integer emotion id; None for unlabeled inference."}
    )
    tokens_column: str = field(default="speech_tokens", metadata={"help": "Column holding the speech-token list."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest accepted sequence (the model's max_position_embeddings); longer ones raise unless "
            "`truncation`."
        },
    )
    truncation: bool = field(
        default=False, metadata={"help": "Cut sequences longer than `max_length` instead of raising."}
    )
    vocab_size: int | None = field(
        default=None, metadata={"help": "If set, token ids must lie in [0, vocab_size) (the speech codebook)."}
    )
    label2id: Mapping[str, int] | None = field(
        default=None,
        metadata={
            "help": "Maps string labels (normalised with rrpo_hf.data.labels) to ids; needed only for string labels."
        },
    )

    def __post_init__(self):
        if self.truncation and self.max_length is None:
            raise ValueError("`truncation=True` needs `max_length`.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"`max_length` must be >= 1, got {self.max_length}.")

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("Cannot collate an empty list of features.")
        self._check_columns(features)
        sequences = [self._tokens(feature, index) for index, feature in enumerate(features)]
        input_ids, attention_mask = right_pad(sequences, self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.label_column is not None:
            labels = [self._label(row[self.label_column], describe_row(row, i)) for i, row in enumerate(features)]
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch

    def _check_columns(self, features):
        required = [self.tokens_column] + ([self.label_column] if self.label_column is not None else [])
        for index, feature in enumerate(features):
            if not isinstance(feature, Mapping):
                raise TypeError(
                    f"Sample {index} of the batch is a {type(feature).__name__}; expected a dict (a dataset row)."
                )
            missing = [column for column in required if column not in feature]
            if missing:
                raise KeyError(
                    f"{describe_row(feature, index)} is missing column(s) {missing} (it has {sorted(feature)}). "
                    "Rename your dataset columns "
                    "(`dataset.rename_column(...)`), point the collator at them (`tokens_column=`, `label_column=`), "
                    "or set "
                    "`remove_unused_columns=False` in the training arguments so the Trainer does not drop them."
                )

    def _tokens(self, feature, index) -> list[int]:
        where = describe_row(feature, index)
        tokens = feature[self.tokens_column]
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.tolist()
        tokens = list(tokens)
        if not tokens:
            raise ValueError(
                f"{where} has an empty `{self.tokens_column}` sequence. Filter such rows first, e.g. "
                f"`dataset.filter(lambda row: len(row['{self.tokens_column}']) > 0)`."
            )
        if self.max_length is not None and len(tokens) > self.max_length:
            if not self.truncation:
                raise ValueError(
                    f"{where} has {len(tokens)} speech tokens, more than max_length={self.max_length}. Pass "
                    "`truncation=True`, filter long rows, or use a model with larger max_position_embeddings."
                )
            tokens = tokens[: self.max_length]
        if self.vocab_size is not None:
            check_token_range(tokens, self.vocab_size, where)
        return tokens

    def _label(self, label, index: int | str) -> int:
        # `index`: the position in the batch, or already a description of the row ("Dataset row 12").
        where = index if isinstance(index, str) else f"Sample {index} of the batch"
        if isinstance(label, str):
            if self.label2id is None:
                raise ValueError(
                    f"{where} has the string label {label!r}; the model needs integer ids. Cast the column with "
                    "`dataset.cast_column('emotion', ClassLabel(names=...))` or pass `label2id=model.config.label2id`."
                )
            try:
                name = normalize_emotion(label)
            except UnknownEmotionError as error:
                raise UnknownEmotionError(f"{where}: {error}") from None
            if name not in self.label2id:
                raise UnknownEmotionError(
                    f"{where} has label {label!r} (canonical {name!r}), which the model does not predict; its "
                    f"labels are {sorted(self.label2id)}. Filter these rows or add the class to the model's id2label."
                )
            return int(self.label2id[name])
        # ints, numpy ints and one-element integer tensors have __index__; floats and bools are rejected.
        if isinstance(label, bool) or not hasattr(label, "__index__"):
            raise TypeError(f"{where} has label {label!r} of type {type(label).__name__}; expected an int.")
        label = int(label)
        if label < 0 or (self.label2id is not None and label >= len(self.label2id)):
            raise ValueError(f"{where} has label id {label}, outside the model's classes.")
        return label


@dataclass
class DataCollatorForEnergyAdaptiveMixup(DataCollatorForSpeechEmotion):
    """:class:`DataCollatorForSpeechEmotion` plus a seeded Energy-Adaptive Mixup plan (Algorithm 1).

    With probability ``eam_probability`` a batch also gets ``eam_partner``, ``eam_mix_length``,
    ``eam_start``, ``eam_partner_start`` and ``eam_snr_db`` (each ``(B,)``); the model mixes its
    features with them and returns the partner labels and lambdas. The random stream is seeded,
    so the same sequence of batches gets the same plans; each DataLoader worker gets its own
    stream (``seed + worker_id``) so workers do not repeat each other's plans.
    """

    eam_probability: float = field(
        default=1.0, metadata={"help": "Fraction of batches that are mixed (paper: every batch, 1.0)."}
    )
    snr_range_db: Sequence[float] = field(
        default=(-5.0, 5.0), metadata={"help": "Algorithm 1 SNR range [r_min, r_max] in dB (paper: [-5, 5])."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the plan sampler."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.eam_probability <= 1.0:
            raise ValueError(f"`eam_probability` must lie in [0, 1], got {self.eam_probability}.")
        if len(self.snr_range_db) != 2 or self.snr_range_db[0] > self.snr_range_db[1]:
            raise ValueError(f"`snr_range_db` must be (r_min, r_max) with r_min <= r_max, got {self.snr_range_db}.")
        self._generators: dict[int, torch.Generator] = {}
        # Main-process stream states before recent calls, by call number: a DataLoader collates a batch ahead of
        # the training step, so a checkpoint must record the state before the first batch *not yet trained on*.
        self._calls = 0
        self._states_before_call: dict[int, torch.Tensor] = {}

    def plan_rng_state(self, batches_consumed: int) -> torch.Tensor | None:
        """State of the main-process plan stream after `batches_consumed` batches (None if it is not known)."""
        if batches_consumed == self._calls:
            return self._generator().get_state()
        return self._states_before_call.get(batches_consumed)

    def set_plan_rng_state(self, state: torch.Tensor, batches_consumed: int) -> None:
        """Continue the main-process plan stream from `plan_rng_state(batches_consumed)` (resuming a run)."""
        self._generator().set_state(state)
        self._calls = batches_consumed
        self._states_before_call.clear()

    def _generator(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else -1
        if worker_id not in self._generators:
            self._generators[worker_id] = torch.Generator().manual_seed(self.seed + worker_id + 1)
        return self._generators[worker_id]

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        generator = self._generator()
        if torch.utils.data.get_worker_info() is None:
            self._states_before_call[self._calls] = generator.get_state()
            self._states_before_call.pop(self._calls - 8, None)  # a few batches of prefetch are all that matter
            self._calls += 1
        # Always draw the coin so the stream advances the same way whatever the outcome.
        mix_this_batch = torch.rand((), generator=generator).item() < self.eam_probability
        if mix_this_batch and len(features) > 1:
            batch.update(sample_eam_plan(batch["attention_mask"].sum(dim=1), tuple(self.snr_range_db), generator))
        return batch


__all__ = ["DataCollatorForEnergyAdaptiveMixup", "DataCollatorForSpeechEmotion"]
