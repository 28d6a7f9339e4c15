"""Speech-emotion-recognition metrics: weighted accuracy (WA), unweighted accuracy (UA) and macro-F1.

SER papers (and the RRPO ablation, Table 2) report
- **WA**: plain accuracy over utterances (classes weighted by their frequency);
- **UA**: the mean of per-class recalls (every class weighs the same, robust to class imbalance);
- **macro-F1**: the mean of per-class F1 scores.

``evaluate.load("accuracy")`` needs the Hub, so the metric is a local :class:`evaluate.Metric` subclass that is
instantiated directly: ``EmotionRecognitionMetrics().compute(predictions=..., references=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np


_DESCRIPTION = """\
Speech-emotion-recognition scores: WA (accuracy), UA (mean per-class recall) and macro-F1. Classes that never occur
in the references are left out of UA (their recall is undefined) but are part of macro-F1 when they are predicted."""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): true class ids.
    num_labels (`int`, *optional*): number of classes; enables the per-class outputs for every class id.
    label_names (`list[str]`, *optional*): class names, used as keys of the per-class recalls.
    return_per_class (`bool`, defaults to `False`): also return `recall_<name>` for every class.
Returns:
    wa (`float`), ua (`float`), macro_f1 (`float`), num_samples (`int`) and, when asked, `recall_<name>` per class.
Examples:
    >>> metric = EmotionRecognitionMetrics()
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'wa': 0.75, 'ua': 0.8333333333333334, 'macro_f1': 0.7777777777777777, 'num_samples': 4}
"""

_CITATION = """\
@article{wang2025rrpo,
  title   = {RRPO: Robust Reward Policy Optimization for LLM-based Emotional TTS},
  author  = {Wang, Cong and Gao, Changfeng and Xiang, Yang and Du, Zhihao and An, Keyu and others},
  journal = {arXiv preprint arXiv:2512.04552},
  year    = {2025}
}
"""


def confusion_matrix(references, predictions, num_labels: int) -> np.ndarray:
    """``(num_labels, num_labels)`` counts, ``confusion[true, predicted]``: the one confusion matrix of the package."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (np.asarray(references, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return confusion


def emotion_recognition_scores(
    predictions: Sequence[int] | np.ndarray,
    references: Sequence[int] | np.ndarray,
    num_labels: int | None = None,
    label_names: Sequence[str] | None = None,
    return_per_class: bool = False,
) -> dict[str, float]:
    """WA, UA and macro-F1 of integer predictions against integer references (plain function behind the metric)."""
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    references = np.asarray(references, dtype=np.int64).reshape(-1)
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must have the same length, got {predictions.size} and {references.size}."
        )
    if references.size == 0:
        raise ValueError("Cannot score an empty evaluation set: pass at least one prediction/reference pair.")
    if (predictions < 0).any() or (references < 0).any():
        raise ValueError("Class ids must be non-negative; drop ignored samples (e.g. label -100) before scoring.")
    if label_names is not None and num_labels is None:
        num_labels = len(label_names)
    observed = int(max(predictions.max(), references.max())) + 1
    if num_labels is None:
        num_labels = observed
    elif observed > num_labels:
        raise ValueError(f"Found class id {observed - 1} but num_labels={num_labels}.")

    confusion = confusion_matrix(references, predictions, num_labels)
    true_positives = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)

    present = support > 0
    recall = np.divide(true_positives, support, out=np.zeros(num_labels), where=present)
    precision = np.divide(true_positives, predicted, out=np.zeros(num_labels), where=predicted > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(num_labels), where=(precision + recall) > 0
    )
    # sklearn's macro-F1 convention: average over classes that occur in references or predictions
    scored = present | (predicted > 0)

    scores: dict[str, float] = {
        "wa": float(true_positives.sum() / references.size),
        "ua": float(recall[present].mean()),
        "macro_f1": float(f1[scored].mean()),
        "num_samples": int(references.size),
    }
    if return_per_class:
        names = list(label_names) if label_names is not None else [str(i) for i in range(num_labels)]
        for class_id, name in enumerate(names):
            if present[class_id]:
                scores[f"recall_{name}"] = float(recall[class_id])
    return scores


class EmotionRecognitionMetrics(evaluate.Metric):
    """`evaluate` metric for speech-emotion recognition: WA, UA (mean per-class recall) and macro-F1."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_labels=None, label_names=None, return_per_class=False):
        return emotion_recognition_scores(predictions, references, num_labels, label_names, return_per_class)


def compute_emotion_metrics(
    eval_prediction, label_names: Sequence[str] | None = None, return_per_class: bool = False
) -> dict[str, float]:
    """``compute_metrics`` for :class:`transformers.Trainer`: argmax the logits and score them with the metric
    (with ``return_per_class``, also ``recall_<label>`` of every class the references hold).

    The metric is kept in memory (no cache file), so every process of a distributed run can call it on the gathered
    predictions without contending for an `evaluate` lock file.
    """
    logits = eval_prediction.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    references = np.asarray(eval_prediction.label_ids).reshape(-1)
    predictions = np.asarray(logits).argmax(axis=-1).reshape(-1)
    keep = references >= 0  # the Trainer pads uneven final batches with -100
    metric = EmotionRecognitionMetrics(keep_in_memory=True)
    num_labels = len(label_names) if label_names is not None else np.asarray(logits).shape[-1]
    return metric.compute(
        predictions=predictions[keep],
        references=references[keep],
        num_labels=num_labels,
        label_names=list(label_names) if label_names is not None else None,
        return_per_class=return_per_class,
    )


def format_emotion_eval_table(results: dict[str, dict[str, float]], title: str | None = None) -> str:
    """Markdown table with one row per evaluation set: ``| eval set | WA | UA | F1 |`` in percent.

    ``results`` maps an evaluation-set name to a dict with keys ``wa``, ``ua`` and ``macro_f1`` (fractions).
    """
    lines = [] if title is None else [f"**{title}**", ""]
    lines += ["| eval set | WA (%) | UA (%) | F1 (%) |", "|---|---:|---:|---:|"]
    for name, scores in results.items():
        lines.append(
            f"| {name} | {100 * scores['wa']:.1f} | {100 * scores['ua']:.1f} | {100 * scores['macro_f1']:.1f} |"
        )
    return "\n".join(lines)
