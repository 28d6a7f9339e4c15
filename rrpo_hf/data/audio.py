"""Emotional speech corpora on disk -> validated 16 kHz waveforms -> speech-token datasets.

Audio is read with ``soundfile`` and resampled with ``soxr``: ``datasets.Audio`` decoding relies on
torchcodec, which does not load on CPU-only machines, so datasets are read with
``Audio(decode=False)`` and decoded here.

Supported sources (each yields :class:`AudioRecord` objects):

* a ``datasets.Dataset`` with an audio column (:func:`records_from_dataset`);
* a folder per emotion, ``root/<emotion>/*.wav`` (:func:`scan_emotion_folders`);
* the ESD layout ``root/<speaker>/<Emotion>/[split/]*.wav`` with ``root/<speaker>/<speaker>.txt``
  transcripts (:func:`scan_esd`);
* a CSV or JSON-lines manifest with ``path, text, emotion[, speaker, language]`` (:func:`read_manifest`);
* the corpora of the RRPO paper's Table 2 (IEMOCAP, MER2023, CREMA-D, RAVDESS, ESD) with their label maps and
  speaker-independent splits: :func:`rrpo_hf.data.corpora.load_corpus`.

Bad files (unreadable, empty, silent, too short, too long, sampled below the minimum rate) never
stop a run and are never dropped silently: :func:`prepare_speech_token_dataset` returns a
:class:`SkipReport` that counts them per reason and writes the list of skipped paths.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils.saving import atomic_write_text
from .labels import CANONICAL_EMOTIONS, EXTRA_EMOTIONS, normalize_emotions


if TYPE_CHECKING:
    import datasets

    from .speech_tokenizer import SpeechTokenizer

logger = logging.getLogger(__name__)

#: Sampling rate of the CosyVoice2 S3 tokenizer and of DNSMOS.
TARGET_SAMPLING_RATE = 16_000

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")

#: Why a file was skipped. Every skipped file carries exactly one of these.
SKIP_REASONS: tuple[str, ...] = (
    "missing",  # the path does not exist
    "unreadable",  # soundfile cannot decode it (corrupted, not audio, unsupported codec)
    "empty",  # decodes to zero samples
    "low_sampling_rate",  # recorded below `min_sampling_rate`: upsampling cannot restore the band
    "too_short",
    "too_long",
    "silent",  # RMS level below `silence_threshold_db`
    "excluded_label",  # a corpus layout's label set drops the clip's emotion (rrpo_hf.data.corpora), never decoded
)


# --------------------------------------------------------------------------------------------
# Validation config and skip accounting
# --------------------------------------------------------------------------------------------


@dataclass
class AudioValidationConfig:
    """Which clips are kept, and how they are brought to the tokenizer's format."""

    target_sampling_rate: int = field(
        default=TARGET_SAMPLING_RATE,
        metadata={"help": "Rate every kept clip is resampled to (16000 for the S3 tokenizer and DNSMOS)."},
    )
    min_sampling_rate: int = field(
        default=16_000,
        metadata={
            "help": "Files recorded below this rate are skipped (`low_sampling_rate`): upsampled narrow-band "
            "audio gives tokens unlike the wide-band speech the models were trained on. Set 0 to accept all."
        },
    )
    min_duration_s: float = field(default=0.5, metadata={"help": "Shorter clips are skipped (`too_short`)."})
    max_duration_s: float = field(
        default=30.0,
        metadata={
            "help": "Longer clips are skipped (`too_long`). 30 s is one S3 tokenizer window; longer clips are "
            "tokenized with overlapping windows, so raise it when you need them."
        },
    )
    silence_threshold_db: float = field(
        default=-50.0,
        metadata={"help": "Clips whose RMS level (dBFS) is below this are skipped (`silent`)."},
    )

    def __post_init__(self):
        if self.target_sampling_rate <= 0:
            raise ValueError(f"target_sampling_rate must be positive, got {self.target_sampling_rate}.")
        if not 0 <= self.min_duration_s < self.max_duration_s:
            raise ValueError(
                f"Need 0 <= min_duration_s < max_duration_s, got {self.min_duration_s} and {self.max_duration_s}."
            )


@dataclass
class SkippedFile:
    path: str
    reason: str
    detail: str = ""


