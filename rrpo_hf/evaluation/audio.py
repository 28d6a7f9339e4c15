"""Objective evaluation of synthesized emotional speech.

For a folder or manifest of synthesized clips with their *target* emotions this computes, per clip:

* DNSMOS P.835 (``ovrl``, ``sig``, ``bak``) and P.808 MOS with the ONNX models shipped inside the
  PyPI ``speechmos`` wheel (16 kHz, CPU) -- the objective naturalness score;
* the reward model's view: audio -> speech tokens (any :class:`SpeechTokenizer`) -> RM logits,
  giving the predicted emotion, whether it matches the target, the target probability and the
  reward ``-L`` (label-smoothed cross-entropy to the target, the quantity DiffRO/RRPO maximise);
* the field's judges on the audio (:mod:`rrpo_hf.evaluation.judges`: ASR CER / WER, speaker similarity to the
  prompt speaker, an independent emotion classifier), as ``audio_judges``;
* optional extra judges (any callable ``judge(waveforms, target_emotions) -> scores``).

and aggregates them per target emotion. :meth:`AudioEvaluationResult.save` writes CSV tables, a
JSON summary, the skipped-file list and a histogram figure.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrpo_hf.data.audio import (
    TARGET_SAMPLING_RATE,
    AudioRecord,
    AudioValidationConfig,
    AudioValidationError,
    SkipReport,
    _atomic_write_text,
    load_and_validate,
)
from rrpo_hf.data.labels import normalize_emotions
from rrpo_hf.data.speech_tokenizer import SpeechTokenizer
from rrpo_hf.utils.saving import atomic_write


#: A judge scores a batch of 16 kHz waveforms against their target emotions, one float per clip.
Judge = Callable[[list[np.ndarray], list[str]], Sequence[float]]

DNSMOS_KEYS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")


class DNSMOSScorer:
    """DNSMOS P.835 + P.808 through ``speechmos`` (ONNX Runtime, CPU).

    Clips shorter than the models' 9.01 s input are tiled by speechmos; longer clips are scored on
    1 s-hop windows and averaged. Samples outside [-1, 1] are clipped first (speechmos rejects them).
    """

    sampling_rate = TARGET_SAMPLING_RATE

    def __init__(self, personalized: bool = False):
        try:
            from speechmos import dnsmos as speechmos_dnsmos
        except ImportError as error:
            raise ImportError(
                f"DNSMOS needs the `speechmos` package and its undeclared dependencies ({error}). Install them with "
                "`pip install speechmos librosa onnxruntime requests` (or `pip install rrpo-hf[audio]`), or pass "
                "`dnsmos=None` to skip DNSMOS."
            ) from error
        package_dir = Path(speechmos_dnsmos.__file__).parent
        primary = package_dir / ("pdnsmos_models" if personalized else "dnsmos_models") / "sig_bak_ovr.onnx"
        self.personalized = personalized
        self._model = speechmos_dnsmos.DNSMOS(str(primary), str(package_dir / "dnsmos_models" / "model_v8.onnx"))

    def score(self, waveform: np.ndarray, sampling_rate: int = TARGET_SAMPLING_RATE) -> dict[str, float]:
        if sampling_rate != self.sampling_rate:
            raise ValueError(f"DNSMOS needs {self.sampling_rate} Hz audio, got {sampling_rate} Hz; resample first.")
        waveform = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)
        if waveform.ndim != 1 or waveform.size == 0:
            raise ValueError(f"DNSMOS scores non-empty mono waveforms, got shape {waveform.shape}.")
        raw = self._model(waveform, self.sampling_rate, self.personalized)
        return {
            "dnsmos_ovrl": float(raw["ovrl_mos"]),
            "dnsmos_sig": float(raw["sig_mos"]),
            "dnsmos_bak": float(raw["bak_mos"]),
            "dnsmos_p808": float(raw["p808_mos"]),
        }

    def __call__(self, waveforms: Sequence[np.ndarray]) -> list[dict[str, float]]:
        return [self.score(w) for w in waveforms]


class RewardModelScorer:
    """Audio -> speech tokens -> reward model -> emotion prediction and reward.

    Args:
        model: a :class:`RobustSERForAudioClassification` (or a path to one).
        tokenizer: the :class:`SpeechTokenizer` whose tokens the RM was trained on (S3 for CosyVoice2).
        batch_size: clips per RM forward pass.
        label_smoothing: epsilon of the reward's smoothed target; default ``model.config.label_smoothing``,
            so the reward equals ``-L_emo`` of the RRPO objective.
    """

    def __init__(
        self,
        model,
        tokenizer: SpeechTokenizer,
        batch_size: int = 16,
        device: str | None = None,
        label_smoothing: float | None = None,
    ):
        import torch

        if tokenizer is None:
            raise ValueError(
                "Scoring audio with a reward model needs a speech tokenizer (audio -> tokens). Pass "
                "`tokenizer=load_speech_tokenizer('speech_tokenizer_v2.onnx')` (onnxruntime, runs on CPU; see "
                "docs/audio.md) or another SpeechTokenizer implementation."
            )
        if isinstance(model, (str, os.PathLike)):
            from rrpo_hf.models.robust_ser import RobustSERForAudioClassification

            model = RobustSERForAudioClassification.from_pretrained(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        config = model.config
        self.label_smoothing = config.label_smoothing if label_smoothing is None else label_smoothing
        self.label2id = {str(name): int(i) for name, i in config.label2id.items()}
        self.id2label = {int(i): str(name) for i, name in config.id2label.items()}
        self.pad_token_id = config.pad_token_id if config.pad_token_id is not None else config.vocab_size
        self.max_length = getattr(config, "max_position_embeddings", None)
        if tokenizer.codebook_size > config.vocab_size:
            raise ValueError(
                f"The tokenizer's codebook ({tokenizer.codebook_size}) is larger than the reward model's vocab_size "
                f"({config.vocab_size}): this RM was not trained on these tokens."
            )

    def score_tokens(self, speech_tokens: Sequence[Sequence[int]], target_emotions: Sequence[str]) -> dict[str, list]:
        """Per clip: the RM's predicted emotion, whether it is the target, ``P(target)`` and the reward ``-L_emo``
        (Eq. 3 with ``label_smoothing``), through the package's one batched classifier call
        (:func:`~rrpo_hf.evaluation.scorers.classifier_logits`); clips longer than the RM reads are cut."""
        import torch

        from rrpo_hf.data.labels import emotion_key, emotion_label_ids
        from rrpo_hf.evaluation.scorers import classifier_logits
        from rrpo_hf.ops.label_smoothing import mixup_emotion_loss

        lookup = emotion_label_ids(self.model.config.id2label)
        unknown = sorted({emotion for emotion in target_emotions if emotion_key(emotion) not in lookup})
        if unknown:
            raise ValueError(
                f"Target emotions {unknown} are not labels of the reward model (its labels: {sorted(self.label2id)})."
            )
        if any(len(tokens) == 0 for tokens in speech_tokens):
            raise ValueError("A clip produced no speech tokens; it is too short for the tokenizer.")
        try:
            logits = classifier_logits(self.model, speech_tokens, self.batch_size, max_length=self.max_length)
        except ValueError as error:
            raise ValueError(
                f"Speech token ids lie outside the reward model's vocabulary [0, {self.model.config.vocab_size}): "
                f"the tokenizer does not match the one the RM was trained on. {error}"
            ) from None
        targets = torch.tensor([lookup[emotion_key(emotion)] for emotion in target_emotions], dtype=torch.long)
        predicted = logits.argmax(-1)
        loss = mixup_emotion_loss(logits, targets, epsilon=self.label_smoothing, reduction="none")
        return {
            "rm_predicted": [self.id2label[int(i)] for i in predicted],
            "rm_correct": (predicted == targets).tolist(),
            "rm_target_prob": logits.softmax(-1).gather(1, targets[:, None])[:, 0].tolist(),
            "rm_reward": (-loss).tolist(),
        }

    def __call__(self, waveforms: Sequence[np.ndarray], target_emotions: Sequence[str]) -> dict[str, list]:
        tokens = self.tokenizer.tokenize(list(waveforms), sampling_rate=TARGET_SAMPLING_RATE)
        return self.score_tokens(tokens, target_emotions)


@dataclass
class AudioEvaluationResult:
    """Per-clip rows, per-emotion aggregates and the skip report of one evaluation."""

    per_clip: list[dict[str, Any]]
    per_emotion: dict[str, dict[str, float]]
    report: SkipReport
    metrics: list[str] = field(default_factory=list)

    @property
    def overall(self) -> dict[str, float]:
        return self.per_emotion.get("all", {})

    def to_dict(self) -> dict[str, Any]:
        return {"per_emotion": self.per_emotion, "skipped": self.report.to_dict()}

    def save(self, output_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
        """Write ``per_clip.csv``, ``per_emotion.csv``, ``summary.json``, ``skipped.tsv`` and ``histograms.png``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "per_clip": _atomic_write_text(output_dir / "per_clip.csv", _to_csv(self.per_clip)),
            "per_emotion": _atomic_write_text(
                output_dir / "per_emotion.csv",
                _to_csv([{"emotion": emotion, **values} for emotion, values in self.per_emotion.items()]),
            ),
            "summary": _atomic_write_text(output_dir / "summary.json", json.dumps(self.to_dict(), indent=2) + "\n"),
            "skipped": self.report.write(output_dir / "skipped.tsv"),
        }
        if plot and self.per_clip:
            paths["histograms"] = plot_histograms(self.per_clip, self.metrics, output_dir / "histograms.png")
        return paths


