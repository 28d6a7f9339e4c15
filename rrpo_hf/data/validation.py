"""Whole-dataset checks before training, and naming dataset rows in the collators' messages.

A collator sees one batch: a bad row found there stops the run at whatever step its batch comes up (or never, with
`max_steps` short of it), and the collator only knows the row's position in the batch. So the scripts check every
row up front with the collator's own rules (:func:`check_speech_lm_dataset`), and give each row its dataset index
in a `ROW_INDEX_COLUMN` column, which the collators read to name the row (the Trainer passes unused columns on to the
collator when `remove_unused_columns=False`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


#: Optional column holding each row's index in its dataset; collators name rows by it in their errors.
ROW_INDEX_COLUMN = "__index__"

#: How many problems the up-front check lists before summarising the rest.
MAX_LISTED_PROBLEMS = 5


def describe_row(row: Any, position: int) -> str:
    """``"Dataset row 12"`` when ``row`` carries its `ROW_INDEX_COLUMN`, else ``"Sample 3 of the batch"``."""
    index = row.get(ROW_INDEX_COLUMN) if isinstance(row, Mapping) else None
    if index is not None:
        return f"Dataset row {int(index)}"
    return f"Sample {position} of the batch"


def with_row_index(dataset):
    """``dataset`` with a `ROW_INDEX_COLUMN` column of 0..len-1 (replacing any earlier one), for collator messages."""
    if ROW_INDEX_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(ROW_INDEX_COLUMN)
    return dataset.add_column(ROW_INDEX_COLUMN, list(range(len(dataset))))


#: How to fix ids outside the codebook, the same advice wherever the check runs.
_TOKEN_RANGE_FIX = (
    "Check that the tokens come from the model's speech tokenizer (CosyVoice2 S3: 6561 ids) with stop ids stripped, "
    "or use a model whose codebook size matches."
)


def check_token_range(tokens, vocab_size: int, where: str, column: str | None = None) -> None:
    """Raise ``ValueError`` unless every id of one row's ``tokens`` lies in ``[0, vocab_size)``.

    An id outside the codebook would index past the embedding table (a CUDA assert far from its cause) or, for a
    reward model, land on its padding row. ``where`` names the row (:func:`describe_row`); ``column`` the column when
    it is not the speech tokens themselves. The message gives the row, the first bad id and the fix.
    """
    if len(tokens) == 0:
        return
    low, high = min(tokens), max(tokens)
    if 0 <= low and high < vocab_size:
        return
    position, bad = next((i, token) for i, token in enumerate(tokens) if not 0 <= token < vocab_size)
    name = "speech token" if column is None else f"'{column}'"
    raise ValueError(
        f"{where}: {name} ids must lie in [0, {vocab_size}), found range [{low}, {high}] (token id {bad} out of the "
        f"codebook [0, {vocab_size}) at position {position}). {_TOKEN_RANGE_FIX}"
    )


def check_token_range_in_column(column, vocab_size: int, split: str, column_name: str, offset: int = 0) -> None:
    """:func:`check_token_range` for every row of a pyarrow list column, vectorised (no Python loop over rows).

    ``column`` holds rows ``offset``, ``offset + 1``, ... of the ``split`` dataset; the error names the first row
    with a bad id by its dataset index, as the collators do.
    """
    import pyarrow.compute as pc

    flat = pc.list_flatten(column)
    min_max = pc.min_max(flat)
    low, high = min_max["min"].as_py(), min_max["max"].as_py()
    if low is None or (low >= 0 and high < vocab_size):
        return
    outside = pc.or_(pc.less(flat, 0), pc.greater_equal(flat, vocab_size))
    row = pc.list_parent_indices(column)[pc.index(outside, True).as_py()].as_py()
    where = f"{describe_row({ROW_INDEX_COLUMN: offset + row}, row)} of the {split} dataset"
    check_token_range(column[row].as_py(), vocab_size, where, column=column_name)


def _message(error: BaseException) -> str:
    # str(KeyError) adds quotes around the message.
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def check_speech_lm_dataset(dataset, collator, split: str = "train", batch_size: int = 1000):
    """Check every row of a speech-LM (SFT) dataset with ``collator``'s rules; return it with a row-index column.

    ``collator`` is a `DataCollatorForCosyVoice2` (or anything with its `prompt_text`, `_speech_tokens` and
    `_emotion_name`). Checked per row: the text is a non-empty string and tokenizes to at least one id; an emotion
    that phrases the instruction is a known label (`rrpo_hf.data.labels.normalize_emotion`); the speech tokens are
    non-empty ids in ``[0, speech_token_size)``; zero-shot rows have both `prompt_text` and `prompt_speech_tokens`
    (ids in the codebook). Raises ``ValueError`` listing the bad rows by their dataset index,
    with the fix, before any training step. ``None`` is passed through (no eval split).

    A `datasets.Dataset` comes back with a `ROW_INDEX_COLUMN` column so that collator errors later name the dataset
    row too; other datasets come back unchanged.
    """
    if dataset is None:
        return None
    problems: list[str] = []
    count = 0
    for start, rows in _row_batches(dataset, collator, batch_size):
        prompts, prompt_rows = [], []
        for offset, row in enumerate(rows):
            index = start + offset
            row = {**row, ROW_INDEX_COLUMN: index}
            count += 1
            try:
                prompt = collator.prompt_text(row, index)  # checks the text, and the emotion it phrases
                collator._speech_tokens(row, index)
                if hasattr(collator, "zero_shot_prompt"):  # both prompt columns or neither, ids in the codebook
                    collator.zero_shot_prompt(row, index)
            except (ValueError, KeyError, TypeError) as error:
                problems.append(_message(error))
                continue
            prompts.append(prompt)
            prompt_rows.append(index)
        if prompts:
            for index, ids in zip(prompt_rows, collator.tokenizer(prompts, add_special_tokens=False)["input_ids"]):
                if len(ids) == 0:
                    problems.append(
                        f"Dataset row {index}: the tokenizer produced no ids for its text. "
                        "Drop the row or fix the text."
                    )
    if problems:
        listed = "\n  - ".join(problems[:MAX_LISTED_PROBLEMS])
        more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise ValueError(
            f"The {split} dataset has {len(problems)} of {count} row(s) that cannot be trained on:"
            f"\n  - {listed}{more}\n"
            "Fix or drop them (e.g. `dataset.filter(...)`) before training; nothing was trained."
        )
    if hasattr(dataset, "add_column") and hasattr(dataset, "column_names"):
        return with_row_index(dataset)
    return dataset


def _row_batches(dataset, collator, batch_size: int):
    """``(first index, rows)`` in order; a `datasets.Dataset` is read column-wise, only the columns the checks use."""
    if hasattr(dataset, "iter") and hasattr(dataset, "column_names"):
        wanted = [
            getattr(collator, name)
            for name in (
                "text_column",
                "speech_column",
                "instruction_column",
                "emotion_column",
                "prompt_text_column",
                "prompt_speech_column",
            )
            if getattr(collator, name, None) in dataset.column_names
        ]
        start = 0
        for batch in dataset.select_columns(wanted).iter(batch_size=batch_size):
            size = len(next(iter(batch.values()))) if batch else 0
            rows = [{column: values[i] for column, values in batch.items()} for i in range(size)]
            yield start, rows
            start += size
        return
    rows = [dataset[i] for i in range(len(dataset))]
    for start in range(0, len(rows), batch_size):
        yield start, rows[start : start + batch_size]


__all__ = [
    "MAX_LISTED_PROBLEMS",
    "ROW_INDEX_COLUMN",
    "check_speech_lm_dataset",
    "check_token_range",
    "check_token_range_in_column",
    "describe_row",
    "with_row_index",
]
