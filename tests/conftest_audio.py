"""Shared helpers for the audio tests: espeak-ng clip synthesis and a deterministic test tokenizer.

Imported by tests/test_audio_data.py and tests/test_audio_eval.py (not a pytest conftest, so other
test files are not affected).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rrpo_hf.data.speech_tokenizer import SpeechTokenizer


ESPEAK = shutil.which("espeak-ng")

requires_espeak = pytest.mark.skipif(
    ESPEAK is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); audio tests need synthesized speech",
)


def synthesize(path: Path, text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> Path:
    """espeak-ng writes 22.05 kHz 16-bit mono WAV, so every clip also exercises resampling to 16 kHz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ESPEAK, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def write_wav(path: Path, waveform: np.ndarray, sampling_rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), waveform, sampling_rate, subtype="PCM_16")
    return path


class LogMelBandTokenizer(SpeechTokenizer):
    """TEST DOUBLE for the S3 tokenizer: 25 Hz log-mel frames -> (loudest band, loudness level) codes.

    Deterministic and batched like the real one: the batch is zero-padded to its longest clip, framed
    at once, and every clip keeps only its own frames (``len // hop``), so the tokens of a clip must
    not depend on what else is in the batch.
    """

    sampling_rate = 16_000
    token_rate = 25.0

    def __init__(self, num_bands: int = 8, num_levels: int = 4):
        self.num_bands = num_bands
        self.num_levels = num_levels
        self.codebook_size = num_bands * num_levels
        self.hop = self.sampling_rate // int(self.token_rate)
        self.window = 2 * self.hop
        self.calls = 0
        self.clips_seen = 0
        bins = np.fft.rfftfreq(self.window, 1 / self.sampling_rate)
        edges = np.geomspace(80.0, 7600.0, num_bands + 1)
        self.filters = np.stack([(bins >= lo) & (bins < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(
            np.float32
        )

    @property
    def fingerprint(self) -> str:
        return f"logmel-bands-{self.num_bands}-{self.num_levels}"

    def tokenize(self, waveforms, sampling_rate=None):
        waveforms = self._check_inputs(waveforms, sampling_rate)
        self.calls += 1
        self.clips_seen += len(waveforms)
        lengths = [len(w) // self.hop for w in waveforms]
        padded = np.zeros((len(waveforms), max(lengths) * self.hop + self.window), dtype=np.float32)
        for row, waveform in enumerate(waveforms):
            padded[row, : len(waveform)] = waveform
        starts = np.arange(max(lengths)) * self.hop
        frames = padded[:, starts[:, None] + np.arange(self.window)[None, :]] * np.hanning(self.window)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
        log_mel = np.log10(power @ self.filters.T + 1e-8)
        band = log_mel.argmax(-1)
        level = np.clip(((log_mel.max(-1) + 4.0) / 2.0).astype(int), 0, self.num_levels - 1)
        codes = band * self.num_levels + level
        return [codes[row, :n].tolist() for row, n in enumerate(lengths)]


def build_emotion_folder_corpus(root: Path, with_bad_files: bool = True) -> dict[str, str]:
    """``root/<emotion>/*.wav`` with mixed-case corpus labels; returns {file name: expected skip reason}."""
    phrases = {
        "Happy": ["What a wonderful day it is.", "I am so glad to see you."],
        "angry": ["Get out of my room now.", "This is completely unacceptable."],
        "sad": ["I miss the old house.", "Nobody came to the party."],
        "neu": ["The train leaves at nine."],
    }
    voices = {
        "Happy": ("en-us", 190, 80),
        "angry": ("en-gb", 210, 30),
        "sad": ("en-us", 120, 20),
        "neu": ("en-gb", 160, 50),
    }
    for emotion, texts in phrases.items():
        voice, speed, pitch = voices[emotion]
        for index, text in enumerate(texts):
            wav = synthesize(root / emotion / f"{emotion.lower()}_{index}.wav", text, voice, speed, pitch)
            wav.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    expected = {}
    if with_bad_files:
        bad = root / "neu"
        (bad / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(range(200)))
        expected["corrupt.wav"] = "unreadable"
        (bad / "empty.wav").write_bytes(b"")
        expected["empty.wav"] = "empty"
        write_wav(bad / "silent.wav", np.zeros(16_000, dtype=np.float32), 16_000)
        expected["silent.wav"] = "silent"
        speech, rate = sf.read(str(root / "sad" / "sad_0.wav"), dtype="float32")
        write_wav(bad / "short.wav", speech[: int(0.2 * rate)], rate)
        expected["short.wav"] = "too_short"
        write_wav(bad / "long.wav", np.tile(speech, int(np.ceil(7.0 * rate / len(speech)))), rate)
        expected["long.wav"] = "too_long"
        write_wav(bad / "lowrate.wav", speech[::3], rate // 3)
        expected["lowrate.wav"] = "low_sampling_rate"
    return expected