def _to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot_histograms(per_clip: list[dict[str, Any]], metrics: Sequence[str], path: str | os.PathLike) -> Path:
    """One histogram per metric, one colour per target emotion; saved atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(isinstance(row.get(m), (int, float)) for row in per_clip)]
    if not metrics:
        raise ValueError("No numeric metric to plot.")
    emotions = sorted({row["emotion"] for row in per_clip})
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for emotion in emotions:
            values = [
                float(row[metric]) for row in per_clip if row["emotion"] == emotion and row.get(metric) is not None
            ]
            if values:
                axis.hist(values, bins=20, alpha=0.5, label=f"{emotion} (n={len(values)})")
        axis.set_xlabel(metric)
        axis.set_ylabel("clips")
        axis.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(figure)
    return path


def _mean(values: list) -> float:
    finite = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_audio(
    records: Sequence[AudioRecord],
    dnsmos: DNSMOSScorer | None = None,
    reward_scorer: RewardModelScorer | None = None,
    judges: Mapping[str, Judge] | None = None,
    validation: AudioValidationConfig | None = None,
    batch_size: int = 16,
    extra_aliases: Mapping[str, str] | None = None,
    show_progress: bool = True,
    audio_judges: Sequence[Callable[..., Mapping[str, Sequence]]] = (),
) -> AudioEvaluationResult:
    """Score every clip of ``records`` (``record.emotion`` is the *target* emotion of the synthesis).

    ``audio_judges`` (:mod:`rrpo_hf.evaluation.judges`) are called as ``judge(waveforms, 16000, texts=...,
    target_emotions=..., prompt_waveforms=...)``; ``prompt_waveforms`` are the records' ``prompt_audio`` clips when
    every clip of the batch has one (else ``None``: a speaker judge then uses its fixed reference). Their numeric
    values are aggregated per emotion like DNSMOS; text values (transcripts) go to the per-clip table only.

    Clips failing validation (unreadable, silent, ...) are skipped and counted in the result's report.
    """
    from tqdm.auto import tqdm

    if dnsmos is None and reward_scorer is None and not judges and not audio_judges:
        raise ValueError("Nothing to evaluate: pass `dnsmos`, `reward_scorer`, `audio_judges` and/or `judges`.")
    validation = validation or AudioValidationConfig(max_duration_s=120.0)
    targets = normalize_emotions([r.emotion for r in records], extra_aliases)
    report = SkipReport(total=len(records))
    rows: list[dict[str, Any]] = []
    metrics: list[str] = []
    if dnsmos is not None:
        metrics += list(DNSMOS_KEYS)
    if reward_scorer is not None:
        metrics += ["rm_target_prob", "rm_reward"]
    metrics += [f"judge_{name}" for name in judges or {}]

    progress = tqdm(total=len(records), desc="Evaluating audio", disable=not show_progress)
    for start in range(0, len(records), batch_size):
        waveforms, batch_rows, prompts = [], [], []
        for record, target in zip(records[start : start + batch_size], targets[start : start + batch_size]):
            try:
                waveform = load_and_validate(record.audio, validation)
            except AudioValidationError as error:
                report.add(record.audio_path, error.reason, error.detail)
                continue
            waveforms.append(waveform)
            prompts.append(record.prompt_audio)
            batch_rows.append(
                {
                    "audio_path": record.audio_path,
                    "emotion": target,
                    "text": record.text,
                    "duration": waveform.size / validation.target_sampling_rate,
                }
            )
        progress.update(min(batch_size, len(records) - start))
        if not waveforms:
            continue
        batch_targets = [row["emotion"] for row in batch_rows]
        if dnsmos is not None:
            for row, scores in zip(batch_rows, dnsmos(waveforms)):
                row.update(scores)
        if reward_scorer is not None:
            scored = reward_scorer(waveforms, batch_targets)
            for key, values in scored.items():
                for row, value in zip(batch_rows, values):
                    row[key] = value
        if audio_judges:
            prompt_waveforms = (
                [load_and_validate(path, validation) for path in prompts] if prompts and all(prompts) else None
            )
            for judge in audio_judges:
                scored = judge(
                    waveforms,
                    validation.target_sampling_rate,
                    texts=[row["text"] for row in batch_rows],
                    target_emotions=batch_targets,
                    prompt_waveforms=prompt_waveforms,
                )
                for key, values in scored.items():
                    if len(values) != len(batch_rows):
                        raise ValueError(f"Judge value {key!r} has {len(values)} entries for {len(batch_rows)} clips.")
                    if key not in metrics and not (values and isinstance(values[0], str)):
                        metrics.append(key)
                    for row, value in zip(batch_rows, values):
                        row[key] = value
        for name, judge in (judges or {}).items():
            scores = list(judge(waveforms, batch_targets))
            if len(scores) != len(waveforms):
                raise ValueError(f"Judge {name!r} returned {len(scores)} scores for {len(waveforms)} clips.")
            for row, value in zip(batch_rows, scores):
                row[f"judge_{name}"] = float(value)
        rows += batch_rows
    progress.close()
    report.kept = len(rows)

    aggregate_keys = list(metrics) + (["rm_correct"] if reward_scorer is not None else [])
    per_emotion: dict[str, dict[str, float]] = {}
    for emotion in sorted({row["emotion"] for row in rows}) + ["all"]:
        group = [row for row in rows if emotion == "all" or row["emotion"] == emotion]
        summary: dict[str, float] = {"num_clips": len(group)}
        for key in aggregate_keys:
            name = "rm_emotion_accuracy" if key == "rm_correct" else key
            summary[name] = _mean([float(row[key]) for row in group if key in row])
        per_emotion[emotion] = summary
    return AudioEvaluationResult(per_clip=rows, per_emotion=per_emotion, report=report, metrics=metrics)
