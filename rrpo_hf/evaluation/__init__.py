"""Evaluation: speech-emotion-recognition metrics (WA / UA / macro-F1), reward-model robustness probes and the
scorers that rate generated speech tokens during DiffRO evaluation."""

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

# Reward-model robustness probes: artifact sensitivity, exaggeration, token-substitution attack, h' attacks.
from .robustness import (  # noqa: E402
    artifact_sensitivity,
    embedding_attack_accuracy,
    exaggeration_sensitivity,
    insert_artifact_tokens,
    token_substitution_attack,
)


__all__ += [
    "artifact_sensitivity",
    "embedding_attack_accuracy",
    "exaggeration_sensitivity",
    "insert_artifact_tokens",
    "token_substitution_attack",
]

# Evaluation scorers: callables (generated tokens, batch) -> named per-sample scores, for DiffROTrainer(eval_scorers=).
from .scorers import EmotionClassifierScorer, EvalScorer  # noqa: E402


__all__ += ["EmotionClassifierScorer", "EvalScorer"]
