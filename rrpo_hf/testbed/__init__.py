"""Reward-hacking testbed: a synthetic emotional speech-token world with ground-truth oracle scorers.

- :func:`make_emotion_corpus` builds seeded ``DatasetDict({"train", "test"})`` corpora in the
  project's dataset schema (languages ``alpha`` and ``beta``, optional spurious artifacts).
- :class:`EmotionWorld` / :class:`TestbedConfig` hold the generative truth (codebook layout,
  phoneme motifs, emotion prosody rules, speakers).
- :class:`Oracle` scores (text, speech tokens, target emotion) with emotion truth, CER, artifact
  rate, naturalness (N-MOS analogue) and emotion score (E-MOS analogue); :class:`OracleScorer` makes it an
  evaluation scorer of ``DiffROTrainer(eval_scorers=...)``.
- :func:`insert_artifacts`, :func:`substitute_tokens`, :func:`repeat_tokens` simulate reward hacking.

Formulas: module docstrings of :mod:`.world` and :mod:`.oracle`, and ``docs/testbed.md``.
"""

from .corpus import build_testbed_tokenizer, corpus_features, make_emotion_corpus
from .oracle import SCORE_KEYS, Oracle, OracleConfig, batched_levenshtein
from .perturb import insert_artifacts, insert_tokens, repeat_tokens, substitute_tokens
from .scorer import ORACLE_EVAL_KEYS, OracleScorer
from .world import (
    DEFAULT_LANGUAGES,
    EMOTION_PROSODY,
    TESTBED_LANGUAGES,
    EmotionWorld,
    LanguageSpec,
    ProsodyRule,
    TestbedConfig,
    emotion_to_id,
)


__all__ = [
    "build_testbed_tokenizer",
    "DEFAULT_LANGUAGES",
    "EMOTION_PROSODY",
    "ORACLE_EVAL_KEYS",
    "SCORE_KEYS",
    "TESTBED_LANGUAGES",
    "EmotionWorld",
    "LanguageSpec",
    "Oracle",
    "OracleConfig",
    "OracleScorer",
    "ProsodyRule",
    "TestbedConfig",
    "batched_levenshtein",
    "corpus_features",
    "emotion_to_id",
    "insert_artifacts",
    "insert_tokens",
    "make_emotion_corpus",
    "repeat_tokens",
    "substitute_tokens",
]
