"""Evaluation utilities: speech-emotion-recognition metrics (WA / UA / macro-F1)."""

from .metrics import (
    EmotionRecognitionMetrics,
    compute_emotion_metrics,
    emotion_recognition_scores,
    format_emotion_eval_table,
)

__all__ = [
    "EmotionRecognitionMetrics",
    "compute_emotion_metrics",
    "emotion_recognition_scores",
    "format_emotion_eval_table",
]

# Reward-model robustness probes: artifact sensitivity, token-substitution attack, h' attacks.
from .robustness import (  # noqa: E402
    artifact_sensitivity,
    embedding_attack_accuracy,
    insert_artifact_tokens,
    token_substitution_attack,
)

__all__ += [
    "artifact_sensitivity",
    "embedding_attack_accuracy",
    "insert_artifact_tokens",
    "token_substitution_attack",
]
