"""Waveform -> discrete speech tokens.

:class:`SpeechTokenizer` is the interface the data pipeline and the audio evaluation use. The real implementations
are CosyVoice2's S3 tokenizer (``speech_tokenizer_v2.onnx``: 16 kHz -> 128-bin Whisper log-mel -> 25 Hz tokens,
codebook 3^8 = 6561) on two backends:

* ``onnxruntime`` (:class:`rrpo_hf.data.s3_onnx.S3OnnxSpeechTokenizer`): the released ONNX file under onnxruntime, CPU
  or CUDA, with the log-mel front end on ``torch.stft``; no torchaudio. This is how upstream CosyVoice tokenizes.
* ``s3tokenizer`` (:class:`S3SpeechTokenizer`): the PyPI package ``s3tokenizer`` (a torch port, GPU-friendly).
  ``s3tokenizer`` imports ``torchaudio`` at module level, and PyPI's torchaudio wheels need CUDA libraries, so on
  CPU-only machines the import fails. It is therefore imported lazily, on first use, and the failure is turned into
  an error that names the cause and the fix.

:func:`load_speech_tokenizer` picks the backend: onnxruntime for a ``.onnx`` file, s3tokenizer for a model name.
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


class SpeechTokenizer(abc.ABC):
    """Batched waveform tokenizer.

    Implementations take a list of variable-length mono float waveforms (no padding) and return one
    token list per waveform, whose length depends only on that waveform's own length: padding used
    internally for batching must never leak into the tokens.
    """

    #: Sampling rate the tokenizer expects.
    sampling_rate: int = 16_000
    #: Number of distinct tokens (token ids lie in ``[0, codebook_size)``).
    codebook_size: int
    #: Tokens per second of audio.
    token_rate: float

    @abc.abstractmethod
    def tokenize(self, waveforms: Sequence[np.ndarray], sampling_rate: int | None = None) -> list[list[int]]:
        """Tokenize a batch of mono waveforms sampled at ``sampling_rate`` (default ``self.sampling_rate``)."""

    @property
    def fingerprint(self) -> str:
        """Stable identity used to name cached tokenization results; override when state matters."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def __call__(self, waveforms: Sequence[np.ndarray], sampling_rate: int | None = None) -> list[list[int]]:
        return self.tokenize(waveforms, sampling_rate)

    def _check_inputs(self, waveforms: Sequence[np.ndarray], sampling_rate: int | None) -> list[np.ndarray]:
        sampling_rate = self.sampling_rate if sampling_rate is None else sampling_rate
        if sampling_rate != self.sampling_rate:
            raise ValueError(
                f"{type(self).__name__} expects {self.sampling_rate} Hz audio, got {sampling_rate} Hz. Resample "
                "first (rrpo_hf.data.audio.resample)."
            )
        checked = []
        for index, waveform in enumerate(waveforms):
            waveform = np.asarray(waveform, dtype=np.float32)
            if waveform.ndim != 1 or waveform.size == 0:
                raise ValueError(
                    f"Waveform {index} must be a non-empty 1-D mono array, got shape {waveform.shape}. Mix down "
                    "multi-channel audio first (rrpo_hf.data.audio.read_audio does)."
                )
            checked.append(waveform)
        return checked


S3_MODEL_NAMES = ("speech_tokenizer_v2_25hz", "speech_tokenizer_v1_25hz", "speech_tokenizer_v1")


class S3TokenizerUnavailableError(ImportError):
    """The S3 tokenizer's backend cannot be imported here: ``s3tokenizer`` (or its torchaudio), or ``onnxruntime``."""


def import_s3tokenizer():
    """Import ``s3tokenizer``, turning the usual failures into an actionable error."""
    try:
        import s3tokenizer
    except ModuleNotFoundError as error:
        missing = error.name or "s3tokenizer"
        if missing == "s3tokenizer":
            fix = (
                "Install it with `pip install s3tokenizer` (it pulls torchaudio) on a machine with a CUDA-enabled "
                "torch."
            )
        elif missing == "torchaudio":
            fix = (
                "s3tokenizer imports torchaudio at module level. Install the torchaudio build matching your torch "
                "(`pip install torchaudio==<torch version>`; PyPI's wheels are CUDA builds, so on CPU-only machines "
                "add `--index-url https://download.pytorch.org/whl/cpu`)."
            )
        else:
            fix = f"s3tokenizer imports `{missing}` at module level: `pip install {missing}`."
        raise S3TokenizerUnavailableError(
            f"The S3 speech tokenizer needs the `s3tokenizer` package, which failed to import: {error}. {fix} "
            "Alternatively pass any rrpo_hf.data.speech_tokenizer.SpeechTokenizer implementation."
        ) from error
    except (ImportError, OSError) as error:
        # PyPI torchaudio wheels are CUDA builds: on CPU-only machines loading them fails with a missing
        # libcuda/libnvrtc (OSError) or an undefined torch symbol when torch and torchaudio versions differ.
        raise S3TokenizerUnavailableError(
            f"`import s3tokenizer` failed because torchaudio, which s3tokenizer imports at module level, cannot "
            f"load: {type(error).__name__}: {error}. Cause: the installed torchaudio is a CUDA build or does not "
            "match the installed torch. Fix: run on a GPU machine with matching torch/torchaudio, or install the "
            "CPU torchaudio wheel of your torch version (`pip install torchaudio==<torch version> --index-url "
            "https://download.pytorch.org/whl/cpu`). Alternatively pass any "
            "rrpo_hf.data.speech_tokenizer.SpeechTokenizer implementation."
        ) from error
    return s3tokenizer


