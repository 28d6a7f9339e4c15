"""The S3 tokenizer on onnxruntime: Whisper log-mel front end, loading, batching, long audio, bad audio, the CLI.

No download: the tests export tiny ONNX models with the released `speech_tokenizer_v2.onnx`'s signature (inputs
`feats` float32 (B, 128, T) and `feats_length` int32 (B,), token ids out at 4 mel frames per token).
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch


pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs `pip install onnxruntime`")
pytest.importorskip("onnx", reason="exporting the test models needs `pip install onnx` (the dev extra)")

from rrpo_hf.data.audio import AudioValidationConfig, load_and_validate, prepare_speech_token_dataset  # noqa: E402
from rrpo_hf.data.corpora import load_corpus  # noqa: E402
from rrpo_hf.data.s3_onnx import (  # noqa: E402
    OVERLAP_TOKENS,
    S3OnnxSpeechTokenizer,
    S3TokenizerFeatureExtractor,
    log_mel_spectrogram,
    long_audio_windows,
    merge_window_tokens,
    num_tokens,
)
from rrpo_hf.data.speech_tokenizer import (  # noqa: E402
    S3SpeechTokenizer,
    S3TokenizerUnavailableError,
    load_speech_tokenizer,
)


REPO = Path(__file__).resolve().parents[1]
SR = 16_000


def speech_like(seconds: float, seed: int = 0, silence_s: float = 0.0) -> np.ndarray:
    """A voiced, amplitude-modulated harmonic signal with a little noise; optional leading digital silence."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 110 + 30 * seed + 40 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.7 * t)) ** 2
    waveform = (0.1 * voiced + 0.005 * rng.standard_normal(n)).astype(np.float32)
    waveform[: int(silence_s * SR)] = 0.0
    return waveform


