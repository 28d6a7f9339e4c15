"""Seeded emotional speech-token corpora of the testbed, as ``datasets.DatasetDict``.

Schema (docs/testbed.md): ``text`` (space-separated phonemes), ``speech_tokens``
(``list[int]`` in ``[0, codebook_size)``), ``emotion`` (``ClassLabel`` over
``CANONICAL_EMOTIONS``), ``language``, ``speaker``, ``corpus``.

Emotions are balanced (each split cycles through the six emotions, then is shuffled). The
train and test splits use independent random streams spawned from ``seed``, so the test split
of a corpus does not change when ``num_train`` changes. Spurious artifacts (see
:mod:`rrpo_hf.testbed.world`) go into the train split only, unless ``spurious_in_test=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Sequence as SequenceFeature

from ..data.labels import CANONICAL_EMOTIONS
from ..data.prompts import instruction_words
from ..models.cosyvoice2.tokenization import build_tiny_cosyvoice2_tokenizer
from .perturb import insert_artifacts
from .world import EmotionWorld, TestbedConfig, emotion_to_id


def build_testbed_tokenizer(world: EmotionWorld | TestbedConfig | None = None, instruction_template: str = "en"):
    """A word-level CosyVoice2-style text tokenizer for testbed prompts: every phoneme of every language of
    ``world`` (one tokenizer serves alpha and beta) and the words of the instructions of ``instruction_template``."""
    config = world.config if isinstance(world, EmotionWorld) else (world or TestbedConfig())
    phonemes = [phoneme for spec in config.languages for phoneme in spec.phonemes]
    return build_tiny_cosyvoice2_tokenizer(phonemes + instruction_words(instruction_template))


def corpus_features() -> Features:
    """The ``datasets.Features`` of every testbed split."""
    return Features(
        {
            "text": Value("string"),
            "speech_tokens": SequenceFeature(Value("int32")),
            "emotion": ClassLabel(names=list(CANONICAL_EMOTIONS)),
            "language": Value("string"),
            "speaker": Value("string"),
            "corpus": Value("string"),
        }
    )


def _spurious_emotion_ids(spurious_emotions: Sequence[str | int]) -> np.ndarray:
    if isinstance(spurious_emotions, (str, int)):
        spurious_emotions = [spurious_emotions]
    return np.array(sorted({emotion_to_id(e) for e in spurious_emotions}), dtype=np.int64)


def generate_split(
    world: EmotionWorld,
    num: int,
    language: str,
    num_speakers: int,
    rng: np.random.Generator,
    spurious_artifact_rate: float = 0.0,
    spurious_emotion_ids: np.ndarray | None = None,
) -> dict[str, list]:
    """Columns of one split (plain Python lists), vectorised over utterances."""
    if spurious_emotion_ids is None:
        spurious_emotion_ids = np.zeros(0, dtype=np.int64)
    spec = world.language_spec(language)
    emotions = rng.permutation(np.resize(np.arange(len(CANONICAL_EMOTIONS)), num)) if num else np.zeros(0, int)
    speakers = rng.integers(0, num_speakers, size=num)
    phoneme_ids = world.sample_texts(num, language, rng)
    tokens = world.render(phoneme_ids, emotions, language, speakers, rng)
    artifact_seed = int(rng.integers(2**31))
    if spurious_artifact_rate > 0 and num:
        hit = np.isin(emotions, spurious_emotion_ids) & (rng.random(num) < spurious_artifact_rate)
        chosen = np.flatnonzero(hit)
        # ceil(density * n) >= 1 for density > 0: every chosen utterance gets at least one artifact
        corrupted = insert_artifacts([tokens[i] for i in chosen], world.config.artifact_density, world, artifact_seed)
        for i, new in zip(chosen, corrupted):
            tokens[i] = new
    return {
        "text": [" ".join(spec.phonemes[i] for i in p) for p in phoneme_ids],
        "speech_tokens": tokens,
        "emotion": emotions.tolist(),
        "language": [language] * num,
        "speaker": [f"{language}_spk{s}" for s in speakers],
        "corpus": [f"testbed-{language}"] * num,
    }


def make_emotion_corpus(
    language: str = "alpha",
    num_train: int = 1200,
    num_test: int = 300,
    codebook_size: int = 512,
    spurious_artifact_rate: float = 0.0,
    spurious_emotions: Sequence[str | int] = ("angry",),
    num_speakers: int = 4,
    seed: int = 0,
    world: EmotionWorld | TestbedConfig | None = None,
    spurious_in_test: bool = False,
) -> DatasetDict:
    """Build a seeded ``DatasetDict({"train", "test"})`` of natural emotional speech tokens.

    Args:
        language: one of the world's languages (``"alpha"``, ``"beta"`` by default).
        num_train, num_test: split sizes.
        codebook_size: speech codebook size V (ignored when ``world`` is given).
        spurious_artifact_rate: probability that a train utterance whose emotion is in
            ``spurious_emotions`` gets artifact tokens (the shortcut a vanilla RM can learn).
        spurious_emotions: emotions (names or ids) that co-occur with artifacts.
        num_speakers: speakers per language (timbre = distribution over token variants).
        seed: corpus seed (texts, emotions, speakers, sampling noise). The world's own seed
            (motifs) is ``TestbedConfig.seed``.
        world: an existing world or config; default ``EmotionWorld(codebook_size=codebook_size)``.
        spurious_in_test: also corrupt the test split (for probes that want it).
    """
    if world is None:
        world = EmotionWorld(TestbedConfig(codebook_size=codebook_size))
    elif isinstance(world, TestbedConfig):
        world = EmotionWorld(world)
    elif not isinstance(world, EmotionWorld):
        raise TypeError(f"world must be an EmotionWorld or TestbedConfig, got {type(world).__name__}.")
    world.language_spec(language)  # validates the name
    if num_train < 0 or num_test < 0 or num_train + num_test == 0:
        raise ValueError(f"Need num_train, num_test >= 0 and at least one utterance, got {num_train}, {num_test}.")
    if num_speakers < 1:
        raise ValueError(f"num_speakers must be >= 1, got {num_speakers}.")
    if not 0.0 <= spurious_artifact_rate <= 1.0:
        raise ValueError(f"spurious_artifact_rate must be in [0, 1], got {spurious_artifact_rate}.")
    spurious_ids = _spurious_emotion_ids(spurious_emotions)

    train_seq, test_seq = np.random.SeedSequence([seed, world.language_names.index(language)]).spawn(2)
    features = corpus_features()
    train = generate_split(
        world,
        num_train,
        language,
        num_speakers,
        np.random.default_rng(train_seq),
        spurious_artifact_rate,
        spurious_ids,
    )
    test = generate_split(
        world,
        num_test,
        language,
        num_speakers,
        np.random.default_rng(test_seq),
        spurious_artifact_rate if spurious_in_test else 0.0,
        spurious_ids,
    )
    return DatasetDict(
        {"train": Dataset.from_dict(train, features=features), "test": Dataset.from_dict(test, features=features)}
    )


__all__ = ["corpus_features", "generate_split", "make_emotion_corpus"]
