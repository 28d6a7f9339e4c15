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
from .quality import QUALITY_LABELS, asr_vocabulary, make_quality_corpus, naturalness_to_quality_class
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
    "asr_vocabulary",
    "build_testbed_tokenizer",
    "DEFAULT_LANGUAGES",
    "EMOTION_PROSODY",
    "ORACLE_EVAL_KEYS",
    "QUALITY_LABELS",
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
    "make_quality_corpus",
    "naturalness_to_quality_class",
    "repeat_tokens",
    "substitute_tokens",
]
