"""The TTS judges on CPU with tiny random-weight transformers models built from their configs and saved to folders
(no download): ASR CER / WER against a hand computation from the model's own transcript, x-vector speaker similarity,
the audio emotion judge, their row alignment, and the evaluation scorer that runs them on synthesised tokens."""

import json

import numpy as np
import pytest
import torch


pytest.importorskip("jiwer")
from transformers import (  # noqa: E402
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Processor,
    WavLMConfig,
    WavLMForXVector,
)

from rrpo_hf.evaluation.judges import (  # noqa: E402
    ASRJudge,
    EmotionJudge,
    SpeakerSimilarityJudge,
    SynthesizedSpeechScorer,
    normalize_transcript,
)


RATE = 16000
TINY = dict(
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    conv_dim=(16, 16),
    conv_stride=(5, 4),
    conv_kernel=(10, 8),
    num_conv_pos_embeddings=8,
    num_conv_pos_embedding_groups=2,
    do_stable_layer_norm=False,
)


def extractor():
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, return_attention_mask=True)


@pytest.fixture(scope="module")
def asr_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asr")
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{char: 3 + i for i, char in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0, **TINY))
    # a large bias towards letters, so that the random model writes text rather than blanks
    with torch.no_grad():
        model.lm_head.bias[3:] += 3.0
    model.save_pretrained(folder)
    Wav2Vec2Processor(feature_extractor=extractor(), tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def speaker_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xvector")
    torch.manual_seed(1)
    config = WavLMConfig(
        **TINY, tdnn_dim=(8, 8), tdnn_kernel=(3, 1), tdnn_dilation=(1, 1), xvector_output_dim=6, num_buckets=8
    )
    WavLMForXVector(config).save_pretrained(folder)
    extractor().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def emotion_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ser")
    torch.manual_seed(2)
    labels = ["neu", "hap", "ang", "sad"]  # a corpus' spellings: matched to canonical names
    config = Wav2Vec2Config(
        **TINY, num_labels=4, id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)}
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    extractor().save_pretrained(folder)
    return str(folder)


