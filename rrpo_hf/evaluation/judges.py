"""The judges a TTS paper reports, on waveforms: intelligibility (CER / WER of an ASR model), speaker similarity to the
prompt speaker (an x-vector model), an independent emotion judge (an audio-classification model, not the training
RM), and DNSMOS (:class:`~rrpo_hf.evaluation.audio.DNSMOSScorer`).

Each judge is named by a transformers model (a Hub id or a saved folder) and called as

    judge(waveforms, sampling_rate, *, texts=None, target_emotions=None, prompt_waveforms=None) -> {name: per clip}

with one mono float waveform per clip; a judge reads the keyword it needs and ignores the others. The values are
floats per clip (the ASR judge also returns its transcripts, strings, under ``<name>_transcript``). Two places use
them:

* ``examples/evaluate_audio.py --asr_model ... --speaker_model ... --emotion_judge_model ...`` on synthesised clips
  (:func:`~rrpo_hf.evaluation.audio.evaluate_audio`, ``audio_judges=``);
* :class:`SynthesizedSpeechScorer`, an evaluation scorer of ``DiffROTrainer(eval_scorers=...)``: it turns the
  generated speech tokens into waveforms through a ``token2wav`` callable and runs the judges on them.

Audio at another rate than a model's feature extractor expects is resampled (``scipy.signal.resample_poly``).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from ..data.labels import UnknownEmotionError, emotion_key, emotion_label_ids
from .audio import DNSMOSScorer


__all__ = [
    "ASRJudge",
    "EmotionJudge",
    "SpeakerSimilarityJudge",
    "SynthesizedSpeechScorer",
    "normalize_transcript",
    "resample",
]


def resample(waveform: np.ndarray, sampling_rate: int, target_rate: int) -> np.ndarray:
    """`waveform` (mono float) at `target_rate`, by polyphase filtering; unchanged when the rates agree."""
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if int(sampling_rate) == int(target_rate):
        return waveform
    from scipy.signal import resample_poly

    ratio = Fraction(int(target_rate), int(sampling_rate))
    return resample_poly(waveform, ratio.numerator, ratio.denominator).astype(np.float32)


def normalize_transcript(text: str) -> str:
    """Lower case, punctuation removed (Unicode category P*), whitespace collapsed: how a transcript and its
    reference are compared, so that an ASR model's casing and punctuation count as no error."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = "".join(" " if unicodedata.category(char).startswith("P") else char for char in text)
    return " ".join(text.split())


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load(auto_class, model, device, init_kwargs):
    """`(feature_extractor, model)` from a path / Hub id, or from a `(feature_extractor, model)` pair."""
    from transformers import AutoFeatureExtractor

    if isinstance(model, tuple):
        extractor, module = model
    else:
        extractor = AutoFeatureExtractor.from_pretrained(model, **(init_kwargs or {}))
        module = auto_class.from_pretrained(model, **(init_kwargs or {}))
    return extractor, module.to(device).eval()


@torch.no_grad()
def _per_clip(extractor, model, waveforms: Sequence[np.ndarray], sampling_rate: int, device, output: str):
    """`output` of `model` for each clip alone, stacked: one forward per clip, because padding changes what
    models with group-normalised convolutions (wav2vec2-base, WavLM-base) compute for the shorter clips, and a clip's
    score must not depend on which clips share its batch."""
    rate = extractor.sampling_rate
    rows = []
    for waveform in waveforms:
        inputs = extractor(resample(waveform, sampling_rate, rate), sampling_rate=rate, return_tensors="pt")
        rows.append(getattr(model(**{key: value.to(device) for key, value in inputs.items()}), output)[0].float())
    return torch.stack(rows).cpu()


