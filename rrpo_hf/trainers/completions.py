"""Completion tables of the policy trainers, as TRL's `GRPOTrainer` writes them (`log_completions`).

Every logging step (and every evaluation) a policy trainer hands the samples behind the logged numbers to a
[`CompletionLog`]: per sample the prompt text, the target emotion, the sampled speech tokens and each reward
function's value (plus the judge and scorer values when they ran). The log

* prints them as a `rich` table (`num_completions_to_print` of them; all when `None`),
* writes them to ``<output_dir>/completions/completions_<step>.parquet`` (``<prefix>_completions_<step>.parquet``
  at evaluation), which reloads with ``datasets.load_dataset("parquet", data_files=...)``,
* logs them as a table named ``completions`` (``<prefix>_completions``) to wandb and trackio when they are in
  `report_to`,
* with a `token2wav` callable, synthesises the speech of the first `num_completions_to_print` rows, writes it as
  16-bit WAV under ``completions/audio/`` (the ``audio`` column holds the path relative to ``completions/``) and
  attaches it to the wandb / trackio tables as audio.

A token2wav is any callable ``token2wav(speech_tokens: list[int]) -> (waveform, sampling_rate)`` with a mono float
waveform in [-1, 1], e.g. a wrapper of CosyVoice2's flow + HiFT with a fixed speaker prompt (docs/completions.md).

The trainer gathers the rows from every process and calls `add` on all of them; only the main process keeps and
writes anything. Nothing here touches the training's random streams: `token2wav` and the scorers run under
[`isolated_rng`], so a run with completion logging trains exactly like one without.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch


logger = logging.getLogger(__name__)

#: `token2wav(speech_tokens) -> (mono float waveform in [-1, 1], sampling_rate)`.
Token2Wav = Callable[[list[int]], tuple[Any, int]]

#: Speech tokens shown in the printed table's `completion` column before it is cut ("… (+N)").
TOKENS_SHOWN = 24

#: Columns every row carries, in this order; reward and scorer columns follow.
BASE_COLUMNS = ("step", "prompt", "target_emotion", "completion", "completion_length")


def format_tokens(tokens: Sequence[int], shown: int = TOKENS_SHOWN) -> str:
    """The first `shown` ids separated by spaces, then ``… (+N)`` for the N left out."""
    tokens = [int(t) for t in tokens]
    text = " ".join(str(t) for t in tokens[:shown])
    return text if len(tokens) <= shown else f"{text} … (+{len(tokens) - shown})"


@contextlib.contextmanager
def isolated_rng(device: torch.device | str | None = None) -> Iterator[None]:
    """Run logging side work (vocoders, judges) without moving the global torch / numpy random state."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        np.random.set_state(numpy_state)


def completion_rows(
    prompts: Sequence[str],
    emotions: Sequence[str],
    tokens: Sequence[Sequence[int]],
    values: dict[str, Sequence[float]],
) -> list[dict[str, Any]]:
    """One row per sample: prompt, target emotion (`target_emotion`: the reward function "emotion" names its own
    column), the speech tokens (full list in ``speech_tokens``, cut in
    ``completion``), their count, then each named per-sample value (rewards, scores) as a float."""
    count = len(tokens)
    for name, column in [("prompts", prompts), ("emotions", emotions), *values.items()]:
        if len(column) != count:
            raise ValueError(f"Completion column {name!r} has {len(column)} values for {count} samples.")
    rows = []
    for index, sample in enumerate(tokens):
        sample = [int(t) for t in sample]
        row = {
            "prompt": str(prompts[index]),
            "target_emotion": str(emotions[index]),
            "completion": format_tokens(sample),
            "completion_length": len(sample),
            "speech_tokens": sample,
        }
        taken = sorted(set(values) & set(row))
        if taken:
            raise ValueError(f"Per-sample values named {taken} would overwrite a completion column; rename them.")
        row.update({name: float(column[index]) for name, column in values.items()})
        rows.append(row)
    return rows


