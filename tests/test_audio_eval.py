"""Objective audio evaluation: DNSMOS, reward-model emotion accuracy / reward, judges, reports."""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F


sys.path.insert(0, os.path.dirname(__file__))
from conftest_audio import ESPEAK, LogMelBandTokenizer, build_emotion_folder_corpus  # noqa: E402

from rrpo_hf.data.audio import AudioValidationConfig, load_and_validate, scan_emotion_folders  # noqa: E402
from rrpo_hf.evaluation.audio import DNSMOSScorer, RewardModelScorer, evaluate_audio  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); audio tests need synthesized speech")
    root = tmp_path_factory.mktemp("synthesized")
    build_emotion_folder_corpus(root)
    return root


@pytest.fixture(scope="module")
def dnsmos():
    pytest.importorskip("speechmos", reason="DNSMOS needs `pip install speechmos librosa onnxruntime`")
    return DNSMOSScorer()


@pytest.fixture(scope="module")
def tiny_rm():
    from rrpo_hf.models.robust_ser import RobustSERConfig, RobustSERForAudioClassification

    torch.manual_seed(0)
    config = RobustSERConfig(
        vocab_size=LogMelBandTokenizer().codebook_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        label_smoothing=0.1,
    )
    return RobustSERForAudioClassification(config).eval()


def test_dnsmos_in_range_and_degradations_score_lower(corpus, dnsmos):
    clean = load_and_validate(corpus / "Happy" / "happy_1.wav")
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + 0.08 * rng.standard_normal(clean.shape).astype(np.float32), -1, 1)
    peak = np.abs(clean).max()
    clipped = np.clip(clean * 12.0, -peak * 0.5, peak * 0.5)  # hard clipping: heavy harmonic distortion

    scores = {name: dnsmos.score(w) for name, w in {"clean": clean, "noisy": noisy, "clipped": clipped}.items()}
    for name, values in scores.items():
        assert set(values) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}
        assert all(1.0 <= v <= 5.0 for v in values.values()), (name, values)
    assert scores["noisy"]["dnsmos_ovrl"] < scores["clean"]["dnsmos_ovrl"] - 0.3
    assert scores["noisy"]["dnsmos_bak"] < scores["clean"]["dnsmos_bak"]
    assert scores["clipped"]["dnsmos_ovrl"] < scores["clean"]["dnsmos_ovrl"]
    with pytest.raises(ValueError, match="16000 Hz"):
        dnsmos.score(clean, sampling_rate=22_050)


def test_reward_model_scores_match_an_independent_computation(corpus, tiny_rm):
    tokenizer = LogMelBandTokenizer()
    scorer = RewardModelScorer(tiny_rm, tokenizer, batch_size=3, device="cpu")
    paths = [
        corpus / "Happy" / "happy_0.wav",
        corpus / "angry" / "angry_1.wav",
        corpus / "sad" / "sad_0.wav",
        corpus / "neu" / "neu_0.wav",
    ]
    targets = ["happy", "angry", "sad", "neutral"]
    waveforms = [load_and_validate(p) for p in paths]
    scored = scorer(waveforms, targets)

    label2id = tiny_rm.config.label2id
    for index, (waveform, target) in enumerate(zip(waveforms, targets)):
        tokens = torch.tensor([tokenizer.tokenize([waveform])[0]])
        with torch.no_grad():
            logits = tiny_rm(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits[0]
        target_id = torch.tensor(label2id[target])
        # batched + padded must agree with one clip at a time (padding is masked in the RM)
        assert scored["rm_reward"][index] == pytest.approx(
            -F.cross_entropy(logits, target_id, label_smoothing=0.1).item(), abs=1e-4
        )
        assert scored["rm_target_prob"][index] == pytest.approx(logits.softmax(-1)[target_id].item(), abs=1e-5)
        assert scored["rm_predicted"][index] == tiny_rm.config.id2label[int(logits.argmax())]
        assert scored["rm_correct"][index] == (int(logits.argmax()) == label2id[target])

    with pytest.raises(ValueError, match="outside the reward model's vocabulary"):
        scorer.score_tokens([[0, 1, tiny_rm.config.vocab_size]], ["happy"])
    with pytest.raises(ValueError, match="not labels of the reward model"):
        scorer(waveforms[:1], ["disgusted"])
    with pytest.raises(ValueError, match="needs a speech tokenizer"):
        RewardModelScorer(tiny_rm, None)
    with pytest.raises(ValueError, match="codebook"):
        RewardModelScorer(tiny_rm, LogMelBandTokenizer(num_bands=16))


def test_evaluate_folder_end_to_end_writes_tables_and_plot(corpus, tiny_rm, dnsmos, tmp_path):
    # One clip per emotion plus every bad file (the non-`neu_*` files of neu/): DNSMOS costs ~1 s of CPU per clip, keep
    # the test short.
    records = [
        r
        for r in scan_emotion_folders(corpus)
        if r.audio_path.endswith("_0.wav") or "/neu/" in r.audio_path and "neu_" not in r.audio_path
    ]

    def duration_judge(waveforms, target_emotions):
        return [len(w) / 16_000 for w in waveforms]

    result = evaluate_audio(
        records,
        dnsmos=dnsmos,
        reward_scorer=RewardModelScorer(tiny_rm, LogMelBandTokenizer(), device="cpu"),
        judges={"duration": duration_judge},
        validation=AudioValidationConfig(max_duration_s=5.0),
        batch_size=4,
        show_progress=False,
    )
    assert result.report.kept == 4 and len(result.report.skipped) == 6
    assert result.report.counts["unreadable"] == 1 and result.report.counts["silent"] == 1
    assert {row["emotion"] for row in result.per_clip} == {"happy", "angry", "sad", "neutral"}
    for row in result.per_clip:
        assert row["judge_duration"] == pytest.approx(row["duration"])
        assert 1.0 <= row["dnsmos_ovrl"] <= 5.0

    overall = result.overall
    assert overall["num_clips"] == 4
    assert overall["rm_emotion_accuracy"] == pytest.approx(np.mean([r["rm_correct"] for r in result.per_clip]))
    assert overall["rm_reward"] == pytest.approx(np.mean([r["rm_reward"] for r in result.per_clip]))
    sad = [r for r in result.per_clip if r["emotion"] == "sad"]
    assert result.per_emotion["sad"]["num_clips"] == 1
    assert result.per_emotion["sad"]["dnsmos_ovrl"] == pytest.approx(np.mean([r["dnsmos_ovrl"] for r in sad]))

    paths = result.save(tmp_path / "eval")
    per_clip = list(csv.DictReader(open(paths["per_clip"])))
    assert len(per_clip) == 4 and float(per_clip[0]["dnsmos_ovrl"]) == pytest.approx(result.per_clip[0]["dnsmos_ovrl"])
    per_emotion = {row["emotion"]: row for row in csv.DictReader(open(paths["per_emotion"]))}
    assert set(per_emotion) == {"happy", "angry", "sad", "neutral", "all"}
    summary = json.loads(paths["summary"].read_text())
    assert summary["skipped"]["counts"] == result.report.counts
    assert summary["per_emotion"]["all"]["rm_reward"] == pytest.approx(overall["rm_reward"])
    assert paths["histograms"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths["skipped"].read_text().strip().splitlines()) == 1 + 6


def test_evaluate_rejects_bad_setups(corpus, tiny_rm):
    records = scan_emotion_folders(corpus)[:2]
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        evaluate_audio(records)
    with pytest.raises(ValueError, match="returned 1 scores"):
        evaluate_audio(records, judges={"broken": lambda w, t: [0.0]}, show_progress=False)