class ASRJudge:
    """Intelligibility: per clip, the character and word error rates of an ASR model's transcript against the text
    the speech should say (``<name>_cer``, ``<name>_wer``; both after :func:`normalize_transcript`, by `jiwer`), and
    the transcript (``<name>_transcript``).

    Args:
        model: a Hub id or folder for ``pipeline("automatic-speech-recognition", model=...)`` (Whisper, wav2vec2 /
            HuBERT CTC, Paraformer-style CTC models, ...), or a ready pipeline.
        name (`str`, defaults to `"asr"`): the prefix of its values.
        language (`str`, *optional*): passed to a Whisper-style model's `generate` (e.g. `"english"`), so that it
            transcribes instead of guessing the language.
        batch_size (`int`, defaults to 1): clips per pipeline call. Above 1 the pipeline pads, which changes the
            transcripts of group-normalised CTC models (wav2vec2-base); Whisper-style models pad anyway.
        device: of the pipeline.
        generate_kwargs (`dict`, *optional*): further `generate` arguments of a sequence-to-sequence model.
    """

    def __init__(
        self,
        model: Any,
        name: str = "asr",
        language: str | None = None,
        batch_size: int = 1,
        device: str | torch.device | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
    ):
        try:
            import jiwer  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "The ASR judge computes CER / WER with `jiwer`: `pip install jiwer` (or `pip install rrpo-hf[audio]`)."
            ) from error
        from transformers import Pipeline, pipeline

        self.name = name
        self.batch_size = batch_size
        if isinstance(model, Pipeline):
            self.pipeline = model
        else:
            self.pipeline = pipeline("automatic-speech-recognition", model=model, device=_device(device))
        self.generate_kwargs = dict(generate_kwargs or {})
        if language is not None:
            self.generate_kwargs.setdefault("language", language)
        self.sampling_rate = self.pipeline.feature_extractor.sampling_rate

    def transcribe(self, waveforms: Sequence[np.ndarray], sampling_rate: int) -> list[str]:
        inputs = [
            {"raw": resample(waveform, sampling_rate, self.sampling_rate), "sampling_rate": self.sampling_rate}
            for waveform in waveforms
        ]
        kwargs = {"generate_kwargs": self.generate_kwargs} if self.generate_kwargs else {}
        outputs = self.pipeline(inputs, batch_size=self.batch_size, **kwargs)
        return [output["text"] for output in outputs]

    def __call__(self, waveforms, sampling_rate, *, texts=None, **_) -> dict[str, list]:
        import jiwer

        if texts is None or len(texts) != len(waveforms):
            raise ValueError(
                f"The ASR judge compares each clip with the text it should say: give `texts`, one per clip "
                f"({len(waveforms)} clips, {None if texts is None else len(texts)} texts)."
            )
        transcripts = self.transcribe(waveforms, sampling_rate)
        cer, wer = [], []
        for text, transcript in zip(texts, transcripts):
            reference, hypothesis = normalize_transcript(text), normalize_transcript(transcript)
            if not reference:
                # An error rate against nothing is undefined; NaN keeps the row and drops out of the means.
                cer.append(math.nan)
                wer.append(math.nan)
                continue
            cer.append(float(jiwer.cer(reference, hypothesis)))
            wer.append(float(jiwer.wer(reference, hypothesis)))
        return {f"{self.name}_cer": cer, f"{self.name}_wer": wer, f"{self.name}_transcript": transcripts}