class CompletionLog:
    """The completions of one logging window and where they go (module docstring).

    Args:
        output_dir: the run's `output_dir`; tables go to its ``completions/`` folder.
        report_to: `TrainingArguments.report_to`; tables are logged to "wandb" / "trackio" when listed.
        num_completions_to_print (`int` or `None`): rows printed (and synthesised with `token2wav`); `None`: all.
        token2wav (*optional*): adds the ``audio`` column (module docstring).
        max_rows (`int` or `None`): rows kept between two flushes, the newest; TRL keeps the last generation
            batch, a policy trainer the samples of its last optimizer step (all micro-batches and processes).
        is_main_process (`bool`): only the main process keeps rows and writes.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        report_to: Sequence[str] | str | None = None,
        num_completions_to_print: int | None = None,
        token2wav: Token2Wav | None = None,
        max_rows: int | None = None,
        is_main_process: bool = True,
    ):
        if num_completions_to_print is not None and num_completions_to_print < 1:
            raise ValueError(f"num_completions_to_print must be >= 1 or None, got {num_completions_to_print}.")
        if token2wav is not None and not callable(token2wav):
            raise TypeError(
                f"token2wav must be a callable `token2wav(speech_tokens) -> (waveform, sampling_rate)`, got "
                f"{type(token2wav).__name__}."
            )
        self.directory = os.path.join(os.fspath(output_dir), "completions")
        report_to = [report_to] if isinstance(report_to, str) else list(report_to or [])
        if "all" in report_to:
            # "all" means every installed integration, as for transformers' own callbacks.
            from importlib.util import find_spec

            report_to = [name for name in ("wandb", "trackio") if find_spec(name) is not None]
        self.report_to = report_to
        self.num_completions_to_print = num_completions_to_print
        self.token2wav = token2wav
        self.is_main_process = is_main_process
        self.rows: deque[dict[str, Any]] = deque(maxlen=max_rows)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.is_main_process:
            self.rows.extend(rows)

    def clear(self) -> None:
        self.rows.clear()

    def flush(self, step: int, prefix: str | None = None) -> str | None:
        """`write` the kept rows as the table of `step`, then forget them."""
        rows = list(self.rows)
        self.rows.clear()
        return self.write(rows, step, prefix)

    def write(self, rows: Sequence[dict[str, Any]], step: int, prefix: str | None = None) -> str | None:
        """Print, write and log `rows` as the table of `step`; returns the parquet path (`None` on other processes
        or without rows). `prefix` (e.g. "eval") names an evaluation's table."""
        if not self.is_main_process or not rows:
            return None
        rows = [{"step": int(step), **row} for row in rows]
        columns = list(dict.fromkeys([*BASE_COLUMNS, *(key for row in rows for key in row)]))
        rows = [{column: row.get(column, _missing(column)) for column in columns} for row in rows]
        name = "completions" if not prefix else f"{prefix}_completions"
        os.makedirs(self.directory, exist_ok=True)
        waveforms = self._synthesise(rows, step, name)
        self._print(rows, step, name)
        path = os.path.join(self.directory, f"{name}_{int(step):05d}.parquet")
        self._write_parquet(rows, path)
        self._report(rows, waveforms, name)
        return path

    # ------------------------------------------------------------------ outputs

    def _shown(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return rows if self.num_completions_to_print is None else rows[: self.num_completions_to_print]

    def _synthesise(self, rows: list[dict[str, Any]], step: int, name: str) -> dict[int, tuple[np.ndarray, int]]:
        if self.token2wav is None:
            return {}
        from scipy.io import wavfile

        audio_dir = os.path.join(self.directory, "audio")
        os.makedirs(audio_dir, exist_ok=True)
        waveforms = {}
        for row in rows:
            row["audio"] = None
        for index, row in enumerate(self._shown(rows)):
            with isolated_rng():
                waveform, sampling_rate = self.token2wav(list(row["speech_tokens"]))
            waveform = np.asarray(
                waveform.detach().cpu().float() if isinstance(waveform, torch.Tensor) else waveform,
                dtype=np.float32,
            ).reshape(-1)
            relative = os.path.join("audio", f"{name}_{int(step):05d}_{index:04d}.wav")
            pcm = (np.clip(waveform, -1.0, 1.0) * 32767).astype(np.int16)
            wavfile.write(os.path.join(self.directory, relative), int(sampling_rate), pcm)
            row["audio"] = relative
            waveforms[index] = (waveform, int(sampling_rate))
        return waveforms

    def _print(self, rows: list[dict[str, Any]], step: int, name: str) -> None:
        shown = self._shown(rows)
        columns = [c for c in rows[0] if c not in ("step", "speech_tokens", "audio")]
        try:
            from rich.console import Console
            from rich.panel import Panel
            from rich.table import Table
        except ImportError:
            lines = [" | ".join(columns)] + [" | ".join(_cell(row[c]) for c in columns) for row in shown]
            logger.info(f"{name} at step {step}:\n" + "\n".join(lines))
            return
        table = Table(show_header=True, header_style="bold white", expand=True, show_lines=True)
        for column in columns:
            numeric = isinstance(rows[0][column], (int, float))
            table.add_column(column, justify="right" if numeric else "left")
        for row in shown:
            table.add_row(*(_cell(row[c]) for c in columns))
        Console().print(Panel(table, expand=False, title=f"{name}, step {step}", border_style="bold white"))

    @staticmethod
    def _write_parquet(rows: list[dict[str, Any]], path: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..utils.saving import atomic_write

        table = pa.Table.from_pylist(rows)
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))

    def _report(self, rows: list[dict[str, Any]], waveforms: dict, name: str) -> None:
        backends = []
        if "wandb" in self.report_to:
            import wandb

            if wandb.run is not None:
                backends.append(wandb)
        if "trackio" in self.report_to:
            import trackio

            backends.append(trackio)
        if not backends:
            return
        import pandas as pd

        frame = pd.DataFrame([{k: v for k, v in row.items() if k != "speech_tokens"} for row in rows])
        for backend in backends:
            table_frame = frame
            if waveforms:
                audio = [None] * len(rows)
                for index, (waveform, sampling_rate) in waveforms.items():
                    audio[index] = backend.Audio(waveform, sample_rate=sampling_rate)
                table_frame = frame.assign(audio=audio)
            backend.log({name: backend.Table(dataframe=table_frame)})


def _missing(column: str) -> Any:
    # A scorer column that a row lacks (its step ran no scorer): NaN keeps the parquet column numeric.
    return None if column in ("audio",) else math.nan


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


__all__ = ["CompletionLog", "Token2Wav", "completion_rows", "format_tokens", "isolated_rng"]