class TinyS3(torch.nn.Module):
    """An FSQ-style stand-in of the v2 model: 4 masked mel frames -> 8 projections -> 3 levels each -> one of 3^8 ids.

    ``leaky``: subtracts a time mean taken over the padded input, so a clip's tokens change with batch padding.
    ``with_lengths``: also returns the token lengths; otherwise tokens come as ``(B, 1, T')``.
    """

    def __init__(self, leaky: bool = False, with_lengths: bool = True):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(8, 128 * 4, generator=generator) / 8)
        self.register_buffer("powers", 3 ** torch.arange(8))
        self.leaky = leaky
        self.with_lengths = with_lengths

    def forward(self, feats, feats_length):
        batch, mels, frames = feats.shape
        mask = (torch.arange(frames)[None, :] < feats_length[:, None]).to(feats.dtype)
        x = feats * mask[:, None, :]
        if self.leaky:
            x = x - x.mean(dim=2, keepdim=True)
        x = torch.nn.functional.pad(x, (0, (-frames) % 4))
        groups = x.reshape(batch, mels, -1, 4).permute(0, 2, 1, 3).reshape(batch, -1, mels * 4)
        levels = torch.clamp(torch.round(torch.tanh(groups @ self.projection.T) + 1.0), 0, 2)
        codes = (levels * self.powers).sum(-1).to(torch.int64)
        if self.with_lengths:
            return codes, ((feats_length + 3) // 4).to(torch.int32)
        return codes[:, None, :]


def export(module: torch.nn.Module, path: Path, dynamic_batch: bool = True) -> Path:
    feats = torch.randn(2 if dynamic_batch else 1, 128, 37)
    lengths = torch.tensor([37, 21] if dynamic_batch else [37], dtype=torch.int32)
    outputs = ["indices", "indices_lens"] if module.with_lengths else ["indices"]
    axes = {"feats": {2: "frames"}, "indices": {-1: "tokens"}}
    if dynamic_batch:
        axes = {"feats": {0: "batch", 2: "frames"}, "feats_length": {0: "batch"}, "indices": {0: "batch", 1: "tokens"}}
        if module.with_lengths:
            axes["indices_lens"] = {0: "batch"}
        else:
            axes["indices"] = {0: "batch", 2: "tokens"}
    torch.onnx.export(
        module.eval(),
        (feats, lengths),
        str(path),
        input_names=["feats", "feats_length"],
        output_names=outputs,
        dynamic_axes=axes,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return {
        "masked": export(TinyS3(), folder / "speech_tokenizer_v2.onnx"),
        "leaky": export(TinyS3(leaky=True, with_lengths=False), folder / "leaky_tokenizer.onnx"),
        "batch1": export(TinyS3(), folder / "batch1_tokenizer.onnx", dynamic_batch=False),
    }


def reference_tokens(waveform: np.ndarray, leaky: bool = False) -> list[int]:
    """The torch module itself on the clip alone, windowed and merged by s3tokenizer's rule."""
    module = TinyS3(leaky=leaky).eval()
    mel = log_mel_spectrogram(waveform)
    parts = []
    for start, end in long_audio_windows(mel.shape[1]):
        with torch.no_grad():
            codes, lengths = module(mel[None, :, start:end], torch.tensor([end - start], dtype=torch.int32))
        parts.append(codes[0, : int(lengths[0])].tolist())
    return merge_window_tokens(parts)


# ------------------------------------------------------------------------------------------------ front end
def test_log_mel_equals_an_independent_librosa_computation_of_whispers_formula():
    librosa = pytest.importorskip("librosa")
    for waveform in (speech_like(2.37, seed=1, silence_s=0.3), speech_like(0.61, seed=2)):
        audio = waveform.astype(np.float64)
        spectrum = librosa.stft(audio, n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")
        power = np.abs(spectrum[:, :-1]) ** 2
        mel = librosa.filters.mel(sr=16_000, n_fft=400, n_mels=128, dtype=np.float64) @ power
        expected = np.log10(np.maximum(mel, 1e-10))
        expected = (np.maximum(expected, expected.max() - 8.0) + 4.0) / 4.0

        ours = log_mel_spectrogram(waveform)
        assert ours.dtype == torch.float32 and tuple(ours.shape) == (128, len(waveform) // 160) == expected.shape
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="more than 200 samples"):
        log_mel_spectrogram(np.zeros(200, np.float32))


def test_feature_extractor_pads_features_not_audio():
    clips = [speech_like(1.0), speech_like(0.55, seed=3)]
    batch = S3TokenizerFeatureExtractor()(clips, sampling_rate=16_000, return_tensors="np")
    assert batch["input_features"].shape == (2, 128, 100) and batch["feature_lengths"].tolist() == [100, 55]
    np.testing.assert_array_equal(batch["input_features"][1, :, :55], log_mel_spectrogram(clips[1]).numpy())
    assert not batch["input_features"][1, :, 55:].any()
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        S3TokenizerFeatureExtractor()(clips, sampling_rate=22_050)


def test_long_audio_windows_and_merge_follow_s3tokenizer():
    assert long_audio_windows(3000) == [(0, 3000)]
    assert long_audio_windows(3500) == [(0, 3000), (2600, 3500)]
    assert long_audio_windows(6000) == [(0, 3000), (2600, 5600), (5200, 6000)]
    assert [num_tokens(n) for n in (1, 4, 5, 130, 3000)] == [1, 1, 2, 33, 750]
    windows = [list(range(0, 750)), list(range(650, 1400)), list(range(1300, 1500))]  # tokens = 25 Hz positions
    merged = merge_window_tokens(windows)
    assert merged == list(range(1500)) and OVERLAP_TOKENS == 50


# ------------------------------------------------------------------------------------------------ the backend
def test_onnx_tokenizer_matches_the_model_and_batches_only_when_padding_cannot_leak(models):
    clips = [speech_like(1.3, 0), speech_like(4.0, 1, silence_s=0.5), speech_like(0.8, 2), speech_like(2.21, 3)]
    expected = [reference_tokens(clip) for clip in clips]
    assert [len(tokens) for tokens in expected] == [33, 100, 20, 56]

    masked = S3OnnxSpeechTokenizer(models["masked"], device="cpu", batch_size=3, cpu_batching=True)
    assert masked.tokenize(clips) == expected  # through the real session, batched
    assert masked.batching is True
    assert [masked.tokenize([clip])[0] for clip in clips] == expected  # one by one
    # Without cpu_batching a CPU session runs one window at a time (faster there), with the same tokens.
    single = S3OnnxSpeechTokenizer(models["masked"], device="cpu", batch_size=3)
    assert single.tokenize(clips) == expected and single.batching is False

    # A model whose tokens change with padding: the probe finds it and every clip runs alone.
    leaky = S3OnnxSpeechTokenizer(models["leaky"], device="cpu", batch_size=4, cpu_batching=True)
    leaky_tokens = leaky.tokenize(clips)
    assert leaky.batching is False
    assert leaky_tokens == [reference_tokens(clip, leaky=True) for clip in clips]
    # A graph with a fixed batch of one never gets a batch.
    fixed = S3OnnxSpeechTokenizer(models["batch1"], device="cpu", batch_size=4, cpu_batching=True)
    assert fixed.tokenize(clips) == expected and fixed.batching is False

    # Pickled for datasets.map workers without the session; the copy loads its own.
    clone = pickle.loads(pickle.dumps(masked))
    assert clone._session is None and clone.tokenize(clips[:2]) == expected[:2]
    assert masked.fingerprint == clone.fingerprint != leaky.fingerprint


def test_long_audio_is_windowed_and_bad_inputs_are_refused(models):
    tokenizer = S3OnnxSpeechTokenizer(models["masked"], device="cpu", batch_size=2, cpu_batching=True)
    long_clip = speech_like(35.0, seed=4)
    tokens = tokenizer.tokenize([speech_like(1.0), long_clip])
    assert len(tokens[1]) == 875 == num_tokens(3500)
    assert tokens[1] == reference_tokens(long_clip)

    with pytest.raises(ValueError, match="16000 Hz"):
        tokenizer.tokenize([speech_like(1.0)], sampling_rate=22_050)
    with pytest.raises(ValueError, match="mono"):
        tokenizer.tokenize([np.stack([speech_like(1.0)] * 2)])
    with pytest.raises(ValueError, match="mono"):
        tokenizer.tokenize([np.zeros(0, np.float32)])
    with_nan = speech_like(1.0)
    with_nan[100] = np.nan
    with pytest.raises(ValueError, match="Waveform 1 contains NaN"):
        tokenizer.tokenize([speech_like(1.0), with_nan])
    with pytest.raises(ValueError, match="more than 200"):
        tokenizer.tokenize([np.ones(150, np.float32)])


def test_loading_errors_name_the_fix(models, tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["mel"], ["out"])],
        "not_s3",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, 80, "T"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 80, "T"])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="is not an S3 tokenizer v2 ONNX model"):
        S3OnnxSpeechTokenizer(tmp_path / "other.onnx").tokenize([speech_like(1.0)])
    (tmp_path / "truncated.onnx").write_bytes(models["masked"].read_bytes()[:100])
    with pytest.raises(ValueError, match="re-download"):
        S3OnnxSpeechTokenizer(tmp_path / "truncated.onnx").tokenize([speech_like(1.0)])
    with pytest.raises(FileNotFoundError, match="speech_tokenizer_v2.onnx"):
        S3OnnxSpeechTokenizer(tmp_path / "missing.onnx")
    (tmp_path / "speech_tokenizer_v1.onnx").write_bytes(models["masked"].read_bytes())
    with pytest.raises(ValueError, match="v1 model.*--tokenizer_backend s3tokenizer"):
        S3OnnxSpeechTokenizer(tmp_path / "speech_tokenizer_v1.onnx")
    on_gpu = S3OnnxSpeechTokenizer(models["masked"], device="cuda")
    monkeypatch.setattr(on_gpu._ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="no CUDA provider.*onnxruntime-gpu"):
        on_gpu.providers()
    monkeypatch.undo()

    # Backend choice: a .onnx file runs on onnxruntime unless s3tokenizer is asked for.
    assert isinstance(load_speech_tokenizer(models["masked"]), S3OnnxSpeechTokenizer)
    with pytest.raises(ValueError, match="local `.onnx` file"):
        load_speech_tokenizer("speech_tokenizer_v2_25hz", backend="onnxruntime")
    with pytest.raises(ValueError, match="Unknown tokenizer backend"):
        load_speech_tokenizer(models["masked"], backend="torch")
    try:
        import s3tokenizer  # noqa: F401
    except Exception:
        with pytest.raises(S3TokenizerUnavailableError):
            load_speech_tokenizer(models["masked"], backend="s3tokenizer")
    else:
        assert isinstance(load_speech_tokenizer(models["masked"], backend="s3tokenizer"), S3SpeechTokenizer)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if onnxruntime were not installed
    with pytest.raises(S3TokenizerUnavailableError, match="pip install onnxruntime"):
        load_speech_tokenizer(models["masked"])


