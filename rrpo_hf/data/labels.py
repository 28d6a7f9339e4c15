"""Canonical emotion names and the tables that map corpus-specific labels onto them.

Every stage of rrpo-hf (reward model, testbed, DiffRO prompts, audio preparation) speaks the
canonical names below. Corpora spell emotions in their own way (ESD ``Surprise``, IEMOCAP ``hap``
and ``exc``, MER2023 ``worried``, RAVDESS ``05``...). :data:`CORPUS_EMOTION_LABELS` is the one table of
the supported corpora's labels (the corpus layouts of :mod:`rrpo_hf.data.corpora` read their labels through it
only); :data:`EMOTION_ALIASES` normalises free-form labels (manifests, emotion folders, Hub datasets) and
agrees with it on every label both know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


#: The six canonical emotions: neutral plus the paper's five (angry, happy, sad, surprised, fearful).
CANONICAL_EMOTIONS: tuple[str, ...] = ("neutral", "happy", "angry", "sad", "surprised", "fearful")

#: The five emotions of the RRPO paper's single-speaker Mandarin corpus.
PAPER_EMOTIONS: tuple[str, ...] = ("angry", "happy", "sad", "surprised", "fearful")

#: Further canonical names that some corpora bring. They are kept under their own name, never merged into one of
#: the six: a model then learns them as classes of their own, or a label set drops them (:data:`CORPUS_LABEL_SETS`).
EXTRA_EMOTIONS: tuple[str, ...] = ("disgusted", "contempt", "frustrated", "calm", "other")

#: Lower-cased corpus spelling -> canonical name.
EMOTION_ALIASES: dict[str, str] = {
    # canonical names map to themselves
    **{name: name for name in CANONICAL_EMOTIONS + EXTRA_EMOTIONS},
    # ESD (English / Chinese folders)
    "surprise": "surprised",
    # IEMOCAP codes
    "neu": "neutral",
    "hap": "happy",
    "exc": "happy",
    "ang": "angry",
    "sad": "sad",
    "fea": "fearful",
    "sur": "surprised",
    "dis": "disgusted",
    "fru": "frustrated",
    "oth": "other",
    # (IEMOCAP's "xxx", no majority label, is no emotion: the IEMOCAP layout drops it, a manifest must map it)
    # common spellings (CREMA-D, RAVDESS, MER2023, EmoV-DB, MSP-Podcast). RAVDESS's calm is its own class ("calm").
    "happiness": "happy",
    "joy": "happy",
    "amused": "happy",
    "anger": "angry",
    "sadness": "sad",
    "fear": "fearful",
    "worried": "fearful",
    "disgust": "disgusted",
    "surprised": "surprised",
    "neutrality": "neutral",
    # Chinese labels used by CASIA / in-house Mandarin corpora
    "中性": "neutral",
    "高兴": "happy",
    "开心": "happy",
    "生气": "angry",
    "愤怒": "angry",
    "悲伤": "sad",
    "伤心": "sad",
    "惊讶": "surprised",
    "害怕": "fearful",
    "恐惧": "fearful",
}


#: The one table of the supported corpora's labels: corpus -> {label as the corpus writes it: canonical name}.
#: ``None`` drops the clip (counted as ``excluded_label``): IEMOCAP's ``xxx`` marks utterances whose annotators found
#: no majority. Names outside the six canonical emotions (disgusted, calm, frustrated, other) keep their own name;
#: MER2023's ``worried`` is read as ``fearful``. Which names a prepared corpus keeps is a label set below.
CORPUS_EMOTION_LABELS: dict[str, dict[str, str | None]] = {
    # ESD: folder names of <speaker>/<Emotion>/ (English and Mandarin halves alike).
    "esd": {"Neutral": "neutral", "Happy": "happy", "Angry": "angry", "Sad": "sad", "Surprise": "surprised"},
    # IEMOCAP: the majority label of dialog/EmoEvaluation/*.txt.
    "iemocap": {
        "neu": "neutral",
        "hap": "happy",
        "exc": "happy",  # excited is merged into happy (the common 4-class setting)
        "ang": "angry",
        "sad": "sad",
        "fea": "fearful",
        "sur": "surprised",
        "dis": "disgusted",
        "fru": "frustrated",
        "oth": "other",
        "xxx": None,  # no majority among the annotators
    },
    # MER2023: the `discrete` column of train-label.csv / test{1,2,3}-label.csv.
    "mer2023": {
        "neutral": "neutral",
        "happy": "happy",
        "angry": "angry",
        "sad": "sad",
        "worried": "fearful",
        "surprise": "surprised",
    },
    # CREMA-D: the third field of AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav.
    "cremad": {"NEU": "neutral", "HAP": "happy", "ANG": "angry", "SAD": "sad", "FEA": "fearful", "DIS": "disgusted"},
    # RAVDESS: the third field of Actor_NN/<modality>-<channel>-<emotion>-<intensity>-<statement>-<rep>-<actor>.wav.
    "ravdess": {
        "01": "neutral",
        "02": "calm",
        "03": "happy",
        "04": "sad",
        "05": "angry",
        "06": "fearful",
        "07": "disgusted",
        "08": "surprised",
    },
}

#: Label sets of a prepared corpus: the canonical names it keeps (None: every name of the table). Clips of other
#: emotions are dropped and counted as ``excluded_label``. ``4class`` is the common cross-corpus setting (IEMOCAP's
#: neutral, happy + excited, angry, sad); ``canonical`` keeps the six canonical emotions; ``full`` keeps them all.
CORPUS_LABEL_SETS: dict[str, tuple[str, ...] | None] = {
    "full": None,
    "canonical": CANONICAL_EMOTIONS,
    "4class": ("neutral", "happy", "angry", "sad"),
}

#: The label set each corpus gets unless another is asked for.
DEFAULT_CORPUS_LABEL_SET: dict[str, str] = {
    "esd": "full",
    "iemocap": "4class",
    "mer2023": "full",
    "cremad": "full",
    "ravdess": "full",
}


class UnknownEmotionError(ValueError):
    """Raised when a corpus label has no canonical emotion."""


#: How a user fixes labels no model or alias knows: the same advice from every script and trainer.
UNKNOWN_EMOTION_FIX = (
    "Rename them to known emotions in the dataset (`dataset.map`, or `examples/prepare_data.py --emotion_aliases "
    '\'{"label": "happy"}\'` when preparing audio), or drop those rows (`dataset.filter`).'
)


def rows_with_labels(dataset, column: str, labels, limit: int = 5) -> str:
    """Where `labels` occur in `column` of `dataset` (class ids of a ClassLabel or names): "rows 3, 17 (+4 more)"."""
    feature = dataset.features.get(column) if hasattr(dataset, "features") else None
    wanted = {str(label) for label in labels}
    if hasattr(feature, "names"):
        wanted_ids = {i for i, name in enumerate(feature.names) if name in wanted}
        hits = [i for i, value in enumerate(dataset[column]) if value in wanted_ids]
    else:
        hits = [i for i, value in enumerate(dataset[column]) if str(value) in wanted]
    if not hits:
        return "no row"
    shown = ", ".join(str(i) for i in hits[:limit])
    more = f" (+{len(hits) - limit} more)" if len(hits) > limit else ""
    return f"row{'s' if len(hits) > 1 else ''} {shown}{more}"


def normalize_emotion(label: str, extra_aliases: Mapping[str, str] | None = None) -> str:
    """Return the canonical emotion name of a corpus label (case- and whitespace-insensitive)."""
    if not isinstance(label, str):
        raise UnknownEmotionError(f"Emotion labels must be strings, got {label!r} ({type(label).__name__}).")
    key = label.strip().lower()
    if extra_aliases:
        lowered = {k.strip().lower(): v for k, v in extra_aliases.items()}
        if key in lowered:
            return lowered[key]
    if key in EMOTION_ALIASES:
        return EMOTION_ALIASES[key]
    raise UnknownEmotionError(
        f"Unknown emotion label {label!r}. Known labels: {sorted(set(EMOTION_ALIASES.values()))}. "
        + UNKNOWN_EMOTION_FIX
        + (" In Python: `extra_aliases=`." if extra_aliases is None else "")
    )


def normalize_emotions(labels: Iterable[str], extra_aliases: Mapping[str, str] | None = None) -> list[str]:
    """Normalise many labels at once; the error lists *every* unmapped label, not just the first."""
    labels = list(labels)
    unknown = sorted({lab for lab in labels if _try_normalize(lab, extra_aliases) is None}, key=str)
    if unknown:
        raise UnknownEmotionError(
            f"Unmapped emotion labels: {unknown}. Known labels: {sorted(set(EMOTION_ALIASES.values()))}. "
            "Pass `extra_aliases={label: canonical_name}` for each of them."
        )
    return [normalize_emotion(lab, extra_aliases) for lab in labels]


def _try_normalize(label, extra_aliases):
    try:
        return normalize_emotion(label, extra_aliases)
    except UnknownEmotionError:
        return None


def emotion_key(label) -> str:
    """What a label is matched by against a classifier's labels: its canonical name, else the label as written.

    Corpus spellings then meet the model's labels whatever alias each side uses, and a label outside
    :data:`EMOTION_ALIASES` (a model's own class name) still matches itself exactly.
    """
    label = str(label)
    try:
        return normalize_emotion(label)
    except UnknownEmotionError:
        return label


def emotion_label_ids(id2label: Mapping[int, str]) -> dict[str, int]:
    """``emotion_key(label) -> label id`` for a classifier's labels (``model.config.id2label``).

    Look a dataset's emotion up with ``emotion_label_ids(id2label).get(emotion_key(name))``. Two labels of the
    classifier with one key (``hap`` and ``exc``, both ``happy``) are an error: which of them an emotion means would
    be a silent guess, and the reward or the label mapping would follow it.
    """
    seen: dict[str, tuple[int, str]] = {}
    for label_id in sorted(id2label, key=int):  # keys may be ints or, read from JSON, strings
        label, key = id2label[label_id], emotion_key(id2label[label_id])
        if key in seen:
            raise ValueError(
                f"The classifier's labels {seen[key][1]!r} (id {seen[key][0]}) and {label!r} (id {int(label_id)}) "
                f"both mean the emotion {key!r}, so an emotion cannot be mapped onto one of them. Give the classes "
                "distinct canonical names in `id2label`/`label2id` (rrpo_hf.data.labels.EMOTION_ALIASES), or merge "
                "them and retrain."
            )
        seen[key] = (int(label_id), label)
    return {key: label_id for key, (label_id, _) in seen.items()}


def emotion_label_maps(names: Iterable[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``(id2label, label2id)`` for a list of canonical names, in the given order."""
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError(f"Duplicate emotion names in {names}.")
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}
