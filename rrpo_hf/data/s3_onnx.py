"""CosyVoice's S3 speech tokenizer on onnxruntime: ``speech_tokenizer_v2.onnx`` (CosyVoice2) or
``speech_tokenizer_v3.onnx`` (CosyVoice3) on CPU or GPU, without torchaudio.

The v3 model has v2's signature and front end (upstream's ``CosyVoiceFrontEnd._extract_speech_token`` feeds both the
same 128-bin log-mel and int32 length, and its ``SpeechTokenExtractor`` the ``.batch.onnx`` variants the same
``(B, 128, T)`` batch): 25 Hz, 3^8 = 6561 codes. Only the codes' meaning differs, so the version is recorded
(:attr:`S3OnnxSpeechTokenizer.speech_tokenizer_version`, from the file name or given) and kept apart in caches.

Upstream CosyVoice tokenizes exactly this way (``cosyvoice/cli/frontend.py`` ``_extract_speech_token`` and
``tools/extract_speech_token.py``): a Whisper log-mel spectrogram of the 16 kHz mono waveform (128 bins, n_fft 400,
hop 160) goes into the released ONNX model, whose inputs are ``feats`` float32 ``(B, 128, T)`` and ``feats_length``
int32 ``(B,)`` and whose first output holds the token ids (25 Hz: 4 mel frames per token, codebook 3^8 = 6561).
The ``s3tokenizer`` package needs torchaudio only to load and resample files; its log-mel is ``torch.stft`` with a
librosa Slaney filterbank, which is what :func:`log_mel_spectrogram` computes (the filterbank from
``transformers.audio_utils.mel_filter_bank``, equal to librosa's and to the one bundled with s3tokenizer).

Clips longer than 30 s (3000 mel frames) are tokenized the way ``s3tokenizer`` does it (``S3TokenizerV2.quantize``):
the log-mel of the whole clip is cut into 30 s windows that start every 26 s (4 s overlap), each window is tokenized
alone, and the windows' tokens are joined after dropping 2 s (50 tokens) on each side of every inner boundary
(:func:`long_audio_windows`, :func:`merge_window_tokens`). The data pipeline skips clips over 30 s by default
(``AudioValidationConfig.max_duration_s``), as CosyVoice's tools do; raising that limit uses these windows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from transformers import BatchFeature, SequenceFeatureExtractor

from .speech_tokenizer import S3TokenizerUnavailableError, SpeechTokenizer


logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 128
#: Mel frames per speech token of the v2 model (two stride-2 convolutions: 100 frames/s -> 25 tokens/s).
FRAMES_PER_TOKEN = 4
#: s3tokenizer's long-audio rule: 30 s windows (3000 frames) overlapping by 4 s (400 frames).
WINDOW_FRAMES = 3000
OVERLAP_FRAMES = 400
#: Tokens dropped on each side of an inner window boundary: half the overlap (2 s at 25 Hz).
OVERLAP_TOKENS = (OVERLAP_FRAMES // 2) // FRAMES_PER_TOKEN
#: Bump when the front end or the chunking changes: cached token datasets then miss instead of going stale.
FRONTEND_VERSION = "whisper-logmel128-v1/window3000-overlap400"


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS):
    """The ``(n_mels, 201)`` Slaney mel filterbank of librosa ``mel(sr=16000, n_fft=400, n_mels)`` (float64)."""
    import torch
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLING_RATE / 2,
        sampling_rate=SAMPLING_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.ascontiguousarray(filters.T, dtype=np.float64))


def log_mel_spectrogram(waveform, n_mels: int = N_MELS):
    """Whisper's log-mel spectrogram of one 16 kHz mono waveform: a float32 ``(n_mels, len // 160)`` torch tensor.

    ``stft`` (n_fft 400, hop 160, periodic Hann window, centred with reflect padding) -> power of every frame but the
    last -> mel filterbank -> ``log10(max(mel, 1e-10))`` -> floor at the clip's maximum minus 8 -> ``(x + 4) / 4``.
    The floor uses this clip's own maximum, so a clip's features never depend on other clips of a batch.

    The arithmetic runs in float64 and the result is rounded to float32 once: float32 arithmetic (whisper's and
    s3tokenizer's) puts errors of a few 1e-5 into the quiet mel bins of speech, which differ between CPU and GPU FFTs;
    float64 gives every machine the same features, within 1e-6 of the exact formula.
    """
    import torch

    audio = waveform if isinstance(waveform, torch.Tensor) else torch.from_numpy(np.asarray(waveform))
    audio = audio.to(torch.float32).to(torch.float64)  # the float32 waveform, exactly, in float64
    if audio.ndim != 1 or audio.numel() <= N_FFT // 2:
        raise ValueError(
            f"The log-mel front end needs a 1-D waveform of more than {N_FFT // 2} samples, got shape "
            f"{tuple(audio.shape)}."
        )
    window = torch.hann_window(N_FFT, dtype=torch.float64, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels).to(audio.device) @ magnitudes
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).to(torch.float32)


def num_tokens(num_frames: int) -> int:
    """Tokens the v2 encoder gives for ``num_frames`` mel frames: two stride-2 convolutions, ``ceil(ceil(T/2)/2)``."""
    half = (num_frames - 1) // 2 + 1
    return (half - 1) // 2 + 1


def long_audio_windows(num_frames: int) -> list[tuple[int, int]]:
    """``(start, end)`` mel-frame windows of one clip: the whole clip up to 30 s, else s3tokenizer's 30 s windows.

    Windows are 3000 frames long and start every 2600 frames until one starts at or beyond the end; the last is
    shorter (never padded).
    """
    if num_frames <= WINDOW_FRAMES:
        return [(0, num_frames)]
    stride = WINDOW_FRAMES - OVERLAP_FRAMES
    return [(start, min(start + WINDOW_FRAMES, num_frames)) for start in range(0, num_frames, stride)]


def merge_window_tokens(window_tokens: Sequence[Sequence[int]]) -> list[int]:
    """Join the tokens of a clip's windows as s3tokenizer does: drop 50 tokens on each side of every inner boundary.

    The same slicing as ``s3tokenizer.merge_tokenized_segments(..., overlap=4, token_rate=25)``, including its
    behaviour on a last window shorter than 2 s (whose kept part may then be empty).
    """
    if len(window_tokens) == 1:
        return list(window_tokens[0])
    merged: list[int] = []
    last = len(window_tokens) - 1
    for index, tokens in enumerate(window_tokens):
        left = 0 if index == 0 else OVERLAP_TOKENS
        right = -OVERLAP_TOKENS if index != last else len(tokens)
        merged.extend(tokens[left:right])
    return merged


class S3TokenizerFeatureExtractor(SequenceFeatureExtractor):
    r"""The S3 tokenizer's front end as a `transformers` feature extractor: Whisper log-mel, 128 bins, unpadded.

    Unlike ``WhisperFeatureExtractor`` it neither pads nor truncates the audio to 30 s: every clip is featurised
    alone (:func:`log_mel_spectrogram`), then the features are right-padded with zeros to the longest clip, the
    batch layout of ``s3tokenizer.padding``.

    ```python
    >>> extractor = S3TokenizerFeatureExtractor()
    >>> batch = extractor([np.zeros(16000), np.ones(8000)], sampling_rate=16000, return_tensors="np")
    >>> batch["input_features"].shape, batch["feature_lengths"].tolist()
    ((2, 128, 100), [100, 50])
    ```
    """

    model_input_names = ["input_features", "feature_lengths"]

    def __init__(self, feature_size: int = N_MELS, sampling_rate: int = SAMPLING_RATE, padding_value=0.0, **kwargs):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)

    def __call__(self, raw_speech, sampling_rate: int | None = None, return_tensors=None, **kwargs):
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"{type(self).__name__} expects {self.sampling_rate} Hz audio, got {sampling_rate} Hz. Resample "
                "first (rrpo_hf.data.audio.resample)."
            )
        if isinstance(raw_speech, np.ndarray) and raw_speech.ndim == 1:
            raw_speech = [raw_speech]
        mels = [log_mel_spectrogram(waveform, self.feature_size).numpy() for waveform in raw_speech]
        lengths = np.array([mel.shape[1] for mel in mels], dtype=np.int32)
        features = np.full((len(mels), self.feature_size, int(lengths.max())), self.padding_value, np.float32)
        for row, mel in enumerate(mels):
            features[row, :, : mel.shape[1]] = mel
        return BatchFeature({"input_features": features, "feature_lengths": lengths}, tensor_type=return_tensors)


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise S3TokenizerUnavailableError(
            f"The S3 tokenizer's onnxruntime backend needs the `onnxruntime` package, which failed to import: "
            f"{error}. "
            "Install it with `pip install onnxruntime` (CPU) or `pip install onnxruntime-gpu` (CUDA), or "
            "`pip install rrpo-hf[audio]`; or use the s3tokenizer backend on a GPU machine "
            "(`--tokenizer_backend s3tokenizer`)."
        ) from error
    return onnxruntime


class S3OnnxSpeechTokenizer(SpeechTokenizer):
    """CosyVoice's S3 tokenizer v2 or v3 (25 Hz, 6561 codes) running ``speech_tokenizer_v2.onnx`` /
    ``speech_tokenizer_v3.onnx`` (or their ``.batch.onnx``) under onnxruntime.

    Args:
        model_path: the released ``speech_tokenizer_v2.onnx`` (CosyVoice2-0.5B model folder) or
            ``speech_tokenizer_v3.onnx`` (Fun-CosyVoice3-0.5B model folder).
        version: ``"v2"`` or ``"v3"``; by default read from the file name (``..._v3...`` is v3, anything else v2).
            Reward models and policies record it (``speech_tokenizer_version``), and DiffRO refuses a mix.
        device: ``"cpu"`` or ``"cuda"`` (``cuda:N`` picks a GPU); default CUDA when onnxruntime has the CUDA
            provider and torch sees a GPU, else CPU.
        batch_size: windows per ONNX run on a GPU. Batching is used only when the model gives the same tokens for a
            clip batched (with padding) and alone; see :attr:`batching`.
        cpu_batching: batch on the CPU provider too. Off by default: on CPU, padded batches of the real-size v2
            model ran about 13% slower than one window per run (docs/audio.md), so CPU runs take one window at a time.
        num_threads: onnxruntime intra-op threads; 0 keeps onnxruntime's default (all cores). With
            ``datasets.map(num_proc=N)`` set it to about ``cores / N``.

    The session is created on first use and is not pickled, so every ``datasets.map`` worker creates its own.
    """

    sampling_rate = SAMPLING_RATE
    codebook_size = 3**8
    token_rate = 25.0

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str | None = None,
        batch_size: int = 16,
        num_threads: int = 0,
        cpu_batching: bool = False,
        version: str | None = None,
    ):
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"S3 tokenizer model {model_path!r} does not exist. Pass the path of `speech_tokenizer_v2.onnx` from "
                "a CosyVoice2-0.5B model folder or `speech_tokenizer_v3.onnx` from a Fun-CosyVoice3-0.5B one."
            )
        if version is None:
            version = "v3" if "v3" in os.path.basename(model_path) else "v2"
        if version not in ("v2", "v3"):
            raise ValueError(f"version must be 'v2' or 'v3', got {version!r}.")
        #: The S3 tokenizer generation: "v2" (CosyVoice2) or "v3" (CosyVoice3).
        self.speech_tokenizer_version = version
        if "v1" in os.path.basename(model_path):
            raise ValueError(
                f"{model_path!r} looks like an S3 tokenizer v1 model (4096 codes, other frame rates); this backend "
                "runs the v2 model of CosyVoice2 (`speech_tokenizer_v2.onnx`). Use `--tokenizer_backend s3tokenizer` "
                "for v1."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0: onnxruntime's default), got {num_threads}.")
        self.model_path = model_path
        self.device = device
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.cpu_batching = cpu_batching
        self._ort = _import_onnxruntime()  # fail at construction, not deep inside a datasets.map worker
        self._session = None
        #: Whether windows run batched; decided on first use by :meth:`_decide_batching`.
        self.batching: bool | None = None

    # ------------------------------------------------------------------ identity and pickling
    @property
    def fingerprint(self) -> str:
        stat = os.stat(self.model_path)
        identity = f"{os.path.abspath(self.model_path)}:{stat.st_size}:{int(stat.st_mtime)}:{FRONTEND_VERSION}"
        if self.speech_tokenizer_version != "v2":  # v2 keeps its earlier fingerprints, so old caches still hit
            identity += f":{self.speech_tokenizer_version}"
        return "s3onnx:" + hashlib.sha256(identity.encode()).hexdigest()[:16]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None
        state["_ort"] = None
        state["batching"] = None
        return state

    # ------------------------------------------------------------------ session
    def providers(self) -> list:
        """The onnxruntime execution providers for :attr:`device`."""
        if self._ort is None:
            self._ort = _import_onnxruntime()
        available = self._ort.get_available_providers()
        device = self.device
        if device is None:
            import torch

            use_cuda = "CUDAExecutionProvider" in available and torch.cuda.is_available()
            device = "cuda" if use_cuda else "cpu"
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise ValueError(
                    f"device={self.device!r} but this onnxruntime has no CUDA provider (available: {available}). "
                    "Install `onnxruntime-gpu` instead of `onnxruntime`, or pass device='cpu'."
                )
            device_id = int(device.split(":", 1)[1]) if ":" in device else 0
            return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}.")

    def _load(self):
        if self._ort is None:
            self._ort = _import_onnxruntime()
        if self._session is None:
            options = self._ort.SessionOptions()
            options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.num_threads:
                options.intra_op_num_threads = self.num_threads
            try:
                session = self._ort.InferenceSession(self.model_path, sess_options=options, providers=self.providers())
            except Exception as error:  # onnxruntime raises its own exception types (InvalidGraph, Fail, ...)
                raise ValueError(
                    f"onnxruntime cannot load {self.model_path!r}: {type(error).__name__}: {error}. Check that the "
                    f"file is the complete `speech_tokenizer_{self.speech_tokenizer_version}.onnx` of a CosyVoice "
                    "model folder (re-download it if it is truncated)."
                ) from error
            self._check_signature(session)
            self._session = session
        if self.batching is None:
            self.batching = self._decide_batching()
        return self._session

    def _check_signature(self, session) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        described = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        ok = len(inputs) == 2 and len(outputs) >= 1
        if ok:
            feats, lengths = inputs
            mel_dim = feats.shape[1] if len(feats.shape) == 3 else None
            ok = (
                feats.type == "tensor(float)"
                and len(feats.shape) == 3
                and (not isinstance(mel_dim, int) or mel_dim == N_MELS)
                and lengths.type == "tensor(int32)"
                and len(lengths.shape) == 1
            )
        if not ok:
            raise ValueError(
                f"{self.model_path!r} is not an S3 tokenizer {self.speech_tokenizer_version} ONNX model: its inputs "
                f"are [{described}], expected a float32 log-mel `(batch, {N_MELS}, frames)` and int32 lengths "
                f"`(batch,)`. Pass `speech_tokenizer_{self.speech_tokenizer_version}.onnx`."
            )
        self._input_names = (inputs[0].name, inputs[1].name)
        # A batch dimension fixed in the graph (an int, not a symbol) cannot take batches of other sizes.
        self._fixed_batch = isinstance(inputs[0].shape[0], int)

    # ------------------------------------------------------------------ running windows
    def _run(self, mels: Sequence[np.ndarray]) -> list[list[int]]:
        """Tokens of each log-mel window (``(128, T)`` float32 arrays), in one ONNX run."""
        lengths = np.array([mel.shape[1] for mel in mels], dtype=np.int32)
        feats = np.zeros((len(mels), N_MELS, int(lengths.max())), dtype=np.float32)
        for row, mel in enumerate(mels):
            feats[row, :, : mel.shape[1]] = mel
        outputs = self._session.run(None, {self._input_names[0]: feats, self._input_names[1]: lengths})
        codes = np.asarray(outputs[0])
        if codes.ndim == 3 and codes.shape[1] == 1:  # (B, 1, T') as some exports give
            codes = codes[:, 0]
        if codes.ndim == 1 and len(mels) == 1:
            codes = codes[None]
        if codes.ndim != 2 or codes.shape[0] != len(mels):
            raise ValueError(
                f"{self.model_path!r} returned tokens of shape {np.asarray(outputs[0]).shape} for a batch of "
                f"{len(mels)}; expected (batch, tokens). Pass `speech_tokenizer_{self.speech_tokenizer_version}.onnx`."
            )
        if len(mels) == 1:
            # One window: every output token is the window's (what CosyVoice's frontend takes).
            token_lengths = [codes.shape[1]]
        elif len(outputs) > 1 and np.asarray(outputs[1]).shape == (len(mels),):
            token_lengths = [int(n) for n in np.asarray(outputs[1])]
        else:
            token_lengths = [num_tokens(int(n)) for n in lengths]
        tokens = []
        for row, count in enumerate(token_lengths):
            if count > codes.shape[1]:
                raise ValueError(
                    f"{self.model_path!r} returned {codes.shape[1]} tokens per row but window {row} needs {count}."
                )
            row_tokens = codes[row, :count].astype(np.int64)
            if row_tokens.size and (row_tokens.min() < 0 or row_tokens.max() >= self.codebook_size):
                raise ValueError(
                    f"{self.model_path!r} returned token ids in [{row_tokens.min()}, {row_tokens.max()}], outside the "
                    f"S3 codebook [0, {self.codebook_size}). Pass "
                    f"`speech_tokenizer_{self.speech_tokenizer_version}.onnx`."
                )
            tokens.append(row_tokens.tolist())
        return tokens

    def _decide_batching(self) -> bool:
        """Batch only on a GPU (or with ``cpu_batching``), and only if the model gives a clip the same tokens
        batched with a longer clip as alone.

        CosyVoice's frontend runs the released model one clip at a time; a padded batch is only safe when the model
        masks the padding by ``feats_length``. Two deterministic noise clips (1.0 s and 1.7 s) settle it.
        """
        on_gpu = self._session.get_providers()[0] == "CUDAExecutionProvider"
        if self.batch_size == 1 or self._fixed_batch or not (on_gpu or self.cpu_batching):
            return False
        rng = np.random.default_rng(0)
        clips = [(rng.standard_normal(n) * np.hanning(n) * 0.1).astype(np.float32) for n in (SAMPLING_RATE, 27_200)]
        mels = [log_mel_spectrogram(clip).numpy() for clip in clips]
        alone = [self._run([mel])[0] for mel in mels]
        try:
            batched = self._run(mels)
        except Exception as error:  # a model exported for batch 1 fails here with an onnxruntime shape error
            logger.info(
                "S3 tokenizer %s does not run batched (%s); tokenizing one clip per run.", self.model_path, error
            )
            return False
        if batched != alone:
            logger.warning(
                "S3 tokenizer %s gives different tokens for a clip in a padded batch than alone; tokenizing one clip "
                "per run (as CosyVoice's frontend does).",
                self.model_path,
            )
            return False
        return True

    # ------------------------------------------------------------------ public API
    def tokenize(self, waveforms: Sequence[np.ndarray], sampling_rate: int | None = None) -> list[list[int]]:
        waveforms = self._check_inputs(waveforms, sampling_rate)
        for index, waveform in enumerate(waveforms):
            if not np.all(np.isfinite(waveform)):
                raise ValueError(
                    f"Waveform {index} contains NaN or infinite samples. Drop or repair the clip first "
                    "(rrpo_hf.data.audio.load_and_validate skips such files as `unreadable`)."
                )
            if waveform.size <= N_FFT // 2:
                raise ValueError(
                    f"Waveform {index} has {waveform.size} samples; the S3 tokenizer needs more than {N_FFT // 2} "
                    f"(one token is {FRAMES_PER_TOKEN * HOP_LENGTH} samples, 40 ms)."
                )
        self._load()
        windows: list[tuple[int, np.ndarray]] = []
        for index, waveform in enumerate(waveforms):
            mel = log_mel_spectrogram(waveform).numpy()
            windows += [(index, mel[:, start:end]) for start, end in long_audio_windows(mel.shape[1])]
        window_tokens: list[list[int] | None] = [None] * len(windows)
        step = self.batch_size if self.batching else 1
        # Longest first, so that each batch pads little.
        order = sorted(range(len(windows)), key=lambda i: -windows[i][1].shape[1])
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            for position, tokens in zip(chunk, self._run([windows[i][1] for i in chunk])):
                window_tokens[position] = tokens
        per_clip: list[list[list[int]]] = [[] for _ in waveforms]
        for (index, _), tokens in zip(windows, window_tokens):
            per_clip[index].append(tokens)
        return [merge_window_tokens(parts) for parts in per_clip]