# ------------------------------------------------------------------------------------------------ the pipeline
def write_clips(root: Path) -> dict[str, str]:
    """``root/<emotion>/*.wav`` plus bad files; returns {file name: expected skip reason}."""
    for index, (emotion, seconds) in enumerate([("happy", 1.4), ("sad", 2.0), ("angry", 0.9)]):
        (root / emotion).mkdir(parents=True)
        sf.write(root / emotion / f"{emotion}.wav", speech_like(seconds, index), 22_050, subtype="PCM_16")
    bad = root / "neutral"
    bad.mkdir()
    stereo = np.stack([speech_like(1.1, 5), 0.5 * speech_like(1.1, 5)], axis=1)
    sf.write(bad / "stereo.wav", stereo, 16_000, subtype="PCM_16")  # kept: mixed down
    (bad / "empty.wav").write_bytes(b"")
    with_nan = speech_like(1.0, 6)
    with_nan[500:510] = np.nan
    sf.write(bad / "nan.wav", with_nan, 16_000, subtype="FLOAT")
    sf.write(bad / "narrowband.wav", speech_like(1.0, 7)[::2], 8_000, subtype="PCM_16")
    sf.write(bad / "long.wav", speech_like(31.0, 8), 16_000, subtype="PCM_16")
    return {
        "empty.wav": "empty",
        "nan.wav": "unreadable",
        "narrowband.wav": "low_sampling_rate",
        "long.wav": "too_long",
    }


