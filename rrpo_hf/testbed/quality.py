"""A seeded speech-quality corpus of the testbed, for the multi-task reward model (DiffRO's SQA head, MOS in 5 levels).

Each row is a testbed utterance (:func:`~rrpo_hf.testbed.corpus.make_emotion_corpus`), left natural or degraded by
one perturbation of :mod:`rrpo_hf.testbed.perturb`, chosen per row:

| perturbation        | share (default) | strength per row                          | what the oracle sees            |
|---------------------|-----------------|-------------------------------------------|---------------------------------|
| none                | 0.25            |                                           | N ≈ 4.5-4.9                     |
| `insert_artifacts`  | 0.25            | rate = 0.12·u², u ~ U(0, 1) (≥ 1 token)   | artifact rate a, N ≈ 1-3.5      |
| `substitute_tokens` | 0.35            | rate = 0.2·u², u ~ U(0, 1) (≥ 1 token)    | CER up, prosody off, N ≈ 1-4.5  |
| `repeat_tokens`     | 0.15            | factor 2 or 3                             | run lengths ×2/×3, N ≈ 1.1-1.8  |

The label is the oracle's naturalness (N-MOS analogue, :meth:`~rrpo_hf.testbed.oracle.Oracle.score`) rounded to the
nearest of the five levels: ``quality = clip(round(N), 1, 5)``, a ``ClassLabel`` over ``"1".."5"`` (id = level - 1).
The squared strengths put more rows at mild degradations, so by default each class holds 13-26% of the rows.
``text`` stays the utterance's phoneme text and ``emotion`` the emotion it was rendered with: the transcript and the
emotion the speech was meant to carry, which is what the ASR reward ``log P(text | tokens)`` and the emotion reward
score a policy's speech against. A degraded row therefore teaches the ASR head to read what is left of the text, and
its likelihood falls as less is left.

The perturbation choices, strengths and seeds come from streams spawned from ``seed`` (independent per split), so a
corpus is a deterministic function of its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Value

from .corpus import make_emotion_corpus
from .oracle import Oracle
from .perturb import insert_artifacts, repeat_tokens, substitute_tokens
from .world import EmotionWorld, TestbedConfig


#: Quality classes of the corpus, worst first: the rounded N-MOS levels.
QUALITY_LABELS: tuple[str, ...] = ("1", "2", "3", "4", "5")

#: Perturbations a quality corpus draws from, with their default shares (``"none"`` = natural speech).
DEFAULT_DEGRADATIONS: dict[str, float] = {
    "none": 0.25,
    "insert_artifacts": 0.25,
    "substitute_tokens": 0.35,
    "repeat_tokens": 0.15,
}

_MAX_ARTIFACT_RATE = 0.12
_MAX_SUBSTITUTION_RATE = 0.2
_REPEAT_FACTORS = (2, 3)


def asr_vocabulary(world: EmotionWorld | TestbedConfig | None = None) -> list[str]:
    """The ASR vocabulary of a testbed world: every phoneme of every language, in inventory order (as
    :func:`~rrpo_hf.testbed.corpus.build_testbed_tokenizer` reads them)."""
    config = world.config if isinstance(world, EmotionWorld) else (world or TestbedConfig())
    return [phoneme for spec in config.languages for phoneme in spec.phonemes]


def naturalness_to_quality_class(naturalness: Sequence[float] | np.ndarray) -> np.ndarray:
    """N-MOS in [1, 5] -> class id in [0, 5): ``clip(round(N), 1, 5) - 1`` (halves round to even, as numpy does)."""
    return (np.clip(np.rint(np.asarray(naturalness, dtype=np.float64)), 1, 5) - 1).astype(np.int64)


def _degrade_split(
    split: Dataset, world: EmotionWorld, oracle: Oracle, shares: dict[str, float], rng: np.random.Generator
) -> Dataset:
    names = list(shares)
    probabilities = np.array([shares[name] for name in names], dtype=np.float64)
    probabilities = probabilities / probabilities.sum()
    num = len(split)
    choice = rng.choice(len(names), size=num, p=probabilities)
    strength = rng.random(num)
    seeds = rng.integers(2**31, size=num)
    tokens = [list(row) for row in split["speech_tokens"]]
    perturbation, rates = [], []
    for i in range(num):
        name = names[choice[i]]
        if name == "insert_artifacts":
            rate = float(strength[i] ** 2 * _MAX_ARTIFACT_RATE)
            tokens[i] = insert_artifacts(tokens[i], rate, world, int(seeds[i]))
        elif name == "substitute_tokens":
            rate = float(strength[i] ** 2 * _MAX_SUBSTITUTION_RATE)
            tokens[i] = substitute_tokens(tokens[i], rate, world, int(seeds[i]))
        elif name == "repeat_tokens":
            rate = float(_REPEAT_FACTORS[int(strength[i] * len(_REPEAT_FACTORS))])
            tokens[i] = repeat_tokens(tokens[i], int(rate))
        else:
            rate = 0.0
        perturbation.append(name)
        rates.append(rate)
    if num:
        naturalness = np.asarray(
            oracle.score(split["text"], tokens, split["emotion"], split["language"])["naturalness"], dtype=np.float64
        )
    else:
        naturalness = np.zeros(0, dtype=np.float64)
    features = split.features.copy()
    features["quality"] = ClassLabel(names=list(QUALITY_LABELS))
    features["naturalness"] = Value("float64")
    features["perturbation"] = Value("string")
    features["perturbation_strength"] = Value("float64")
    columns = {name: split[name] for name in split.column_names}
    columns.update(
        speech_tokens=tokens,
        quality=naturalness_to_quality_class(naturalness).tolist(),
        naturalness=naturalness.tolist(),
        perturbation=perturbation,
        perturbation_strength=rates,
    )
    return Dataset.from_dict(columns, features=features)


def make_quality_corpus(
    language: str = "alpha",
    num_train: int = 1200,
    num_test: int = 300,
    codebook_size: int = 512,
    seed: int = 0,
    world: EmotionWorld | TestbedConfig | None = None,
    degradations: dict[str, float] | None = None,
    num_speakers: int = 4,
) -> DatasetDict:
    """Build a seeded ``DatasetDict({"train", "test"})`` of natural and degraded speech with quality labels.

    Columns: those of :func:`~rrpo_hf.testbed.corpus.make_emotion_corpus` (``text``, ``speech_tokens``, ``emotion``,
    ``language``, ``speaker``, ``corpus``) plus ``quality`` (``ClassLabel`` over :data:`QUALITY_LABELS`, the
    rounded oracle naturalness), ``naturalness`` (the oracle's N, float), ``perturbation`` (its name, ``"none"`` for
    natural rows) and ``perturbation_strength`` (rate, or repeat factor).

    Args:
        language, num_train, num_test, codebook_size, seed, world, num_speakers: as in ``make_emotion_corpus``
            (the utterances are that corpus's, before degradation).
        degradations: perturbation name -> share of rows, over ``"none"``, ``"insert_artifacts"``,
            ``"substitute_tokens"``, ``"repeat_tokens"``; default :data:`DEFAULT_DEGRADATIONS`.
    """
    if world is None:
        world = EmotionWorld(TestbedConfig(codebook_size=codebook_size))
    elif isinstance(world, TestbedConfig):
        world = EmotionWorld(world)
    elif not isinstance(world, EmotionWorld):
        raise TypeError(f"world must be an EmotionWorld or TestbedConfig, got {type(world).__name__}.")
    shares = dict(DEFAULT_DEGRADATIONS if degradations is None else degradations)
    unknown = sorted(set(shares) - set(DEFAULT_DEGRADATIONS))
    if unknown:
        raise ValueError(
            f"Unknown degradation(s) {unknown}; choose from {list(DEFAULT_DEGRADATIONS)} (name -> share of rows)."
        )
    if any(not np.isfinite(share) or share < 0 for share in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError(f"degradation shares must be >= 0 with a positive sum, got {shares}.")
    corpus = make_emotion_corpus(
        language, num_train=num_train, num_test=num_test, seed=seed, world=world, num_speakers=num_speakers
    )
    oracle = Oracle(world)
    # Streams of their own, so the utterances are exactly make_emotion_corpus's whatever the degradations.
    train_seq, test_seq = np.random.SeedSequence([seed, world.language_names.index(language), 7919]).spawn(2)
    return DatasetDict(
        {
            name: _degrade_split(corpus[name], world, oracle, shares, np.random.default_rng(stream))
            for name, stream in (("train", train_seq), ("test", test_seq))
        }
    )


__all__ = [
    "DEFAULT_DEGRADATIONS",
    "QUALITY_LABELS",
    "asr_vocabulary",
    "make_quality_corpus",
    "naturalness_to_quality_class",
]
