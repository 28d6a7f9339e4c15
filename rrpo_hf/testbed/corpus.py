"""Seeded emotional speech-token corpora of the testbed, as ``datasets.DatasetDict``.

Schema (docs/testbed.md): ``text`` (space-separated phonemes), ``speech_tokens``
(``list[int]`` in ``[0, codebook_size)``), ``emotion`` (``ClassLabel`` over
``CANONICAL_EMOTIONS``), ``language``, ``speaker``, ``corpus``; plus ``intensity`` (float, the
emotion intensity each utterance was rendered with) only when ``intensity`` is not the default 1,
so default corpora keep their schema.

Emotions are balanced (each split cycles through the six emotions, then is shuffled). The
train and test splits use independent random streams spawned from ``seed``, so the test split
of a corpus does not change when ``num_train`` changes. Spurious artifacts (see
:mod:`rrpo_hf.testbed.world`) go into the train split only, unless ``spurious_in_test=True``.
Intensities sampled from a range come from a third stream spawned from ``seed`` (drawn only
then), so texts, emotions and speakers of a split are the same at every intensity.
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


def corpus_features(with_intensity: bool = False, with_true_emotion: bool = False) -> Features:
    """The ``datasets.Features`` of every testbed split (``with_intensity``: add the ``intensity`` column;
    ``with_true_emotion``: add ``true_emotion``, the rendered emotion of a corpus with noisy labels)."""
    features = {
        "text": Value("string"),
        "speech_tokens": SequenceFeature(Value("int32")),
        "emotion": ClassLabel(names=list(CANONICAL_EMOTIONS)),
        "language": Value("string"),
        "speaker": Value("string"),
        "corpus": Value("string"),
    }
    if with_intensity:
        features["intensity"] = Value("float64")
    if with_true_emotion:
        features["true_emotion"] = ClassLabel(names=list(CANONICAL_EMOTIONS))
    return Features(features)


def _noisy_labels(emotions: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``emotions`` with each label replaced, with probability ``rate``, by one of the *other* emotions (uniform)."""
    flipped = rng.random(len(emotions)) < rate
    offsets = rng.integers(1, len(CANONICAL_EMOTIONS), size=len(emotions))
    return np.where(flipped, (emotions + offsets) % len(CANONICAL_EMOTIONS), emotions)


def _intensity_range(intensity: float | Sequence[float]) -> tuple[float, float]:
    """``intensity`` (a number, or a ``(low, high)`` range) as a validated ``(low, high)`` pair."""
    if isinstance(intensity, (int, float, np.integer, np.floating)) and not isinstance(intensity, bool):
        low = high = float(intensity)
    elif isinstance(intensity, Sequence) and not isinstance(intensity, str) and len(intensity) == 2:
        low, high = (float(v) for v in intensity)
    else:
        raise ValueError(f"intensity must be a number or a (low, high) pair, got {intensity!r}.")
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0:
        raise ValueError(f"intensity must be finite and >= 0 (1 = natural full strength), got {intensity!r}.")
    if low > high:
        raise ValueError(f"intensity range needs low <= high, got low={low}, high={high}.")
    return low, high


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
    intensities: np.ndarray | None = None,
) -> dict[str, list]:
    """Columns of one split (plain Python lists), vectorised over utterances.

    ``intensities`` (one per utterance) are passed to :meth:`EmotionWorld.render` and returned as
    the ``intensity`` column; ``None`` renders at intensity 1 and adds no column.
    """
    if spurious_emotion_ids is None:
        spurious_emotion_ids = np.zeros(0, dtype=np.int64)
    spec = world.language_spec(language)
    emotions = rng.permutation(np.resize(np.arange(len(CANONICAL_EMOTIONS)), num)) if num else np.zeros(0, int)
    speakers = rng.integers(0, num_speakers, size=num)
    phoneme_ids = world.sample_texts(num, language, rng)
    tokens = world.render(phoneme_ids, emotions, language, speakers, rng, intensities)
    artifact_seed = int(rng.integers(2**31))
    if spurious_artifact_rate > 0 and num:
        hit = np.isin(emotions, spurious_emotion_ids) & (rng.random(num) < spurious_artifact_rate)
        chosen = np.flatnonzero(hit)
        # ceil(density * n) >= 1 for density > 0: every chosen utterance gets at least one artifact
        corrupted = insert_artifacts([tokens[i] for i in chosen], world.config.artifact_density, world, artifact_seed)
        for i, new in zip(chosen, corrupted):
            tokens[i] = new
    columns = {
        "text": [" ".join(spec.phonemes[i] for i in p) for p in phoneme_ids],
        "speech_tokens": tokens,
        "emotion": emotions.tolist(),
        "language": [language] * num,
        "speaker": [f"{language}_spk{s}" for s in speakers],
        "corpus": [f"testbed-{language}"] * num,
    }
    if intensities is not None:
        columns["intensity"] = np.asarray(intensities, dtype=np.float64).tolist()
    return columns


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
    intensity: float | tuple[float, float] = 1.0,
    label_noise: float = 0.0,
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
        intensity: emotion intensity ``s >= 0`` of every utterance (1 = natural full strength,
            ``< 1`` under-expressive, ``> 1`` exaggerated; see :mod:`rrpo_hf.testbed.world`), or a
            ``(low, high)`` range sampled uniformly per utterance from its own random stream. Any
            value but the default adds an ``intensity`` column; the default draws nothing extra, so
            default corpora are unchanged.
        label_noise: probability that a *train* utterance's ``emotion`` label is replaced by a uniformly drawn other
            emotion, while its speech keeps the true one (pseudo-labelling errors of a large corpus). Above 0 both
            splits get a ``true_emotion`` column (test labels stay clean); 0 draws nothing extra.
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
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}.")
    spurious_ids = _spurious_emotion_ids(spurious_emotions)
    low, high = _intensity_range(intensity)
    modulated = not low == high == 1.0

    # spawning more children leaves the first two (and so the default corpus) unchanged
    streams = np.random.SeedSequence([seed, world.language_names.index(language)]).spawn(4)
    train_seq, test_seq, intensity_seq, label_noise_seq = streams

    def split_intensities(num: int, stream: np.random.SeedSequence) -> np.ndarray | None:
        if not modulated:
            return None
        if low == high:
            return np.full(num, low)
        return np.random.default_rng(stream).uniform(low, high, size=num)

    train_intensity_seq, test_intensity_seq = intensity_seq.spawn(2)
    features = corpus_features(with_intensity=modulated, with_true_emotion=label_noise > 0)
    train = generate_split(
        world,
        num_train,
        language,
        num_speakers,
        np.random.default_rng(train_seq),
        spurious_artifact_rate,
        spurious_ids,
        split_intensities(num_train, train_intensity_seq),
    )
    test = generate_split(
        world,
        num_test,
        language,
        num_speakers,
        np.random.default_rng(test_seq),
        spurious_artifact_rate if spurious_in_test else 0.0,
        spurious_ids,
        split_intensities(num_test, test_intensity_seq),
    )
    if label_noise > 0:
        # The speech was rendered from the true emotions; only the train labels are corrupted.
        for split in (train, test):
            split["true_emotion"] = list(split["emotion"])
        rng = np.random.default_rng(label_noise_seq)
        train["emotion"] = _noisy_labels(np.asarray(train["emotion"], dtype=np.int64), label_noise, rng).tolist()
    return DatasetDict(
        {"train": Dataset.from_dict(train, features=features), "test": Dataset.from_dict(test, features=features)}
    )


__all__ = ["corpus_features", "generate_split", "make_emotion_corpus"]
