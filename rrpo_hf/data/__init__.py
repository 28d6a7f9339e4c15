from .labels import (
    CANONICAL_EMOTIONS,
    EMOTION_ALIASES,
    PAPER_EMOTIONS,
    UnknownEmotionError,
    emotion_label_maps,
    normalize_emotion,
    normalize_emotions,
)
