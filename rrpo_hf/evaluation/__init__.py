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
