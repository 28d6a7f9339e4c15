"""Corpus layouts of the paper's Table 2 on small fake trees: labels through the one table, label sets, splits."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


sys.path.insert(0, os.path.dirname(__file__))
from conftest_audio import LogMelBandTokenizer  # noqa: E402

from rrpo_hf.data.audio import AudioValidationConfig, load_audio_records, prepare_speech_token_dataset  # noqa: E402
from rrpo_hf.data.corpora import detect_layout, load_corpus, speaker_folds  # noqa: E402
from rrpo_hf.data.labels import (  # noqa: E402
    CANONICAL_EMOTIONS,
    CORPUS_EMOTION_LABELS,
    DEFAULT_CORPUS_LABEL_SET,
    EMOTION_ALIASES,
    EXTRA_EMOTIONS,
    UnknownEmotionError,
    normalize_emotion,
)


def write_clip(path: Path, seconds: float = 0.6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    waveform = 0.2 * np.sin(2 * np.pi * (150 + 20 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, waveform.astype(np.float32), 16_000, subtype="PCM_16")
    return path


def by_name(records) -> dict[str, object]:
    return {Path(record.audio_path).stem: record for record in records}


# ---------------------------------------------------------------------------------------------------- the table
def test_one_table_agrees_with_the_aliases_and_names_only_known_emotions():
    known = set(CANONICAL_EMOTIONS + EXTRA_EMOTIONS)
    for corpus, table in CORPUS_EMOTION_LABELS.items():
        assert corpus in DEFAULT_CORPUS_LABEL_SET
        for label, name in table.items():
            assert name is None or name in known, (corpus, label, name)
            if name is not None and label.lower() in EMOTION_ALIASES:
                assert normalize_emotion(label) == name, (corpus, label)
    # Outside the six: kept under their own names, not merged; "no majority" is no emotion at all.
    assert CORPUS_EMOTION_LABELS["ravdess"]["02"] == normalize_emotion("calm") == "calm"
    assert CORPUS_EMOTION_LABELS["cremad"]["DIS"] == "disgusted"
    assert CORPUS_EMOTION_LABELS["iemocap"]["fru"] == "frustrated" and CORPUS_EMOTION_LABELS["iemocap"]["xxx"] is None
    with pytest.raises(UnknownEmotionError):
        normalize_emotion("xxx")


def test_speaker_folds_are_deterministic_and_balanced():
    folds = speaker_folds([f"{i:02d}" for i in range(24, 0, -1)], num_folds=5)
    assert [speaker for speaker, fold in sorted(folds.items()) if fold == 5] == ["05", "10", "15", "20"]
    assert sorted(folds.values()) == sorted([i % 5 + 1 for i in range(24)])


# ---------------------------------------------------------------------------------------------------- IEMOCAP
IEMOCAP_LABELS = {
    1: [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "exc"), ("Ses01F_impro01_F001", "fru")],
    2: [("Ses02M_script01_1_F000", "hap"), ("Ses02M_script01_1_M001", "xxx")],
    5: [("Ses05F_impro03_M002", "ang"), ("Ses05F_impro03_F000", "sad"), ("Ses05F_impro03_F001", "sur")],
}


def build_iemocap(root: Path, with_audio: bool = True) -> Path:
    for session, utterances in IEMOCAP_LABELS.items():
        base = root / f"Session{session}"
        dialog = utterances[0][0].rsplit("_", 1)[0]
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcript = []
        for index, (utterance, label) in enumerate(utterances):
            lines += [f"[{index + 1.5:.4f} - {index + 3.25:.4f}]\t{utterance}\t{label}\t[2.5000, 3.0000, 2.5000]"]
            lines += ["C-E1:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  3;\t()", ""]
            transcript.append(f"{utterance} [{index + 1.5:08.4f}-{index + 3.25:08.4f}]: Line {index} of {dialog}.")
            if with_audio:
                write_clip(base / "sentences" / "wav" / dialog / f"{utterance}.wav", seed=index)
        (base / "dialog" / "EmoEvaluation" / "Categorical").mkdir(parents=True)  # sub-folders are not label files
        (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
        (base / "dialog" / "transcriptions").mkdir(parents=True)
        (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcript) + "\n")
    return root


def test_iemocap_four_class_and_full_sets_with_leave_one_session_out(tmp_path):
    root = build_iemocap(tmp_path / "IEMOCAP_full_release")
    assert detect_layout(root) == "iemocap"
    scan = load_corpus(root)  # default: 4-class, test on Session5
    records = by_name(scan.records)
    assert scan.label_set == "4class"
    assert {name: r.emotion for name, r in records.items()} == {
        "Ses01F_impro01_F000": "neutral",
        "Ses01F_impro01_M000": "happy",  # exc merged into happy
        "Ses02M_script01_1_F000": "happy",
        "Ses05F_impro03_M002": "angry",
        "Ses05F_impro03_F000": "sad",
    }
    first = records["Ses01F_impro01_M000"]
    assert (first.speaker, first.language, first.corpus, first.split) == ("Ses01M", "en", "iemocap", "train")
    assert first.text == "Line 1 of Ses01F_impro01."
    assert first.audio.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M000.wav")
    assert {r.split for r in scan.records if r.speaker.startswith("Ses05")} == {"test"}
    assert {Path(s.path).stem: s.detail for s in scan.excluded} == {
        "Ses01F_impro01_F001": "iemocap label 'fru' (frustrated) is outside label set '4class' "
        "['neutral', 'happy', 'angry', 'sad']",
        "Ses02M_script01_1_M001": "iemocap label 'xxx' has no emotion",
        "Ses05F_impro03_F001": "iemocap label 'sur' (surprised) is outside label set '4class' "
        "['neutral', 'happy', 'angry', 'sad']",
    }
    assert {s.reason for s in scan.excluded} == {"excluded_label"}

    full = load_corpus(root, label_set="full", test_fold=1, validation_fold=2)
    emotions = {Path(r.audio_path).stem: r.emotion for r in full.records}
    assert emotions["Ses01F_impro01_F001"] == "frustrated" and emotions["Ses05F_impro03_F001"] == "surprised"
    assert "Ses02M_script01_1_M001" not in emotions and len(full.excluded) == 1  # xxx: dropped in every set
    splits = {r.speaker[:5]: r.split for r in full.records}
    assert splits == {"Ses01": "test", "Ses02": "validation", "Ses05": "train"}
    with pytest.raises(ValueError, match="5 sessions"):
        load_corpus(root, num_folds=4, test_fold=1)


def test_excluded_clips_are_counted_and_listed_with_the_skipped_ones(tmp_path):
    root = build_iemocap(tmp_path / "IEMOCAP")
    (root / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav").unlink()
    scan = load_corpus(root)
    result = prepare_speech_token_dataset(
        scan.records,
        LogMelBandTokenizer(),
        validation=AudioValidationConfig(max_duration_s=5.0),
        excluded=scan.excluded,
        skipped_list_path=tmp_path / "skipped.tsv",
    )
    assert result.report.total == 8 and result.report.kept == 4
    assert result.report.counts == {"missing": 1, "excluded_label": 3}
    listed = list(csv.DictReader(open(tmp_path / "skipped.tsv"), delimiter="\t"))
    assert sorted(row["reason"] for row in listed) == ["excluded_label"] * 3 + ["missing"]
    dataset = result.dataset
    assert dataset.features["emotion"].names == list(CANONICAL_EMOTIONS)
    assert sorted(zip(dataset["split"], dataset.features["emotion"].int2str(dataset["emotion"]))) == [
        ("test", "angry"),
        ("test", "sad"),
        ("train", "happy"),
        ("train", "happy"),
    ]
    # load_audio_records (the audio evaluation's entry point) gets the kept clips of the default set.
    assert len(load_audio_records(root)) == 5


# ---------------------------------------------------------------------------------------------------- CREMA-D
def test_cremad_speaker_independent_folds_sentences_and_label_sets(tmp_path):
    audio = tmp_path / "CREMA-D" / "AudioWAV"
    emotions = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    for actor in range(1001, 1011):
        for index, emotion in enumerate(emotions):
            level = "XX" if index % 2 else "HI"
            (audio / f"{actor}_{['DFA', 'IEO', 'TSI'][index % 3]}_{emotion}_{level}.wav").parent.mkdir(
                parents=True, exist_ok=True
            )
            (audio / f"{actor}_{['DFA', 'IEO', 'TSI'][index % 3]}_{emotion}_{level}.wav").write_bytes(b"")
    (audio / "notes.wav").write_bytes(b"")  # not in the naming scheme
    root = tmp_path / "CREMA-D"
    assert detect_layout(root) == "cremad" and detect_layout(audio) == "cremad"

    scan = load_corpus(root, num_folds=5, test_fold=2)
    assert len(scan.records) == 60
    assert [s.detail for s in scan.excluded] == ["file name is not CREMA-D's <actor>_<sentence>_<emotion>_<level>"]
    record = by_name(scan.records)["1003_DFA_ANG_HI"]
    assert (record.emotion, record.speaker, record.text, record.corpus) == (
        "angry",
        "1003",
        "Don't forget a jacket.",
        "cremad",
    )
    assert by_name(scan.records)["1003_IEO_DIS_XX"].emotion == "disgusted"
    split_of = {}
    for record in scan.records:
        split_of.setdefault(record.speaker, set()).add(record.split)
    assert all(len(splits) == 1 for splits in split_of.values())  # no speaker in two splits
    assert sorted(s for s, splits in split_of.items() if splits == {"test"}) == ["1002", "1007"]

    four = load_corpus(root, label_set="4class")
    assert {r.emotion for r in four.records} == {"neutral", "happy", "angry", "sad"}
    assert len(four.excluded) == 1 + 20  # the stray file, DIS and FEA of 10 actors


# ---------------------------------------------------------------------------------------------------- RAVDESS
def test_ravdess_identifiers_calm_song_and_canonical_set(tmp_path):
    root = tmp_path / "RAVDESS"
    for actor in range(1, 7):
        for emotion in range(1, 9):
            name = f"03-01-{emotion:02d}-01-{1 + emotion % 2:02d}-01-{actor:02d}.wav"
            (root / f"Actor_{actor:02d}").mkdir(parents=True, exist_ok=True)
            (root / f"Actor_{actor:02d}" / name).write_bytes(b"")
    (root / "Actor_01" / "03-02-03-02-01-01-01.wav").write_bytes(b"")  # song
    assert detect_layout(root) == "ravdess"
    scan = load_corpus(root, num_folds=3, test_fold=3)
    assert len(scan.records) == 48
    assert [s.detail for s in scan.excluded] == ["RAVDESS vocal channel 02 (song): speech only"]
    records = by_name(scan.records)
    calm = records["03-01-02-01-01-01-04"]
    assert (calm.emotion, calm.speaker, calm.text, calm.split) == (
        "calm",
        "Actor_04",
        "Kids are talking by the door.",
        "train",
    )
    assert records["03-01-07-01-02-01-03"].emotion == "disgusted"
    assert {r.speaker for r in scan.records if r.split == "test"} == {"Actor_03", "Actor_06"}
    canonical = load_corpus(root, label_set="canonical")
    assert {r.emotion for r in canonical.records} == set(CANONICAL_EMOTIONS)
    assert len(canonical.excluded) == 1 + 12  # song, calm and disgust of 6 actors


# ---------------------------------------------------------------------------------------------------- MER2023
def write_label_csv(path: Path, rows: list[tuple[str, str]], valence: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "name,discrete,valence" if valence else "name,discrete"
    lines = [header] + [f"{name},{label}" + (",0.5" if valence else "") for name, label in rows]
    path.write_text("\n".join(lines) + "\n")


def test_mer2023_label_files_splits_and_missing_audio(tmp_path):
    root = tmp_path / "MER2023"
    write_label_csv(root / "train-label.csv", [("sample_00000001", "happy"), ("sample_00000002", "worried")])
    write_label_csv(root / "test-labels" / "test1-label.csv", [("sample_00000003", "surprise")])
    write_label_csv(root / "test-labels" / "test3-label.csv", [("sample_00000004", "neutral")], valence=False)
    for name in ("sample_00000001", "sample_00000002", "sample_00000003"):
        (root / "audio").mkdir(parents=True, exist_ok=True)
        (root / "audio" / f"{name}.wav").write_bytes(b"")
    assert detect_layout(root) == "mer2023"
    scan = load_corpus(root)
    records = by_name(scan.records)
    assert {name: (r.emotion, r.split, r.language) for name, r in records.items()} == {
        "sample_00000001": ("happy", "train", "zh"),
        "sample_00000002": ("fearful", "train", "zh"),
        "sample_00000003": ("surprised", "test1", "zh"),
        "sample_00000004": ("neutral", "test3", "zh"),
    }
    assert not Path(records["sample_00000004"].audio).exists()  # counted as `missing` when prepared

    write_label_csv(root / "test2-label.csv", [("sample_00000005", "bored")])
    with pytest.raises(UnknownEmotionError, match=r"mer2023 labels \{'bored': 1\}.*--emotion_aliases"):
        load_corpus(root)
    assert by_name(load_corpus(root, extra_aliases={"bored": "neutral"}).records)["sample_00000005"].emotion == (
        "neutral"
    )

    videos = tmp_path / "videos_only"
    write_label_csv(videos / "train-label.csv", [("sample_00000001", "happy")])
    (videos / "train").mkdir()
    (videos / "train" / "sample_00000001.avi").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="MER2023 ships videos.*ffmpeg"):
        load_corpus(videos)
    (videos / "train-label.csv").write_text("file,label\nx,happy\n")
    with pytest.raises(ValueError, match="needs the columns `name` and `discrete`"):
        load_corpus(videos, layout="mer2023")


# ---------------------------------------------------------------------------------------------------- ESD
def test_esd_through_the_table_and_generic_layouts_through_label_sets(tmp_path):
    esd = tmp_path / "ESD"
    for speaker, emotion in [("0001", "Surprise"), ("0001", "Neutral"), ("0012", "Angry")]:
        (esd / speaker / emotion / "test").mkdir(parents=True, exist_ok=True)
        (esd / speaker / emotion / "test" / f"{speaker}_{emotion}.wav").write_bytes(b"")
        (esd / speaker / f"{speaker}.txt").write_text("")
    assert detect_layout(esd) == "esd"
    scan = load_corpus(esd)
    assert sorted((r.emotion, r.language, r.split) for r in scan.records) == [
        ("angry", "en", "test"),
        ("neutral", "zh", "test"),
        ("surprised", "zh", "test"),
    ]
    assert len(load_corpus(esd, label_set="4class").records) == 2

    folders = tmp_path / "folders"
    for emotion in ("Happy", "disgust", "neu"):
        (folders / emotion).mkdir(parents=True)
        (folders / emotion / "a.wav").write_bytes(b"")
    assert detect_layout(folders) == "emotion_folders"
    assert sorted(r.emotion for r in load_corpus(folders).records) == ["Happy", "disgust", "neu"]  # as written
    canonical = load_corpus(folders, label_set="canonical")
    assert sorted(r.emotion for r in canonical.records) == ["happy", "neutral"] and len(canonical.excluded) == 1
    with pytest.raises(ValueError, match="Unknown label set"):
        load_corpus(folders, label_set="five")
    with pytest.raises(ValueError, match="test_fold must lie in 1..num_folds=5"):
        load_corpus(folders, test_fold=6)
