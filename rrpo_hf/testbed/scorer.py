"""The testbed oracle as an evaluation scorer (see :mod:`rrpo_hf.evaluation.scorers`): the ground truth of the
synthetic world scores what a policy generates, under ``oracle_*`` metric names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .oracle import Oracle


__all__ = ["ORACLE_EVAL_KEYS", "OracleScorer"]

#: Per-sample oracle scores an `OracleScorer` reports (as `oracle_<key>`).
ORACLE_EVAL_KEYS = ("emotion_score", "emotion_correct", "naturalness", "artifact_rate", "cer", "gold_score")


class OracleScorer:
    """Scores generated speech with the testbed :class:`Oracle`: emotion score (E-MOS analogue), emotion correctness,
    naturalness (N-MOS analogue), artifact rate and CER of every sample.

    Reads ``texts``, ``target_emotions`` and, when present, ``languages`` from the evaluation batch.

    Args:
        oracle ([`Oracle`]): the oracle of the world the policy speaks in.
        keys (sequence of `str`, defaults to :data:`ORACLE_EVAL_KEYS`): which of the oracle's scores to report.
        prefix (`str`, defaults to `"oracle_"`): metric-name prefix.
    """

    def __init__(self, oracle: Oracle, keys: Sequence[str] = ORACLE_EVAL_KEYS, prefix: str = "oracle_"):
        self.oracle = oracle
        self.keys = tuple(keys)
        self.prefix = prefix

    def __call__(self, tokens: list[list[int]], batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        scores = self.oracle.score(batch["texts"], tokens, batch["target_emotions"], batch.get("languages"))
        return {f"{self.prefix}{key}": np.asarray(scores[key], dtype=np.float32) for key in self.keys}
