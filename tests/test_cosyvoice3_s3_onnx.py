"""The S3 tokenizer v3 (CosyVoice3's ``speech_tokenizer_v3.onnx``) on onnxruntime.

Upstream feeds v3 exactly as v2 (``CosyVoiceFrontEnd._extract_speech_token``: input 0 the 128-bin Whisper log-mel
float32 ``(1, 128, T)``, input 1 its int32 length ``(1,)``, output 0 the token ids; ``SpeechTokenExtractor`` runs the
``.batch.onnx`` on ``(B, 128, T)``). The tests export tiny models with that signature under the v3 file names.
"""

import json

import pytest


pytest.importorskip("onnxruntime", reason="the onnxruntime backend needs `pip install onnxruntime`")
pytest.importorskip("onnx", reason="exporting the test models needs `pip install onnx` (the dev extra)")

from test_s3_onnx import REPO, TinyS3, export, reference_tokens, speech_like, write_clips  # noqa: E402

from rrpo_hf.data.s3_onnx import S3OnnxSpeechTokenizer  # noqa: E402
from rrpo_hf.data.speech_tokenizer import load_speech_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def v3_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_v3")
    return {
        "single": export(TinyS3(), folder / "speech_tokenizer_v3.onnx", dynamic_batch=False),
        "batch": export(TinyS3(), folder / "speech_tokenizer_v3.batch.onnx"),
        "renamed": export(TinyS3(), folder / "my_tokenizer.onnx"),
    }


def test_v3_model_is_recognised_run_and_fingerprinted_apart_from_v2(v3_models, tmp_path):
    clips = [speech_like(1.3, seed=1), speech_like(0.7, seed=2)]
    single = load_speech_tokenizer(str(v3_models["single"]), device="cpu")
    assert isinstance(single, S3OnnxSpeechTokenizer) and single.speech_tokenizer_version == "v3"
    assert single.tokenize(clips) == [reference_tokens(clip) for clip in clips]
    assert single.batching is False  # the single-clip export has a fixed batch of 1

    batch = S3OnnxSpeechTokenizer(v3_models["batch"], device="cpu", cpu_batching=True)
    assert batch.speech_tokenizer_version == "v3"
    assert batch.tokenize(clips) == [reference_tokens(clip) for clip in clips]
    assert batch.batching is True  # the .batch.onnx masks padding by feats_length, so batches are safe

    # A renamed file is v2 unless told; the version keeps cached datasets of the two apart.
    assert S3OnnxSpeechTokenizer(v3_models["renamed"], device="cpu").speech_tokenizer_version == "v2"
    told = S3OnnxSpeechTokenizer(v3_models["renamed"], device="cpu", version="v3")
    assert told.speech_tokenizer_version == "v3"
    assert told.fingerprint != S3OnnxSpeechTokenizer(v3_models["renamed"], device="cpu").fingerprint
    with pytest.raises(ValueError, match="version must be 'v2' or 'v3'"):
        S3OnnxSpeechTokenizer(v3_models["renamed"], device="cpu", version="v4")


def test_prepare_data_records_the_v3_tokenizer(v3_models, tmp_path):
    import importlib.util
    import sys

    from transformers import HfArgumentParser

    write_clips(tmp_path / "clips")
    spec = importlib.util.spec_from_file_location("prepare_data_v3_test", REPO / "examples" / "prepare_data.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    output = tmp_path / "tokens"
    argv = ["--source", str(tmp_path / "clips"), "--tokenizer_model", str(v3_models["batch"])]
    argv += ["--output_dir", str(output), "--device", "cpu"]
    (args,) = HfArgumentParser(script.PrepareDataArguments).parse_args_into_dataclasses(argv)
    script.main(args)
    report = json.loads((output / "preparation_report.json").read_text())
    assert report["speech_tokenizer_version"] == "v3"
