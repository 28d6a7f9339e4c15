"""Real-audio preparation: sources, validation with skip reasons, tokenization into the shared schema."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest


sys.path.insert(0, os.path.dirname(__file__))
from conftest_audio import (  # noqa: E402
    ESPEAK,
    LogMelBandTokenizer,
    build_emotion_folder_corpus,
    write_wav,
)

from rrpo_hf.data.audio import (  # noqa: E402
    AudioRecord,
    AudioValidationConfig,
    AudioValidationError,
    load_and_validate,
    load_audio_records,
    prepare_speech_token_dataset,
    read_audio,
    read_manifest,
    records_from_dataset,
    save_dataset_atomically,
    scan_emotion_folders,
    scan_esd,
)
from rrpo_hf.data.labels import CANONICAL_EMOTIONS, UnknownEmotionError  # noqa: E402
from rrpo_hf.data.speech_tokenizer import S3SpeechTokenizer, S3TokenizerUnavailableError  # noqa: E402


VALIDATION = AudioValidationConfig(max_duration_s=5.0)


@pytest.fixture(scope="module")
def folder_corpus(tmp_path_factory):
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); audio tests need synthesized speech")
    root = tmp_path_factory.mktemp("emotion_folders")
    expected = build_emotion_folder_corpus(root)
    return root, expected


def test_load_and_validate_gives_16k_mono_and_one_reason_per_bad_file(folder_corpus, tmp_path):
    root, expected = folder_corpus
    raw, rate = read_audio(root / "sad" / "sad_0.wav")
    assert rate == 22_050
    waveform = load_and_validate(root / "sad" / "sad_0.wav", VALIDATION)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(len(waveform) - len(raw) * 16_000 / 22_050) <= 2

    stereo = np.stack([raw * 0.5, raw * 1.1], axis=1)  # mixdown = channel mean = 0.8 * raw
    write_wav(tmp_path / "stereo.wav", stereo, rate)
    np.testing.assert_allclose(read_audio(tmp_path / "stereo.wav")[0], 0.8 * raw, atol=2e-4)

    for name, reason in expected.items():
        with pytest.raises(AudioValidationError) as info:
            load_and_validate(root / "neu" / name, VALIDATION)
        assert info.value.reason == reason, (name, info.value)
    with pytest.raises(AudioValidationError, match="missing"):
        load_and_validate(tmp_path / "nope.wav", VALIDATION)
    with pytest.raises(AudioValidationError, match="empty"):
        load_and_validate(b"", VALIDATION)


def test_emotion_folder_corpus_to_token_dataset(folder_corpus, tmp_path):
    root, expected = folder_corpus
    records = scan_emotion_folders(root)
    assert len(records) == 7 + len(expected)
    tokenizer = LogMelBandTokenizer()
    result = prepare_speech_token_dataset(
        records, tokenizer, validation=VALIDATION, batch_size=4, skipped_list_path=tmp_path / "skipped.tsv"
    )
    dataset, report = result.dataset, result.report

    assert report.total == len(records) and report.kept == 7 == len(dataset)
    assert report.counts == dict.fromkeys(expected.values(), 1)
    listed = list(csv.DictReader(open(tmp_path / "skipped.tsv"), delimiter="\t"))
    assert {Path(row["path"]).name: row["reason"] for row in listed} == expected

    assert dataset.features["emotion"].names == list(CANONICAL_EMOTIONS)
    emotions = sorted(dataset.features["emotion"].int2str(dataset["emotion"]))
    assert emotions == ["angry"] * 2 + ["happy"] * 2 + ["neutral"] + ["sad"] * 2
    assert {"text", "speech_tokens", "emotion", "speaker", "language", "corpus", "audio_path", "duration"} <= set(
        dataset.column_names
    )
    for row in dataset:
        # Row alignment and padding independence: tokens equal the tokenizer applied to that clip alone.
        alone = LogMelBandTokenizer().tokenize([load_and_validate(row["audio_path"], VALIDATION)])[0]
        assert row["speech_tokens"] == alone
        assert len(row["speech_tokens"]) == int(row["duration"] * 25 + 1e-6)
        assert all(0 <= t < tokenizer.codebook_size for t in row["speech_tokens"])
        assert row["text"] == Path(row["audio_path"]).with_suffix(".txt").read_text().strip()
    assert len({tuple(row["speech_tokens"]) for row in dataset}) == 7

    saved = save_dataset_atomically(dataset, tmp_path / "tokens")
    from datasets import load_from_disk

    reloaded = load_from_disk(str(saved))
    assert reloaded["speech_tokens"] == dataset["speech_tokens"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tokens")]


def test_esd_layout_transcripts_languages_and_splits(folder_corpus, tmp_path):
    source_root, _ = folder_corpus
    clip = source_root / "sad" / "sad_0.wav"
    esd = tmp_path / "ESD"
    layout = {
        ("0011", "Surprise", "train", "0011_000701"): "Really, you did that?",
        ("0011", "Neutral", "test", "0011_000001"): "The train leaves at nine.",
        ("0001", "Happy", "", "0001_000351"): "今天天气很好",
    }
    for (speaker, emotion, split, utt), _text in layout.items():
        folder = esd / speaker / emotion / split if split else esd / speaker / emotion
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{utt}.wav").write_bytes(clip.read_bytes())
    (esd / "0011" / "0011.txt").write_text(
        "0011_000001\tThe train leaves at nine.\tNeutral\n0011_000701\tReally, you did that?\tSurprise\n",
        encoding="utf-8",
    )
    # Mandarin transcripts of the public release are GB-encoded.
    (esd / "0001" / "0001.txt").write_bytes("0001_000351\t今天天气很好\t开心\n".encode("gb18030"))

    records = load_audio_records(esd)  # auto-detects the ESD layout from <speaker>/<speaker>.txt
    assert records == scan_esd(esd)
    by_utt = {Path(r.audio_path).stem: r for r in records}
    assert set(by_utt) == {key[3] for key in layout}
    for (speaker, emotion, split, utt), text in layout.items():
        record = by_utt[utt]
        assert (record.speaker, record.emotion, record.split, record.text) == (speaker, emotion, split, text)
        assert record.language == ("zh" if speaker == "0001" else "en")
    dataset = prepare_speech_token_dataset(records, LogMelBandTokenizer(), validation=VALIDATION).dataset
    labels = dict(
        zip([Path(p).stem for p in dataset["audio_path"]], dataset.features["emotion"].int2str(dataset["emotion"]))
    )
    assert labels == {"0011_000701": "surprised", "0011_000001": "neutral", "0001_000351": "happy"}


def test_manifests_csv_and_jsonl_resolve_relative_paths_and_count_missing(folder_corpus, tmp_path):
    root, _ = folder_corpus
    rows = [
        {"path": str(root / "Happy" / "happy_0.wav"), "text": "a", "emotion": "joy", "speaker": "s1"},
        {"path": "clips/local.wav", "text": "b", "emotion": "exc", "speaker": "s2"},
        {"path": "clips/does_not_exist.wav", "text": "c", "emotion": "anger", "speaker": "s2"},
    ]
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "local.wav").write_bytes((root / "sad" / "sad_1.wav").read_bytes())
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "text", "emotion", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    for name in ("manifest.csv", "manifest.jsonl"):
        records = read_manifest(tmp_path / name)
        assert records[1].audio == str(tmp_path / "clips" / "local.wav")
        result = prepare_speech_token_dataset(records, LogMelBandTokenizer(), validation=VALIDATION)
        assert result.report.counts == {"missing": 1}
        assert result.report.skipped[0].path.endswith("does_not_exist.wav")
        assert result.dataset.features["emotion"].int2str(result.dataset["emotion"]) == ["happy", "happy"]
        assert result.dataset["speaker"] == ["s1", "s2"]

    (tmp_path / "bad.csv").write_text("file_name,label\nx.wav,happy\n")
    with pytest.raises(ValueError, match="audio path column"):
        read_manifest(tmp_path / "bad.csv")


def test_hub_style_dataset_with_bytes_paths_and_classlabel(folder_corpus):
    from datasets import Audio, ClassLabel, Dataset, Features, Value

    root, _ = folder_corpus
    happy = root / "Happy" / "happy_1.wav"
    corrupt = root / "neu" / "corrupt.wav"
    dataset = Dataset.from_dict(
        {
            "audio": [
                {"bytes": happy.read_bytes(), "path": "happy_1.wav"},
                {"bytes": None, "path": str(corrupt)},
                {"bytes": None, "path": str(root / "sad" / "sad_0.wav")},
            ],
            "label": [1, 0, 2],
            "sentence": ["x", "y", "z"],
        },
        # datasets encodes Audio values through torchcodec, so the Arrow struct is built first and cast.
        features=Features(
            {
                "audio": {"bytes": Value("binary"), "path": Value("string")},
                "label": ClassLabel(names=["Neutral", "Happy", "Sadness"]),
                "sentence": Value("string"),
            }
        ),
    )
    # As loaded from the Hub: a decoding Audio feature, which needs torchcodec to decode (absent on CPU machines).
    dataset = dataset.cast_column("audio", Audio())
    records = records_from_dataset(dataset, emotion_column="label", text_column="sentence", corpus="hub")
    assert isinstance(records[0].audio, bytes) and records[1].audio == str(corrupt)
    result = prepare_speech_token_dataset(records, LogMelBandTokenizer(), validation=VALIDATION)
    assert result.report.counts == {"unreadable": 1}
    out = result.dataset
    assert out.features["emotion"].int2str(out["emotion"]) == ["happy", "sad"]
    assert out["text"] == ["x", "z"] and out["corpus"] == ["hub", "hub"]
    expected = LogMelBandTokenizer().tokenize([load_and_validate(happy, VALIDATION)])[0]
    assert out[0]["speech_tokens"] == expected


def test_unmapped_labels_are_all_listed_before_any_decoding(tmp_path):
    records = [
        AudioRecord(audio=str(tmp_path / f"{i}.wav"), emotion=e) for i, e in enumerate(["bored", "happy", "sleepy"])
    ]
    tokenizer = LogMelBandTokenizer()
    with pytest.raises(UnknownEmotionError, match=r"\['bored', 'sleepy'\]"):
        prepare_speech_token_dataset(records, tokenizer)
    assert tokenizer.calls == 0
    # extra aliases map them; extra canonical names (disgusted) are appended after the six canonical ones
    records.append(AudioRecord(audio=str(tmp_path / "x.wav"), emotion="Disgust"))
    result = prepare_speech_token_dataset(records, tokenizer, extra_aliases={"bored": "neutral", "sleepy": "sad"})
    assert result.report.counts == {"missing": 4}
    assert result.dataset.features["emotion"].names == list(CANONICAL_EMOTIONS) + ["disgusted"]


def test_num_proc_map_is_cached_and_resumable(folder_corpus, tmp_path):
    root, _ = folder_corpus
    records = scan_emotion_folders(root)
    cache = tmp_path / "cache"
    first = prepare_speech_token_dataset(
        records, LogMelBandTokenizer(), validation=VALIDATION, num_proc=2, batch_size=3, cache_dir=cache
    )
    shards = sorted(p.name for p in cache.glob("speech-tokens-*.arrow"))
    assert len(shards) == 2 and all("_of_00002" in name for name in shards)

    counting = LogMelBandTokenizer()
    again = prepare_speech_token_dataset(
        records, counting, validation=VALIDATION, num_proc=2, batch_size=3, cache_dir=cache
    )
    assert counting.calls == 0, "a finished run must be reused from the cache, not tokenized again"
    assert again.dataset["speech_tokens"] == first.dataset["speech_tokens"]
    assert again.report.counts == first.report.counts

    # A different validation config is a different computation: no stale cache hit.
    changed = AudioValidationConfig(max_duration_s=10.0)
    rerun = prepare_speech_token_dataset(records, counting, validation=changed, cache_dir=cache)
    assert counting.calls > 0 and rerun.report.kept == first.report.kept + 1  # long.wav (7 s) now kept


def test_tokenizer_interface_checks_inputs():
    tokenizer = LogMelBandTokenizer()
    with pytest.raises(ValueError, match="16000 Hz"):
        tokenizer.tokenize([np.zeros(22_050, dtype=np.float32)], sampling_rate=22_050)
    with pytest.raises(ValueError, match="mono"):
        tokenizer.tokenize([np.zeros((2, 16_000), dtype=np.float32)])


def test_s3_tokenizer_reports_why_it_cannot_load(tmp_path):
    try:
        import s3tokenizer  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("s3tokenizer imports on this machine (GPU build); the CPU failure path does not apply")
    with pytest.raises(
        S3TokenizerUnavailableError, match=r"s3tokenizer.*(torchaudio|pip install s3tokenizer|onnx|einops)"
    ):
        S3SpeechTokenizer("speech_tokenizer_v2_25hz")
    with pytest.raises(FileNotFoundError, match="speech_tokenizer_v2.onnx"):
        S3SpeechTokenizer(tmp_path / "missing.onnx")


def test_tokenizer_returning_the_wrong_number_of_rows_is_an_error(folder_corpus):
    root, _ = folder_corpus

    class DropsLastClip(LogMelBandTokenizer):
        def tokenize(self, waveforms, sampling_rate=None):
            return super().tokenize(waveforms, sampling_rate)[:-1]

    records = scan_emotion_folders(root)[:3]
    with pytest.raises(ValueError, match="returned 1 token lists for 2 waveforms"):
        prepare_speech_token_dataset(records, DropsLastClip(), validation=VALIDATION, batch_size=2)


# -------------------------------------------------------------------------------------- the output folder
def _tokens_dataset(values):
    from datasets import Dataset

    return Dataset.from_dict({"speech_tokens": [[v, v + 1] for v in values]})


def test_saving_a_dataset_keeps_foreign_files_and_refuses_a_foreign_folder(tmp_path):
    from datasets import DatasetDict, load_from_disk

    from rrpo_hf.data.audio import check_dataset_output_dir

    output = tmp_path / "tokens"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    # A folder with someone else's files is refused (before any work, via check_dataset_output_dir) ...
    with pytest.raises(FileExistsError, match=r"not empty \(notes\.txt\).*--overwrite_output_dir"):
        check_dataset_output_dir(output)
    with pytest.raises(FileExistsError, match="holds no dataset saved by this tool"):
        save_dataset_atomically(_tokens_dataset([1]), output)
    assert sorted(p.name for p in output.iterdir()) == ["notes.txt"]
    # ... unless asked; even then only the dataset's files are written.
    save_dataset_atomically(_tokens_dataset([1, 2]), output, overwrite=True)
    assert (output / "notes.txt").read_text() == "mine"
    assert load_from_disk(str(output))["speech_tokens"] == [[1, 2], [2, 3]]

    # Re-saving into a folder of this tool needs no flag, replaces the dataset and keeps the foreign files,
    # also when a DatasetDict replaces a Dataset and back (old split folders go, a file put into one stays).
    check_dataset_output_dir(output)
    save_dataset_atomically(DatasetDict({"train": _tokens_dataset([5]), "test": _tokens_dataset([6])}), output)
    assert load_from_disk(str(output))["test"]["speech_tokens"] == [[6, 7]]
    (output / "train" / "README.txt").write_text("about the split")
    save_dataset_atomically(_tokens_dataset([9]), output)
    assert load_from_disk(str(output))["speech_tokens"] == [[9, 10]]
    assert (output / "notes.txt").read_text() == "mine"
    assert (output / "train" / "README.txt").read_text() == "about the split"
    assert not (output / "test").exists()  # emptied by the removal of the old split's files
    assert not [p.name for p in output.iterdir() if p.name.startswith(".rrpo-staging")]


def test_failed_dataset_save_leaves_the_previous_dataset(tmp_path, monkeypatch):
    from datasets import Dataset, load_from_disk

    output = tmp_path / "tokens"
    save_dataset_atomically(_tokens_dataset([1]), output)

    def fail(self, path, *args, **kwargs):
        Path(path, "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(Dataset, "save_to_disk", fail)
    with pytest.raises(OSError, match="No space left"):
        save_dataset_atomically(_tokens_dataset([7]), output)
    monkeypatch.undo()
    assert load_from_disk(str(output))["speech_tokens"] == [[1, 2]]
    assert sorted(p.name for p in output.iterdir() if p.name.startswith(".")) == [".rrpo_dataset.json"]