def test_prepare_data_script_tokenizes_with_the_onnx_model_on_cpu(models, tmp_path):
    expected_skips = write_clips(tmp_path / "clips")
    spec = importlib.util.spec_from_file_location("prepare_data_onnx_test", REPO / "examples" / "prepare_data.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    from transformers import HfArgumentParser

    output = tmp_path / "tokens"
    argv = ["--source", str(tmp_path / "clips"), "--tokenizer_model", str(models["masked"])]
    argv += ["--output_dir", str(output), "--device", "cpu", "--batch_size", "4"]
    (args,) = HfArgumentParser(script.PrepareDataArguments).parse_args_into_dataclasses(argv)
    script.main(args)

    from datasets import load_from_disk

    dataset = load_from_disk(str(output))
    report = json.loads((output / "preparation_report.json").read_text())
    assert report["counts"] == dict.fromkeys(expected_skips.values(), 1)
    skipped = (tmp_path / "tokens.skipped.tsv").read_text().splitlines()[1:]
    assert {Path(line.split("\t")[0]).name: line.split("\t")[1] for line in skipped} == expected_skips
    names = dataset.features["emotion"].int2str(dataset["emotion"])
    assert sorted(names) == ["angry", "happy", "neutral", "sad"]
    validation = AudioValidationConfig()
    for row in dataset:
        assert row["speech_tokens"] == reference_tokens(load_and_validate(row["audio_path"], validation))

    # The same records through the library call give the same tokens (and the cache of the first run is reused).
    scan = load_corpus(tmp_path / "clips")
    again = prepare_speech_token_dataset(scan.records, S3OnnxSpeechTokenizer(models["masked"], device="cpu"))
    assert sorted(again.dataset["speech_tokens"]) == sorted(dataset["speech_tokens"])