class SpeakerSimilarityJudge:
    """Speaker similarity: per clip, the cosine similarity of its x-vector and the prompt speaker's
    (``<name>_similarity``), as TTS papers report SIM with WavLM x-vectors.

    Args:
        model: a Hub id or folder of an `AutoModelForAudioXVector` (e.g. `microsoft/wavlm-base-plus-sv`) with its
            feature extractor, or a `(feature_extractor, model)` pair.
        name (`str`, defaults to `"speaker"`): the prefix of its values.
        reference (*optional*): `(waveform, sampling_rate)` of the prompt speaker, used for every clip that gets no
            `prompt_waveforms` of its own.
    """

    def __init__(
        self,
        model: Any,
        name: str = "speaker",
        reference: tuple[np.ndarray, int] | None = None,
        device: str | torch.device | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ):
        from transformers import AutoModelForAudioXVector

        self.name = name
        self.device = _device(device)
        self.feature_extractor, self.model = _load(AutoModelForAudioXVector, model, self.device, init_kwargs)
        self.reference = None if reference is None else self.embed([reference[0]], reference[1])[0]

    def embed(self, waveforms: Sequence[np.ndarray], sampling_rate: int) -> torch.Tensor:
        """`(N, D)` unit-length x-vectors, one per clip."""
        embeddings = _per_clip(self.feature_extractor, self.model, waveforms, sampling_rate, self.device, "embeddings")
        return torch.nn.functional.normalize(embeddings, dim=-1)

    def __call__(self, waveforms, sampling_rate, *, prompt_waveforms=None, **_) -> dict[str, list]:
        embeddings = self.embed(waveforms, sampling_rate)
        if prompt_waveforms is not None:
            if len(prompt_waveforms) != len(waveforms):
                raise ValueError(f"{len(prompt_waveforms)} prompt waveforms for {len(waveforms)} clips.")
            references = self.embed(prompt_waveforms, sampling_rate)
        elif self.reference is not None:
            references = self.reference.expand_as(embeddings)
        else:
            raise ValueError(
                "Speaker similarity needs the prompt speaker: give each clip's `prompt_waveforms`, or a `reference` "
                "(waveform, sampling_rate) at construction (evaluate_audio.py: --speaker_reference or a manifest "
                "column `prompt_audio`)."
            )
        return {f"{self.name}_similarity": (embeddings * references).sum(dim=-1).tolist()}


class EmotionJudge:
    """An emotion classifier on audio, independent of the training reward model: per clip whether its top label is
    the target emotion (``<name>_accuracy``) and the probability it gives the target (``<name>_target_prob``).

    Its labels are matched to the targets through their canonical names (:func:`rrpo_hf.data.labels.emotion_key`:
    ``hap`` / ``happiness`` / ``happy`` are one emotion); a target it has no label for is an error.

    Args:
        model: a Hub id or folder of an `AutoModelForAudioClassification` speech-emotion model with its feature
            extractor, or a `(feature_extractor, model)` pair.
        name (`str`, defaults to `"emotion_judge"`): the prefix of its values.
    """

    def __init__(
        self,
        model: Any,
        name: str = "emotion_judge",
        device: str | torch.device | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ):
        from transformers import AutoModelForAudioClassification

        self.name = name
        self.device = _device(device)
        self.feature_extractor, self.model = _load(AutoModelForAudioClassification, model, self.device, init_kwargs)
        self.label_ids = emotion_label_ids(self.model.config.id2label)

    def probabilities(self, waveforms: Sequence[np.ndarray], sampling_rate: int) -> torch.Tensor:
        """`(N, num_labels)` class probabilities, one row per clip."""
        logits = _per_clip(self.feature_extractor, self.model, waveforms, sampling_rate, self.device, "logits")
        return logits.softmax(dim=-1)

    def __call__(self, waveforms, sampling_rate, *, target_emotions=None, **_) -> dict[str, list]:
        if target_emotions is None or len(target_emotions) != len(waveforms):
            raise ValueError("The emotion judge needs `target_emotions`, one per clip.")
        keys = [emotion_key(emotion) for emotion in target_emotions]
        missing = sorted(set(keys) - set(self.label_ids))
        if missing:
            raise UnknownEmotionError(
                f"The emotion judge has no label for target emotion(s) {missing}; its labels are "
                f"{sorted(self.label_ids)}. Use a judge trained on these emotions, or leave these clips out."
            )
        probabilities = self.probabilities(waveforms, sampling_rate)
        targets = torch.tensor([self.label_ids[key] for key in keys])
        target_prob = probabilities.gather(1, targets[:, None])[:, 0]
        correct = (probabilities.argmax(dim=-1) == targets).float()
        return {f"{self.name}_accuracy": correct.tolist(), f"{self.name}_target_prob": target_prob.tolist()}