@dataclass
class SkipReport:
    """Per-reason counts of skipped clips plus the clips themselves."""

    total: int = 0
    kept: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(item.reason for item in self.skipped)
        return {reason: counts[reason] for reason in SKIP_REASONS if counts[reason]}

    def add(self, path: str, reason: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"Unknown skip reason {reason!r}; expected one of {SKIP_REASONS}.")
        self.skipped.append(SkippedFile(str(path), reason, detail))

    def summary(self) -> str:
        parts = ", ".join(f"{reason}={count}" for reason, count in self.counts.items()) or "none"
        return f"kept {self.kept}/{self.total} clips; skipped {len(self.skipped)} ({parts})"

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``path<TAB>reason<TAB>detail`` lines (one per skipped clip), atomically."""
        lines = ["path\treason\tdetail"]
        lines += [f"{s.path}\t{s.reason}\t{s.detail.replace(chr(9), ' ').replace(chr(10), ' ')}" for s in self.skipped]
        return _atomic_write_text(Path(path), "\n".join(lines) + "\n")

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "kept": self.kept, "skipped": len(self.skipped), "counts": self.counts}


class AudioValidationError(ValueError):
    """A clip failed validation; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Audio I/O
# --------------------------------------------------------------------------------------------


def read_audio(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes to ``(float32 mono waveform, sampling_rate)``.

    Multi-channel audio is mixed down by averaging the channels.
    """
    import soundfile as sf

    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    waveform, sampling_rate = sf.read(handle, dtype="float32", always_2d=True)
    return waveform.mean(axis=1), int(sampling_rate)


def resample(waveform: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    """Resample a mono waveform with soxr (high quality); a no-op at equal rates."""
    if orig_sampling_rate == target_sampling_rate:
        return np.asarray(waveform, dtype=np.float32)
    import soxr

    return soxr.resample(
        np.asarray(waveform, dtype=np.float32), orig_sampling_rate, target_sampling_rate, quality="HQ"
    )


def rms_dbfs(waveform: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)))) if waveform.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-12))


def load_and_validate(source: str | os.PathLike | bytes, config: AudioValidationConfig | None = None) -> np.ndarray:
    """Read, mix down, check and resample one clip.

    Returns the float32 waveform at ``config.target_sampling_rate``; raises :class:`AudioValidationError`
    with a :data:`SKIP_REASONS` reason when the clip must be skipped.
    """
    config = config or AudioValidationConfig()
    if not isinstance(source, (bytes, bytearray)) and not os.path.exists(source):
        raise AudioValidationError("missing", f"no such file: {source}")
    if isinstance(source, (bytes, bytearray)) and len(source) == 0:
        raise AudioValidationError("empty", "zero bytes")
    try:
        waveform, sampling_rate = read_audio(source)
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, TypeError... on bad input
        size = len(source) if isinstance(source, (bytes, bytearray)) else os.path.getsize(source)
        if size == 0:
            raise AudioValidationError("empty", "zero bytes") from None
        raise AudioValidationError("unreadable", f"{type(error).__name__}: {error}") from None
    if waveform.size == 0:
        raise AudioValidationError("empty", "no samples")
    if not np.all(np.isfinite(waveform)):
        raise AudioValidationError("unreadable", "contains NaN or infinite samples")
    if sampling_rate < config.min_sampling_rate:
        raise AudioValidationError(
            "low_sampling_rate", f"{sampling_rate} Hz < min_sampling_rate={config.min_sampling_rate} Hz"
        )
    duration = waveform.size / sampling_rate
    if duration < config.min_duration_s:
        raise AudioValidationError("too_short", f"{duration:.3f} s < min_duration_s={config.min_duration_s}")
    if duration > config.max_duration_s:
        raise AudioValidationError("too_long", f"{duration:.3f} s > max_duration_s={config.max_duration_s}")
    level = rms_dbfs(waveform)
    if level < config.silence_threshold_db:
        raise AudioValidationError(
            "silent", f"RMS {level:.1f} dBFS < silence_threshold_db={config.silence_threshold_db}"
        )
    return resample(waveform, sampling_rate, config.target_sampling_rate)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass
class AudioRecord:
    """One clip of a source corpus before decoding. ``audio`` is a path (str) or encoded bytes."""

    audio: str | bytes
    emotion: str
    text: str = ""
    speaker: str = ""
    language: str = ""
    corpus: str = ""
    split: str = ""
    audio_path: str = ""
    #: The prompt speaker's clip of a synthesised one (voice cloning), for speaker similarity; "" when none.
    prompt_audio: str = ""

    def __post_init__(self):
        if not self.audio_path:
            self.audio_path = self.audio if isinstance(self.audio, str) else "<bytes>"


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def scan_emotion_folders(
    root: str | os.PathLike, corpus: str = "", language: str = "", transcripts: Mapping[str, str] | None = None
) -> list[AudioRecord]:
    """``root/<emotion>/**/*.wav``: the folder name is the emotion label.

    ``transcripts`` optionally maps a file stem to its text; a ``<clip>.txt`` or ``<clip>.lab``
    next to a clip is used otherwise.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Audio folder {root} does not exist.")
    records = []
    for emotion_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in _audio_files(emotion_dir):
            text = (transcripts or {}).get(path.stem)
            if text is None:
                text = _sidecar_text(path)
            records.append(
                AudioRecord(
                    audio=str(path), emotion=emotion_dir.name, text=text, language=language, corpus=corpus or root.name
                )
            )
    if not records:
        raise ValueError(f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}/<emotion>/.")
    return records


def _sidecar_text(path: Path) -> str:
    for suffix in (".txt", ".lab"):
        sidecar = path.with_suffix(suffix)
        if sidecar.is_file():
            return sidecar.read_text(encoding="utf-8").strip()
    return ""


def _read_text_any_encoding(path: Path) -> str:
    # ESD's Mandarin transcripts are not always UTF-8 (GB-encoded copies circulate).
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


#: ESD speakers 0001-0010 speak Mandarin, 0011-0020 English.
def _esd_language(speaker: str) -> str:
    return "zh" if speaker.isdigit() and int(speaker) <= 10 else "en"


def scan_esd(root: str | os.PathLike, corpus: str = "esd") -> list[AudioRecord]:
    """The Emotional Speech Dataset layout: ``root/<speaker>/<Emotion>/[train|evaluation|test/]*.wav``.

    Transcripts come from ``root/<speaker>/<speaker>.txt`` (``utt_id<TAB>text<TAB>emotion`` lines).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ESD root {root} does not exist.")
    records = []
    for speaker_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        speaker = speaker_dir.name
        transcripts: dict[str, str] = {}
        transcript_file = speaker_dir / f"{speaker}.txt"
        if transcript_file.is_file():
            for line in _read_text_any_encoding(transcript_file).splitlines():
                parts = line.strip().split("\t")
                if len(parts) >= 2:
                    transcripts[parts[0].strip()] = parts[1].strip()
        for emotion_dir in sorted(p for p in speaker_dir.iterdir() if p.is_dir()):
            for path in _audio_files(emotion_dir):
                split = path.parent.name if path.parent != emotion_dir else ""
                records.append(
                    AudioRecord(
                        audio=str(path),
                        emotion=emotion_dir.name,
                        text=transcripts.get(path.stem, ""),
                        speaker=speaker,
                        language=_esd_language(speaker),
                        corpus=corpus,
                        split=split,
                    )
                )
    if not records:
        raise ValueError(f"No audio files found in the ESD layout under {root}/<speaker>/<Emotion>/.")
    return records


MANIFEST_PATH_COLUMNS = ("path", "audio", "audio_path", "file", "wav")


def read_manifest(path: str | os.PathLike, corpus: str = "") -> list[AudioRecord]:
    """CSV (header row) or JSON-lines manifest with ``path, text, emotion[, speaker, language, split, prompt_audio]``.

    Relative audio paths (``prompt_audio`` too: the prompt speaker's clip of a synthesised one) are resolved against
    the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Manifest {path} does not exist.")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raise ValueError(f"Manifest {path} must end in .csv, .tsv or .jsonl.")
    records = []
    for line_number, row in enumerate(rows, start=1):
        path_column = next((c for c in MANIFEST_PATH_COLUMNS if row.get(c)), None)
        if path_column is None or not row.get("emotion"):
            raise ValueError(
                f"{path} row {line_number} needs an audio path column (one of {MANIFEST_PATH_COLUMNS}) and an "
                f"`emotion` column; got columns {sorted(row)}."
            )
        audio = Path(row[path_column])
        if not audio.is_absolute():
            audio = path.parent / audio
        prompt_audio = str(row.get("prompt_audio") or "")
        if prompt_audio and not Path(prompt_audio).is_absolute():
            prompt_audio = str(path.parent / prompt_audio)
        records.append(
            AudioRecord(
                audio=str(audio),
                emotion=str(row["emotion"]),
                text=str(row.get("text") or ""),
                speaker=str(row.get("speaker") or ""),
                language=str(row.get("language") or ""),
                split=str(row.get("split") or ""),
                corpus=corpus or str(row.get("corpus") or path.stem),
                prompt_audio=prompt_audio,
            )
        )
    return records


def records_from_dataset(
    dataset: datasets.Dataset,
    audio_column: str = "audio",
    emotion_column: str = "emotion",
    text_column: str | None = "text",
    speaker_column: str | None = "speaker",
    language_column: str | None = "language",
    corpus: str = "",
) -> list[AudioRecord]:
    """Records from a Hub/local dataset. The audio column is read with ``Audio(decode=False)``."""
    from datasets import Audio, ClassLabel

    if audio_column not in dataset.column_names or emotion_column not in dataset.column_names:
        raise ValueError(
            f"Dataset needs columns {audio_column!r} and {emotion_column!r}; it has {dataset.column_names}. "
            "Pass `audio_column=` / `emotion_column=`."
        )
    if isinstance(dataset.features[audio_column], Audio):
        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    emotion_feature = dataset.features[emotion_column]
    records = []
    for row in dataset:
        audio = row[audio_column]
        if isinstance(audio, dict):
            source = audio.get("bytes") or audio.get("path")
            audio_path = audio.get("path") or "<bytes>"
        else:
            source, audio_path = audio, audio
        if source is None:
            source, audio_path = "", "<none>"
        emotion = row[emotion_column]
        if isinstance(emotion_feature, ClassLabel):
            emotion = emotion_feature.int2str(emotion)
        records.append(
            AudioRecord(
                audio=source,
                audio_path=str(audio_path),
                emotion=str(emotion),
                text=str(row.get(text_column) or "") if text_column else "",
                speaker=str(row.get(speaker_column) or "") if speaker_column else "",
                language=str(row.get(language_column) or "") if language_column else "",
                corpus=corpus,
            )
        )
    return records


def load_audio_records(source: str | os.PathLike, layout: str = "auto", corpus: str = "") -> list[AudioRecord]:
    """Records from a folder or a manifest file, in any layout of :func:`rrpo_hf.data.corpora.load_corpus`.

    ``layout="auto"`` picks ``manifest`` for files and otherwise detects the corpus from the folder
    (:func:`rrpo_hf.data.corpora.detect_layout`): IEMOCAP, RAVDESS, CREMA-D, MER2023, ESD (sub-folders with
    ``<speaker>.txt`` transcripts), else ``emotion_folders``. The ``esd``, ``emotion_folders`` and ``manifest``
    layouts return labels as written (normalised later); the other corpora return canonical names of their default
    label set, and the clips it drops are logged. Use ``load_corpus`` to get those clips and to choose the label
    set or the folds.
    """
    from .corpora import LAYOUTS, detect_layout, load_corpus

    source = Path(source)
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; use one of {LAYOUTS}.")
    if layout == "auto":
        layout = detect_layout(source)
    if layout == "manifest":
        return read_manifest(source, corpus=corpus)
    if layout == "esd":
        return scan_esd(source, corpus=corpus or "esd")
    if layout == "emotion_folders":
        return scan_emotion_folders(source, corpus=corpus)
    scan = load_corpus(source, layout=layout, corpus=corpus)
    if scan.excluded:
        logger.warning(
            "%d clips of %s are outside its label set %r and left out.", len(scan.excluded), source, scan.label_set
        )
    return scan.records


def emotion_names_for(canonical_labels: Iterable[str]) -> list[str]:
    """ClassLabel names: the six canonical emotions, then any extra canonical names present."""
    present = set(canonical_labels)
    return list(CANONICAL_EMOTIONS) + [name for name in EXTRA_EMOTIONS if name in present]


# --------------------------------------------------------------------------------------------
# Records -> speech-token dataset
# --------------------------------------------------------------------------------------------


@dataclass
class SpeechTokenDatasetResult:
    dataset: datasets.Dataset
    report: SkipReport


def _decode_and_tokenize(batch: dict[str, list], tokenizer: SpeechTokenizer, validation: dict) -> dict[str, list]:
    config = AudioValidationConfig(**validation)
    waveforms, kept_rows = [], []
    reasons, details, durations = [], [], []
    for row, audio in enumerate(batch["audio"]):
        try:
            waveform = load_and_validate(audio, config)
        except AudioValidationError as error:
            reasons.append(error.reason)
            details.append(error.detail)
            durations.append(0.0)
            continue
        reasons.append("")
        details.append("")
        durations.append(waveform.size / config.target_sampling_rate)
        waveforms.append(waveform)
        kept_rows.append(row)
    tokens: list[list[int]] = [[] for _ in batch["audio"]]
    if waveforms:
        tokenized = tokenizer.tokenize(waveforms, sampling_rate=config.target_sampling_rate)
        if len(tokenized) != len(waveforms):
            raise ValueError(
                f"{type(tokenizer).__name__}.tokenize returned {len(tokenized)} token lists for {len(waveforms)} "
                "waveforms; a SpeechTokenizer must return exactly one list per input waveform."
            )
        for row, row_tokens in zip(kept_rows, tokenized):
            tokens[row] = [int(t) for t in row_tokens]
    return {"speech_tokens": tokens, "duration": durations, "skip_reason": reasons, "skip_detail": details}


def prepare_speech_token_dataset(
    records: Sequence[AudioRecord],
    tokenizer: SpeechTokenizer,
    validation: AudioValidationConfig | None = None,
    extra_aliases: Mapping[str, str] | None = None,
    batch_size: int = 16,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    skipped_list_path: str | os.PathLike | None = None,
    excluded: Sequence[SkippedFile] = (),
) -> SpeechTokenDatasetResult:
    """Decode, validate, resample and tokenize every record into the shared dataset schema.

    ``excluded``: clips of the corpus left out before decoding (``CorpusScan.excluded`` of
    :func:`rrpo_hf.data.corpora.load_corpus`); they are counted and listed with the skipped clips.

    Columns: ``text, speech_tokens, emotion (ClassLabel), speaker, language, corpus, split,
    audio_path, duration``. Emotion labels are normalised first, so a corpus with unmapped labels
    fails before any audio is decoded, with every unmapped label listed.

    With ``cache_dir``, the tokenization ``map`` writes its shards there under a fingerprint of the
    records, the tokenizer and the validation config: re-running after an interruption reuses the
    finished shards instead of tokenizing again.
    """
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Sequence as HFSequence

    if not records:
        raise ValueError("No audio records to prepare.")
    validation = validation or AudioValidationConfig()
    canonical = normalize_emotions([r.emotion for r in records], extra_aliases)
    names = emotion_names_for(canonical)

    columns: dict[str, list] = {
        "audio": [r.audio if isinstance(r.audio, (bytes, bytearray)) else str(r.audio) for r in records],
        "audio_path": [r.audio_path for r in records],
        "text": [r.text for r in records],
        "emotion": canonical,
        "speaker": [r.speaker for r in records],
        "language": [r.language for r in records],
        "corpus": [r.corpus for r in records],
        "split": [r.split for r in records],
    }
    # `audio` mixes paths and bytes depending on the source; store both as binary so Arrow has one type.
    columns["audio"] = [
        a if isinstance(a, (bytes, bytearray)) else _PATH_PREFIX + a.encode() for a in columns["audio"]
    ]
    source = Dataset.from_dict(columns)

    map_kwargs: dict[str, Any] = {}
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint(source._fingerprint, tokenizer, validation)
        map_kwargs = {
            "cache_file_name": str(cache_dir / f"speech-tokens-{fingerprint}.arrow"),
            "new_fingerprint": fingerprint,
        }
    processed = source.map(
        _decode_and_tokenize_paths,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "validation": asdict(validation)},
        remove_columns=["audio"],
        features=Features(
            {
                "audio_path": Value("string"),
                "text": Value("string"),
                "emotion": Value("string"),
                "speaker": Value("string"),
                "language": Value("string"),
                "corpus": Value("string"),
                "split": Value("string"),
                "speech_tokens": HFSequence(Value("int32")),
                "duration": Value("float32"),
                "skip_reason": Value("string"),
                "skip_detail": Value("string"),
            }
        ),
        desc="Decoding and tokenizing audio",
        **map_kwargs,
    )

    report = SkipReport(total=len(processed) + len(excluded))
    for item in excluded:
        report.add(item.path, item.reason, item.detail)
    for path, reason, detail in zip(processed["audio_path"], processed["skip_reason"], processed["skip_detail"]):
        if reason:
            report.add(path, reason, detail)
    report.kept = report.total - len(report.skipped)
    logger.info("Audio preparation: %s", report.summary())
    if skipped_list_path is not None:
        report.write(skipped_list_path)

    if report.kept == 0:
        logger.warning("Every clip was skipped (%s); the token dataset is empty.", report.summary())
    processed = processed.cast_column("emotion", ClassLabel(names=names))
    kept = processed.filter(lambda reason: reason == "", input_columns="skip_reason", desc="Dropping skipped clips")
    kept = kept.remove_columns(["skip_reason", "skip_detail"])
    return SpeechTokenDatasetResult(dataset=kept, report=report)


_PATH_PREFIX = b"path:"


def _decode_and_tokenize_paths(
    batch: dict[str, list], tokenizer: SpeechTokenizer, validation: dict
) -> dict[str, list]:
    batch = dict(batch)
    batch["audio"] = [a[len(_PATH_PREFIX) :].decode() if a.startswith(_PATH_PREFIX) else a for a in batch["audio"]]
    return _decode_and_tokenize(batch, tokenizer, validation)


def _fingerprint(source_fingerprint: str, tokenizer: SpeechTokenizer, validation: AudioValidationConfig) -> str:
    from datasets.fingerprint import Hasher

    identity = getattr(tokenizer, "fingerprint", None) or Hasher.hash(tokenizer)
    payload = json.dumps([source_fingerprint, str(identity), asdict(validation)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


#: Written into every folder `save_dataset_atomically` saves: the files of that dataset, so that the next save
#: replaces exactly those and nothing a user put beside them.
DATASET_MANIFEST_NAME = ".rrpo_dataset.json"
_SAVE_TO_DISK_FILE = re.compile(
    r"(.+/)?(state\.json|dataset_info\.json|dataset_dict\.json|data-\d{5}-of-\d{5}\.arrow)"
)


def _dataset_files_of_earlier_save(output_dir: Path) -> set[str] | None:
    """The files of the dataset this function saved in ``output_dir`` earlier, or None if it saved none there."""
    try:
        manifest = json.loads((output_dir / DATASET_MANIFEST_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return set(manifest.get("files", []))


def check_dataset_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise `FileExistsError` unless `save_dataset_atomically(..., output_dir, overwrite)` may write there.

    Allowed: a missing or empty folder, a folder holding a dataset saved by `save_dataset_atomically`, or any folder
    with ``overwrite=True``. Call it before a long preparation so that a wrong ``--output_dir`` fails at once.
    """
    from ..utils.saving import JOURNAL_NAME, STAGING_PREFIX

    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"output_dir {str(output_dir)!r} is a file; pass a folder for the dataset.")
    if overwrite or not output_dir.is_dir() or _dataset_files_of_earlier_save(output_dir) is not None:
        return
    present = sorted(
        entry.name for entry in output_dir.iterdir() if not entry.name.startswith((STAGING_PREFIX, JOURNAL_NAME))
    )
    if present:
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise FileExistsError(
            f"output_dir {str(output_dir)!r} is not empty ({shown}) and holds no dataset saved by this tool. Pick "
            "another folder, or pass overwrite=True (--overwrite_output_dir) to save the dataset there: its own files "
            "(state.json, data-*.arrow, ...) replace any there, every other file is kept."
        )


def save_dataset_atomically(
    dataset: datasets.Dataset | datasets.DatasetDict, output_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    """``save_to_disk`` into ``output_dir`` so that a crash leaves the previous dataset or the new one, never half.

    Only the dataset's own files are replaced: those of a dataset this function saved there before (listed in its
    ``.rrpo_dataset.json``) and, with ``overwrite=True``, ``save_to_disk`` files of another dataset. Anything else in
    the folder is kept. A non-empty folder that holds no dataset of this function needs ``overwrite=True``
    (see `check_dataset_output_dir`).
    """
    from ..utils.saving import save_folder_atomically

    output_dir = Path(output_dir)
    check_dataset_output_dir(output_dir, overwrite=overwrite)
    earlier = _dataset_files_of_earlier_save(output_dir) or set()

    def replaces(relative: str) -> bool:
        relative = relative.replace(os.sep, "/")
        return relative in earlier or (overwrite and _SAVE_TO_DISK_FILE.fullmatch(relative) is not None)

    def write(staging: Path) -> None:
        dataset.save_to_disk(str(staging))
        files = sorted(
            os.path.relpath(os.path.join(root, name), staging).replace(os.sep, "/")
            for root, _, names in os.walk(staging)
            for name in names
        )
        manifest = {"written_by": "rrpo_hf.data.audio.save_dataset_atomically", "files": files}
        (staging / DATASET_MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    save_folder_atomically(output_dir, write, replaces=replaces)
    return output_dir


def _atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)
