import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score
from transformers.trainer_utils import EvalPrediction

from rrpo_hf.evaluation import (
    EmotionRecognitionMetrics,
    compute_emotion_metrics,
    emotion_recognition_scores,
    format_emotion_eval_table,
)


def test_metric_hand_computed_values():
    # WA = 3/4; recalls (1, 1, 1/2) -> UA 5/6; F1 per class (1, 2/3, 2/3) -> 7/9
    scores = EmotionRecognitionMetrics(keep_in_memory=True).compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    assert scores["wa"] == pytest.approx(0.75)
    assert scores["ua"] == pytest.approx(5 / 6)
    assert scores["macro_f1"] == pytest.approx(7 / 9)
    assert scores["num_samples"] == 4


def test_metric_matches_sklearn_on_imbalanced_data():
    rng = np.random.default_rng(0)
    references = rng.choice(6, size=500, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    predictions = np.where(rng.random(500) < 0.6, references, rng.integers(0, 6, size=500))
    scores = emotion_recognition_scores(predictions, references, num_labels=6)
    assert scores["wa"] == pytest.approx((predictions == references).mean())
    assert scores["ua"] == pytest.approx(balanced_accuracy_score(references, predictions))
    assert scores["macro_f1"] == pytest.approx(f1_score(references, predictions, average="macro"))
    # UA differs from WA exactly because the classes are imbalanced
    assert abs(scores["ua"] - scores["wa"]) > 1e-3


def test_per_class_recall_and_errors():
    scores = emotion_recognition_scores(
        [0, 0, 1], [0, 1, 1], label_names=["neutral", "happy", "sad"], return_per_class=True
    )
    assert scores["recall_neutral"] == 1.0 and scores["recall_happy"] == 0.5
    assert "recall_sad" not in scores  # absent class: recall undefined
    with pytest.raises(ValueError, match="same length"):
        emotion_recognition_scores([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        emotion_recognition_scores([], [])
    with pytest.raises(ValueError, match="num_labels=2"):
        emotion_recognition_scores([0, 2], [0, 1], num_labels=2)


def test_compute_metrics_drops_padding_labels():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]])
    scores = compute_emotion_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 0, -100])))
    assert scores["num_samples"] == 2
    assert scores["wa"] == pytest.approx(0.5)


def test_eval_table_format():
    table = format_emotion_eval_table({"alpha": {"wa": 0.5, "ua": 0.25, "macro_f1": 0.125}})
    assert "| alpha | 50.0 | 25.0 | 12.5 |" in table.splitlines()
