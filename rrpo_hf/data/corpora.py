"""The emotional speech corpora of the RRPO paper's Table 2 on disk -> :class:`~rrpo_hf.data.audio.AudioRecord` lists.

Layouts (each documented at its scanner and in docs/audio.md):

* ``esd``: ``<speaker>/<Emotion>/[train|evaluation|test/]*.wav`` (speakers 0001-0010 Mandarin, 0011-0020 English),
  split as the folders say;
* ``iemocap``: ``Session{1..5}/sentences/wav/<dialog>/<utterance>.wav`` labelled by
  ``Session*/dialog/EmoEvaluation/*.txt``, one fold per session (leave-one-session-out);
* ``mer2023``: ``train-label.csv`` / ``test{1,2,3}-label.csv`` (``name,discrete[,valence]``) with the audio of each
  ``name`` anywhere below the folder, split as the label files say;
* ``cremad``: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav``, speaker-independent folds;
* ``ravdess``: ``Actor_NN/03-01-<emotion>-<intensity>-<statement>-<repetition>-<actor>.wav``, speaker-independent
  folds.

Labels go through the one table :data:`rrpo_hf.data.labels.CORPUS_EMOTION_LABELS` and a label set
(:data:`~rrpo_hf.data.labels.CORPUS_LABEL_SETS`); clips outside it are not silently lost: :func:`load_corpus` returns
them as :class:`~rrpo_hf.data.audio.SkippedFile` entries (reason ``excluded_label``), which
:func:`~rrpo_hf.data.audio.prepare_speech_token_dataset` counts and lists with the other skipped clips.

Speaker-independent folds (:func:`speaker_folds`): the corpus's speakers sorted by id, speaker ``i`` (from 0) in fold
``i % num_folds + 1``; the ``test_fold`` speakers form the ``test`` split, the optional ``validation_fold`` speakers
the ``validation`` split, the rest ``train``. IEMOCAP's folds are its five sessions.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .audio import AudioRecord, SkippedFile, _audio_files, _read_text_any_encoding, read_manifest, scan_emotion_folders
from .audio import scan_esd as _scan_esd
from .labels import (
    CORPUS_EMOTION_LABELS,
    CORPUS_LABEL_SETS,
    DEFAULT_CORPUS_LABEL_SET,
    UnknownEmotionError,
    normalize_emotions,
)


logger = logging.getLogger(__name__)

#: Layouts of a known corpus (labels from :data:`CORPUS_EMOTION_LABELS`).
CORPUS_LAYOUTS: tuple[str, ...] = ("esd", "iemocap", "mer2023", "cremad", "ravdess")
#: Every layout :func:`load_corpus` reads.
LAYOUTS: tuple[str, ...] = ("auto", "manifest", "emotion_folders", *CORPUS_LAYOUTS)

VIDEO_EXTENSIONS: tuple[str, ...] = (".avi", ".mp4", ".mkv", ".mov")

#: CREMA-D's twelve sentences, by the code in the file name.
CREMAD_SENTENCES: dict[str, str] = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
#: RAVDESS's two statements, by the code in the file name.
RAVDESS_STATEMENTS: dict[str, str] = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}

_CREMAD_NAME = re.compile(r"(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})")
_RAVDESS_NAME = re.compile(
    r"(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})-(?P<statement>\d{2})-"
    r"(?P<repetition>\d{2})-(?P<actor>\d{2})"
)
_IEMOCAP_SESSION = re.compile(r"Session(?P<session>\d+)")
#: ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]``
_IEMOCAP_LABEL = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(?P<utterance>Ses\S+)\s+(?P<label>\S+)\s+\[")
#: ``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.``
_IEMOCAP_TRANSCRIPT = re.compile(r"^(?P<utterance>Ses\S+)\s+\[[\d.]+\s*-\s*[\d.]+\]:\s*(?P<text>.*)$")
_MER2023_SPLITS: tuple[str, ...] = ("train", "test1", "test2", "test3")


@dataclass
class CorpusScan:
    """The clips of a corpus: ``records`` to prepare, ``excluded`` clips the label set drops (with the reason)."""

    records: list[AudioRecord]
    excluded: list[SkippedFile] = field(default_factory=list)
    corpus: str = ""
    layout: str = ""
    label_set: str = "full"

    def summary(self) -> str:
        splits = Counter(record.split or "-" for record in self.records)
        emotions = Counter(record.emotion for record in self.records)
        return (
            f"{self.corpus or self.layout}: {len(self.records)} clips ({dict(sorted(emotions.items()))}; splits "
            f"{dict(sorted(splits.items()))}), {len(self.excluded)} dropped by label set {self.label_set!r}"
        )


# --------------------------------------------------------------------------------------------
# Folds
# --------------------------------------------------------------------------------------------


def check_folds(num_folds: int, test_fold: int, validation_fold: int | None) -> None:
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}.")
    if not 1 <= test_fold <= num_folds:
        raise ValueError(f"test_fold must lie in 1..num_folds={num_folds}, got {test_fold}.")
    if validation_fold is not None and (validation_fold == test_fold or not 1 <= validation_fold <= num_folds):
        raise ValueError(
            f"validation_fold must lie in 1..num_folds={num_folds} and differ from test_fold={test_fold}, got "
            f"{validation_fold}."
        )


def speaker_folds(speakers: Iterable[str], num_folds: int = 5) -> dict[str, int]:
    """Fold (1..num_folds) of every speaker: sorted by id, speaker ``i`` (from 0) in fold ``i % num_folds + 1``.

    Deterministic and independent of the clips' labels, so every label set and every run gets the same folds.
    RAVDESS's actors alternate male (odd) and female (even), so each fold holds both.
    """
    return {speaker: index % num_folds + 1 for index, speaker in enumerate(sorted(set(speakers)))}


def _split_of(fold: int, test_fold: int, validation_fold: int | None) -> str:
    if fold == test_fold:
        return "test"
    return "validation" if fold == validation_fold else "train"


# --------------------------------------------------------------------------------------------
# Layouts (raw corpus labels; load_corpus maps them)
# --------------------------------------------------------------------------------------------


def _scan_iemocap(root: Path, corpus: str, test_fold: int, validation_fold: int | None) -> list[AudioRecord]:
    sessions = sorted(
        (int(match["session"]), path)
        for path in root.iterdir()
        if path.is_dir() and (match := _IEMOCAP_SESSION.fullmatch(path.name))
    )
    if not sessions:
        raise FileNotFoundError(
            f"No IEMOCAP Session1..Session5 folders under {root}; pass the IEMOCAP_full_release folder."
        )
    records = []
    for session, session_dir in sessions:
        label_files = sorted((session_dir / "dialog" / "EmoEvaluation").glob("*.txt"))
        if not label_files:
            raise FileNotFoundError(
                f"{session_dir}/dialog/EmoEvaluation/ holds no *.txt label files; the IEMOCAP layout needs them."
            )
        transcripts: dict[str, str] = {}
        for path in sorted((session_dir / "dialog" / "transcriptions").glob("*.txt")):
            for line in _read_text_any_encoding(path).splitlines():
                if match := _IEMOCAP_TRANSCRIPT.match(line.strip()):
                    transcripts[match["utterance"]] = match["text"].strip()
        for path in label_files:
            for line in _read_text_any_encoding(path).splitlines():
                match = _IEMOCAP_LABEL.match(line.strip())
                if match is None:
                    continue  # annotator lines (C-E1:, A-E3:, ...) and headers
                utterance = match["utterance"]
                dialog = utterance.rsplit("_", 1)[0]
                # Ses01F_impro01_M000: the last field's letter is the utterance's speaker (the session's M or F actor).
                speaker = f"{utterance[:5]}{utterance.rsplit('_', 1)[1][:1]}"
                records.append(
                    AudioRecord(
                        audio=str(session_dir / "sentences" / "wav" / dialog / f"{utterance}.wav"),
                        emotion=match["label"],
                        text=transcripts.get(utterance, ""),
                        speaker=speaker,
                        language="en",
                        corpus=corpus,
                        split=_split_of(session, test_fold, validation_fold),
                    )
                )
    if not records:
        raise ValueError(f"No labelled utterances in {root}/Session*/dialog/EmoEvaluation/*.txt.")
    return records


def _scan_cremad(
    root: Path, corpus: str, num_folds: int, test_fold: int, validation_fold: int | None
) -> tuple[list[AudioRecord], list[SkippedFile]]:
    files = _audio_files(root)
    if not files:
        raise ValueError(
            f"No audio files under {root}; the CREMA-D layout is AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav."
        )
    parsed, unparsed = [], []
    for path in files:
        match = _CREMAD_NAME.fullmatch(path.stem)
        if match is None:
            unparsed.append(
                SkippedFile(
                    str(path), "excluded_label", "file name is not CREMA-D's <actor>_<sentence>_<emotion>_<level>"
                )
            )
        else:
            parsed.append((path, match))
    folds = speaker_folds((match["actor"] for _, match in parsed), num_folds)
    records = [
        AudioRecord(
            audio=str(path),
            emotion=match["emotion"],
            text=CREMAD_SENTENCES.get(match["sentence"], ""),
            speaker=match["actor"],
            language="en",
            corpus=corpus,
            split=_split_of(folds[match["actor"]], test_fold, validation_fold),
        )
        for path, match in parsed
    ]
    return records, unparsed


def _scan_ravdess(
    root: Path, corpus: str, num_folds: int, test_fold: int, validation_fold: int | None
) -> tuple[list[AudioRecord], list[SkippedFile]]:
    files = _audio_files(root)
    if not files:
        raise ValueError(f"No audio files under {root}; the RAVDESS layout is Actor_NN/03-01-05-01-01-01-NN.wav.")
    parsed, dropped = [], []
    for path in files:
        match = _RAVDESS_NAME.fullmatch(path.stem)
        if match is None:
            dropped.append(SkippedFile(str(path), "excluded_label", "file name is not RAVDESS's 7-field identifier"))
        elif match["channel"] != "01":
            dropped.append(
                SkippedFile(
                    str(path), "excluded_label", f"RAVDESS vocal channel {match['channel']} (song): speech only"
                )
            )
        else:
            parsed.append((path, match))
    folds = speaker_folds((match["actor"] for _, match in parsed), num_folds)
    records = [
        AudioRecord(
            audio=str(path),
            emotion=match["emotion"],
            text=RAVDESS_STATEMENTS.get(match["statement"], ""),
            speaker=f"Actor_{match['actor']}",
            language="en",
            corpus=corpus,
            split=_split_of(folds[match["actor"]], test_fold, validation_fold),
        )
        for path, match in parsed
    ]
    return records, dropped


def _scan_mer2023(root: Path, corpus: str) -> list[AudioRecord]:
    label_files = sorted(
        path
        for path in [*root.glob("*-label.csv"), *root.glob("*/*-label.csv")]
        if path.name[: -len("-label.csv")] in _MER2023_SPLITS
    )
    if not label_files:
        raise FileNotFoundError(
            f"No MER2023 label file ({', '.join(f'{s}-label.csv' for s in _MER2023_SPLITS)}) in {root} or its "
            "sub-folders."
        )
    audio = {path.stem: path for path in _audio_files(root)}
    records, missing = [], 0
    for label_file in label_files:
        split = label_file.name[: -len("-label.csv")]
        with open(label_file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"name", "discrete"} <= set(reader.fieldnames or ()):
                raise ValueError(
                    f"{label_file} needs the columns `name` and `discrete` (MER2023's label files); it has "
                    f"{reader.fieldnames}."
                )
            for line, row in enumerate(reader, start=2):
                name, label = (row.get("name") or "").strip(), (row.get("discrete") or "").strip()
                if not name or not label:
                    raise ValueError(f"{label_file} line {line} has an empty `name` or `discrete` value: {row}.")
                path = audio.get(name)
                missing += path is None
                records.append(
                    AudioRecord(
                        audio=str(path or root / "audio" / f"{name}.wav"),
                        emotion=label,
                        language="zh",
                        corpus=corpus,
                        split=split,
                    )
                )
    if missing == len(records):
        videos = [path for path in root.rglob("*") if path.suffix.lower() in VIDEO_EXTENSIONS]
        hint = (
            f" The folder holds {len(videos)} video files: MER2023 ships videos, extract 16 kHz mono audio first, "
            "e.g. `ffmpeg -i train/NAME.avi -ac 1 -ar 16000 audio/NAME.wav` for each clip."
            if videos
            else ""
        )
        raise FileNotFoundError(
            f"None of the {len(records)} clips named in {[p.name for p in label_files]} has an audio file "
            f"({', '.join(ext for ext in ('.wav', '.flac'))}, ...) named <name>.<ext> under {root}.{hint}"
        )
    if missing:
        logger.warning("MER2023: %d of %d labelled clips have no audio file under %s.", missing, len(records), root)
    return records


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def _label_set_names(label_set: str) -> tuple[str, ...] | None:
    if label_set not in CORPUS_LABEL_SETS:
        raise ValueError(f"Unknown label set {label_set!r}; use one of {sorted(CORPUS_LABEL_SETS)}.")
    return CORPUS_LABEL_SETS[label_set]


def apply_corpus_labels(
    records: Iterable[AudioRecord],
    corpus: str,
    label_set: str = "full",
    extra_aliases: Mapping[str, str] | None = None,
) -> tuple[list[AudioRecord], list[SkippedFile]]:
    """Map raw labels of ``corpus`` through :data:`CORPUS_EMOTION_LABELS`; drop (and return) clips outside the set.

    ``extra_aliases`` (raw label -> canonical name) take precedence over the table. A raw label that neither knows
    is an error listing every such label, before any audio is read.
    """
    table = CORPUS_EMOTION_LABELS[corpus]
    lowered = {label.lower(): name for label, name in table.items()}
    extra = {label.strip().lower(): name for label, name in (extra_aliases or {}).items()}
    keep = _label_set_names(label_set)
    kept, excluded, unknown = [], [], Counter()
    for record in records:
        raw = record.emotion.strip()
        if raw.lower() in extra:
            name = extra[raw.lower()]
        elif raw in table or raw.lower() in lowered:
            name = table.get(raw, lowered.get(raw.lower()))
        else:
            unknown[raw] += 1
            continue
        if name is None:
            excluded.append(SkippedFile(record.audio_path, "excluded_label", f"{corpus} label {raw!r} has no emotion"))
        elif keep is not None and name not in keep:
            excluded.append(
                SkippedFile(
                    record.audio_path,
                    "excluded_label",
                    f"{corpus} label {raw!r} ({name}) is outside label set {label_set!r} {list(keep)}",
                )
            )
        else:
            kept.append(replace(record, emotion=name))
    if unknown:
        raise UnknownEmotionError(
            f"{corpus} labels {dict(sorted(unknown.items()))} (label: clips) are not in "
            f"rrpo_hf.data.labels.CORPUS_EMOTION_LABELS[{corpus!r}] (known: {sorted(table)}). Map them with "
            '`extra_aliases={label: canonical_name}` (prepare_data.py: --emotion_aliases \'{"label": "neutral"}\') '
            "or check that the folder is a " + corpus + " corpus."
        )
    return kept, excluded


def _filter_generic(
    records: list[AudioRecord], label_set: str, extra_aliases: Mapping[str, str] | None
) -> tuple[list[AudioRecord], list[SkippedFile]]:
    keep = _label_set_names(label_set)
    if keep is None:
        return records, []  # labels are normalised (and unknown ones reported) by prepare_speech_token_dataset
    names = normalize_emotions([record.emotion for record in records], extra_aliases)
    kept = [replace(record, emotion=name) for record, name in zip(records, names) if name in keep]
    excluded = [
        SkippedFile(record.audio_path, "excluded_label", f"label {record.emotion!r} ({name}) is outside {label_set!r}")
        for record, name in zip(records, names)
        if name not in keep
    ]
    return kept, excluded


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def detect_layout(source: str | os.PathLike) -> str:
    """The layout of ``source``: ``manifest`` for a file, else the first corpus whose markers the folder has.

    IEMOCAP: ``Session<N>/dialog/EmoEvaluation/``; RAVDESS: ``Actor_<NN>/``; CREMA-D: ``AudioWAV/`` or files named
    ``<actor>_<sentence>_<emotion>_<level>``; MER2023: ``train-label.csv`` / ``test<N>-label.csv``; ESD:
    ``<speaker>/<speaker>.txt``; otherwise ``emotion_folders``.
    """
    source = Path(source)
    if source.is_file():
        return "manifest"
    if not source.is_dir():
        raise FileNotFoundError(f"Audio source {source} does not exist.")
    folders = [path for path in source.iterdir() if path.is_dir()]
    if any(_IEMOCAP_SESSION.fullmatch(d.name) and (d / "dialog" / "EmoEvaluation").is_dir() for d in folders):
        return "iemocap"
    if any(re.fullmatch(r"Actor_\d+", d.name) for d in folders):
        return "ravdess"
    files = [path for path in source.iterdir() if path.is_file()]
    if (source / "AudioWAV").is_dir() or any(_CREMAD_NAME.fullmatch(f.stem) for f in files[:100]):
        return "cremad"
    label_files = [*source.glob("*-label.csv"), *source.glob("*/*-label.csv")]
    if any(path.name[: -len("-label.csv")] in _MER2023_SPLITS for path in label_files):
        return "mer2023"
    if any((d / f"{d.name}.txt").is_file() for d in folders):
        return "esd"
    return "emotion_folders"


def load_corpus(
    source: str | os.PathLike,
    layout: str = "auto",
    corpus: str = "",
    label_set: str | None = None,
    num_folds: int = 5,
    test_fold: int = 5,
    validation_fold: int | None = None,
    extra_aliases: Mapping[str, str] | None = None,
) -> CorpusScan:
    """The clips of a corpus folder (or manifest), their canonical emotions and splits, and the dropped clips.

    Args:
        layout: one of :data:`LAYOUTS`; ``auto`` uses :func:`detect_layout`.
        corpus: the ``corpus`` column's value (default: the layout's name, or the folder name).
        label_set: a key of :data:`CORPUS_LABEL_SETS`; default :data:`DEFAULT_CORPUS_LABEL_SET` of the corpus
            (``4class`` for IEMOCAP, ``full`` otherwise).
        num_folds, test_fold, validation_fold: speaker-independent folds of CREMA-D and RAVDESS (1-based); for
            IEMOCAP the folds are its sessions (``num_folds`` must be 5, ``test_fold=5`` tests on Session5). ESD and
            MER2023 keep the splits their releases define, and manifests their ``split`` column.
        extra_aliases: raw label -> canonical name, ahead of the table.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; use one of {LAYOUTS}.")
    check_folds(num_folds, test_fold, validation_fold)
    if layout == "auto":
        layout = detect_layout(source)
    source = Path(source)
    if layout in CORPUS_LAYOUTS and not source.is_dir():
        raise FileNotFoundError(f"The {layout} layout reads a folder; {source} is not one.")
    label_set = label_set or DEFAULT_CORPUS_LABEL_SET.get(layout, "full")
    excluded: list[SkippedFile] = []
    if layout == "manifest":
        records = read_manifest(source, corpus=corpus)
    elif layout == "emotion_folders":
        records = scan_emotion_folders(source, corpus=corpus)
    elif layout == "esd":
        records = _scan_esd(source, corpus=corpus or "esd")
    elif layout == "iemocap":
        if num_folds != 5:
            raise ValueError(f"IEMOCAP's folds are its 5 sessions; num_folds={num_folds} does not apply.")
        records = _scan_iemocap(source, corpus or "iemocap", test_fold, validation_fold)
    elif layout == "cremad":
        records, excluded = _scan_cremad(source, corpus or "cremad", num_folds, test_fold, validation_fold)
    elif layout == "ravdess":
        records, excluded = _scan_ravdess(source, corpus or "ravdess", num_folds, test_fold, validation_fold)
    else:
        records = _scan_mer2023(source, corpus or "mer2023")
    if layout in CORPUS_LAYOUTS:
        records, dropped = apply_corpus_labels(records, layout, label_set, extra_aliases)
    else:
        records, dropped = _filter_generic(records, label_set, extra_aliases)
    scan = CorpusScan(records, excluded + dropped, corpus=corpus or layout, layout=layout, label_set=label_set)
    logger.info("%s", scan.summary())
    return scan