class S3SpeechTokenizer(SpeechTokenizer):
    """CosyVoice2's S3 tokenizer (25 Hz, 6561 codes) via the ``s3tokenizer`` package.

    Args:
        model: a name from :data:`S3_MODEL_NAMES` (downloaded by s3tokenizer into ``download_root``)
            or the path of a local ``speech_tokenizer_v2.onnx`` (e.g. from a CosyVoice2-0.5B model dir).
        device: ``"cuda"``, ``"cpu"``... (default: CUDA when available).
        batch_size: waveforms per forward pass inside :meth:`tokenize`.
        download_root: where s3tokenizer stores downloaded checkpoints.

    The model is loaded on first use and is not pickled, so ``datasets.map(num_proc=N)`` workers
    each load their own copy instead of copying one across processes.
    Clips longer than 30 s are split by s3tokenizer into 30 s windows with 4 s overlap and merged.
    """

    sampling_rate = 16_000
    codebook_size = 3**8
    token_rate = 25.0

    def __init__(
        self,
        model: str | os.PathLike = "speech_tokenizer_v2_25hz",
        device: str | None = None,
        batch_size: int = 32,
        download_root: str | None = None,
    ):
        model = os.fspath(model)
        if model not in S3_MODEL_NAMES and not os.path.isfile(model):
            raise FileNotFoundError(
                f"S3 tokenizer model {model!r} is neither a known name {S3_MODEL_NAMES} nor an existing file. Pass "
                "the path of `speech_tokenizer_v2.onnx` from a CosyVoice2 model dir."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model_name_or_path = model
        self.device = device
        self.batch_size = batch_size
        self.download_root = download_root
        name = os.path.basename(model)
        #: The S3 tokenizer generation, which reward models record (the fingerprint already tells files apart).
        self.speech_tokenizer_version = "v1" if "v1" in name else "v3" if "v3" in name else "v2"
        if "v1" in name:
            # v1 tokenizers use a 4096-entry VQ codebook; the plain v1 model runs at 50 Hz.
            self.codebook_size = 4096
            self.token_rate = 25.0 if "25hz" in model else 50.0
        self._model = None
        self._s3 = None
        # Fail at construction, not deep inside a datasets.map worker.
        self._s3 = import_s3tokenizer()

    @property
    def fingerprint(self) -> str:
        identity = self.model_name_or_path
        if os.path.isfile(identity):
            stat = os.stat(identity)
            identity = f"{os.path.abspath(identity)}:{stat.st_size}:{int(stat.st_mtime)}"
        return "s3:" + hashlib.sha256(identity.encode()).hexdigest()[:16]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None
        state["_s3"] = None
        return state

    def _resolved_device(self) -> str:
        import torch

        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    def _load(self):
        if self._s3 is None:
            self._s3 = import_s3tokenizer()
        if self._model is None:
            kwargs = {"download_root": self.download_root} if self.download_root else {}
            self._model = self._s3.load_model(self.model_name_or_path, **kwargs).to(self._resolved_device()).eval()
        return self._model

    def tokenize(self, waveforms: Sequence[np.ndarray], sampling_rate: int | None = None) -> list[list[int]]:
        import torch

        waveforms = self._check_inputs(waveforms, sampling_rate)
        model = self._load()
        device = next(model.parameters()).device
        tokens: list[list[int]] = []
        for start in range(0, len(waveforms), self.batch_size):
            chunk = waveforms[start : start + self.batch_size]
            mels = [self._s3.log_mel_spectrogram(torch.from_numpy(w).to(device)) for w in chunk]
            mel_batch, mel_lengths = self._s3.padding(mels)
            with torch.inference_mode():
                codes, code_lengths = model.quantize(mel_batch.to(device), mel_lengths.to(device))
            codes, code_lengths = codes.cpu(), code_lengths.cpu()
            tokens.extend(codes[i, : int(code_lengths[i])].tolist() for i in range(len(chunk)))
        return tokens


#: Backends of :func:`load_speech_tokenizer`.
TOKENIZER_BACKENDS = ("auto", "onnxruntime", "s3tokenizer")


def load_speech_tokenizer(
    model: str | os.PathLike,
    backend: str = "auto",
    device: str | None = None,
    batch_size: int = 16,
    num_threads: int = 0,
) -> SpeechTokenizer:
    """The S3 tokenizer for ``model`` on the chosen backend.

    ``backend="auto"`` runs a ``.onnx`` file (``speech_tokenizer_v2.onnx``) on onnxruntime and a model name
    (:data:`S3_MODEL_NAMES`) on s3tokenizer. ``"onnxruntime"`` needs a ``.onnx`` file; ``"s3tokenizer"`` takes either.
    ``num_threads`` (onnxruntime intra-op threads, 0 = its default) applies to the onnxruntime backend only.
    """
    model = os.fspath(model)
    if backend not in TOKENIZER_BACKENDS:
        raise ValueError(f"Unknown tokenizer backend {backend!r}; use one of {TOKENIZER_BACKENDS}.")
    is_onnx_file = model.lower().endswith(".onnx")
    if backend == "auto":
        backend = "onnxruntime" if is_onnx_file else "s3tokenizer"
    if backend == "s3tokenizer":
        return S3SpeechTokenizer(model, device=device, batch_size=batch_size)
    if not is_onnx_file:
        raise ValueError(
            f"The onnxruntime backend runs a local `.onnx` file, got {model!r}. Pass the path of "
            "`speech_tokenizer_v2.onnx` from a CosyVoice2-0.5B model folder, or use the s3tokenizer backend for "
            f"model names {S3_MODEL_NAMES}."
        )
    from .s3_onnx import S3OnnxSpeechTokenizer

    return S3OnnxSpeechTokenizer(model, device=device, batch_size=batch_size, num_threads=num_threads)