def clips(count=3, seed=0):
    generator = np.random.default_rng(seed)
    return [(generator.standard_normal(RATE // 8 + 400 * i) * 0.1).astype(np.float32) for i in range(count)]


def levenshtein(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


@pytest.fixture(scope="module")
def asr_judge(asr_folder):
    return ASRJudge(asr_folder, device="cpu")


@pytest.fixture(scope="module")
def speaker_judge(speaker_folder):
    return SpeakerSimilarityJudge(speaker_folder, device="cpu")


@pytest.fixture(scope="module")
def emotion_judge(emotion_folder):
    return EmotionJudge(emotion_folder, device="cpu")


def with_reference(judge, waveform):
    """The same x-vector model with a fixed prompt speaker."""
    return SpeakerSimilarityJudge((judge.feature_extractor, judge.model), device="cpu", reference=(waveform, RATE))


def test_asr_judge_cer_and_wer_are_those_of_its_own_transcripts(asr_judge):
    judge = asr_judge
    waveforms = clips()
    texts = ["Hello, World!", "a b c", "Kiss the rain."]
    scores = judge(waveforms, RATE, texts=texts)
    assert set(scores) == {"asr_cer", "asr_wer", "asr_transcript"}
    assert all(len(column) == 3 for column in scores.values())
    assert any(scores["asr_transcript"])  # the random model writes something
    for text, transcript, cer, wer in zip(texts, scores["asr_transcript"], scores["asr_cer"], scores["asr_wer"]):
        reference, hypothesis = normalize_transcript(text), normalize_transcript(transcript)
        assert cer == pytest.approx(levenshtein(reference, hypothesis) / len(reference))
        assert wer == pytest.approx(levenshtein(reference.split(), hypothesis.split()) / len(reference.split()))
    # rows stay aligned: judging the clips in reverse order reverses every column
    reverse = judge(waveforms[::-1], RATE, texts=texts[::-1])
    assert reverse["asr_transcript"] == scores["asr_transcript"][::-1]
    assert reverse["asr_cer"] == pytest.approx(scores["asr_cer"][::-1])
    # audio at another rate is resampled to the model's 16 kHz
    assert len(judge([np.zeros(24000, np.float32)], 24000, texts=["x"])["asr_cer"]) == 1
    with pytest.raises(ValueError, match="texts"):
        judge(waveforms, RATE)


def test_speaker_similarity_against_the_prompt_speaker(speaker_judge):
    waveforms = clips()
    judge = with_reference(speaker_judge, waveforms[0])
    embeddings = judge.embed(waveforms, RATE)
    assert embeddings.shape == (3, 6) and torch.allclose(embeddings.norm(dim=-1), torch.ones(3))
    fixed = judge(waveforms, RATE)["speaker_similarity"]
    assert fixed[0] == pytest.approx(1.0, abs=1e-4) and all(-1 - 1e-5 <= s <= 1 + 1e-5 for s in fixed)
    expected = [float(embeddings[0] @ embeddings[i]) for i in range(3)]
    assert fixed == pytest.approx(expected, abs=1e-5)
    per_clip = judge(waveforms, RATE, prompt_waveforms=waveforms[::-1])["speaker_similarity"]
    assert per_clip == pytest.approx([expected[2], 1.0, expected[2]], abs=1e-5)
    with pytest.raises(ValueError, match="prompt speaker"):
        speaker_judge(waveforms, RATE)


def test_emotion_judge_reads_the_models_labels_through_canonical_names(emotion_judge):
    judge = emotion_judge
    waveforms = clips()
    targets = ["happy", "angry", "neutral"]
    scores = judge(waveforms, RATE, target_emotions=targets)
    probabilities = judge.probabilities(waveforms, RATE)
    assert probabilities.shape == (3, 4)
    ids = [judge.model.config.label2id[label] for label in ("hap", "ang", "neu")]
    assert scores["emotion_judge_target_prob"] == pytest.approx(
        [float(probabilities[i, k]) for i, k in enumerate(ids)]
    )
    assert scores["emotion_judge_accuracy"] == [float(probabilities[i].argmax() == k) for i, k in enumerate(ids)]
    with pytest.raises(ValueError, match="surprised"):
        judge(waveforms[:1], RATE, target_emotions=["surprised"])


def test_synthesized_speech_scorer_runs_every_judge_per_sample(asr_judge, speaker_judge, emotion_judge):
    def token2wav(tokens):
        # 22.05 kHz like HiFT's, so the scorer's resampling to the judges' 16 kHz is on the path
        steps = np.arange(221 * len(tokens))
        return 0.3 * np.sin(steps * (0.01 + 0.001 * (tokens[0] % 7))).astype(np.float32), 22050

    reference = clips(1)[0]
    scorer = SynthesizedSpeechScorer(
        token2wav,
        [asr_judge, with_reference(speaker_judge, reference), emotion_judge],
    )
    tokens = [[1, 2, 3, 4, 5, 6, 7, 8], [5, 6, 7, 8, 9, 10, 11, 12, 13], [3] * 12]
    batch = {"texts": ["one", "two", "three"], "target_emotions": ["happy", "sad", "angry"]}
    scores = scorer(tokens, batch)
    assert set(scores) == {
        "asr_cer",
        "asr_wer",
        "speaker_similarity",
        "emotion_judge_accuracy",
        "emotion_judge_target_prob",
    }
    assert all(len(values) == 3 and all(isinstance(v, float) for v in values) for values in scores.values())
    # alignment: scoring one sample alone gives its row of the batch
    single = scorer(tokens[1:2], {"texts": ["two"], "target_emotions": ["sad"]})
    for name, values in single.items():
        assert values[0] == pytest.approx(scores[name][1], abs=1e-5), name
    # voice cloning: similarity against each row's own prompt speech, synthesised by the same token2wav
    cloned = scorer(
        tokens,
        {
            **batch,
            "prompt_speech_ids": torch.tensor(tokens[0:1] * 3),
            "prompt_speech_attention_mask": torch.ones(3, 8, dtype=torch.long),
        },
    )
    assert cloned["speaker_similarity"][0] == pytest.approx(1.0, abs=1e-4)


def test_evaluate_audio_script_runs_the_judges_named_by_flags(
    tmp_path, asr_folder, speaker_folder, emotion_folder, asr_judge
):
    import csv
    import importlib.util
    import os
    import sys

    from scipy.io import wavfile
    from transformers import HfArgumentParser

    generator = np.random.default_rng(3)
    rows = []
    for index, (emotion, text) in enumerate([("happy", "good day"), ("sad", "so it goes"), ("happy", "hi")]):
        for kind in ("clip", "prompt"):
            pcm = (generator.standard_normal(RATE * 3 // 5) * 0.2 * 32767 / 4).astype(np.int16)
            wavfile.write(tmp_path / f"{kind}_{index}.wav", RATE, pcm)
        rows.append(
            {"path": f"clip_{index}.wav", "emotion": emotion, "text": text, "prompt_audio": f"prompt_{index}.wav"}
        )
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "evaluate_audio.py")
    spec = importlib.util.spec_from_file_location("evaluate_audio_example", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    argv = ["--source", str(tmp_path / "manifest.csv"), "--output_dir", str(tmp_path / "eval"), "--dnsmos", "false"]
    argv += ["--asr_model", asr_folder, "--speaker_model", speaker_folder, "--emotion_judge_model", emotion_folder]
    argv += ["--device", "cpu"]
    (args,) = HfArgumentParser(module.EvaluateAudioArguments).parse_args_into_dataclasses(args=argv)
    module.main(args)

    per_clip = list(csv.DictReader(open(tmp_path / "eval" / "per_clip.csv")))
    assert [row["text"] for row in per_clip] == ["good day", "so it goes", "hi"]
    for row, source in zip(per_clip, rows):
        _, pcm = wavfile.read(tmp_path / source["path"])
        transcript = asr_judge.transcribe([pcm.astype(np.float32) / 32768], RATE)[0]
        assert row["asr_transcript"] == transcript
        reference = normalize_transcript(source["text"])
        expected = levenshtein(reference, normalize_transcript(transcript)) / len(reference)
        assert float(row["asr_cer"]) == pytest.approx(expected, rel=1e-6)
        assert -1 <= float(row["speaker_similarity"]) <= 1 and row["emotion_judge_accuracy"] in ("0.0", "1.0")
    per_emotion = {row["emotion"]: row for row in csv.DictReader(open(tmp_path / "eval" / "per_emotion.csv"))}
    happy = [float(row["asr_cer"]) for row in per_clip if row["emotion"] == "happy"]
    assert float(per_emotion["happy"]["asr_cer"]) == pytest.approx(np.mean(happy))
    assert "speaker_similarity" in per_emotion["all"] and "asr_transcript" not in per_emotion["all"]

    argv_without_reference = argv[:6] + ["--speaker_model", speaker_folder]
    (args,) = HfArgumentParser(module.EvaluateAudioArguments).parse_args_into_dataclasses(args=argv_without_reference)
    (tmp_path / "manifest.csv").write_text("path,emotion,text\nclip_0.wav,happy,good day\n")
    with pytest.raises(ValueError, match="speaker_reference"):
        module.main(args)