class SynthesizedSpeechScorer:
    """An evaluation scorer (`DiffROTrainer(eval_scorers=[...])`) that judges the generated speech as audio: each
    sample's tokens go through `token2wav`, then through every judge.

    Args:
        token2wav: `token2wav(speech_tokens) -> (waveform, sampling_rate)`, e.g. CosyVoice2's flow + HiFT with a fixed
            speaker prompt (docs/completions.md).
        judges: any of :class:`ASRJudge` (reads the batch's `texts`), :class:`SpeakerSimilarityJudge`,
            :class:`EmotionJudge` (reads `target_emotions`), and a
            :class:`~rrpo_hf.evaluation.audio.DNSMOSScorer` (``dnsmos_ovrl``, ``dnsmos_sig``, ``dnsmos_bak``,
            ``dnsmos_p808``; 16 kHz).
        prompt_speech: with voice cloning, the speaker similarity is measured against each row's prompt speech
            (`prompt_speech_ids` of the batch), synthesised by the same `token2wav`; else against the speaker
            judge's `reference`.

    Returns the judges' float values per sample (transcripts are dropped: a scorer's values are numbers).
    """

    def __init__(self, token2wav: Callable, judges: Sequence[Any], prompt_speech: bool = True):
        if not callable(token2wav):
            raise TypeError("token2wav must be a callable `token2wav(speech_tokens) -> (waveform, sampling_rate)`.")
        if not judges:
            raise ValueError("SynthesizedSpeechScorer needs at least one judge.")
        self.token2wav = token2wav
        self.judges = list(judges)
        self.prompt_speech = prompt_speech

    def synthesize(self, tokens: Sequence[Sequence[int]]) -> tuple[list[np.ndarray], int]:
        """One waveform per token list, all at the first one's rate."""
        waveforms, rate = [], None
        for sample in tokens:
            waveform, sampling_rate = self.token2wav([int(t) for t in sample])
            if isinstance(waveform, torch.Tensor):
                waveform = waveform.detach().cpu().float().numpy()
            rate = int(sampling_rate) if rate is None else rate
            waveforms.append(resample(waveform, sampling_rate, rate))
        return waveforms, rate

    def _prompt_waveforms(self, batch: Mapping[str, Any]) -> list[np.ndarray] | None:
        if not self.prompt_speech or "prompt_speech_ids" not in batch:
            return None
        ids, mask = batch["prompt_speech_ids"], batch["prompt_speech_attention_mask"]
        prompts = [row[: int(length)].tolist() for row, length in zip(ids, mask.sum(dim=1))]
        if any(len(prompt) == 0 for prompt in prompts):
            return None  # rows without a prompt: the judge's fixed reference, if any
        return self.synthesize(prompts)[0]

    def __call__(self, tokens: list[list[int]], batch: Mapping[str, Any]) -> dict[str, list[float]]:
        waveforms, rate = self.synthesize(tokens)
        context = {
            "texts": batch.get("texts"),
            "target_emotions": batch.get("target_emotions"),
            "prompt_waveforms": None,
        }
        if any(isinstance(judge, SpeakerSimilarityJudge) for judge in self.judges):
            context["prompt_waveforms"] = self._prompt_waveforms(batch)
        scores: dict[str, list[float]] = {}
        for judge in self.judges:
            if isinstance(judge, DNSMOSScorer):  # per-clip dicts, 16 kHz
                rows = judge([resample(waveform, rate, judge.sampling_rate) for waveform in waveforms])
                values = {key: [row[key] for row in rows] for key in rows[0]}
            else:
                values = judge(waveforms, rate, **context)
            for name, column in values.items():
                if column and isinstance(column[0], str):
                    continue
                if name in scores:
                    raise ValueError(f"Two judges return {name!r}; give them different `name`s.")
                scores[name] = [float(value) for value in column]
        return scores
